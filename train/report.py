"""What the trainer tells the user about a run as a whole: the start-up report (what runs where, on what data,
for how many steps) and the end of a run (where its checkpoints are, how to evaluate them).

Text only, from plain values; the loop's own lines (steps, evals, stops) are in train/loop.py.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from dataset.bands import RULE, no_band_note
from train.config import PretrainConfig, eval_batch
from utils import shell

if TYPE_CHECKING:
    import torch

    from dataset.format import PuzzleDatasetMetadata
    from dataset.loader import PuzzleDataset
    from train.run_checkpoint import Progress


def print_report(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


def plan_line(
    config: PretrainConfig, planned: int, total_steps: int, exact: bool, steps_per_pass: int, passes: int
) -> str:
    """The start-up report's `steps` row: the steps the loop will train (the last checkpoint is step_<that>)."""
    text = f"{'' if exact else '~'}{planned:,} (batch {config.global_batch_size}"
    if config.micro_batch_size:
        text += f", micro-batches of {config.micro_batch_size}"
    text += f"; {passes} pass(es) of {steps_per_pass:,} whole batches)"
    if planned != total_steps:
        text += f"; the lr schedule spans {total_steps:,} (the original's epochs x examples / batch)"
    return text


def run_rows(
    config: PretrainConfig,
    device: torch.device,
    meta: PuzzleDatasetMetadata,
    test_examples: int,
    n_params: int,
    emb_params: int,
    steps: str,
    evals: int,
    halt_max_steps: int,
    step: int,
    wandb_status: str,
) -> list[tuple[str, str]]:
    """The start-up report's rows after the runtime's (train/runtime.setup_runtime): optimizer, data, model
    size, the plan (`steps`: plan_line), the run folder, resume and W&B."""
    train_examples = int(meta.total_groups * meta.mean_puzzle_examples)
    eval_plan = f"{evals} evals of {test_examples:,} test examples, {halt_max_steps} ACT steps each"
    if config.eval_batches is not None:
        eval_plan += f" (at most {config.eval_batches} batches of {eval_batch(config)} per set)"
    if config.eval_tta > 1:  # eval_tta: K more evaluations' worth, where they happen
        when = "every eval" if config.eval_tta_every else "the last eval"
        eval_plan += f"; {config.eval_tta} voted copies of each at {when} (eval_tta)"
    if config.eval_per_step:
        eval_plan += "; every segment scored (eval_per_step)"
    rows = [
        (
            "optimizer",
            f"AdamATan2 (pure PyTorch, {'multi-tensor' if device.type != 'cpu' else 'per-tensor'}) + sign-SGD puzzle embedding"
            + (f"; Muon for the blocks' weight matrices (muon, lr {config.muon_lr:g})" if config.muon else ""),
        ),
        (
            "data",
            f"{shell.quote(config.data_path)}: sets {', '.join(meta.sets)}; {meta.total_groups:,} train groups (~{train_examples:,} "
            f"examples per epoch), {test_examples:,} test examples; seq {meta.seq_len}, vocab {meta.vocab_size}"
            + ("; every train example under a fresh random symmetry (augment_online)" if config.augment_online else ""),
        ),
        (
            "parameters",
            f"{n_params:,} model + {emb_params:,} puzzle-embedding table ({meta.num_puzzle_identifiers:,} ids)",
        ),
        ("steps", steps),
        ("eval plan", eval_plan),
        ("run folder", shell.quote(str(config.checkpoint_path))),
        ("resumed", f"from step {step} ({config.resume})" if config.resume else "no (new run)"),
        ("W&B", wandb_status),
    ]
    if device.type == "cpu" and n_params > 5_000_000:
        rows.append(
            (
                "note",
                "the paper's model on a CPU: fine to try, but expect weeks for a full recipe (see the estimate below); use a GPU or `python demo.py`",
            )
        )
    return rows


def band_row(datasets: list[PuzzleDataset]) -> tuple[str, str]:
    """The start-up report's `hard band` row: the band of each held-out split (test, val) or why there is none,
    then the rule (dataset/bands.py), printed once here; each eval line then shows the band's exact accuracy."""
    notes = []
    for ds in datasets:
        band = ds.hard_band()
        notes.append(band.note if band is not None else no_band_note(ds.config.dataset_path, ds.split, ds.metadata))
    return "hard band", "; ".join(notes) + f". Rule: {RULE.removeprefix('hard band: ')}"


def evaluate_command(run_dir: str, step: int) -> str:
    script = os.path.join(os.path.dirname(sys.argv[0]), "evaluate.py")  # beside pretrain.py as it was invoked
    return shell.command(script, checkpoint=os.path.join(run_dir, f"step_{step}"))


def finished_message(config: PretrainConfig, prog: Progress, step: int, already: bool) -> str:
    """The end of a run, or a resume of one that has ended: where its checkpoints are, how to evaluate them."""
    run_dir = str(config.checkpoint_path)
    head = f"run {config.run_name} " + ("is already finished" if already else "finished")
    head = f"{head} (step {step:,}, {prog.passes_done} evaluation(s))"
    saved = sorted(
        int(n[5:]) for n in (os.listdir(run_dir) if os.path.isdir(run_dir) else []) if re.fullmatch(r"step_\d+", n)
    )
    if step not in saved:  # not saved (non-finite weights are never written): name what is there, not step_<step>
        if not saved:
            return f"{head}; no checkpoint was saved (none of its weights were finite at a save)"
        head = f"{head}; step_{step} was not saved (non-finite weights)"
        step = saved[-1]
    lines = [f"{head}; last checkpoint: {shell.quote(os.path.join(run_dir, f'step_{step}'))}"]
    lines.append(f"evaluate it:\n  {evaluate_command(run_dir, step)}")
    best = prog.best_step
    if best is not None and best != step and prog.best_value and os.path.isfile(os.path.join(run_dir, f"step_{best}")):
        on = prog.timing.get("on", "test")  # val when the run had a val/ split: the best step is chosen there
        lines.append(
            f"best eval ({on} exact accuracy {prog.best_value:.4f}) was step_{best}:\n  {evaluate_command(run_dir, best)}"
        )
    if already:
        lines.append("nothing left to train: a longer schedule (epochs=...) is a new run, with another checkpoint_path")
    return "\n".join(lines)
