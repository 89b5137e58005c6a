"""Train HRM: `python pretrain.py data_path=... [key=value ...]` (Hydra overrides, as in the original).

Same loop, config keys, checkpoints and metrics as the original; the differences are fixes (see README):
CPU/MPS/CUDA, optional FlashAttention, a compile guard, W&B optional, a seeded sampler, config checked
once at start with clear errors, bucketed gradient all-reduce, metrics also in <run>/metrics.jsonl.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)
import utils.records  # noqa: F401  (early too: its clock, the time to accuracy, starts before torch's import)

# isort: split

import dataclasses
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import pydantic
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from adam_atan2 import AdamATan2
from dataset.format import PuzzleDatasetMetadata
from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
from models.attention import select_attention_backend
from models.layers import select_mlp_kernel
from models.losses import IGNORE_LABEL_ID, ACTLossHead
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from utils import checkpoint as ckpt
from utils import shell
from utils.config import (  # noqa: F401  (re-exported: tests and bench/ use pretrain.<name>, as in the original)
    PretrainConfig,
    Resumed,
    check_cli_overrides,
    check_writable,
    config_error,
    eval_batch,
    healthy_hint,
    remove_made_dirs,
    resolve_config,
    resolve_resume,
    resume_command,
    validate_config,
)
from utils.ema import EMA
from utils.errors import UserError, exit_with
from utils.functions import get_model_source_path, load_model_class
from utils.records import TimeToAccuracy
from utils.rng import ExploreRNG, loader_generator
from utils.runtime import (
    CompileGuard,
    Dist,
    allreduce_grads,
    compile_wanted,
    init_distributed,
    resolve_device,
    resolve_forward_dtype,
)
from utils.signals import StopSignals, ignore_stop_signals
from utils.tracking import Estimate, StepRate, Tracker, fmt_seconds, progress_bar
from utils.writes import WriteGuard

# ----------------------------------------------------------------------------------------------------------
# Config


def load_synced_config(hydra_config: Any, d: Dist) -> tuple[PretrainConfig, Resumed | None]:
    """Rank 0 validates and names the run (utils/config.py), then broadcasts, so every rank agrees on one
    config. Returns it with the checkpoint rank 0 verified for resume (None elsewhere: they read the files)."""
    from omegaconf import OmegaConf

    objects: list[Any] = [None]
    found = None
    if d.is_main:
        try:
            config, found = resolve_config(OmegaConf.to_container(hydra_config, resolve=True))  # type: ignore[arg-type]
            objects = [config]
        except UserError as e:
            objects = [e]
    if d.world_size > 1:
        dist.broadcast_object_list(objects, src=0)
    if isinstance(objects[0], UserError):
        raise objects[0]
    return objects[0], found


# ----------------------------------------------------------------------------------------------------------
# State


@dataclass
class TrainState:
    model: CompileGuard
    optimizers: list[torch.optim.Optimizer]
    optimizer_lrs: list[float]
    carry: Any
    step: int
    total_steps: int
    pending: PendingStep | None = None  # the last launched step, its metrics not read yet
    ema: EMA | None = None  # the weight average (ema=true)
    explore: ExploreRNG | None = None  # ACT exploration's own random stream (None: the global one)

    @property
    def head(self) -> ACTLossHead:
        """The eager loss head around the ACT model: the trainer's one way into the model (carry, halting, embedding)."""
        return cast(ACTLossHead, self.model.eager)


def create_dataloader(
    config: PretrainConfig, split: str, d: Dist, device: torch.device, **kwargs: Any
) -> tuple[DataLoader, PuzzleDatasetMetadata]:
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=config.seed,
            dataset_path=config.data_path,
            rank=d.rank,
            num_replicas=d.world_size,
            batch_key="eval_batch_size" if split == "test" and config.eval_batch_size else "global_batch_size",
            **kwargs,
        ),
        split=split,
    )
    # One worker process prefetching batches on GPU; in-process on CPU where a worker only costs start-up time.
    workers = 1 if device.type == "cuda" else 0
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=ignore_stop_signals if workers else None,
        prefetch_factor=8 if workers else None,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=loader_generator(config.seed, d.rank),  # not the global RNG, which exploration uses
    )
    return loader, dataset.metadata


def model_config_dict(
    config: PretrainConfig, meta: PuzzleDatasetMetadata, world_size: int, forward_dtype: str
) -> dict[str, Any]:
    return dict(
        **(config.arch.__pydantic_extra__ or {}),
        batch_size=config.micro_batch_size or config.global_batch_size // world_size,
        vocab_size=meta.vocab_size,
        seq_len=meta.seq_len,
        num_puzzle_identifiers=meta.num_puzzle_identifiers,
        causal=False,
    ) | {"forward_dtype": forward_dtype}


def create_model(
    config: PretrainConfig,
    meta: PuzzleDatasetMetadata,
    d: Dist,
    device: torch.device,
    forward_dtype: str,
    use_compile: bool,
    log=print,
) -> tuple[CompileGuard, list[torch.optim.Optimizer], list[float]]:
    model_cls = load_model_class(config.arch.name)
    loss_cls = load_model_class(config.arch.loss.name)
    try:
        model: nn.Module = model_cls(model_config_dict(config, meta, d.world_size, forward_dtype))
        model = loss_cls(model, **(config.arch.loss.__pydantic_extra__ or {}))
    except (pydantic.ValidationError, ValueError, TypeError) as e:
        raise UserError(
            f"bad arch config: {str(e).splitlines()[0] if isinstance(e, pydantic.ValidationError) else e}"
        ) from None
    model = model.to(device)

    if d.world_size > 1:  # every rank starts from rank 0's weights
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, src=0)

    optimizers: list[torch.optim.Optimizer] = []
    lrs: list[float] = []
    emb = cast(ACTLossHead, model).puzzle_emb
    if emb is not None:
        optimizers.append(
            CastedSparseEmbeddingSignSGD_Distributed(
                emb.buffers(),
                lr=0,
                weight_decay=config.puzzle_emb_weight_decay,
                world_size=d.world_size,
                module=emb,
            )
        )
        lrs.append(config.puzzle_emb_lr)
    optimizers.append(
        AdamATan2(model.parameters(), lr=0, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2))
    )
    lrs.append(config.lr)
    return CompileGuard(model, enabled=use_compile, log=log), optimizers, lrs


