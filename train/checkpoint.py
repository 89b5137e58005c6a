"""The checkpoint format: everything needed to continue a run exactly where it stopped.

A checkpoint at step N is two files in the run folder:
    step_N          model weights, keys as the original's (no `_orig_mod.`): evaluate.py and the original read it
    step_N.state    optimizers, step, RNG states, data position, ACT carry, config, dataset fingerprint, versions
    step_N.ema      (ema=true) the weights with the averaged parameters: what evaluation uses; kept with step_N
    step_N.json     what inference needs without the dataset (`model_info`: kind, grid, vocabulary, sequence
                    length, puzzle identifiers, the dataset.json that shaped the model, the full config); kept
                    with step_N. Plain JSON beside the weights, so the weights file keeps the original's keys
                    and the original still loads it. `hrm.export` writes the same dict as config.json.
With several processes, each rank r > 0 first writes `step_N.state.rank<r>` (its carry and RNG); rank 0
writes its files last. Every file is written to a temporary name, fsync'ed and renamed, and `step_N.state`
is written last of all, so its presence marks a complete checkpoint: `kill -9` at any moment leaves the
previous one loadable. Loading uses `weights_only=True`: a checkpoint cannot run code.

Nothing non-finite is ever written (`nonfinite`), and `step_N.state` holds a checksum of its own contents
and of the weights (`digest`, verified by `load_complete` and `verify_weights`): a flipped byte is refused.
Deleting goes the other way round (weights, rank files, then the marker: train/run_checkpoint.remove), so what
a kill leaves behind is complete or clearly incomplete (a `.state` without weights), and
train/run_checkpoint.clean_stale removes it at the next start.

This module owns the format: `write`/`write_rank` (what the files hold), `load_complete`/`read_rank`/`load_ema`
(reading them back), `read_model_info`/`check_model_info` (the inference metadata, also of an exported model
folder's config.json), `same_arch` (old checkpoints: keys they predate count as their defaults). A run's
checkpoints (saved from every rank, restored, resume lookup, pruning) are train/run_checkpoint.py's; loading
weights for evaluate.py and predict.py is train/weights.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from train.functions import arch_config_class
from utils.errors import UserError

STATE_SUFFIX = ".state"
INFO_SUFFIX = ".json"  # step_N.json: model_info, what inference needs without the dataset folder
INFO_FORMAT = "hrm-fork-model-v1"
# An exported model folder (hrm.export, what the Hub holds): the weights with the original's key names, and
# model_info as JSON. The original's released checkpoints are a folder too: `checkpoint` + all_config.yaml.
EXPORTED_WEIGHTS = "model.safetensors"
EXPORTED_INFO = "config.json"
RELEASED_WEIGHTS = "checkpoint"
EMA_SUFFIX = ".ema"  # step_N.ema: the weights with the EMA parameters (ema=true), kept as long as step_N
FORMAT = "hrm-fork-state-v1"  # checksums, health, the exploration RNG, EMA are optional keys: no new version
STEP_RE = re.compile(r"^step_(\d+)\.state$")
TMP_RE = re.compile(r"\.tmp-(\d+)$")


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
# What inference needs: step_N.json beside the weights (and an exported model folder's config.json)


def grid_shape(kind: str, seq_len: int) -> list[int]:
    """How a sequence is laid out as a grid: Sudoku 9x9, Maze and ARC 30x30, anything else one row."""
    return {"sudoku": [9, 9], "maze": [30, 30], "arc": [30, 30]}.get(kind, [seq_len])


def model_info(config: dict[str, Any], fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The inference metadata of a run: its config and the dataset.json that shaped the model (the train split's,
    else the test split's, as dataset/loader.model_metadata picks), from a `dataset_fingerprint`. None when the
    fingerprint holds neither (a dataset folder without dataset.json: nothing to shape a model from)."""
    from dataset.transforms import puzzle_kind  # here: the format module stays importable without dataset/

    shape = fingerprint.get("train") or fingerprint.get("test")
    if not isinstance(shape, dict) or not {"vocab_size", "seq_len", "num_puzzle_identifiers"} <= set(shape):
        return None
    seq_len, vocab, ids = int(shape["seq_len"]), int(shape["vocab_size"]), int(shape["num_puzzle_identifiers"])
    kind = puzzle_kind(seq_len, vocab, ids)
    return {
        "format": INFO_FORMAT,
        "kind": kind,
        "grid": grid_shape(kind, seq_len),
        "vocab_size": vocab,
        "seq_len": seq_len,
        "num_puzzle_identifiers": ids,
        "dataset": shape,
        "config": config,
    }


def write_model_info(path: str, info: dict[str, Any]) -> None:
    """`info` as JSON, through a temporary name (a crash never leaves half a file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_model_info(info: Any, path: str) -> dict[str, Any]:
    """A model_info dict read from `path`, checked enough that building a model from it cannot fail obscurely."""
    ok = (
        isinstance(info, dict)
        and info.get("format") == INFO_FORMAT
        and isinstance(info.get("config"), dict)
        and isinstance(info.get("dataset"), dict)
        and all(isinstance(info.get(k), int) for k in ("vocab_size", "seq_len", "num_puzzle_identifiers"))
    )
    if not ok:
        raise UserError(
            f"{path} is not this fork's model metadata (format {INFO_FORMAT}); "
            "write it with hrm.export or `python -m hrm export`"
        )
    return info


def read_model_info(weights: str) -> dict[str, Any] | None:
    """The inference metadata of the checkpoint whose weights are `weights` (step_N or step_N.ema): its
    step_N.json, else (checkpoints written before step_N.json) what step_N.state holds, config and dataset
    fingerprint (memory-mapped: the optimizer moments are not read); None for checkpoints without either
    (the original's, the released ones): those need the dataset folder, as before."""
    base = weights.removesuffix(EMA_SUFFIX)
    path = base + INFO_SUFFIX
    if os.path.basename(weights) == EXPORTED_WEIGHTS:  # an exported folder: its config.json
        path = os.path.join(os.path.dirname(weights), EXPORTED_INFO)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                info = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path} is unreadable ({type(e).__name__}); delete it to use data_path=...") from None
        return check_model_info(info, path)
    if os.path.isfile(base + STATE_SUFFIX):
        try:
            state = torch.load(base + STATE_SUFFIX, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return None  # an unreadable .state says nothing; the dataset folder still shapes the model
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            return model_info(state["config"], state.get("dataset") or {})
    return None


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
# Finding and reading back


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
        m = STEP_RE.match(name)
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
    fingerprint = dataset_fingerprint(data_path)
    info = model_info(config, fingerprint)
    if info is not None:  # first: weights never lack it (and a kill before the weights leaves a stray, cleaned)
        try:
            write_model_info(w_path + INFO_SUFFIX, info)
        except (TypeError, ValueError):
            pass  # a config value JSON cannot hold: the checkpoint still works with its dataset folder
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
            "dataset": fingerprint,
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
    try:
        averaged = load(path)
    except Exception as e:  # truncated, crafted, not a tensor file: unpickling fails in many ways
        raise UserError(
            f"{path} is unreadable ({type(e).__name__}): the weight average of step_{step} is lost"
        ) from None
    if not isinstance(averaged, dict) or not all(isinstance(v, torch.Tensor) for v in averaged.values()):
        raise UserError(f"{path} is not a weight average (a dict of tensors)")
    want = (full.get("checksums") or {}).get("ema")
    if want is not None and digest(averaged) != want:
        raise UserError(f"{path} does not match the checksum in its {STATE_SUFFIX} (corrupt or replaced)")
    return averaged
