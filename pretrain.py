"""Train HRM: `python pretrain.py data_path=... [key=value ...]` (Hydra overrides, as in the original).

Same loop, config keys, checkpoints and metrics as the original; the differences are fixes (see README):
CPU/MPS/CUDA, optional FlashAttention, a compile guard, W&B optional, a seeded sampler, config checked
once at start with clear errors, bucketed gradient all-reduce, metrics also in <run>/metrics.jsonl.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

import pydantic
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from adam_atan2 import AdamATan2
from dataset.common import PuzzleDatasetMetadata
from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
from models.layers import select_attention_backend
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from utils.errors import UserError, close_matches, exit_with
from utils.functions import get_model_source_path, load_model_class
from utils.runtime import (
    CompileGuard,
    Dist,
    allreduce_grads,
    compile_wanted,
    init_distributed,
    resolve_device,
    resolve_forward_dtype,
)
from utils.tracking import Tracker

# ----------------------------------------------------------------------------------------------------------
# Config


class LossConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class ArchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str
    loss: LossConfig


class PretrainConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    arch: ArchConfig
    data_path: str

    global_batch_size: int
    epochs: int

    lr: float
    lr_min_ratio: float
    lr_warmup_steps: int

    weight_decay: float
    beta1: float
    beta2: float

    puzzle_emb_lr: float
    puzzle_emb_weight_decay: float

    project_name: str | None = None
    run_name: str | None = None
    checkpoint_path: str | None = None

    seed: int = 0
    checkpoint_every_eval: bool = False
    eval_interval: int | None = None
    eval_save_outputs: list[str] = []

    # fork: runtime choices
    device: str = "auto"
    attn_backend: str = "auto"
    compile: bool | str | None = "auto"
    wandb_mode: str = "auto"


# Keys the trainer fills in for the model from the dataset; not settable in arch.
MODEL_KEYS_FROM_DATA = ("batch_size", "seq_len", "num_puzzle_identifiers", "vocab_size", "causal")


def arch_model_keys(arch_name: str) -> set[str]:
    """Settable arch.* keys: the model config's fields minus those filled from the data."""
    model_cls = load_model_class(arch_name)
    cfg_cls = getattr(sys.modules[model_cls.__module__], model_cls.__name__ + "Config", None)
    fields = set(cfg_cls.model_fields) if cfg_cls is not None else set()
    return fields - set(MODEL_KEYS_FROM_DATA)


def check_cli_overrides(argv: list[str]) -> list[str]:
    """Catch typos in `key=value` overrides before Hydra does, naming close matches (the original failed with
    Hydra's struct error or, for `+key=...`, silently ignored the key). Returns argv with a redundant `+`
    dropped, so `+checkpoint_path=...` (needed by the original, whose YAML lacked the key) still works."""
    top = set(PretrainConfig.model_fields)
    arch = arch_model_keys("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1") | {
        "name",
        "loss",
        "loss.name",
        "loss.loss_type",
    }
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key = arg.split("=", 1)[0]
        bare = key.lstrip("+~")
        if bare.startswith("hydra.") or bare.startswith("hydra/") or bare == "arch":
            out.append(arg)
            continue
        if bare.startswith("arch."):
            sub = bare[len("arch.") :]
            if sub not in arch:
                hint = close_matches(sub, arch)
                raise UserError(
                    f"unknown config key {bare!r}"
                    + (hint.replace("mean: ", "mean: arch.").replace(", ", ", arch.") if hint else "")
                )
        elif bare not in top:
            raise UserError(f"unknown config key {bare!r}{close_matches(bare, top)}")
        if key.startswith("+") and not key.startswith("++") and bare in _YAML_KEYS:
            arg = arg[1:]
        out.append(arg)
    return out


# Keys present in config/cfg_pretrain.yaml and config/arch/hrm_v1.yaml (a `+` before them would make Hydra fail).
_YAML_KEYS = set(PretrainConfig.model_fields) - {"arch"}