def cosine_schedule_with_warmup_lr_lambda(
    current_step: int,
    *,
    base_lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    min_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> float:
    """Linear warm-up to base_lr, then a cosine down to base_lr * min_ratio."""
    if current_step < num_warmup_steps:
        return base_lr * float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return base_lr * (
        min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    )


def compute_lr(base_lr: float, config: PretrainConfig, state: TrainState) -> float:
    return cosine_schedule_with_warmup_lr_lambda(
        state.step,
        base_lr=base_lr,
        num_warmup_steps=round(config.lr_warmup_steps),
        num_training_steps=state.total_steps,
        min_ratio=config.lr_min_ratio,
    )


# ----------------------------------------------------------------------------------------------------------
# Train and eval steps


@dataclass
class StepResult:
    step: int  # the step these metrics belong to
    metrics: dict[str, float]  # train/<k>, identical on every rank
    nonfinite: bool  # loss or a gradient was NaN/inf: the optimizers did not step
    stop: bool  # some rank received a stop signal
    save: bool  # rank 0's clock says a timed checkpoint is due


@dataclass
class PendingStep:
    step: int
    keys: list[str]
    values: torch.Tensor  # host copy (pinned on CUDA) of the all-reduced metric sums and flags
    done: torch.cuda.Event | None  # recorded after the copy
    lr: float
    global_batch_size: int


def train_batch(
    config: PretrainConfig,
    state: TrainState,
    batch: dict[str, torch.Tensor],
    global_batch_size: int,
    d: Dist,
    device: torch.device,
    stop_requested: bool = False,
    save_requested: bool = False,
) -> StepResult | None:
    """Launch one optimizer step on one global batch; return the *previous* step's result (None at the first).

    No host sync: the NaN guard is decided on the device (the optimizers take a `skip` flag and leave every
    weight and moment untouched when a loss or gradient is not finite), and the metric sums travel to the
    host while the next step runs. The host reads them after launching the next step's forward and backward,
    before its optimizer step, so a skipped step's count is taken back in time. `finish_step` reads the last.
    """
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    local = len(batch["inputs"])
    micro = config.micro_batch_size or local
    chunks = [{k: v[i : i + micro] for k, v in batch.items()} for i in range(0, local, micro)]
    emb = state.head.puzzle_emb

    def step(model: nn.Module) -> tuple[list[Any], torch.Tensor, dict[str, torch.Tensor]]:
        # Each micro-batch keeps its own ACT carry (its rows), so the result equals one big batch.
        carries = state.carry if state.carry is not None else [None] * len(chunks)
        new_carries, total_loss, total = [], torch.zeros((), device=device), {}
        for chunk, carry in zip(chunks, carries):
            carry = carry if carry is not None else state.head.initial_carry(chunk)
            new_carry, loss, metrics, _, _ = model(carry=carry, batch=chunk, return_keys=[])
            ((1 / global_batch_size) * loss).backward()
            if emb is not None and len(chunks) > 1:  # the embedding's row buffer is reused by the next chunk
                emb.stash_grad()
            new_carries.append(new_carry)
            total_loss = total_loss + loss.detach()
            total = {k: total.get(k, 0) + v for k, v in metrics.items()}
        return new_carries, total_loss, total

    def cleanup() -> None:
        for opt in state.optimizers:
            opt.zero_grad(set_to_none=True)
        if emb is not None:
            emb.pending.clear()

    with state.explore.active() if state.explore is not None else nullcontext():
        state.carry, loss, metrics = state.model.run("train", step, cleanup)
    state.step += 1

    params = [p for p in state.model.eager.parameters() if p.grad is not None]
    if d.world_size > 1:
        allreduce_grads(params)
    grads = [p.grad for p in params] + [b.grad for b in state.model.eager.buffers() if b.grad is not None]
    if emb is not None:
        grads += [g for _, g in emb.pending]
    finite = torch.isfinite(loss).all()
    if grads:
        finite = finite & torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())  # type: ignore[arg-type]

    keys = sorted(metrics)  # same order on every rank
    flags = [(~finite).float(), torch.full((), float(stop_requested), device=device)]
    flags.append(torch.full((), float(save_requested), device=device))  # torch.full: no host-to-device copy
    values = torch.cat([torch.stack([metrics[k].float() for k in keys]), torch.stack(flags)])
    if d.world_size > 1:
        dist.all_reduce(values)
    skip = values[-3] > 0  # any rank's loss or gradient not finite: every rank skips

    previous = finish_step(state)  # waits only for the previous step, long done by now
    lr_this_step = 0.0
    for opt, base_lr in zip(state.optimizers, state.optimizer_lrs):
        lr_this_step = compute_lr(base_lr, config, state)
        for group in opt.param_groups:
            group["lr"] = lr_this_step
        opt.step(skip=skip)  # type: ignore[call-arg]
        opt.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(skip)

    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=device.type == "cuda")
    host.copy_(values, non_blocking=True)
    done = None
    if device.type == "cuda":
        done = torch.cuda.Event()
        done.record()
    state.pending = PendingStep(state.step, keys, host, done, lr_this_step, global_batch_size)
    return previous


def finish_step(state: TrainState) -> StepResult | None:
    """Read the last launched step's metrics and flags (waiting for it); None if nothing is pending."""
    p, state.pending = state.pending, None
    if p is None:
        return None
    if p.done is not None:
        p.done.synchronize()
    v = p.values.tolist()
    nonfinite, stop, save = (x > 0 for x in v[-3:])
    if nonfinite:  # the optimizers left everything as it was; take back the step count they raised
        for opt in state.optimizers:
            opt.uncount_step()  # type: ignore[attr-defined]
    reduced = dict(zip(p.keys, v[: len(p.keys)]))
    count = max(reduced["count"], 1)
    out = {f"train/{k}": val / (p.global_batch_size if k.endswith("loss") else count) for k, val in reduced.items()}
    out["train/lr"] = p.lr
    return StepResult(p.step, out, nonfinite, stop, save)


