"""Evaluate a checkpoint: `python evaluate.py checkpoint=<run folder>/step_<N> [key=value ...]`.

Reads `all_config.yaml` beside the checkpoint (as the original), else the config in the checkpoint's own
metadata (`step_N.json`, train/checkpoint.py). Checkpoints with neither (the released Hugging Face ones) need
`data_path=...` and any non-default `arch.*` on the command line. The model's shape comes from that metadata when
the checkpoint has it, so `data_path=<another folder>` evaluates it on other puzzles of the same kind; other
`key=value` pairs override the saved config (e.g. `global_batch_size=256 device=cpu`). Accepts keys with
or without torch.compile's `_orig_mod.` prefix. Writes `step_<N>_all_preds.<rank>` beside the checkpoint
(a dict of the tensors named in `save_outputs`), the original's format; `output_dir=<folder>` writes it
elsewhere (a read-only run folder), `save_outputs=[]` writes nothing.

`tta=K` (Sudoku, Maze) also solves K transformed copies of every test puzzle and votes (train/tta.py);
`tta_prefer_valid=false` drops the preference for valid Sudoku solutions, `tta_seed` picks the transforms.

`search=K` (Sudoku, Maze) also runs K passes of every test puzzle (symmetric copies, with `search_noise=S` noisy
recursions too), takes every ACT segment of each as a candidate, chooses by the task's verifier first, then votes,
then Q-head confidence (train/search.py), and prints and writes (`step_<N>_search.csv/.json/.png`) exact accuracy
against passes; `search_seed` picks the copies and the noise. Sudoku and Maze evaluations also report how many
predictions are valid solutions of their puzzles, and how many of those differ from the label (dataset/verify.py).

`per_step=true` adds a table with one row per ACT segment: exact and token accuracy if every prediction were
taken at that segment, the share of puzzles whose Q-head says halt there, and the share halted by then
(whether a model is right where it halts and only wrong after it, as in the late collapse of TROUBLESHOOTING.md).

Beside the overall exact accuracy it prints the hard band's (`hard_exact_accuracy`; the rule, printed once at start:
dataset/bands.py, docs/evaluation.md), where the data has one.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import os
import sys
from typing import Any

import torch.distributed as dist
from omegaconf import OmegaConf

from dataset.transforms import puzzle_kind
from train.config import eval_batch
from train.eval_config import DEFAULT_OUTPUTS, check_output_dir, load_eval_config
from train.report import band_row
from train.runtime import init_distributed, setup_runtime
from train.search import SEARCH_MAX, check_search, check_search_memory, evaluate_search, table_lines, write_outputs
from train.steps import TrainState, create_dataloader, create_model, eval_headline, evaluate
from train.tta import check_tta_kind, check_tta_memory, evaluate_tta, prefix_sizes
from train.weights import load_checkpoint, model_shape, weights_file
from utils import shell
from utils.cli_help import command_help, wants_help
from utils.errors import UserError, exit_with

# evaluate.py's own keys for --help, each read below where it is used (tests/test_cli_help.py checks the two agree)
KEYS = [
    ("checkpoint=<run folder>/step_N", "the weights to evaluate (required); a run folder lists its step files"),
    ("ema=auto", "auto: the weight average step_N.ema when the run kept one | true: insist on it | false: raw weights"),
    ("output_dir=<the checkpoint's folder>", "where step_N_all_preds.<rank> (and search files) are written"),
    ("save_outputs=[" + ",".join(DEFAULT_OUTPUTS) + "]", "tensors saved per test example; [] saves nothing"),
    ("per_step=false", "true: a table of exact/token accuracy and halting after every ACT segment"),
    ("tta=1", "K > 1: also vote over K symmetric copies of each test puzzle (Sudoku, Maze)"),
    ("tta_prefer_valid=true", "the vote puts valid Sudoku solutions first"),
    ("tta_seed=0", "picks the vote's copies"),
    ("search=0", "K in 1..64: K passes per puzzle, every segment a candidate, the verifier chooses (a table)"),
    ("search_noise=0.0", "S > 0: half the passes add Gaussian noise of std S to the latent state (needs search)"),
    ("search_seed=0", "picks the search's copies and its noise"),
]


def tta_options(cli: dict[str, Any]) -> tuple[int, bool, int]:
    """Pop `tta=K [tta_prefer_valid=true] [tta_seed=0]` (test-time augmentation, train/tta.py)."""
    k, prefer, seed = cli.pop("tta", 1), cli.pop("tta_prefer_valid", True), cli.pop("tta_seed", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"tta must be a whole number >= 1 (transformed copies per test puzzle), got {k!r}")
    if not isinstance(prefer, bool):
        raise UserError(f"tta_prefer_valid must be true or false, got {prefer!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"tta_seed must be a whole number >= 0, got {seed!r}")
    return k, prefer, seed


def search_options(cli: dict[str, Any]) -> tuple[int, float, int]:
    """Pop `search=K [search_noise=0] [search_seed=0]` (train/search.py); K=0: no search."""
    k, noise, seed = cli.pop("search", 0), cli.pop("search_noise", 0.0), cli.pop("search_seed", 0)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= SEARCH_MAX:
        raise UserError(
            f"search must be a whole number from 1 to {SEARCH_MAX} (forward passes per test puzzle), got {k!r}"
        )
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 10:
        raise UserError(f"search_noise must be a number from 0 to 10 (the noise's standard deviation), got {noise!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"search_seed must be a whole number >= 0, got {seed!r}")
    if k == 0 and noise > 0:
        raise UserError(f"search_noise={noise} needs search=K (how many passes to run), e.g. search=8")
    return k, float(noise), seed


def print_tta_table(m: dict[str, float], k: int) -> None:
    """Exact accuracy with the first j of the K copies, per vote rule, and the share any copy got right."""
    valid = f"k{k}/valid_first" in m
    head = f"  {'copies':>6} {'votes':>7}" + (f" {'valid first':>11}" if valid else "") + f" {'any copy right':>14}"
    print(head)
    for j in prefix_sizes(k):
        cells = f"  {j:>6} {m[f'k{j}/votes']:>7.4f}" + (f" {m[f'k{j}/valid_first']:>11.4f}" if valid else "")
        print(cells + f" {m[f'k{j}/any_copy']:>14.4f}")


def verifier_line(set_name: str, m: dict[str, float], kind: str) -> str:
    """The verifier as a metric: the share of final predictions that solve their puzzle, and of those unlike the label."""
    what = "a shortest path from S to G" if kind == "maze" else "a valid completion of the givens"
    note = "the label is one shortest path of possibly several" if kind == "maze" else "0 for a one-solution Sudoku"
    return (
        f"  verifier {set_name}: {m['valid_solution']:.4f} of predictions are valid solutions ({what}); "
        f"{m['valid_not_label']:.4f} valid but not the label ({note})"
    )


def print_search(found: dict[str, dict[str, Any]], k: int, noise: float, steps: int) -> None:
    """The search table per set (train/search.py), headed by what each pass was."""
    extra = f", pairs of clean and noisy (std {noise:g}) passes" if noise > 0 else ""
    print(
        f"search, {k} passes of {steps} ACT segments per puzzle, every segment a candidate (copies of the puzzle{extra}); "
        "paper protocol and at halt: pass 0 alone, as above; vote: each pass's last segment, most votes; search: "
        "every candidate, valid answers first, then votes, then Q-halt; any right: the ceiling of any choice"
    )
    for set_name, res in found.items():
        band = f", {res['hard']} in the hard band (>= 100 solver guesses, mix.json)" if res["hard"] else ""
        print(f"{set_name}: {res['puzzles']} puzzles{band}")
        for line in table_lines(res):
            print(line)


def print_per_step(m: dict[str, float], steps: int) -> None:
    """One row per ACT segment from evaluate(per_step=True)'s `step_<i>/...` means."""
    print("  segment  exact   token   says halt  halted by")
    for i in range(1, steps + 1):
        exact, token, says, halted = (
            m[f"step_{i}/{k}"] for k in ("exact_accuracy", "accuracy", "says_halt", "halted_by")
        )
        print(f"  {i:7d}  {exact:.4f}  {token:.4f}  {says:9.4f}  {halted:9.4f}")


