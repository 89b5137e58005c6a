"""A run's names and folder, and what resume resolves to: `resolve_config` turns the composed config into the
run's (validated, named, its folder writable, resume=auto made a concrete step_<N> and that checkpoint verified),
and the commands printed to continue or go back (`resume_command`, `healthy_hint`).

Everything here runs on rank 0 before any data or GPU is touched; load_synced_config (below) broadcasts
the result to the other ranks.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pydantic
import torch.distributed as dist

from train import checkpoint as ckpt
from train import run_checkpoint
from train.config import PretrainConfig, config_error, validate_config
from train.runtime import Dist
from utils import shell
from utils.errors import UserError

# What resume resolved to on rank 0: (step, weights, full state, run folder), verified, so it is read once.
Resumed = tuple[int, dict[str, Any], dict[str, Any], str]


def resolve_config(raw: dict[str, Any]) -> tuple[PretrainConfig, Resumed | None]:
    """Validate the composed config, name the run and its folder, resolve resume; returns the config and the
    checkpoint resume verified (None for a new run). Errors come back as one-line UserErrors."""
    try:
        config = PretrainConfig(**raw)
        validate_config(config)
        named = {"project_name": config.project_name is not None, "run_name": config.run_name is not None}
        if config.project_name is None:
            config.project_name = default_project_name(config.data_path)
        if config.checkpoint_path is None and config.resume == "auto" and config.run_name is None:
            projects = [config.project_name] + (
                [] if named["project_name"] else [legacy_project_name(config.data_path)]
            )
            config.checkpoint_path = latest_run_dir([os.path.join("checkpoints", p) for p in projects])
            if config.checkpoint_path:
                config.run_name = os.path.basename(config.checkpoint_path)
        if config.run_name is None:
            config.run_name = f"{config.recipe or config.arch.name.split('@')[-1]}-{_slug()}"
        if config.checkpoint_path is None:
            config.checkpoint_path = os.path.join("checkpoints", config.project_name, config.run_name)
        check_writable(str(config.checkpoint_path))
        found = resolve_resume(config)
        keep_saved_names(config, named, found)
    except (pydantic.ValidationError, UserError) as e:
        raise config_error(e) from None
    return config, found


def default_project_name(data_path: str) -> str:
    """`Sudoku-demo-ACT-torch`: the original's name (`Sudoku-demo ACT-torch`) without spaces, so the run
    folders under checkpoints/ paste into a shell and a `key=value` argument unquoted."""
    return "-".join(legacy_project_name(data_path).split())


def legacy_project_name(data_path: str) -> str:
    """The original's default project name, kept so resume=auto still finds runs made before the change."""
    return f"{os.path.basename(os.path.normpath(data_path)).capitalize()} ACT-torch"


def latest_run_dir(project_dirs: list[str]) -> str | None:
    """resume=auto without checkpoint_path: the run folder of this project with the newest checkpoint."""
    best: tuple[float, str] | None = None
    for project_dir in project_dirs:
        if not os.path.isdir(project_dir):
            continue
        for name in os.listdir(project_dir):
            run_dir = os.path.join(project_dir, name)
            steps = ckpt.list_complete(run_dir)
            if steps:
                mtime = os.path.getmtime(ckpt.paths(run_dir, steps[0])[1])
                if best is None or mtime > best[0]:
                    best = (mtime, run_dir)
    return best[1] if best else None


def keep_saved_names(config: PretrainConfig, named: dict[str, bool], found: Resumed | None) -> None:
    """A resume in the checkpoint's own folder keeps that run's project and run name (the original had no
    resume; a fresh random name here renamed the run in all_config.yaml and W&B). Names given on the
    command line win."""
    if found is None or not os.path.samefile(found[3], str(config.checkpoint_path)):
        return
    saved = found[2]["config"]
    for key in ("project_name", "run_name"):
        if not named[key] and saved.get(key):
            setattr(config, key, saved[key])


_MADE_DIRS: list[str] = []  # folders check_writable created, deepest first


def check_writable(run_dir: str) -> None:
    missing, p = [], os.path.abspath(run_dir)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        missing.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(run_dir, exist_ok=True)
        _MADE_DIRS.extend(missing)
        probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to checkpoint_path {run_dir!r} ({e.strerror or e}); choose a writable checkpoint_path"
        ) from None