def evaluate(
    config: PretrainConfig,
    state: TrainState,
    eval_loader: DataLoader,
    meta: PuzzleDatasetMetadata,
    d: Dist,
    device: torch.device,
    writes: WriteGuard | None = None,
    per_step: bool = False,
):
    """Run every test example for the full halt_max_steps; returns {set: {metric: mean}} on rank 0.

    Saves the outputs named in eval_save_outputs to <checkpoint_path>/step_<N>_all_preds.<rank>.
    per_step: also score every segment (`step_<i>/...`: exact and token accuracy if the prediction were taken
    there, the share of rows whose Q-head says halt there, the share halted by then) for evaluate.py's table.
    """
    set_ids = {name: i for i, name in enumerate(meta.sets)}
    saved: dict[str, list[torch.Tensor]] = {}
    keys: list[str] = []
    totals: torch.Tensor | None = None
    halt_max_steps = state.head.halt_max_steps
    says_halt = state.head.says_halt
    return_keys = sorted(set(config.eval_save_outputs) | {"logits", "q_halt_logits", "q_continue_logits"})

    def run_batch(model: nn.Module, batch: dict[str, torch.Tensor]):
        carry = state.head.initial_carry(batch)
        labels = batch["labels"]
        mask = labels != IGNORE_LABEL_ID
        n_labels = mask.sum(-1)
        rows = len(labels)
        halted = torch.zeros(rows, dtype=torch.bool, device=labels.device)
        exact_at = torch.zeros(rows, dtype=torch.bool, device=labels.device)
        token_at = torch.zeros(rows, dtype=torch.float32, device=labels.device)
        steps_at = torch.zeros(rows, dtype=torch.int32, device=labels.device)
        valid = n_labels > 0
        by_step: dict[str, torch.Tensor] = {}
        # The paper's protocol: every row runs all halt_max_steps segments and is scored on the last one (no
        # per-segment `all_finish` host sync). Beside it, each row is also scored at the first segment where
        # its Q-head says halt, the prediction training would have stopped at.
        for i in range(halt_max_steps):
            carry, _, metrics, preds, _ = model(carry=carry, batch=batch, return_keys=return_keys)
            now = ~halted
            says = says_halt(preds["q_halt_logits"], preds["q_continue_logits"])
            if i < halt_max_steps - 1:
                now = now & says
            correct = (mask & (preds["logits"].argmax(-1) == labels)).sum(-1)
            exact_at = torch.where(now, correct == n_labels, exact_at)
            token_at = torch.where(now, correct / n_labels.clamp_min(1), token_at)
            steps_at = torch.where(now, i + 1, steps_at)
            halted = halted | now
            if per_step:
                by_step |= {
                    f"step_{i + 1}/exact_accuracy": (valid & (correct == n_labels)).sum(),
                    f"step_{i + 1}/accuracy": torch.where(valid, correct / n_labels.clamp_min(1), 0).sum(),
                    f"step_{i + 1}/says_halt": (valid & says).sum(),
                    f"step_{i + 1}/halted_by": (valid & halted).sum(),
                }
        metrics = (
            metrics
            | {
                "exact_accuracy_at_halt": (valid & exact_at).sum(),
                "accuracy_at_halt": torch.where(valid, token_at, 0).sum(),
                "steps_at_halt": torch.where(valid, steps_at, 0).sum(),
            }
            | by_step
        )
        return metrics, {k: v for k, v in preds.items() if k in config.eval_save_outputs}

    bar = None
    dataset = getattr(eval_loader, "dataset", None)
    if d.is_main and isinstance(dataset, PuzzleDataset):
        per_set = [-(n // -eval_batch(config)) for n in dataset.set_sizes().values()]
        total = sum(min(n, config.eval_batches or n) for n in per_set)
        bar = progress_bar(total, 0, eval_batch(config), desc="eval")
    with torch.inference_mode():
        seen: dict[str, int] = {}
        for set_name, batch, gbs in eval_loader:
            seen[set_name] = seen.get(set_name, 0) + 1
            if config.eval_batches is not None and seen[set_name] > config.eval_batches:
                continue  # bounded eval: the first N batches of each set
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            metrics, preds = state.model.run("eval", lambda m, b=batch: run_batch(m, b))
            if bar is not None:
                bar.update(1)
            # this rank's real (unpadded) rows; the original also saved the padding of the last batch
            local = len(batch["inputs"])
            real = min(local, max(0, gbs - d.rank * local))
            for collection in (batch, preds):
                for k, v in collection.items():
                    if k in config.eval_save_outputs:
                        saved.setdefault(k, []).append(v[:real].cpu())
            if totals is None:
                keys = sorted(metrics)
                totals = torch.zeros(len(set_ids), len(keys), dtype=torch.float64, device=device)
            totals[set_ids[set_name]] += torch.stack([metrics[k].to(torch.float64) for k in keys])

    if bar is not None:
        bar.close()
    if saved and config.checkpoint_path is not None:
        os.makedirs(config.checkpoint_path, exist_ok=True)
        path = os.path.join(config.checkpoint_path, f"step_{state.step}_all_preds.{d.rank}")
        preds = {k: torch.cat(v, dim=0) for k, v in saved.items()}
        if writes is None:
            ckpt.atomic_save(preds, path)
        else:
            writes.call(f"the eval predictions {path}", ckpt.atomic_save, preds, path)

    if totals is None:
        return None
    if d.world_size > 1:
        dist.reduce(totals, dst=0)
    if not d.is_main:
        return None
    table = totals.cpu().tolist()
    result = {}
    for set_name, i in set_ids.items():
        row = dict(zip(keys, table[i]))
        count = max(row.pop("count"), 1)
        result[set_name] = {k: v / count for k, v in row.items()}
    return result


def eval_headline(results: dict[str, dict[str, float]], halt_max_steps: int) -> list[str]:
    """One plain line per test set: the paper's score first, then the score where the Q-head halts."""
    lines = []
    for name, m in results.items():
        if "exact_accuracy" not in m:
            continue
        line = f"{name}: exact {m['exact_accuracy']:.4f}, token {m['accuracy']:.4f} after all {halt_max_steps} ACT steps (paper protocol)"
        if "exact_accuracy_at_halt" in m:
            line += (
                f"; where the Q-head halts: exact {m['exact_accuracy_at_halt']:.4f}, "
                f"token {m['accuracy_at_halt']:.4f}, mean {m['steps_at_halt']:.2f} steps"
            )
        lines.append(line)
    return lines


# ----------------------------------------------------------------------------------------------------------
# Files


@dataclass
class Progress:
    """Where the run is, beyond the step: saved in every checkpoint."""

    passes_done: int = 0  # completed passes over the training data (= evals done)
    batches_into_pass: int = 0  # batches of the current pass already trained on
    eval_steps: list[int] = field(default_factory=list)  # steps whose weights are kept (checkpoint_every_eval)
    best_step: int | None = None  # best eval exact accuracy so far...
    best_value: float | None = None  # ...and its value
    nan_streak: int = 0
    early_stop_streak: int = 0
    timing: dict = field(default_factory=dict)  # time to accuracy so far (utils/records.py)
    # Health: a checkpoint is healthy when a forward pass with its weights gave finite values: its own eval
    # (evals run on exactly the saved weights), or else the next training step's loss. Never pruned.
    healthy_step: int | None = None  # the newest checkpoint known healthy
    pending_check: int | None = None  # the newest checkpoint, waiting for the next step's loss to judge it


def save_checkpoint(
    config: PretrainConfig,
    state: TrainState,
    prog: Progress,
    d: Dist,
    why: str,
    eval_finite: bool | None = None,
    tracker: Tracker | None = None,
    writes: WriteGuard | None = None,
) -> str | None:
    """Write a complete checkpoint (see utils/checkpoint.py); returns its weights path, None if not written.
    `eval_finite`: for the checkpoint of an eval, whether all its metrics were finite."""
    if config.checkpoint_path is None:
        return None
    w_path = ckpt.paths(config.checkpoint_path, state.step)[0]
    device = next(state.model.eager.parameters()).device

    # Nothing non-finite is written: checked on the device, before any write, by every rank (carries differ;
    # weights and moments are the same on every rank, so rank 0 checks those).
    weights = state.model.eager.state_dict()
    averaged = state.ema.weights(state.model.eager) if state.ema is not None else None
    optim = [o.state_dict() for o in state.optimizers]
    bad_model = ckpt.nonfinite({"weights": weights, "ema": averaged, "optimizers": optim}) if d.is_main else []
    bad_carry = ckpt.nonfinite({"carry": state.carry})
    bad = [bool(bad_model), bool(bad_carry)]
    if d.world_size > 1:
        flags = torch.tensor([float(b) for b in bad], device=device)
        dist.all_reduce(flags)
        bad = [f > 0 for f in flags.tolist()]
    if any(bad):
        names = ", ".join((bad_model + bad_carry)[:3]) or "another rank's ACT carry"
        hint = healthy_hint(config, prog.healthy_step)
        if bad[0]:
            raise UserError(f"step {state.step}: non-finite values in {names}; not saved, training stopped; {hint}")
        if d.is_main and writes is not None:
            writes.warn_once(
                "nonfinite",
                f"not saving checkpoint step_{state.step}: non-finite values in {names} (said once until a save succeeds); {hint}",
            )
        return None

    # This checkpoint's own verdict: its eval, else the next step's loss (pending); a step that was just
    # skipped for a non-finite loss means these weights already gave one.
    saved = dataclasses.replace(prog)
    if eval_finite is not None:
        saved.pending_check = None
        if eval_finite:
            saved.healthy_step = state.step
    else:
        saved.pending_check = state.step if prog.nan_streak == 0 else None
    verdict = eval_finite if eval_finite is not None else (None if prog.nan_streak == 0 else False)

    ok = True
    error = ""
    try:
        os.makedirs(config.checkpoint_path, exist_ok=True)
        if not d.is_main:
            ckpt.write_rank(
                config.checkpoint_path, state.step, d.rank, state.carry, ckpt.rng_state() | explore_state(state)
            )
    except OSError as e:
        ok, error = False, f"rank {d.rank}: {e}"
    if d.world_size > 1:
        flag = torch.tensor([0.0 if ok else 1.0], device=device)
        dist.all_reduce(flag)
        ok = flag.item() == 0
    if ok and d.is_main:
        try:
            ckpt.write(
                config.checkpoint_path,
                state.step,
                weights,
                averaged,
                total_steps=state.total_steps,
                optimizers=optim,
                carry=state.carry,
                rng=ckpt.rng_state() | explore_state(state),
                progress=dataclasses.asdict(saved),
                world_size=d.world_size,
                config=config.model_dump(),
                data_path=config.data_path,
                why=why,
                verdict=verdict,
                metrics_bytes=tracker.size() if tracker is not None else None,
            )
        except OSError as e:
            ok, error = False, str(e)
    if d.world_size > 1:
        flag = torch.tensor([0.0 if ok else 1.0], device=device)
        dist.all_reduce(flag)
        ok = flag.item() == 0
    if not ok:
        msg = f"could not write checkpoint step_{state.step} in {config.checkpoint_path} ({error or 'another rank failed'}); the previous checkpoint is intact"
        if config.save_error == "stop":
            raise UserError(msg + "; free some disk space or set checkpoint_path, then resume=auto")
        if d.is_main:
            print(f"warning: {msg}; continuing (save_error=continue)", flush=True)
        return None
    prog.healthy_step, prog.pending_check = saved.healthy_step, saved.pending_check
    if writes is not None:
        writes.reset("nonfinite")
    if d.is_main:
        protect = {s for s in (prog.best_step, prog.healthy_step) if s is not None}
        ckpt.prune(config.checkpoint_path, config.keep_last, protect_full=protect, keep_weights=set(prog.eval_steps))
    return w_path


def explore_state(state: TrainState) -> dict[str, Any]:
    sd = state.explore.state_dict() if state.explore is not None else None
    return {"explore": sd} if sd is not None else {}


def save_code_and_config(config: PretrainConfig) -> None:
    """all_config.yaml (what evaluate.py reads) and a copy of the model code, beside the checkpoints.
    The original wrote these only when W&B was on."""
    if config.checkpoint_path is None:
        return
    os.makedirs(config.checkpoint_path, exist_ok=True)
    # each through a temporary name: a full disk never leaves a truncated all_config.yaml for evaluate.py
    for ident in (config.arch.name, config.arch.loss.name):
        src = get_model_source_path(ident)
        if src:
            _replace_atomically(
                os.path.join(config.checkpoint_path, os.path.basename(src)), lambda p, s=src: shutil.copy(s, p)
            )
    path = os.path.join(config.checkpoint_path, "all_config.yaml")
    _replace_atomically(path, lambda p: _dump_yaml(config.model_dump(), p))


def _dump_yaml(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(obj, f)


def _replace_atomically(path: str, write: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ----------------------------------------------------------------------------------------------------------
# Main


@dataclass
class Runtime:
    d: Dist
    device: torch.device
    forward_dtype: str
    use_compile: bool
    report: list[tuple[str, str]]


def setup_runtime(config: PretrainConfig, d: Dist) -> Runtime:
    device, device_desc = resolve_device(config.device, d.local_rank)
    forward_dtype, dtype_why = resolve_forward_dtype(
        (config.arch.__pydantic_extra__ or {}).get("forward_dtype"), device
    )
    try:
        attn, attn_why = select_attention_backend(config.attn_backend, device, getattr(torch, forward_dtype))
        mlp, mlp_why = select_mlp_kernel(config.mlp_kernel, device, getattr(torch, forward_dtype))
    except ValueError as e:
        raise UserError(str(e)) from None
    use_compile, compile_why = compile_wanted(config.compile, device)
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    report = [
        ("versions", f"Python {sys.version.split()[0]}, torch {torch.__version__}{cuda}"),
        ("device", device_desc),
        ("attention", f"{attn} ({attn_why})" if attn_why else attn),
        ("SwiGLU", f"{mlp} ({mlp_why})"),
        ("compile", f"{'on' if use_compile else 'off'} ({compile_why})"),
        ("forward dtype", f"{forward_dtype} ({dtype_why})"),
        ("world size", f"{d.world_size}" + (f" ({d.backend})" if d.backend else "")),
    ]
    return Runtime(d, device, forward_dtype, use_compile, report)


def print_report(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


def launch(hydra_config: Any) -> None:
    d = init_distributed(str(hydra_config.get("device", "auto")))
    try:
        config, resumed = load_synced_config(hydra_config, d)
        torch.random.manual_seed(config.seed + d.rank)
        rt = setup_runtime(config, d)
        run(config, rt, resumed)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def is_oom(e: BaseException) -> bool:
    """Out of memory on the GPU, or on the CPU: torch's allocator raises a RuntimeError
    ("[enforce fail at alloc_cpu.cpp:...] DefaultCPUAllocator: can't allocate memory"), numpy a MemoryError."""
    return isinstance(e, torch.OutOfMemoryError | MemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(e)


def oom_message(e: BaseException, config: PretrainConfig, d: Dist, device: torch.device, phase: str = "train") -> str:
    local = config.global_batch_size // d.world_size
    micro = config.micro_batch_size or local
    figures = ""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        figures = (
            f" (GPU {torch.cuda.get_device_name(device)}: {total / 2**30:.1f} GiB, {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB "
            f"allocated by this run, {free / 2**30:.1f} GiB free)"
        )
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        figures = (
            f" (CPU memory: {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB in this machine)"
        )
    first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    where = "GPU memory" if device.type == "cuda" else "memory"
    if phase == "eval":
        batch = eval_batch(config)
        return (
            f"out of {where} while evaluating batches of {batch}{figures}. Set eval_batch_size={max(1, batch // 2)} "
            f"(same metrics, less memory); close other programs. {first}"
        )
    half = max(1, micro // 2)
    while local % half:
        half -= 1
    return (
        f"out of {where} at {micro} examples per forward pass{figures}. "
        f"Set micro_batch_size={half} (same results, less memory) or lower global_batch_size; "
        f"close other programs{' on the GPU' if device.type == 'cuda' else ''}. {first}"
    )


def evaluate_command(run_dir: str, step: int) -> str:
    script = os.path.join(os.path.dirname(sys.argv[0]), "evaluate.py")  # beside pretrain.py as it was invoked
    return shell.command(script, checkpoint=os.path.join(run_dir, f"step_{step}"))


def finished_message(config: PretrainConfig, prog: Progress, step: int, already: bool) -> str:
    """The end of a run, or a resume of one that has ended: where its checkpoints are, how to evaluate them."""
    run_dir = str(config.checkpoint_path)
    head = f"run {config.run_name} " + ("is already finished" if already else "finished")
    lines = [
        f"{head} (step {step:,}, {prog.passes_done} evaluation(s)); last checkpoint: {shell.quote(os.path.join(run_dir, f'step_{step}'))}"
    ]
    lines.append(f"evaluate it:\n  {evaluate_command(run_dir, step)}")
    best = prog.best_step
    if best is not None and best != step and prog.best_value and os.path.isfile(os.path.join(run_dir, f"step_{best}")):
        lines.append(
            f"best eval (exact accuracy {prog.best_value:.4f}) was step_{best}:\n  {evaluate_command(run_dir, best)}"
        )
    if already:
        lines.append("nothing left to train: a longer schedule (epochs=...) is a new run, with another checkpoint_path")
    return "\n".join(lines)


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


def restore(
    state: TrainState,
    saved: tuple,
    d: Dist,
    device: torch.device,
    local_batch: int,
    micro_batch: int,
    seq_len: int,
    log,
) -> Progress:
    """Load a full-state checkpoint into a freshly built run (weights, optimizers, RNG, carry, position)."""
    step, weights, full, folder = saved
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}
    own = state.model.eager.state_dict()
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if wrong or own.keys() != weights.keys():
        what = (
            f"tensor {wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, the model of its {ckpt.STATE_SUFFIX} expects {tuple(own[wrong[0]].shape)}"
            if wrong
            else "its tensor names differ from the model's"
        )
        raise UserError(
            f"{os.path.join(folder, f'step_{step}')}: the weights file does not belong to its {ckpt.STATE_SUFFIX} ({what}); "
            "resume from another checkpoint"
        )
    state.model.eager.load_state_dict(weights)
    for opt, sd in zip(state.optimizers, full["optimizers"]):
        opt.load_state_dict(sd)
    state.step = step
    if state.ema is not None:
        averaged = ckpt.load_ema(folder, step, full)
        if averaged is not None:
            state.ema.load_state_dict(averaged)
        else:
            log(f"step_{step} has no weight average (trained without ema=true): the average starts from its weights")
    carry, rng = full["carry"], full["rng"]
    if d.world_size != full["world_size"]:
        log(
            f"resuming on {d.world_size} processes a run saved on {full['world_size']}: ACT carries restart (rows in flight begin anew)"
        )
        carry = None
    elif d.rank > 0:
        carry, rng = ckpt.read_rank(folder, step, d.rank)
    if carry is not None and len(carry) != -(local_batch // -micro_batch):
        log("resuming with another micro_batch_size: ACT carries restart (rows in flight begin anew)")
        carry = None
    if carry is not None:
        dummy = {
            k: torch.zeros(micro_batch, *shape, dtype=torch.int32, device=device)
            for k, shape in (("inputs", (seq_len,)), ("labels", (seq_len,)), ("puzzle_identifiers", ()))
        }
        template = state.head.initial_carry(dummy)
        state.carry = [ckpt.carry_from_dict(template, c, device) for c in carry]
    ckpt.set_rng_state(rng)
    if state.explore is not None:
        # Checkpoints written before exploration had its own stream: it drew from the device's global one,
        # saved beside it, so it continues from there (as the old code would have, minus the loader's draw).
        explore = rng.get("explore")
        if explore is None:
            explore = {"device": device.type, "state": rng.get("cuda" if device.type == "cuda" else "torch")}
        state.explore.load_state_dict(explore)
    return Progress(**full["progress"])


def run(config: PretrainConfig, rt: Runtime, resumed: Resumed | None = None) -> None:
    """Train and evaluate. `resumed`: the checkpoint load_synced_config verified on rank 0 (read once)."""
    d, device = rt.d, rt.device
    epochs_per_iter = config.eval_interval if config.eval_interval is not None else config.epochs
    total_iters = config.epochs // epochs_per_iter

    train_loader, train_meta = create_dataloader(
        config,
        "train",
        d,
        device,
        test_set_mode=False,
        epochs_per_iter=epochs_per_iter,
        global_batch_size=config.global_batch_size,
    )
    eval_loader, eval_meta = create_dataloader(
        config, "test", d, device, test_set_mode=True, epochs_per_iter=1, global_batch_size=eval_batch(config)
    )

    total_steps = int(
        config.epochs * train_meta.total_groups * train_meta.mean_puzzle_examples / config.global_batch_size
    )
    steps_per_pass = int(
        epochs_per_iter * train_meta.total_groups * train_meta.mean_puzzle_examples // config.global_batch_size
    )
    if total_steps <= 0 or steps_per_pass <= 0:
        raise UserError(
            f"global_batch_size={config.global_batch_size} is larger than one pass of training data "
            f"({train_meta.total_groups} groups x {epochs_per_iter} epochs): lower global_batch_size or raise eval_interval/epochs"
        )
    # total_steps (the original's formula) sets the lr schedule; the loop trains whole batches of each pass,
    # so it ends at total_iters * steps_per_pass when that is fewer (each pass drops its partial last batch).
    # With one example per puzzle (Sudoku, Maze) a pass is exactly steps_per_pass batches; with several
    # (ARC) a pass's count varies a little with the puzzles drawn, so the plan is approximate.
    planned = min(total_steps, total_iters * steps_per_pass)
    exact_plan = train_meta.mean_puzzle_examples == 1

    local_batch = config.global_batch_size // d.world_size
    if config.micro_batch_size is not None and local_batch % config.micro_batch_size != 0:
        raise UserError(
            f"micro_batch_size={config.micro_batch_size} must divide the per-process batch {local_batch} "
            f"(global_batch_size {config.global_batch_size} / {d.world_size} processes)"
        )
    log = print if d.is_main else (lambda *_: None)
    model, optimizers, lrs = create_model(config, train_meta, d, device, rt.forward_dtype, rt.use_compile, log=log)
    state = TrainState(
        model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=0, total_steps=total_steps
    )
    if config.ema:
        state.ema = EMA(model.eager, config.ema_rate)
    state.explore = ExploreRNG(config.seed, d.rank, device)

    prog = Progress()
    resumed_at: int | None = None
    metrics_bytes = None
    if config.resume is not None:
        saved = resumed
        if saved is None:  # other ranks (or rank 0 without a cache) read the files named in the config
            run_dir, name = os.path.split(config.resume)
            step = int(name.removeprefix("step_"))
            saved = (step, *ckpt.load_complete(run_dir, step), run_dir)
        if saved[2]["dataset"] != ckpt.dataset_fingerprint(config.data_path):
            raise UserError(
                f"{config.resume} was trained on a different build of {config.data_path} (counts, vocab or identifiers differ)"
            )
        local_batch = config.global_batch_size // d.world_size
        prog = restore(
            state, saved, d, device, local_batch, config.micro_batch_size or local_batch, train_meta.seq_len, log
        )
        cast(PuzzleDataset, train_loader.dataset).set_position(prog.passes_done, prog.batches_into_pass)
        resumed_at = state.step
        metrics_bytes = saved[2].get("metrics_bytes")
        if d.is_main and os.path.realpath(saved[3]) == os.path.realpath(str(config.checkpoint_path)):
            ckpt.supersede_newer(saved[3], saved[0], log)
        if prog.passes_done >= total_iters:  # nothing left to train or evaluate
            log(finished_message(config, prog, state.step, already=True))
            return

    writes = WriteGuard(config.save_error, hint=lambda: resume_command(config), log=log)
    tracker = Tracker(config.checkpoint_path, enabled=d.is_main)
    tracker.on_error = lambda e: writes.failed("metrics.jsonl", e)
    progress = None
    if d.is_main:
        ckpt.clean_stale(str(config.checkpoint_path), log)
        if config.resume is not None:  # steps after the checkpoint will be trained (and logged) again
            writes.call("metrics.jsonl", tracker.rewind, state.step, metrics_bytes)
        n_params = sum(p.numel() for p in model.eager.parameters())
        wandb_status = tracker.start_wandb(
            config.wandb_mode, config.project_name or "", config.run_name or "", config.model_dump()
        )
        writes.call("all_config.yaml or the model code copy", save_code_and_config, config)
        print(f"training {'TRM' if 'recursive_reasoning' in config.arch.name else 'HRM'}: {config.run_name}")
        train_examples = int(train_meta.total_groups * train_meta.mean_puzzle_examples)
        test_examples = sum(cast(PuzzleDataset, eval_loader.dataset).set_sizes().values())
        emb_params = sum(b.numel() for n, b in model.eager.named_buffers() if n.endswith("puzzle_emb.weights"))
        eval_plan = (
            f"{total_iters} evals of {test_examples:,} test examples, {state.head.halt_max_steps} ACT steps each"
        )
        if config.eval_batches is not None:
            eval_plan += f" (at most {config.eval_batches} batches of {eval_batch(config)} per set)"
        rows = rt.report + [
            (
                "optimizer",
                f"AdamATan2 (pure PyTorch, {'multi-tensor' if device.type != 'cpu' else 'per-tensor'}) + sign-SGD puzzle embedding",
            ),
            (
                "data",
                f"{shell.quote(config.data_path)}: sets {', '.join(train_meta.sets)}; {train_meta.total_groups:,} train groups (~{train_examples:,} "
                f"examples per epoch), {test_examples:,} test examples; seq {train_meta.seq_len}, vocab {train_meta.vocab_size}",
            ),
            (
                "parameters",
                f"{n_params:,} model + {emb_params:,} puzzle-embedding table ({train_meta.num_puzzle_identifiers:,} ids)",
            ),
            ("steps", plan_line(config, planned, total_steps, exact_plan, steps_per_pass, total_iters)),
            ("eval plan", eval_plan),
            ("run folder", shell.quote(str(config.checkpoint_path))),
            ("resumed", f"from step {state.step} ({config.resume})" if config.resume else "no (new run)"),
            ("W&B", wandb_status),
        ]
        if device.type == "cpu" and n_params > 5_000_000:
            rows.append(
                (
                    "note",
                    "the paper's model on a CPU: fine to try, but expect weeks for a full recipe (see the estimate below); use a GPU or `python demo.py`",
                )
            )
        print_report(rows)
        if state.step == 0:
            tracker.log({"num_params": n_params}, step=0)
    rate = StepRate()
    if d.is_main:
        progress = progress_bar(planned, state.step, config.global_batch_size, rate=rate)

    shown_acc = 0.0
    estimate = Estimate(state.step, planned, total_iters - prog.passes_done, log, rate, compiled=rt.use_compile)
    timing = TimeToAccuracy.resumed(prog.timing)
    phase = "train"

    def stop_plan() -> str:
        """What a stop signal does now, for the line printed the moment it arrives."""
        if phase == "eval":
            return "finishing the evaluation, then saving a checkpoint and exiting"
        sps = rate.seconds_per_step() or rate.first
        # one process stops after the step it is in; several agree on the stop through the next step's
        # all-reduced flags, so they finish one more
        steps = 1 if d.world_size == 1 else 2
        what = "this step" if steps == 1 else "this step and the next (all processes stop at the same step)"
        took = f" (at most ~{fmt_seconds(steps * sps)}: a step takes {fmt_seconds(sps)})" if sps else ""
        return f"finishing {what}{took}, then saving a checkpoint and exiting"

    last_save = time.monotonic()
    stop_reason = ""
    eval_finite = True

    def handle(r: StepResult) -> bool:
        """Bookkeeping of one finished step (steps finish one behind the launches). True: a save is asked for."""
        nonlocal shown_acc, stop_reason
        metrics = r.metrics
        if prog.pending_check is not None and r.step == prog.pending_check + 1:
            # the first loss computed with that checkpoint's weights: its verdict
            if not r.nonfinite:
                prog.healthy_step = prog.pending_check
            elif d.is_main:
                why = f"step {r.step}, the first with its weights, had a non-finite loss"
                writes.call(
                    "a checkpoint's health marker", ckpt.mark_unhealthy, config.checkpoint_path, prog.pending_check, why
                )
            prog.pending_check = None
        if r.nonfinite:
            prog.nan_streak += 1
            log(f"step {r.step}: non-finite loss or gradient; step skipped ({prog.nan_streak} in a row)")
            if config.nan_policy == "stop" or prog.nan_streak >= config.max_nan_skips:
                stop_reason = (
                    f"non-finite loss or gradients ({prog.nan_streak} step(s) in a row, nan_policy={config.nan_policy})"
                )
        else:
            prog.nan_streak = 0
        if config.early_stop_exact_accuracy is not None and metrics["train/count"] > 0:
            above = metrics["train/exact_accuracy"] >= config.early_stop_exact_accuracy
            prog.early_stop_streak = prog.early_stop_streak + 1 if above else 0
            if prog.early_stop_streak >= config.early_stop_patience and not stop_reason:
                stop_reason = (
                    f"train exact accuracy >= {config.early_stop_exact_accuracy} for {config.early_stop_patience} steps"
                )
        if d.is_main:
            tracker.log(metrics | {"train/skipped": float(r.nonfinite)}, step=r.step)
            progress.update(r.step - progress.n)  # type: ignore[union-attr]
            if metrics["train/count"] > 0:  # accuracy only means something on steps where rows halted
                shown_acc = metrics["train/accuracy"]
            progress.set_postfix(loss=f"{metrics['train/lm_loss']:.3f}", acc=f"{shown_acc:.3f}", refresh=False)  # type: ignore[union-attr]
        if r.stop and not stop_reason:
            stop_reason = f"{signals.requested or 'a signal'} received"
        return r.stop or r.save

    def settle(results: list[StepResult | None], save: bool = False) -> bool:
        """Handle finished steps; checkpoint the last launched step when asked. True: stop training."""
        nonlocal last_save
        while True:
            for r in results:
                if r is not None:
                    save |= handle(r)
            if stop_reason.startswith("non-finite"):
                return True  # never checkpoint weights that just saw NaNs: the last checkpoint stays the one to resume
            if not (save or stop_reason) or state.pending is None:
                break
            results = [finish_step(state)]  # a checkpoint holds every launched step, read and counted
        if save or stop_reason:
            if save_checkpoint(config, state, prog, d, stop_reason or "interval", None, tracker, writes) and d.is_main:
                last_save = time.monotonic()
            rate.pause()  # the write is not a training step
        return bool(stop_reason)

    with StopSignals(log, stop_plan) as signals:
        for it in range(prog.passes_done, total_iters):
            if d.is_main:
                where = f"Epoch {it * epochs_per_iter}"
                if resumed_at is not None and it == prog.passes_done and prog.batches_into_pass:
                    into = prog.batches_into_pass * epochs_per_iter // steps_per_pass
                    where = (
                        f"Epoch {it * epochs_per_iter + into} (resumed at step {resumed_at:,} of {planned:,}: "
                        f"{prog.batches_into_pass} of {steps_per_pass} batches done in the pass from epoch {it * epochs_per_iter})"
                    )
                elif resumed_at is not None and it == prog.passes_done:
                    where += f" (resumed at step {resumed_at:,} of {planned:,})"
                print(f"[Rank {d.rank}, World Size {d.world_size}]: {where}", flush=True)
            model.eager.train()
            for _set, batch, gbs in train_loader:
                if state.step >= state.total_steps:
                    break
                if signals.requested and d.world_size == 1 and not stop_reason:
                    # One process needs no agreement: stop after the step the signal arrived in, read and saved.
                    stop_reason = f"{signals.requested} received"
                    if settle([]):
                        break
                timed = (
                    d.is_main
                    and config.checkpoint_minutes is not None
                    and time.monotonic() - last_save > 60 * config.checkpoint_minutes
                )
                try:
                    res = train_batch(config, state, batch, gbs, d, device, signals.requested is not None, timed)
                except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                    if not is_oom(e):
                        raise
                    raise UserError(oom_message(e, config, d, device)) from None
                prog.batches_into_pass += 1
                if d.is_main:
                    rate.tick(state.step)
                    estimate.tick(state.step)
                interval_due = config.checkpoint_interval is not None and state.step % config.checkpoint_interval == 0
                if settle([res], save=interval_due):
                    break
            if not stop_reason:
                settle([finish_step(state)])  # the pass's last step
            if stop_reason:
                break

            model.eager.eval()
            phase = "eval"
            try:
                with state.ema.swapped_in() if state.ema is not None else nullcontext():
                    results = evaluate(config, state, eval_loader, eval_meta, d, device, writes)
                raw = None
                if state.ema is not None and config.ema_eval_raw:  # the live weights too, for comparison
                    quiet = config.model_copy(update={"eval_save_outputs": []})
                    raw = evaluate(quiet, state, eval_loader, eval_meta, d, device, writes)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not is_oom(e):
                    raise
                raise UserError(oom_message(e, config, d, device, phase="eval")) from None
            eval_finite = all(
                math.isfinite(v) for r in (results, raw) if r is not None for m in r.values() for v in m.values()
            )
            prog.passes_done, prog.batches_into_pass = it + 1, 0
            if d.is_main and results is not None:
                flat = {f"{s}/{k}": v for s, m in results.items() for k, v in m.items()}
                flat |= {f"raw/{s}/{k}": v for s, m in (raw or {}).items() for k, v in m.items()}
                # since the command's start, earlier jobs of a resumed run included
                flat["elapsed_s"] = timing.elapsed()
                tracker.log(flat, step=state.step)
                print("eval " + ", ".join(f"{k}={v:.4f}" for k, v in flat.items()), flush=True)
                steps = state.head.halt_max_steps
                for line in eval_headline(results, steps):
                    print(f"  {'EMA ' if state.ema is not None else ''}{line}", flush=True)
                for line in eval_headline(raw or {}, steps):
                    print(f"  raw {line}", flush=True)
                exact = [m["exact_accuracy"] for m in results.values() if "exact_accuracy" in m]
                if exact and (prog.best_value is None or sum(exact) / len(exact) > prog.best_value):
                    prog.best_step, prog.best_value = state.step, sum(exact) / len(exact)
                if exact:
                    for line in timing.update(sum(exact) / len(exact), state.step):
                        print(f"  {line}", flush=True)
                    prog.timing = timing.state_dict()
            if d.world_size > 1:  # every rank needs rank 0's best_step for pruning decisions to agree
                obj = [(prog.best_step, prog.best_value, eval_finite)]
                dist.broadcast_object_list(obj, src=0)
                prog.best_step, prog.best_value, eval_finite = obj[0]
            if config.checkpoint_every_eval or it == total_iters - 1:
                prog.eval_steps.append(state.step)
            path = save_checkpoint(config, state, prog, d, "eval", eval_finite, tracker, writes)
            if path:
                last_save = time.monotonic()
                log(f"checkpoint: {shell.quote(path)}")
            phase = "train"
            rate.pause()  # the evaluation (and its compile) is not training time
            if signals.requested:
                stop_reason = f"{signals.requested} received"
                break

    if progress is not None:
        progress.close()
    tracker.finish()
    if timing.best is not None:
        log(timing.summary())
    if not stop_reason and prog.passes_done >= total_iters:
        log(finished_message(config, prog, state.step, already=False))
    if stop_reason:
        log(f"stopped at step {state.step}: {stop_reason}")
        if stop_reason.startswith("non-finite"):
            raise UserError(f"training stopped on non-finite values; {healthy_hint(config, prog.healthy_step)}")
        done = ckpt.list_complete(config.checkpoint_path or "")
        if done:
            log(f"last complete checkpoint: step_{done[0]}. To continue:\n  {resume_command(config)}")
        if "received" in stop_reason:
            sys.exit(130)
    elif prog.nan_streak > 0 or not eval_finite:  # never a success with non-finite losses or evals at the end
        what = (
            f"the last {prog.nan_streak} step(s) had non-finite losses"
            if prog.nan_streak
            else "the last eval was non-finite"
        )
        raise UserError(f"training ended on non-finite values ({what}); {healthy_hint(config, prog.healthy_step)}")


def main() -> None:
    try:
        sys.argv[1:] = check_cli_overrides(sys.argv[1:])
    except UserError as e:
        exit_with(e)

    import hydra

    @hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
    def _entry(hydra_config: Any) -> None:
        try:
            launch(hydra_config)
        except UserError as e:
            exit_with(e)
        finally:
            remove_made_dirs()

    _entry()


if __name__ == "__main__":
    main()