def validate_config(config: PretrainConfig) -> None:
    """Everything checkable before touching data or GPU, with the fix in the message."""
    extras = dict(config.arch.__pydantic_extra__ or {})
    allowed = arch_model_keys(config.arch.name)
    for k in extras:
        if k not in allowed:
            raise UserError(f"unknown config key 'arch.{k}'{close_matches(k, allowed)}")
    for name in ("global_batch_size", "epochs"):
        if getattr(config, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(config, name)}")
    if config.eval_interval is not None:
        if config.eval_interval <= 0:
            raise UserError(f"eval_interval must be positive, got {config.eval_interval}")
        if config.epochs % config.eval_interval != 0:
            divisors = [d for d in range(1, min(config.epochs, 100000) + 1) if config.epochs % d == 0]
            near = sorted(divisors, key=lambda d: abs(d - config.eval_interval))[:3]  # type: ignore[operator]
            raise UserError(
                f"eval_interval={config.eval_interval} must divide epochs={config.epochs}; "
                f"try eval_interval={' or '.join(map(str, sorted(near)))}"
            )
    for name in ("lr", "puzzle_emb_lr", "weight_decay", "puzzle_emb_weight_decay", "lr_warmup_steps"):
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(config, name)}")


def load_synced_config(hydra_config: Any, d: Dist) -> PretrainConfig:
    """Rank 0 validates and names the run, then broadcasts, so every rank agrees on one config."""
    from omegaconf import OmegaConf

    objects: list[Any] = [None]
    if d.is_main:
        try:
            config = PretrainConfig(**OmegaConf.to_container(hydra_config, resolve=True))  # type: ignore[arg-type]
            validate_config(config)
            if config.project_name is None:
                config.project_name = f"{os.path.basename(os.path.normpath(config.data_path)).capitalize()} ACT-torch"
            if config.run_name is None:
                config.run_name = f"{config.arch.name.split('@')[-1]} {_slug()}"
            if config.checkpoint_path is None:
                config.checkpoint_path = os.path.join("checkpoints", config.project_name, config.run_name)
            objects = [config]
        except (pydantic.ValidationError, UserError) as e:
            objects = [_config_error(e)]
    if d.world_size > 1:
        dist.broadcast_object_list(objects, src=0)
    if isinstance(objects[0], UserError):
        raise objects[0]
    return objects[0]


def _config_error(e: Exception) -> UserError:
    if isinstance(e, UserError):
        return e
    parts = []
    for err in e.errors():  # type: ignore[attr-defined]
        loc = ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown config key {loc!r}{close_matches(loc, PretrainConfig.model_fields)}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return UserError("bad config: " + "; ".join(parts))


def _slug() -> str:
    try:
        import coolname

        return coolname.generate_slug(2)
    except ImportError:
        return time.strftime("%Y%m%d-%H%M%S")


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


def create_dataloader(
    config: PretrainConfig, split: str, d: Dist, device: torch.device, **kwargs: Any
) -> tuple[DataLoader, PuzzleDatasetMetadata]:
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=config.seed, dataset_path=config.data_path, rank=d.rank, num_replicas=d.world_size, **kwargs
        ),
        split=split,
    )
    # One worker process prefetching batches on GPU; in-process on CPU where a worker only costs start-up time.
    workers = 1 if device.type == "cuda" else 0
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=8 if workers else None,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return loader, dataset.metadata


