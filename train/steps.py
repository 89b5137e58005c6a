"""The original's functions, under the original's names: the train state and how it is built (TrainState,
create_dataloader, create_model, init_train_state), saved and restored (save_train_state, restore_train_state),
one optimizer step (train_batch, finish_step, compute_lr) and one plain evaluation (evaluate, eval_headline),
and the copy of code and config beside the checkpoints (save_code_and_config).

train/loop.py calls them; pretrain.py hands them on under its own name (`pretrain.train_batch`...), as the
original's pretrain.py defined them. Evaluation beyond the plain pass (test-time augmentation's vote) is
train/tta.py's.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydantic
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from adam_atan2 import AdamATan2
from dataset.format import PuzzleDatasetMetadata
from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
from models.losses import EVAL_KEYS, IGNORE_LABEL_ID, ACTLossHead
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from muon import Muon, muon_parameters
from train import checkpoint as ckpt
from train import curriculum, run_checkpoint
from train.config import PretrainConfig, eval_batch
from train.curriculum import Curriculum
from train.ema import EMA
from train.functions import get_model_source_path, load_model_class
from train.rng import ExploreRNG, loader_generator
from train.run_folder import Resumed, healthy_hint
from train.runtime import CompileGuard, Dist, Runtime, allreduce_grads
from train.signals import end_workers_at_exit, ignore_stop_signals
from train.tracking import Tracker, progress_bar
from train.writes import WriteGuard, replace_atomically
from utils.errors import UserError

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
    # how each training step differs from the arch (depth_curriculum, segments_curriculum; none: the paper's training)
    curricula: list[Curriculum] = field(default_factory=list)

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
            augment_online=config.augment_online and split == "train",
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
    if workers:
        end_workers_at_exit(loader)  # they ignore stop signals: without this an exit by error or signal hung
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
    cast(ACTLossHead, model).model.halt_when_exact = config.halt_on_exact  # training's halting (models/act.py)

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
    matrices, rest = muon_parameters(model) if config.muon else ([], list(model.parameters()))
    optimizers.append(AdamATan2(rest, lr=0, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2)))
    lrs.append(config.lr)
    if matrices:
        optimizers.append(Muon(matrices, lr=0, momentum=config.muon_momentum, weight_decay=config.muon_weight_decay))
        lrs.append(config.muon_lr)
    # compile_mode and compile_scope as the config says (train/runtime.setup_runtime checked both once)
    guard = CompileGuard(model, enabled=use_compile, log=log, mode=config.compile_mode, scope=config.compile_scope)
    return guard, optimizers, lrs


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


def init_train_state(
    config: PretrainConfig, train_meta: PuzzleDatasetMetadata, rt: Runtime, total_steps: int, log=print
) -> TrainState:
    """The model and its optimizers at step 0, with the weight average (ema=true) and exploration's stream."""
    local_batch = config.global_batch_size // rt.d.world_size
    if config.micro_batch_size is not None and local_batch % config.micro_batch_size != 0:
        raise UserError(
            f"micro_batch_size={config.micro_batch_size} must divide the per-process batch {local_batch} "
            f"(global_batch_size {config.global_batch_size} / {rt.d.world_size} processes)"
        )
    model, optimizers, lrs = create_model(config, train_meta, rt.d, rt.device, rt.forward_dtype, rt.use_compile, log)
    curricula = curriculum.build(config, cast(ACTLossHead, model.eager).model, total_steps)
    if rt.use_compile and config.compile_scope == "model":
        curriculum.make_room_for_recompiles(curricula, log)
    return TrainState(
        model=model,
        optimizers=optimizers,
        optimizer_lrs=lrs,
        carry=None,
        step=0,
        total_steps=total_steps,
        ema=EMA(model.eager, config.ema_rate) if config.ema else None,
        explore=ExploreRNG(config.seed, rt.d.rank, rt.device),
        curricula=curricula,
    )


def save_train_state(
    config: PretrainConfig,
    state: TrainState,
    prog: run_checkpoint.Progress,
    d: Dist,
    why: str,
    eval_finite: bool | None = None,
    tracker: Tracker | None = None,
    writes: WriteGuard | None = None,
) -> str | None:
    """Write a complete checkpoint of this step (train/run_checkpoint.save: the format, its checks, the ranks'
    agreement); returns its weights path, None if not written. `eval_finite`: for the checkpoint of an eval,
    whether all its metrics were finite."""
    if config.checkpoint_path is None:
        return None
    model = state.model.eager
    explore = state.explore.state_dict() if state.explore is not None else None
    return run_checkpoint.save(
        config.checkpoint_path,
        state.step,
        d,
        prog,
        weights=model.state_dict(),
        ema=state.ema.weights(model) if state.ema is not None else None,
        optimizers=[o.state_dict() for o in state.optimizers],
        carry=state.carry,
        rng=ckpt.rng_state() | ({"explore": explore} if explore is not None else {}),
        device=next(model.parameters()).device,
        eval_finite=eval_finite,
        save_error=config.save_error,
        keep_last=config.keep_last,
        hint=lambda: healthy_hint(config, prog.healthy_step),
        writes=writes,
        total_steps=state.total_steps,
        config=config.model_dump(),
        data_path=config.data_path,
        why=why,
        metrics_bytes=tracker.size() if tracker is not None else None,
    )