def resolve_resume(config: PretrainConfig) -> Resumed | None:
    """Turn resume=auto into a concrete step_<N> (or None for a fresh run), and refuse to start a new run
    over the checkpoints of an earlier one (the original silently overwrote them). Returns the checkpoint
    it verified (None: a new run)."""
    run_dir = str(config.checkpoint_path)
    if config.resume is None:
        done = ckpt.list_complete(run_dir)
        if done:
            raise UserError(
                f"{run_dir} already holds checkpoints of a run (newest: step_{done[0]}); "
                "add resume=auto to continue it, or choose another checkpoint_path"
            )
        return None
    found = run_checkpoint.find_resume(config.resume, run_dir)
    if found is None:
        config.resume = None
        return None
    step, weights, full, folder = found
    problem = ckpt.health_problem(weights, full, folder) if config.resume == "auto" else None
    if problem:
        healthy = (full.get("progress") or {}).get("healthy_step")
        raise UserError(
            f"resume=auto: the newest checkpoint step_{step} in {folder} is not healthy ({problem}); "
            + healthy_hint(config, healthy, newest=step)
        )
    saved_cfg = dict(full["config"])
    if saved_cfg.get("recipe") != config.recipe:  # first: the other keys' advice would resume without its values
        was = saved_cfg.get("recipe")
        raise UserError(
            f"resume: the checkpoint was trained with recipe={was} and this command has recipe={config.recipe}; "
            + (
                f"add recipe={was} (and the keys it was given then)"
                if was
                else "drop recipe= (it was trained without one)"
            )
        )
    for key in ("data_path", "global_batch_size", "epochs", "eval_interval"):
        if saved_cfg.get(key) != getattr(config, key):
            raise UserError(
                f"resume: {key}={getattr(config, key)!r} differs from the checkpoint's {saved_cfg.get(key)!r}; use the original value"
            )
    if not ckpt.same_arch(saved_cfg.get("arch") or {}, config.arch.model_dump(), config.arch.name):
        raise UserError("resume: arch settings differ from the checkpoint's; use the original arch.* values")
    config.resume = os.path.join(folder, f"step_{step}")
    return found


def remove_made_dirs() -> None:
    """A run that stops before writing anything leaves no empty run folder behind (rmdir: never one with files)."""
    while _MADE_DIRS:
        try:
            os.rmdir(_MADE_DIRS.pop(0))
        except OSError:
            _MADE_DIRS.clear()


def _slug() -> str:
    try:
        import coolname

        return coolname.generate_slug(2)
    except ImportError:
        return time.strftime("%Y%m%d-%H%M%S")


def resume_command(config: PretrainConfig, target: str = "auto") -> str:
    """The command that continues this run, pasted into a shell as printed: the arguments as the shell
    handed them to us (already in Hydra's syntax), quoted for the shell, plus the run folder for Hydra.
    `target`: auto, or a step_<N> path to go back to."""
    args = [a for a in sys.argv[1:] if not a.lstrip("+").startswith(("resume=", "checkpoint_path="))]
    args += [shell.override("checkpoint_path", str(config.checkpoint_path)), shell.override("resume", target)]
    launcher = ["python"]
    if "LOCAL_RANK" in os.environ:
        launcher = ["torchrun", "--nproc-per-node", os.environ.get("LOCAL_WORLD_SIZE", "1")]
    return shell.join([*launcher, sys.argv[0], *args])


def healthy_hint(config: PretrainConfig, healthy: int | None, newest: int | None = None) -> str:
    """Which checkpoint to go back to after non-finite values, as a command to paste. `healthy`: the newest
    known healthy one; checkpoints written before health was tracked fall back to the one before `newest`."""
    run_dir = str(config.checkpoint_path)
    done = ckpt.list_complete(run_dir)
    if healthy not in done:
        older = [s for s in done if newest is not None and s < newest]
        healthy = older[0] if older else None
    if healthy is None:
        return "no earlier healthy checkpoint: start again with a lower lr (or more lr_warmup_steps) and another checkpoint_path"
    cmd = resume_command(config, target=os.path.join(run_dir, f"step_{healthy}"))
    return f"the last healthy checkpoint is step_{healthy}; continue from it (lower lr or more lr_warmup_steps first): {cmd}"


def load_synced_config(hydra_config: Any, d: Dist) -> tuple[PretrainConfig, Resumed | None]:
    """Rank 0 validates and names the run (train/config.py), then broadcasts, so every rank agrees on one
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