def model_config_dict(
    config: PretrainConfig, meta: PuzzleDatasetMetadata, world_size: int, forward_dtype: str
) -> dict[str, Any]:
    return dict(
        **(config.arch.__pydantic_extra__ or {}),
        batch_size=config.global_batch_size // world_size,
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
    inner = model.model  # type: ignore[attr-defined]
    if hasattr(inner, "puzzle_emb"):
        optimizers.append(
            CastedSparseEmbeddingSignSGD_Distributed(
                inner.puzzle_emb.buffers(), lr=0, weight_decay=config.puzzle_emb_weight_decay, world_size=d.world_size
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


def train_batch(
    config: PretrainConfig,
    state: TrainState,
    batch: dict[str, torch.Tensor],
    global_batch_size: int,
    d: Dist,
    device: torch.device,
):
    """One optimizer step on one global batch. Returns rank 0's metrics dict (train/<k>) or None."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def step(model: nn.Module) -> tuple[Any, dict[str, torch.Tensor]]:
        carry = state.carry if state.carry is not None else state.model.eager.initial_carry(batch)  # type: ignore[operator]
        new_carry, loss, metrics, _, _ = model(carry=carry, batch=batch, return_keys=[])
        ((1 / global_batch_size) * loss).backward()
        return new_carry, metrics

    def cleanup() -> None:
        for opt in state.optimizers:
            opt.zero_grad(set_to_none=True)

    state.carry, metrics = state.model.run("train", step, cleanup)
    state.step += 1

    if d.world_size > 1:
        allreduce_grads(state.model.eager.parameters())

    lr_this_step = 0.0
    for opt, base_lr in zip(state.optimizers, state.optimizer_lrs):
        lr_this_step = compute_lr(base_lr, config, state)
        for group in opt.param_groups:
            group["lr"] = lr_this_step
        opt.step()
        opt.zero_grad(set_to_none=True)

    keys = sorted(metrics)  # same order on every rank
    values = torch.stack([metrics[k].float() for k in keys])
    if d.world_size > 1:
        dist.reduce(values, dst=0)
    if not d.is_main:
        return None
    v = values.cpu().tolist()
    reduced = dict(zip(keys, v))
    count = max(reduced["count"], 1)
    out = {f"train/{k}": val / (global_batch_size if k.endswith("loss") else count) for k, val in reduced.items()}
    out["train/lr"] = lr_this_step
    return out


def evaluate(
    config: PretrainConfig,
    state: TrainState,
    eval_loader: DataLoader,
    meta: PuzzleDatasetMetadata,
    d: Dist,
    device: torch.device,
):
    """Run every test example for the full halt_max_steps; returns {set: {metric: mean}} on rank 0.

    Saves the outputs named in eval_save_outputs to <checkpoint_path>/step_<N>_all_preds.<rank>.
    """
    set_ids = {name: i for i, name in enumerate(meta.sets)}
    saved: dict[str, list[torch.Tensor]] = {}
    keys: list[str] = []
    totals: torch.Tensor | None = None
    halt_max_steps = state.model.eager.model.config.halt_max_steps  # type: ignore[union-attr]

    def run_batch(model: nn.Module, batch: dict[str, torch.Tensor]):
        carry = state.model.eager.initial_carry(batch)  # type: ignore[operator]
        # In eval every row halts exactly at halt_max_steps, so no per-segment `all_finish` host sync.
        for _ in range(halt_max_steps):
            carry, _, metrics, preds, _ = model(carry=carry, batch=batch, return_keys=config.eval_save_outputs)
        return metrics, preds

    with torch.inference_mode():
        for set_name, batch, gbs in eval_loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            metrics, preds = state.model.run("eval", lambda m, b=batch: run_batch(m, b))
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

    if saved and config.checkpoint_path is not None:
        os.makedirs(config.checkpoint_path, exist_ok=True)
        path = os.path.join(config.checkpoint_path, f"step_{state.step}_all_preds.{d.rank}")
        atomic_save({k: torch.cat(v, dim=0) for k, v in saved.items()}, path)

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


# ----------------------------------------------------------------------------------------------------------
# Files


def atomic_save(obj: Any, path: str) -> None:
    """Write to a temporary file, fsync, rename: a crash never leaves a truncated file under `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_train_state(config: PretrainConfig, state: TrainState) -> str | None:
    """Model weights in the original's format (`step_<N>`, keys without `_orig_mod.`)."""
    if config.checkpoint_path is None:
        return None
    os.makedirs(config.checkpoint_path, exist_ok=True)
    path = os.path.join(config.checkpoint_path, f"step_{state.step}")
    atomic_save(state.model.eager.state_dict(), path)
    return path


def save_code_and_config(config: PretrainConfig) -> None:
    """all_config.yaml (what evaluate.py reads) and a copy of the model code, beside the checkpoints.
    The original wrote these only when W&B was on."""
    if config.checkpoint_path is None:
        return
    os.makedirs(config.checkpoint_path, exist_ok=True)
    for ident in (config.arch.name, config.arch.loss.name):
        src = get_model_source_path(ident)
        if src:
            shutil.copy(src, os.path.join(config.checkpoint_path, os.path.basename(src)))
    with open(os.path.join(config.checkpoint_path, "all_config.yaml"), "w") as f:
        yaml.safe_dump(config.model_dump(), f)


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
    except ValueError as e:
        raise UserError(str(e)) from None
    use_compile, compile_why = compile_wanted(config.compile, device)
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    report = [
        ("versions", f"Python {sys.version.split()[0]}, torch {torch.__version__}{cuda}"),
        ("device", device_desc),
        ("attention", f"{attn} ({attn_why})" if attn_why else attn),
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
        config = load_synced_config(hydra_config, d)
        torch.random.manual_seed(config.seed + d.rank)
        rt = setup_runtime(config, d)
        run(config, rt)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(config: PretrainConfig, rt: Runtime) -> None:
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
        config, "test", d, device, test_set_mode=True, epochs_per_iter=1, global_batch_size=config.global_batch_size
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

    log = print if d.is_main else (lambda *_: None)
    model, optimizers, lrs = create_model(config, train_meta, d, device, rt.forward_dtype, rt.use_compile, log=log)
    state = TrainState(
        model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=0, total_steps=total_steps
    )

    tracker = Tracker(config.checkpoint_path, enabled=d.is_main)
    progress = None
    if d.is_main:
        n_params = sum(p.numel() for p in model.eager.parameters())
        wandb_status = tracker.start_wandb(
            config.wandb_mode, config.project_name or "", config.run_name or "", config.model_dump()
        )
        save_code_and_config(config)
        print(f"HRM training: {config.run_name}")
        print_report(
            rt.report
            + [
                (
                    "data",
                    f"{config.data_path}: {train_meta.total_groups} train groups, seq {train_meta.seq_len}, vocab {train_meta.vocab_size}",
                ),
                ("parameters", f"{n_params:,}"),
                ("steps", f"{total_steps:,} (batch {config.global_batch_size}, {total_iters} evals)"),
                ("run folder", str(config.checkpoint_path)),
                ("W&B", wandb_status),
            ]
        )
        tracker.log({"num_params": n_params}, step=0)
        import tqdm

        progress = tqdm.tqdm(total=total_steps, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    shown_acc = 0.0
    for it in range(total_iters):
        if d.is_main:
            print(f"[Rank {d.rank}, World Size {d.world_size}]: Epoch {it * epochs_per_iter}", flush=True)
        model.eager.train()
        for _set, batch, gbs in train_loader:
            if state.step >= state.total_steps:
                break
            metrics = train_batch(config, state, batch, gbs, d, device)
            if d.is_main and metrics is not None:
                tracker.log(metrics, step=state.step)
                progress.update(state.step - progress.n)  # type: ignore[union-attr]
                if metrics["train/count"] > 0:  # accuracy only means something on steps where rows halted
                    shown_acc = metrics["train/accuracy"]
                progress.set_postfix(loss=f"{metrics['train/lm_loss']:.3f}", acc=f"{shown_acc:.3f}", refresh=False)  # type: ignore[union-attr]

        model.eager.eval()
        results = evaluate(config, state, eval_loader, eval_meta, d, device)
        if d.is_main and results is not None:
            flat = {f"{s}/{k}": v for s, m in results.items() for k, v in m.items()}
            tracker.log(flat, step=state.step)
            print("eval " + ", ".join(f"{k}={v:.4f}" for k, v in flat.items()), flush=True)

        if d.is_main and (config.checkpoint_every_eval or it == total_iters - 1):
            path = save_train_state(config, state)
            if path:
                print(f"checkpoint: {path}", flush=True)

    if progress is not None:
        progress.close()
    tracker.finish()


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

    _entry()


if __name__ == "__main__":
    main()