def launch(cli: dict[str, Any]) -> None:
    d = init_distributed(str(cli.get("device", "auto")))
    try:
        tta, tta_prefer_valid, tta_seed = tta_options(cli)
        search, search_noise, search_seed = search_options(cli)
        ema = cli.pop("ema", "auto")
        per_step = cli.pop("per_step", False)
        if not isinstance(per_step, bool):
            raise UserError(f"per_step must be true or false, got {per_step!r}")
        config, ckpt, _ = load_eval_config(cli) if d.is_main else (None, "", [])
        if d.world_size > 1:
            obj = [(config, ckpt)]
            dist.broadcast_object_list(obj, src=0)
            config, ckpt = obj[0]
        assert config is not None
        rt = setup_runtime(config, d)
        eval_loader, eval_meta = create_dataloader(
            config,
            "test",
            d,
            rt.device,
            test_set_mode=True,
            epochs_per_iter=1,
            global_batch_size=eval_batch(config),
        )
        model_meta, note = model_shape(ckpt, config.data_path)
        if note and d.is_main:
            print(note, flush=True)
        if (eval_meta.seq_len, eval_meta.vocab_size) != (model_meta.seq_len, model_meta.vocab_size):
            raise UserError(
                f"{config.data_path} holds {puzzle_kind(eval_meta.seq_len, eval_meta.vocab_size, 1)} puzzles (sequence "
                f"{eval_meta.seq_len}, vocabulary {eval_meta.vocab_size}) but the model was trained on "
                f"{puzzle_kind(model_meta.seq_len, model_meta.vocab_size, 1)} (sequence {model_meta.seq_len}, "
                f"vocabulary {model_meta.vocab_size}); give a data_path of the kind it was trained on"
            )
        if eval_meta.num_puzzle_identifiers > model_meta.num_puzzle_identifiers:
            raise UserError(
                f"{config.data_path} has {eval_meta.num_puzzle_identifiers} puzzle identifiers but the model knows "
                f"{model_meta.num_puzzle_identifiers}: its puzzles are not ones this checkpoint can embed; "
                "evaluate it on a dataset built like the one it was trained on"
            )
        kind = puzzle_kind(eval_meta.seq_len, eval_meta.vocab_size, eval_meta.num_puzzle_identifiers)
        score = ["python", "dataset/score_arc.py", "--preds", os.path.dirname(ckpt) or ".", "--data", config.data_path]
        check_tta_kind(kind, tta, "tta", shell.join(score))
        examples = sum(eval_loader.dataset.set_sizes().values())  # type: ignore[attr-defined]
        check_tta_memory(examples, tta, eval_meta.seq_len, "tta")
        if search:
            check_search(kind, search, search_noise, shell.join(score))
            if d.is_main:
                check_output_dir(config.checkpoint_path or ".", ckpt)
        model, optimizers, lrs = create_model(config, model_meta, d, rt.device, rt.forward_dtype, rt.use_compile)
        weights = weights_file(ckpt, ema)
        load_checkpoint(weights, model.eager, config.data_path)

        name = os.path.basename(ckpt)
        step = (
            int(name.removeprefix("step_")) if name.startswith("step_") and name.removeprefix("step_").isdigit() else 0
        )
        state = TrainState(model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=step, total_steps=0)
        if search:
            check_search_memory(examples, search, state.head.halt_max_steps, eval_meta.seq_len)
        if d.is_main:
            which = "the weight average, ema=false for the raw weights" if weights != ckpt else "its weights"
            print(
                f"evaluating {weights} ({which}) on {config.data_path} ({rt.device.type}, {rt.forward_dtype})",
                flush=True,
            )
            print(": ".join(band_row([eval_loader.dataset])), flush=True)  # type: ignore[list-item]
        model.eager.eval()
        verify = kind if kind in ("sudoku", "maze") else None
        metrics = evaluate(config, state, eval_loader, eval_meta, d, rt.device, per_step=per_step, verify=verify)
        if d.is_main and metrics is not None:
            for set_name, m in metrics.items():
                print(f"{set_name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if not k.startswith("step_")))
                if per_step:
                    print_per_step(m, state.head.halt_max_steps)
                if verify is not None:
                    print(verifier_line(set_name, m, verify))
            for line in eval_headline(metrics, state.head.halt_max_steps):
                print(line)
            if config.eval_save_outputs:  # save_outputs=[] writes nothing
                print(f"predictions: {os.path.join(config.checkpoint_path or '', f'step_{step}_all_preds.{d.rank}')}")
        if tta > 1 and d.is_main:  # one process: K copies of each test puzzle, voted on whole grids
            steps = state.head.halt_max_steps
            scores = evaluate_tta(
                model, model.eager, config.data_path, eval_meta, tta, eval_batch(config) // d.world_size, steps,
                rt.device, prefer_valid=tta_prefer_valid, seed=tta_seed,
            )  # fmt: skip
            rule = "most votes, ties by mean sigmoid(q_halt)" + (
                ", valid solutions of the givens first" if tta_prefer_valid and eval_meta.seq_len == 81 else ""
            )
            print(f"test-time augmentation, {tta} transformed copies per puzzle ({rule}):")
            for set_name, m in scores.items():
                print(
                    f"{set_name}: tta_exact_accuracy={m['tta_exact_accuracy']:.4f}, tta_accuracy={m['tta_accuracy']:.4f} "
                    f"(one copy: exact {m['exact_accuracy']:.4f}, token {m['accuracy']:.4f})"
                    + (
                        f"; hard band: tta {m['hard_tta_exact_accuracy']:.4f}, one copy {m['hard_exact_accuracy']:.4f}"
                        if "hard_tta_exact_accuracy" in m
                        else ""
                    )
                )
                print_tta_table(m, tta)
        if search and d.is_main:  # one process: K passes of each test puzzle, every segment a candidate
            steps = state.head.halt_max_steps
            found = evaluate_search(
                model, model.eager, config.data_path, eval_meta, search, eval_batch(config) // d.world_size, steps,
                rt.device, noise=search_noise, seed=search_seed,
            )  # fmt: skip
            print_search(found, search, search_noise, steps)
            settings = {
                "checkpoint": weights, "data_path": config.data_path, "search": search, "search_noise": search_noise,
                "search_seed": search_seed, "halt_max_steps": steps, "device": str(rt.device),
            }  # fmt: skip
            paths = write_outputs(found, config.checkpoint_path or ".", f"step_{step}_search", settings)
            print(f"search table: {', '.join(paths)}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main() -> None:
    if wants_help(sys.argv[1:]):
        what = "Scores a checkpoint on its test split (the paper's protocol: every puzzle runs all ACT segments)."
        print(command_help("usage: python evaluate.py checkpoint=<run folder>/step_N [key=value ...]", what, KEYS))
        return
    try:
        cli = OmegaConf.to_container(OmegaConf.from_cli(sys.argv[1:]))
        launch(cli)  # type: ignore[arg-type]
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