def restore_train_state(
    config: PretrainConfig,
    state: TrainState,
    resumed: Resumed | None,
    rt: Runtime,
    train: DataLoader,
    log: Callable[..., None],
) -> tuple[run_checkpoint.Progress, int | None]:
    """resume=...: load the checkpoint (train/run_checkpoint.restore reads it) into the freshly built run (weights,
    optimizers, average, ACT carry, RNG streams, data position). Returns the run's progress and the size its
    metrics.jsonl had then (a fresh run: nothing done, None)."""
    if config.resume is None:
        return run_checkpoint.Progress(), None
    d, device = rt.d, rt.device
    saved = resumed if resumed is not None else run_checkpoint.load_named(config.resume)  # ranks > 0: read the files
    if saved[2]["dataset"] != ckpt.dataset_fingerprint(config.data_path):
        raise UserError(
            f"{config.resume} was trained on a different build of {config.data_path} (counts, vocab or identifiers differ)"
        )
    local = config.global_batch_size // d.world_size
    micro = config.micro_batch_size or local
    r = run_checkpoint.restore(saved, state.model.eager.state_dict(), d, -(local // -micro), state.ema is not None, log)
    state.model.eager.load_state_dict(r.weights)
    if len(r.optimizers) != len(state.optimizers):  # muon=true adds one; its state cannot seed AdamATan2's
        raise UserError(
            f"{config.resume} was trained with {len(r.optimizers)} optimizers and this config builds "
            f"{len(state.optimizers)}: resume with the muon setting it was trained with (its all_config.yaml)"
        )
    for opt, sd in zip(state.optimizers, r.optimizers):
        opt.load_state_dict(sd)
        check_optimizer_state(opt, str(config.resume))
    state.step = r.step
    if state.ema is not None and r.ema is not None:
        state.ema.load_state_dict(r.ema)
    if r.carry is not None:
        seq = cast(PuzzleDataset, train.dataset).metadata.seq_len
        dummy = {
            k: torch.zeros(micro, *shape, dtype=torch.int32, device=device)
            for k, shape in (("inputs", (seq,)), ("labels", (seq,)), ("puzzle_identifiers", ()))
        }
        template = state.head.initial_carry(dummy)
        state.carry = [ckpt.carry_from_dict(template, c, device) for c in r.carry]
    ckpt.set_rng_state(r.rng)
    if state.explore is not None:
        state.explore.load_state_dict(run_checkpoint.explore_rng(r.rng, device))
    cast(PuzzleDataset, train.dataset).set_position(r.progress.passes_done, r.progress.batches_into_pass)
    if d.is_main and os.path.realpath(saved[3]) == os.path.realpath(str(config.checkpoint_path)):
        run_checkpoint.supersede_newer(saved[3], saved[0], log)
    return r.progress, saved[2].get("metrics_bytes")


def check_optimizer_state(opt: torch.optim.Optimizer, where: str) -> None:
    """Every per-weight moment has its weight's shape. load_state_dict checks only the counts, so a `.state` whose
    moments belong to another model (crafted, with a recomputed checksum) failed at the first step."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise UserError(
                        f"{where}: its {type(opt).__name__} state '{key}' has shape {tuple(value.shape)} for a weight of "
                        f"shape {tuple(p.shape)}: it belongs to another model; resume from another checkpoint"
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
    lrs: dict[str, float]  # train/lr (AdamATan2's, as the original logs) and, with muon=true, train/muon_lr
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

    with ExitStack() as step_context:
        if state.explore is not None:
            step_context.enter_context(state.explore.active())
        for c in state.curricula:
            step_context.enter_context(c.at(state.step))
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
    lrs = {}
    for opt, base_lr in zip(state.optimizers, state.optimizer_lrs):
        lr_this_step = compute_lr(base_lr, config, state)
        for group in opt.param_groups:
            group["lr"] = lr_this_step
        # the puzzle embedding's comes first and AdamATan2's overwrites it; Muon's has its own name
        lrs["train/muon_lr" if isinstance(opt, Muon) else "train/lr"] = lr_this_step
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
    state.pending = PendingStep(state.step, keys, host, done, lrs, global_batch_size)
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
    out.update(p.lrs)
    return StepResult(p.step, out, nonfinite, stop, save)


def evaluate(
    config: PretrainConfig,
    state: TrainState,
    eval_loader: DataLoader,
    meta: PuzzleDatasetMetadata,
    d: Dist,
    device: torch.device,
    writes: WriteGuard | None = None,
    per_step: bool | None = None,
    verify: str | None = None,
):
    """Run every test example for the full halt_max_steps; returns {set: {metric: mean}} on rank 0.

    Saves the outputs named in eval_save_outputs to <checkpoint_path>/step_<N>_all_preds.<rank>.
    per_step: also score every segment (`step_<i>/...`: exact and token accuracy if the prediction were taken
    there, the share of rows whose Q-head says halt there, the share halted by then) for evaluate.py's table;
    None: as config.eval_per_step (training evals).
    verify: 'sudoku' or 'maze' (evaluate.py): also check each final prediction against its puzzle, label unseen
    (dataset/verify.py): `valid_solution`, the share that are valid solutions (Maze: a shortest S-G path), and
    `valid_not_label`, the share valid yet unlike the label. The check runs on the host, a sync per batch.
    """
    per_step = config.eval_per_step if per_step is None else per_step
    set_ids = {name: i for i, name in enumerate(meta.sets)}
    saved: dict[str, list[torch.Tensor]] = {}
    keys: list[str] = []
    totals: torch.Tensor | None = None
    halt_max_steps = state.head.halt_max_steps
    says_halt = state.head.says_halt
    return_keys = sorted(set(config.eval_save_outputs) | set(EVAL_KEYS))

    dataset = getattr(eval_loader, "dataset", None)
    band = dataset.hard_band() if isinstance(dataset, PuzzleDataset) else None

    def run_batch(model: nn.Module, batch: dict[str, torch.Tensor], hard: torch.Tensor | None = None):
        """`hard`: which rows are in the hard band (dataset/bands.py), when the data has one."""
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
        if verify is not None:
            from dataset.verify import valid_rows

            answers = preds["logits"].argmax(-1)
            ok, other = valid_rows(
                verify,  # type: ignore[arg-type]
                batch["inputs"].cpu().numpy(),
                answers.cpu().numpy(),
                labels.cpu().numpy(),
                require_shortest=True,
            )
            ok_t, other_t = (torch.from_numpy(v).to(labels.device) for v in (ok, other))
            metrics = metrics | {"valid_solution": (valid & ok_t).sum(), "valid_not_label": (valid & other_t).sum()}
        metrics = (
            metrics
            | {
                "exact_accuracy_at_halt": (valid & exact_at).sum(),
                "accuracy_at_halt": torch.where(valid, token_at, 0).sum(),
                "steps_at_halt": torch.where(valid, steps_at, 0).sum(),
            }
            | by_step
        )
        if hard is not None:  # the paper's protocol (the last segment's prediction), on the band's rows only
            metrics |= {
                "hard_exact_accuracy": (valid & hard & (correct == n_labels)).sum(),
                "hard_count": (valid & hard).sum(),
            }
        return metrics, {k: v for k, v in preds.items() if k in config.eval_save_outputs}

    bar = None
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
            hard = None
            if band is not None and isinstance(dataset, PuzzleDataset):  # this rank's examples, then padding
                lo, hi = dataset.test_rows(set_name, seen[set_name] - 1)
                flags = np.zeros(len(batch["inputs"]), dtype=bool)
                flags[: hi - lo] = band.hard[set_name][lo:hi]
                hard = torch.from_numpy(flags).to(device)
            metrics, preds = state.model.run("eval", lambda m, b=batch, h=hard: run_batch(m, b, h))
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
        hard_count = row.pop("hard_count", 0)
        hard = row.pop("hard_exact_accuracy", None)
        result[set_name] = {k: v / count for k, v in row.items()}
        if hard is not None and hard_count > 0:  # summed over the ranks like the rest, divided by the band's rows
            result[set_name]["hard_exact_accuracy"] = hard / hard_count
    return result


def eval_headline(results: dict[str, dict[str, float]], halt_max_steps: int) -> list[str]:
    """One plain line per test set: the paper's score first, then the score where the Q-head halts."""
    lines = []
    for name, m in results.items():
        if "exact_accuracy" not in m:
            continue
        line = f"{name}: exact {m['exact_accuracy']:.4f}"
        if "hard_exact_accuracy" in m:
            line += f" (hard band {m['hard_exact_accuracy']:.4f})"
        line += f", token {m['accuracy']:.4f} after all {halt_max_steps} ACT steps (paper protocol)"
        if "exact_accuracy_at_halt" in m:
            line += (
                f"; where the Q-head halts: exact {m['exact_accuracy_at_halt']:.4f}, "
                f"token {m['accuracy_at_halt']:.4f}, mean {m['steps_at_halt']:.2f} steps"
            )
        lines.append(line)
    return lines


# ----------------------------------------------------------------------------------------------------------
# Files


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
            replace_atomically(
                os.path.join(config.checkpoint_path, os.path.basename(src)), lambda p, s=src: shutil.copy(s, p)
            )
    text = yaml.safe_dump(config.model_dump())
    replace_atomically(os.path.join(config.checkpoint_path, "all_config.yaml"), lambda p: Path(p).write_text(text))
