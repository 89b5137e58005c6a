"""A run's checkpoints: the checkpoint of a step written from every rank or none (`save`: the checks, the
health verdict, the ranks' agreement, pruning), read back into a new launch (`restore`), the resume lookup
(`find_resume`), and the folder kept tidy (`prune`, `clean_stale`, `supersede_newer`). What the files hold is
train/checkpoint.py's; train/steps.py's save_train_state/restore_train_state decide when and hand over the
trainer's objects as plain state dicts.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from train.checkpoint import (
    EMA_SUFFIX,
    INFO_SUFFIX,
    STATE_SUFFIX,
    STEP_RE,
    TMP_RE,
    UNHEALTHY_SUFFIX,
    list_complete,
    load_complete,
    load_ema,
    nonfinite,
    paths,
    read_rank,
    write,
    write_rank,
)
from utils.errors import UserError

if TYPE_CHECKING:
    from train.runtime import Dist
    from train.writes import WriteGuard


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
    if not want_ema and (full.get("checksums") or {}).get("ema") is not None:
        # Resuming without it would drop the average silently, and leave step_N.ema beside weights it no longer
        # averages, which evaluate.py would then score as this checkpoint's.
        raise UserError(
            f"{os.path.join(folder, f'step_{step}')} was trained with ema=true (its weight average is step_{step}.ema): "
            "resume with ema=true, or start a new run (another checkpoint_path) without it"
        )
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
# Resume lookup, pruning, cleaning up


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
            if (state.get("checksums") or {}).get("ema") is not None:  # saved with an average: it must read back
                load_ema(folder, step, state)
        except (ValueError, UserError) as e:
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
    for p in (
        ([] if keep_weights else [w, w + EMA_SUFFIX, w + INFO_SUFFIX])
        + sorted(glob.glob(glob.escape(s) + ".rank*"))
        + [marker, s]
    ):
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
        m = TMP_RE.search(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            doomed.append(name)
        elif STEP_RE.match(name) and name.removesuffix(STATE_SUFFIX) not in names:
            doomed.append(name)
        elif re.match(r"^step_\d+\.ema$", name) and name.removesuffix(EMA_SUFFIX) not in names:
            doomed.append(name)  # an average whose weights were pruned by a kill mid-way
        elif re.match(r"^step_\d+\.json$", name) and name.removesuffix(INFO_SUFFIX) not in names:
            doomed.append(name)  # metadata written just before a kill stopped its weights (or pruned them)
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
