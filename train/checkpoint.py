"""Full-state checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint at step N is two files in the run folder:
    step_N          model weights, keys as the original's (no `_orig_mod.`): evaluate.py and the original read it
    step_N.state    optimizers, step, RNG states, data position, ACT carry, config, dataset fingerprint, versions
    step_N.ema      (ema=true) the weights with the averaged parameters: what evaluation uses; kept with step_N
With several processes, each rank r > 0 first writes `step_N.state.rank<r>` (its carry and RNG); rank 0
writes its files last. Every file is written to a temporary name, fsync'ed and renamed, and `step_N.state`
is written last of all, so its presence marks a complete checkpoint: `kill -9` at any moment leaves the
previous one loadable. Loading uses `weights_only=True`: a checkpoint cannot run code.

Nothing non-finite is ever written (`nonfinite`), and `step_N.state` holds a checksum of its own contents
and of the weights (`digest`, verified by `load_complete` and `verify_weights`): a flipped byte is refused.
Deleting goes the other way round (weights, rank files, then the marker), so what a kill leaves behind is
complete or clearly incomplete (a `.state` without weights), and `clean_stale` removes it at the next start.

This module owns the format: `write`/`write_rank` (what the files hold), `load_complete`/`read_rank`/`load_ema`
(reading them back for resume), `same_arch` (old checkpoints: keys they predate count as their defaults),
`save`/`restore` (a run's checkpoint from every rank: the checks, the health verdict, the agreement of ranks;
and back), `find_resume`/`prune`/`clean_stale`, and the weights loading of evaluate.py and predict.py
(`checkpoint_file`, `weights_file`, `load_checkpoint`). pretrain.save_train_state/restore decide when and hand
over the trainer's objects as plain state dicts.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import random
import re
import shlex
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from train.functions import arch_config_class
from utils.errors import UserError, load_tensors

if TYPE_CHECKING:
    from train.runtime import Dist
    from train.writes import WriteGuard

STATE_SUFFIX = ".state"
EMA_SUFFIX = ".ema"  # step_N.ema: the weights with the EMA parameters (ema=true), kept as long as step_N
FORMAT = "hrm-fork-state-v1"  # checksums, health, the exploration RNG, EMA are optional keys: no new version
_STEP_RE = re.compile(r"^step_(\d+)\.state$")
_TMP_RE = re.compile(r"\.tmp-(\d+)$")


def atomic_save(obj: Any, path: str) -> None:
    """Write to a temporary file, fsync, rename: a crash never leaves a truncated file under `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, RuntimeError):  # torch.save reports a failed write (disk full) as RuntimeError
            raise OSError(f"writing {path} failed (disk full?): {str(e).splitlines()[0][:200]}") from None
        raise
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def load(path: str) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------------------
# What goes in


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": list(random.getstate()[1]), "torch": torch.get_rng_state()}
    state["numpy"] = torch.from_numpy(np.random.get_state()[1].astype(np.int64))  # type: ignore[index]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def carry_to_dict(carry: Any) -> dict[str, Any] | None:
    """The ACT carry (rows in the middle of their segments) as plain tensors on the CPU."""
    if carry is None:
        return None

    def conv(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, list):  # one carry per micro-batch
            return [conv(v) for v in x]
        return x.detach().cpu() if isinstance(x, torch.Tensor) else x

    return conv(carry)


def carry_from_dict(template: Any, data: dict[str, Any], device: torch.device) -> Any:
    """Rebuild a carry with the structure of `template` (e.g. model.initial_carry(batch)) from saved tensors."""

    def conv(t: Any, d: Any) -> Any:
        if dataclasses.is_dataclass(t):
            return type(t)(**{f.name: conv(getattr(t, f.name), d[f.name]) for f in dataclasses.fields(t)})
        if isinstance(t, dict):
            return {k: conv(t[k], d[k]) for k in t}
        return d.to(device) if isinstance(d, torch.Tensor) else d

    return conv(template, data)


def dataset_fingerprint(data_path: str) -> dict[str, Any]:
    """Counts, vocab and an identifiers hash: enough to notice resuming on a different dataset build."""
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        path = os.path.join(data_path, split, "dataset.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[split] = json.load(f)
    ids = os.path.join(data_path, "identifiers.json")
    if os.path.isfile(ids):
        with open(ids, "rb") as f:
            out["identifiers_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return out


def versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], "torch": str(torch.__version__), "numpy": str(np.__version__)}


# ----------------------------------------------------------------------------------------------------------
# Checks: finite values, checksums, health


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists with every tensor on the CPU (one transfer, then hashed and written)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _leaves(obj: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # an ACT carry, read in place
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{name}.{k}" if name else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{name}[{i}]")
    else:
        yield name, obj


def digest(obj: Any) -> str:
    """CRC-32 over every leaf (names, dtypes, shapes, tensor bytes, other values), in order: catches a flipped
    byte anywhere in the contents. 330 MB hash in ~0.12 s on one CPU core (sha256: ~0.26 s)."""
    crc = 0
    for name, v in _leaves(obj):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            crc = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}".encode(), crc)
            if t.numel():
                crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)
        else:
            crc = zlib.crc32(f"{name}|{v!r}".encode(), crc)
    return f"crc32:{crc:08x}"


def nonfinite(obj: Any) -> list[str]:
    """Names of floating-point tensors holding NaN or inf. Min and max per tensor on its device (NaN
    propagates, no overflow on huge finite values), one host sync for all of them."""
    named = [(n, v) for n, v in _leaves(obj) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    if not named:
        return []
    flags = [
        torch.isfinite(torch.stack(torch.aminmax(v.detach()))).all().to("cpu", non_blocking=True) for _, v in named
    ]
    if any(v.is_cuda for _, v in named):
        torch.cuda.synchronize()
    return [n for (n, _), ok in zip(named, flags) if not ok.item()]


UNHEALTHY_SUFFIX = ".unhealthy"


def mark_unhealthy(run_dir: str, step: int, why: str) -> None:
    """The verdict on a checkpoint that arrives after it was written (the next step's loss was non-finite):
    a small `step_N.unhealthy` beside it, read by resume=auto."""
    path = paths(run_dir, step)[0] + UNHEALTHY_SUFFIX
    with open(path + f".tmp-{os.getpid()}", "w") as f:
        f.write(why + "\n")
    os.replace(path + f".tmp-{os.getpid()}", path)


def health_problem(weights: dict[str, Any], state: dict[str, Any], run_dir: str) -> str | None:
    """Why a loadable checkpoint is not one to continue from automatically, or None. Cheap: the flags saved
    with it or beside it, and (for checkpoints written before saving refused non-finite values) a scan of
    its tensors."""
    marker = paths(run_dir, int(state["step"]))[0] + UNHEALTHY_SUFFIX
    if os.path.isfile(marker):
        with open(marker) as f:
            return f.read().strip() or "marked unhealthy"
    bad = nonfinite(weights) + nonfinite({"optimizers": state.get("optimizers"), "carry": state.get("carry")})
    if bad:
        return f"non-finite values in {', '.join(bad[:3])}{'...' if len(bad) > 3 else ''}"
    if (state.get("progress") or {}).get("nan_streak", 0) > 0:
        return "its last training step had a non-finite loss"
    if (state.get("health") or {}).get("eval_finite") is False:
        return "its evaluation gave non-finite metrics"
    return None


def verify_weights(path: str, weights: Any) -> None:
    """evaluate.py/predict.py: a weights file beside its `.state` must match the checksum stored there.
    The `.state` is memory-mapped, so only its small checksum entry is read. Raises ValueError."""
    averaged = path.endswith(EMA_SUFFIX)  # step_N.ema: its checksum is the "ema" entry of step_N.state
    s_path = path.removesuffix(EMA_SUFFIX) + STATE_SUFFIX if averaged else path + STATE_SUFFIX
    if not os.path.isfile(s_path):
        return
    try:
        state = torch.load(s_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return  # an unreadable .state says nothing about the weights; evaluate needs only these
    key = "ema" if averaged else "weights"
    want = (state.get("checksums") or {}).get(key) if isinstance(state, dict) else None
    if want is not None and digest(weights) != want:
        raise ValueError(
            f"checksum mismatch: {path} does not match the checksum in {os.path.basename(s_path)} (corrupt or replaced)"
        )


# ----------------------------------------------------------------------------------------------------------
# Finding and pruning


def same_arch(saved: dict, current: dict, arch_name: str) -> bool:
    """Equal arch settings, where a key the checkpoint predates counts as its default (e.g. no_ACT_continue)."""
    cfg_cls = arch_config_class(arch_name)
    defaults = {k: f.default for k, f in cfg_cls.model_fields.items() if not f.is_required()} if cfg_cls else {}
    saved = dict(saved)
    for k, v in current.items():
        if k not in saved and k in defaults and defaults[k] == v:
            saved[k] = v
    return saved == current


def list_complete(run_dir: str) -> list[int]:
    """Steps that have a complete checkpoint (the `.state` marker and the weights), newest first."""
    if not os.path.isdir(run_dir):
        return []
    steps = []
    for name in os.listdir(run_dir):
        m = _STEP_RE.match(name)
        if m and os.path.isfile(os.path.join(run_dir, f"step_{m.group(1)}")):
            steps.append(int(m.group(1)))
    return sorted(steps, reverse=True)


def paths(run_dir: str, step: int) -> tuple[str, str]:
    base = os.path.join(run_dir, f"step_{step}")
    return base, base + STATE_SUFFIX


def load_complete(run_dir: str, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, state) of one checkpoint; raises ValueError with the reason if either is unreadable."""
    w_path, s_path = paths(run_dir, step)
    try:
        state = load(s_path)
        weights = load(w_path)
    except Exception as e:
        raise ValueError(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("step") != step:
        raise ValueError("not a training-state file of this fork")
    sums = state.get("checksums")  # absent in checkpoints written before checksums
    if sums is not None:
        if digest({k: v for k, v in state.items() if k != "checksums"}) != sums.get("state"):
            raise ValueError(f"checksum mismatch: {os.path.basename(s_path)} is corrupt")
        if digest(weights) != sums.get("weights"):
            raise ValueError(
                f"checksum mismatch: {os.path.basename(w_path)} does not match its {STATE_SUFFIX} (corrupt or replaced)"
            )
    return weights, state


def write_rank(run_dir: str, step: int, rank: int, carry: Any, rng: dict[str, Any]) -> None:
    """A rank r > 0's part of a checkpoint (its ACT carry and RNG), written before rank 0's files."""
    atomic_save({"carry": carry_to_dict(carry), "rng": rng}, f"{paths(run_dir, step)[1]}.rank{rank}")


def read_rank(run_dir: str, step: int, rank: int) -> tuple[Any, dict[str, Any]]:
    """(carry, rng) that rank `rank` > 0 saved with this checkpoint."""
    extra = load(f"{paths(run_dir, step)[1]}.rank{rank}")
    return extra["carry"], extra["rng"]


def write(
    run_dir: str,
    step: int,
    weights: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    *,
    total_steps: int,
    optimizers: list[dict[str, Any]],
    carry: Any,
    rng: dict[str, Any],
    progress: dict[str, Any],
    world_size: int,
    config: dict[str, Any],
    data_path: str,
    why: str,
    verdict: bool | None,
    metrics_bytes: int | None,
) -> None:
    """Rank 0's files of the checkpoint at `step`: weights, the average (ema), then `step_N.state` last, its
    presence marking the checkpoint complete. Tensors go to the CPU once and are hashed from that copy."""
    w_path, s_path = paths(run_dir, step)
    weights = to_cpu(weights)
    atomic_save(weights, w_path)
    if ema is not None:
        ema = to_cpu(ema)
        atomic_save(ema, w_path + EMA_SUFFIX)
    full = to_cpu(
        {
            "format": FORMAT,
            "step": step,
            "total_steps": total_steps,
            "optimizers": optimizers,
            "carry": carry_to_dict(carry),
            "rng": rng,
            "progress": progress,
            "world_size": world_size,
            "config": config,
            "dataset": dataset_fingerprint(data_path),
            "versions": versions(),
            "why": why,
            "health": {"verdict": verdict},
            "metrics_bytes": metrics_bytes,
        }
    )
    full["checksums"] = {"weights": digest(weights), "state": digest(full)}
    if ema is not None:
        full["checksums"]["ema"] = digest(ema)
    atomic_save(full, s_path)


def load_ema(run_dir: str, step: int, full: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The weight average saved with this checkpoint (None: trained without ema=true), checked against the
    checksum in its `.state` (`full`)."""
    path = paths(run_dir, step)[0] + EMA_SUFFIX
    if not os.path.isfile(path):
        return None
    averaged = load(path)
    want = (full.get("checksums") or {}).get("ema")
    if want is not None and digest(averaged) != want:
        raise UserError(f"{path} does not match the checksum in its {STATE_SUFFIX} (corrupt or replaced)")
    return averaged


# ----------------------------------------------------------------------------------------------------------
# A run's checkpoint: saved from every rank, restored into a freshly built run


@dataclass
class Progress:
    """Where the run is, beyond the step: saved in every checkpoint (its `progress` entry)."""

    passes_done: int = 0  # completed passes over the training data (= evals done)
    batches_into_pass: int = 0  # batches of the current pass already trained on
    eval_steps: list[int] = field(default_factory=list)  # steps whose weights are kept (checkpoint_every_eval)
    best_step: int | None = None  # best eval exact accuracy so far...
    best_value: float | None = None  # ...and its value
    nan_streak: int = 0
    early_stop_streak: int = 0
    timing: dict = field(default_factory=dict)  # time to accuracy so far (train/records.py)
    # Health: a checkpoint is healthy when a forward pass with its weights gave finite values: its own eval
    # (evals run on exactly the saved weights), or else the next training step's loss. Never pruned.
    healthy_step: int | None = None  # the newest checkpoint known healthy
    pending_check: int | None = None  # the newest checkpoint, waiting for the next step's loss to judge it

    def for_checkpoint(self, step: int, eval_finite: bool | None) -> tuple[Progress, bool | None]:
        """What the checkpoint of `step` saves, and its own verdict: its eval (`eval_finite`), else the next
        step's loss (pending); a step that was just skipped for a non-finite loss means these weights gave one."""
        saved = dataclasses.replace(self)
        if eval_finite is not None:
            saved.pending_check = None
            if eval_finite:
                saved.healthy_step = step
        else:
            saved.pending_check = step if self.nan_streak == 0 else None
        verdict = eval_finite if eval_finite is not None else (None if self.nan_streak == 0 else False)
        return saved, verdict


def _all_agree(d: Dist, device: torch.device, flags: list[bool]) -> list[bool]:
    """Each flag set on any rank (every rank calls this at the same point)."""
    if d.world_size == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t)
    return [f > 0 for f in t.tolist()]


def save(
    run_dir: str,
    step: int,
    d: Dist,
    prog: Progress,
    *,
    weights: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    optimizers: list[dict[str, Any]],
    carry: Any,
    rng: dict[str, Any],
    device: torch.device,
    eval_finite: bool | None,
    save_error: str,
    keep_last: int,
    hint: Callable[[], str],
    writes: WriteGuard | None,
    **meta: Any,  # total_steps, config, data_path, why, metrics_bytes: as `write` takes them
) -> str | None:
    """Write the checkpoint of `step` from every rank, or none: returns its weights path, None if not written.
    `eval_finite`: for the checkpoint of an eval, whether all its metrics were finite. `hint`: where to go
    back to after non-finite values. Called by every rank at the same point (they agree on each outcome)."""
    w_path = paths(run_dir, step)[0]

    # Nothing non-finite is written: checked on the device, before any write, by every rank (carries differ;
    # weights and moments are the same on every rank, so rank 0 checks those).
    bad_model = nonfinite({"weights": weights, "ema": ema, "optimizers": optimizers}) if d.is_main else []
    bad_carry = nonfinite({"carry": carry})
    bad = _all_agree(d, device, [bool(bad_model), bool(bad_carry)])
    if any(bad):
        names = ", ".join((bad_model + bad_carry)[:3]) or "another rank's ACT carry"
        if bad[0]:
            raise UserError(f"step {step}: non-finite values in {names}; not saved, training stopped; {hint()}")
        if d.is_main and writes is not None:
            writes.warn_once(
                "nonfinite",
                f"not saving checkpoint step_{step}: non-finite values in {names} (said once until a save succeeds); {hint()}",
            )
        return None

    saved, verdict = prog.for_checkpoint(step, eval_finite)
    ok = True
    error = ""
    try:
        os.makedirs(run_dir, exist_ok=True)
        if not d.is_main:
            write_rank(run_dir, step, d.rank, carry, rng)
    except OSError as e:
        ok, error = False, f"rank {d.rank}: {e}"
    ok = not _all_agree(d, device, [not ok])[0]
    if ok and d.is_main:
        try:
            write(
                run_dir,
                step,
                weights,
                ema,
                optimizers=optimizers,
                carry=carry,
                rng=rng,
                progress=dataclasses.asdict(saved),
                world_size=d.world_size,
                verdict=verdict,
                **meta,
            )
        except OSError as e:
            ok, error = False, str(e)
    ok = not _all_agree(d, device, [not ok])[0]
    if not ok:
        msg = f"could not write checkpoint step_{step} in {run_dir} ({error or 'another rank failed'}); the previous checkpoint is intact"
        if save_error == "stop":
            raise UserError(msg + "; free some disk space or set checkpoint_path, then resume=auto")
        if d.is_main:
            print(f"warning: {msg}; continuing (save_error=continue)", flush=True)
        return None
    prog.healthy_step, prog.pending_check = saved.healthy_step, saved.pending_check
    if writes is not None:
        writes.reset("nonfinite")
    if d.is_main:
        protect = {s for s in (prog.best_step, prog.healthy_step) if s is not None}
        prune(run_dir, keep_last, protect_full=protect, keep_weights=set(prog.eval_steps))
    return w_path


def load_named(path: str) -> tuple[int, dict[str, Any], dict[str, Any], str]:
    """The checkpoint `<run folder>/step_N`, as find_resume returns it (ranks > 0 read what rank 0 verified)."""
    run_dir, name = os.path.split(path)
    step = int(name.removeprefix("step_"))
    return (step, *load_complete(run_dir, step), run_dir)


@dataclass
class Restored:
    """A checkpoint read back for one rank of a new launch, ready to load into its objects."""

    step: int
    weights: dict[str, torch.Tensor]  # keys as the model's state_dict
    optimizers: list[dict[str, Any]]
    ema: dict[str, torch.Tensor] | None  # None: trained without ema=true, or not asked for
    carry: list[Any] | None  # this rank's ACT carry per micro-batch, as saved; None: rows in flight begin anew
    rng: dict[str, Any]  # this rank's RNG states (`set_rng_state`, `explore_rng`)
    progress: Progress


def restore(
    saved: tuple[int, dict[str, Any], dict[str, Any], str],
    own: dict[str, torch.Tensor],
    d: Dist,
    chunks: int,
    want_ema: bool,
    log: Callable[..., None],
) -> Restored:
    """Read a full-state checkpoint (`find_resume`/`load_named`) for a model whose state_dict is `own`, on `d`'s
    processes with `chunks` micro-batches per step; says what cannot continue exactly (the carries restart)."""
    step, weights, full, folder = saved
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if wrong or own.keys() != weights.keys():
        what = (
            f"tensor {wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, the model of its {STATE_SUFFIX} expects {tuple(own[wrong[0]].shape)}"
            if wrong
            else "its tensor names differ from the model's"
        )
        raise UserError(
            f"{os.path.join(folder, f'step_{step}')}: the weights file does not belong to its {STATE_SUFFIX} ({what}); "
            "resume from another checkpoint"
        )
    averaged = None
    if want_ema:
        averaged = load_ema(folder, step, full)
        if averaged is None:
            log(f"step_{step} has no weight average (trained without ema=true): the average starts from its weights")
    carry, rng = full["carry"], full["rng"]
    if d.world_size != full["world_size"]:
        log(
            f"resuming on {d.world_size} processes a run saved on {full['world_size']}: ACT carries restart (rows in flight begin anew)"
        )
        carry = None
    elif d.rank > 0:
        carry, rng = read_rank(folder, step, d.rank)
    if carry is not None and len(carry) != chunks:
        log("resuming with another micro_batch_size: ACT carries restart (rows in flight begin anew)")
        carry = None
    return Restored(step, weights, full["optimizers"], averaged, carry, rng, Progress(**full["progress"]))


def explore_rng(rng: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The saved state of ACT exploration's own random stream (train/rng.ExploreRNG). Checkpoints written
    before it had one: it drew from the device's global stream, saved beside it, so it continues from there
    (as the old code would have, minus the loader's draw)."""
    explore = rng.get("explore")
    if explore is None:
        explore = {"device": device.type, "state": rng.get("cuda" if device.type == "cuda" else "torch")}
    return explore


# ----------------------------------------------------------------------------------------------------------
# Weights for evaluate.py and predict.py: the original's step_N files and ours


def weights_file(ckpt: str, ema: Any) -> str:
    """Which file to evaluate: `ema=auto` (default) takes the weight average `step_N.ema` when the run kept one
    (ema=true), `ema=true` insists on it, `ema=false` takes the raw weights."""
    choice = str(ema).lower()
    if choice not in ("auto", "true", "false"):
        raise UserError(f"ema must be auto, true or false, got {ema!r}")
    averaged = ckpt + EMA_SUFFIX
    if choice == "false" or (choice == "auto" and not os.path.isfile(averaged)):
        return ckpt
    if not os.path.isfile(averaged):
        raise UserError(
            f"{ckpt} has no weight average ({os.path.basename(averaged)} is missing: trained without ema=true); "
            "use ema=false (or ema=auto) to evaluate its weights"
        )
    return averaged


def step_files(folder: str) -> list[str]:
    """The step_N weight files in a folder, newest step first."""
    if not os.path.isdir(folder):
        return []
    found = [n for n in os.listdir(folder) if re.fullmatch(r"step_\d+", n) and os.path.isfile(os.path.join(folder, n))]
    return sorted(found, key=lambda n: -int(n.removeprefix("step_")))


def checkpoint_file(path: str) -> str:
    """The weights file `checkpoint=` names; a run folder, a `.state` file or a missing file is answered with
    the step files there (the weights are the `step_N` beside `step_N.state`)."""
    if os.path.isfile(path) and not path.endswith(STATE_SUFFIX):
        return path
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    weights = path.removesuffix(STATE_SUFFIX)
    if os.path.isdir(path):
        what = f"{path!r} is a folder, not a checkpoint file"
    elif os.path.isfile(path):
        what = f"{path!r} is a training state (optimizers, RNG, data position), not weights"
        if os.path.isfile(weights):
            raise UserError(f"{what}; its weights are checkpoint={shlex.quote(weights)}")
    else:
        what = f"checkpoint file {path!r} does not exist"
    steps = step_files(folder)
    if not steps:
        raise UserError(f"{what}; give checkpoint=<run folder>/step_N")
    listed = ", ".join(shlex.quote(os.path.join(folder, n)) for n in steps[:5]) + (", ..." if len(steps) > 5 else "")
    raise UserError(f"{what}; step files in {folder}: {listed} (give one as checkpoint=...)")


def saved_arch(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """arch.* values readable off the weights' shapes (what a mismatch message can tell the user to set)."""
    out: dict[str, int] = {}
    emb = state.get("model.inner.embed_tokens.embedding_weight")
    if emb is not None and emb.ndim == 2:
        out["hidden_size"] = int(emb.shape[1])
    pe = state.get("model.inner.puzzle_emb.weights")
    out["puzzle_emb_ndim"] = int(pe.shape[1]) if pe is not None and pe.ndim == 2 else 0
    for level in ("H", "L"):
        layers = {k.split(".")[4] for k in state if k.startswith(f"model.inner.{level}_level.layers.")}
        if layers:
            out[f"{level}_layers"] = len(layers)
    return out


def load_checkpoint(path: str, model: torch.nn.Module, data_path: str) -> None:
    """Load the original's or our weights (weights_only: a checkpoint cannot run code)."""
    state = load_tensors(path, "cannot read checkpoint {path}: {why}")
    try:  # a .state beside the weights holds their checksum: a flipped byte is refused, not evaluated
        verify_weights(path, state)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no model weights (a {type(state).__name__} of other things)")
    state = {str(k).removeprefix("_orig_mod."): v for k, v in state.items()}

    own = model.state_dict()
    # Counts that come from the dataset: a mismatch means another dataset (build).
    for key, what in (
        ("model.inner.puzzle_emb.weights", "puzzle identifiers"),
        ("model.inner.embed_tokens.embedding_weight", "tokens in its vocabulary"),
    ):
        if key in state and key in own and state[key].ndim == 2 and state[key].shape[0] != own[key].shape[0]:
            raise UserError(
                f"checkpoint has {state[key].shape[0]} {what} but dataset {data_path} has {own[key].shape[0]}: "
                "it was trained on another dataset build; pass the data_path it was trained with"
            )
    # Sizes that come from arch.*: name the keys to set.
    saved, current = saved_arch(state), saved_arch(own)
    fix = " ".join(f"arch.{k}={v}" for k, v in saved.items() if current.get(k) != v)
    for k in sorted(set(state) & set(own)):
        if state[k].shape != own[k].shape:
            raise UserError(
                f"checkpoint tensor {k} is {tuple(state[k].shape)} in {path} but {tuple(own[k].shape)} in this model: "
                + (f"it was trained with {fix}; add that" if fix else "check the arch.* settings it was trained with")
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path} does not match the model: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}; "
            + (f"it was trained with {fix}; add that" if fix else "check arch.* settings")
        )
    model.load_state_dict(state, strict=True)


def find_resume(resume: str, run_dir: str, log=print) -> tuple[int, dict[str, Any], dict[str, Any], str] | None:
    """Resolve `resume=auto|<path>`: the newest loadable checkpoint, skipping (and naming) broken ones."""
    if resume == "auto":
        candidates = [(run_dir, s) for s in list_complete(run_dir)]
        if not candidates:
            log(f"resume=auto: no complete checkpoint in {run_dir}; starting fresh")
            return None
    else:
        path = resume.removesuffix(STATE_SUFFIX)
        m = re.match(r"^step_(\d+)$", os.path.basename(path))
        if not m or not os.path.isfile(path + STATE_SUFFIX):
            raise UserError(
                f"resume={resume!r}: expected a run folder's step_<N> with a step_<N>.state beside it (or resume=auto)"
            )
        candidates = [(os.path.dirname(path) or ".", int(m.group(1)))]
    for folder, step in candidates:
        try:
            weights, state = load_complete(folder, step)
        except ValueError as e:
            log(f"checkpoint step_{step} in {folder} is unreadable ({e}); trying the previous one")
            continue
        return step, weights, state, folder
    raise UserError(f"no loadable checkpoint found for resume={resume!r} in {run_dir}")


def prune(run_dir: str, keep_last: int, protect_full: set[int], keep_weights: set[int]) -> None:
    """Keep the newest `keep_last` complete checkpoints and those in `protect_full` (the best, the last healthy);
    of the rest, delete the training state, and the weights too unless the step is in `keep_weights` (evals)."""
    if keep_last <= 0:
        return
    for step in list_complete(run_dir)[keep_last:]:
        if step not in protect_full:
            remove(run_dir, step, keep_weights=step in keep_weights)


def remove(run_dir: str, step: int, keep_weights: bool) -> None:
    """Weights first, rank files, the `.state` marker last: a kill in between leaves a `.state` without
    weights (never complete, removed by `clean_stale`) rather than weights that look like kept eval weights."""
    w, s = paths(run_dir, step)
    marker = w + UNHEALTHY_SUFFIX
    for p in ([] if keep_weights else [w, w + EMA_SUFFIX]) + sorted(glob.glob(glob.escape(s) + ".rank*")) + [marker, s]:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale(run_dir: str, log=print) -> None:
    """At start, on rank 0, before anything of this launch is written: remove what killed runs left.

    - `*.tmp-PID` of dead PIDs: atomic_save's temporaries (a `.state` one is the size of the state). Live
      PIDs are spared: that can only be another launch on the same folder (misuse, but not ours to break),
      or, with a folder shared by several hosts, a PID of another host that happens to be alive here.
    - `step_N.state` without its weights, `step_N.state.rank<r>` without `step_N.state`: a kill while
      deleting or writing a checkpoint. Weights without a `.state` stay: pruning keeps eval weights so.
    """
    if not os.path.isdir(run_dir):
        return
    names = set(os.listdir(run_dir))
    doomed = []
    for name in names:
        m = _TMP_RE.search(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            doomed.append(name)
        elif _STEP_RE.match(name) and name.removesuffix(STATE_SUFFIX) not in names:
            doomed.append(name)
        elif re.match(r"^step_\d+\.ema$", name) and name.removesuffix(EMA_SUFFIX) not in names:
            doomed.append(name)  # an average whose weights were pruned by a kill mid-way
    for name in names:  # rank files and verdicts whose state is missing or just doomed
        state = name.split(".rank")[0] if re.match(r"^step_\d+\.state\.rank\d+$", name) else None
        if re.match(r"^step_\d+\.unhealthy$", name):
            state = name.removesuffix(UNHEALTHY_SUFFIX) + STATE_SUFFIX
        if state is not None and (state not in names or state in doomed):
            doomed.append(name)
    freed = 0
    for name in sorted(doomed):
        path = os.path.join(run_dir, name)
        try:
            freed += os.path.getsize(path)
            os.remove(path)
        except OSError:
            pass
    if doomed:
        log(
            f"removed {len(doomed)} file(s) left by an interrupted run ({freed / 2**20:.1f} MiB): {', '.join(sorted(doomed)[:4])}"
        )


def supersede_newer(run_dir: str, step: int, log=print) -> None:
    """Resuming from an earlier checkpoint of this folder rewinds the run: the newer checkpoints belong to
    the abandoned continuation (often a diverged one) and must not win a later resume=auto or pruning.
    Their training states go; their weights stay, for evaluate.py, until the run writes those steps again."""
    newer = [s for s in list_complete(run_dir) if s > step]
    for s in newer:
        remove(run_dir, s, keep_weights=True)
    if newer:
        log(
            f"resumed from step_{step}: the newer checkpoint(s) {', '.join(f'step_{s}' for s in newer)} of the abandoned "
            "continuation are no longer resumable (training states removed, weights kept)"
        )
