"""Full-state checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint at step N is two files in the run folder:
    step_N          model weights, keys as the original's (no `_orig_mod.`): evaluate.py and the original read it
    step_N.state    optimizers, step, RNG states, data position, ACT carry, config, dataset fingerprint, versions
    step_N.ema      (ema=true) the weights with the averaged parameters: what evaluation uses; kept with step_N
With several processes, each rank r > 0 first writes `step_N.state.rank<r>` (its carry and RNG); rank 0
writes its files last. Every file is written to a temporary name, fsync'ed and renamed, and `step_N.state`
is written last of all, so its presence marks a complete checkpoint: `kill -9` at any moment leaves the
previous one loadable. Loading uses `weights_only=True`: a checkpoint cannot run code.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import random
import re
import sys
from typing import Any

import numpy as np
import torch

from utils.errors import UserError

STATE_SUFFIX = ".state"
EMA_SUFFIX = ".ema"  # step_N.ema: the weights with the EMA parameters (ema=true), kept as long as step_N
_STEP_RE = re.compile(r"^step_(\d+)\.state$")


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
# Finding and pruning


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
    if not isinstance(state, dict) or state.get("format") != "hrm-fork-state-v1" or state.get("step") != step:
        raise ValueError("not a training-state file of this fork")
    return weights, state


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
    """Keep the newest `keep_last` complete checkpoints and those in `protect_full` (the best); of the rest,
    delete the training state, and the weights too unless the step is in `keep_weights` (eval checkpoints)."""
    if keep_last <= 0:
        return
    for step in list_complete(run_dir)[keep_last:]:
        if step in protect_full:
            continue
        w, s = paths(run_dir, step)
        doomed = [s, *glob.glob(s + ".rank*")] + ([] if step in keep_weights else [w, w + EMA_SUFFIX])
        for p in doomed:  # the marker goes first: a half-deleted checkpoint is never "complete"
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
