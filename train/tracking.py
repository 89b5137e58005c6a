"""Metrics go to `<run folder>/metrics.jsonl` always, and to Weights & Biases when it is set up.

W&B never blocks a run: `wandb_mode=auto` uses it only if it is installed and logged in (env key or
~/.netrc) or WANDB_MODE says otherwise; a failed init prints one line and the run goes on without it.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from train.writes import append_all
from utils.errors import UserError

WANDB_MODES = ("auto", "online", "offline", "disabled")


# Reading metrics.jsonl back (plot.py, bench/records_table.py): one JSON object a line, also gzipped


def metrics_file(path: str) -> str:
    """The metrics file of a run folder (metrics.jsonl, or metrics.jsonl.gz as kept under results/), or the file."""
    if os.path.isfile(path):
        return path
    for name in ("metrics.jsonl", "metrics.jsonl.gz"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    if not os.path.isdir(path):
        raise UserError(f"{path!r} does not exist; pass a run folder (checkpoints/<project>/<run>)")
    # a project folder: name the runs inside it
    runs = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "metrics.jsonl")))
    hint = f"; runs under it: {', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}" if runs else ""
    raise UserError(f"{path!r} has no metrics.jsonl (is it a run folder?){hint}")


def read_metrics(fname: str) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """([(line number, row with an integer step)] in file order, how many other lines could not be read). The
    half-written last line of a run still going is dropped without counting."""
    import gzip
    import zlib

    try:
        with gzip.open(fname, "rt") if fname.endswith(".gz") else open(fname) as f:
            lines = f.readlines()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as e:  # binary junk, a broken .gz
        raise UserError(f"{fname} is not a metrics.jsonl text file ({type(e).__name__})") from None
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows, bad = [], 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["step"] = int(row["step"])
        # TypeError: a line that is not an object; RecursionError: a line nested thousands deep
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError):
            bad += 1
            continue
        rows.append((n, row))
    return rows, bad


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1])
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _jsonable(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


class Tracker:
    def __init__(self, run_dir: str | None, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(run_dir, "metrics.jsonl") if (run_dir and enabled) else None
        self.wandb: Any = None
        self.wandb_status = "disabled"
        self.t0 = time.time()
        self.on_error: Callable[[OSError], None] | None = None  # a failed metrics write (disk full); None: raise
        if self.path:
            os.makedirs(run_dir, exist_ok=True)  # type: ignore[arg-type]

    def start_wandb(self, mode: str, project: str, name: str, config: dict[str, Any]) -> str:
        """Returns a one-line status for the start-up report."""
        if not self.enabled:
            return "off (not rank 0)"
        if mode not in WANDB_MODES:
            from utils.errors import UserError

            raise UserError(f"wandb_mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        env_mode = os.environ.get("WANDB_MODE")
        if mode == "auto":
            if env_mode in ("online", "offline", "disabled", "dryrun"):
                mode = "offline" if env_mode == "dryrun" else env_mode
            elif wandb_logged_in():
                mode = "online"
            else:
                self.wandb_status = "off: not logged in (run `wandb login`, or wandb_mode=offline to log locally)"
                return self.wandb_status
        if mode == "disabled":
            self.wandb_status = "off (wandb_mode=disabled)"
            return self.wandb_status
        try:
            import wandb
        except ImportError:
            self.wandb_status = "off: wandb is not installed (pip install wandb)"
            return self.wandb_status
        try:
            self.wandb = wandb.init(
                project=project, name=name, config=config, mode=mode, settings=wandb.Settings(x_disable_stats=True)
            )
            self.wandb_status = f"{mode} ({project} / {name})"
        except Exception as e:
            self.wandb = None
            self.wandb_status = (
                f"off: wandb.init failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
            )
        return self.wandb_status

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run trains those steps again)."""
        if not self.path or not os.path.isfile(self.path):
            return
        rows = []
        with open(self.path) as f:
            for line in f:
                try:
                    if json.loads(line).get("step", 0) <= step:
                        rows.append(line if line.endswith("\n") else line + "\n")
                except json.JSONDecodeError:
                    pass  # a line cut short by kill -9
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.writelines(rows)
            os.replace(tmp, self.path)
        except OSError:
            if os.path.exists(tmp):  # a full disk: the original stays, no half-written copy beside it
                os.remove(tmp)
            raise

    def size(self) -> int | None:
        """Bytes of metrics.jsonl now: saved with each checkpoint, so a resume can cut the file back to it."""
        return os.path.getsize(self.path) if self.path and os.path.isfile(self.path) else None

    def rewind(self, step: int, size: int | None) -> None:
        """Resume: metrics.jsonl as it was when the checkpoint was written (`size` bytes), which also drops
        an eval row logged after it by a run killed before its eval checkpoint. Checkpoints without the size
        (older ones, or the file was replaced) fall back to dropping the rows after `step`."""
        now = self.size()
        if size is not None and now is not None and now >= size:
            os.truncate(self.path, size)  # type: ignore[arg-type]
        else:
            self.truncate_after(step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        if self.path:
            row = {"step": step, "time": round(time.time() - self.t0, 3)}
            row.update({k: _jsonable(v) for k, v in metrics.items()})
            try:
                append_all(self.path, (json.dumps(row) + "\n").encode())
            except OSError as e:
                if self.on_error is None:
                    raise
                self.on_error(e)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def finish(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_seconds(seconds: float) -> str:
    """A step's time: `0.42s`, `8.1s`, `3m58s`."""
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    return fmt_duration(seconds)


def steps_left(step: int, total: int, steps_left_at: Callable[[int, int], float] | None) -> float:
    """The steps from `step` to `total` in steps of `step`'s cost (a depth curriculum's later stages cost more,
    train/curriculum.py), or simply their number where every step costs the same (`steps_left_at` None)."""
    return total - step if steps_left_at is None else steps_left_at(step, total)


class StepRate:
    """Seconds per training step over a window of recent steady steps.

    Left out: the first `warmup_steps` steps after a start (start-up, torch.compile, the first allocations, a
    CUDA graph's recording) and the first step after each `pause()` (around evaluations, their compile and
    checkpoint writes); the median of the window also ignores a one-off slow step. `first` keeps the first
    step's time, to show something before there is a rate. On the GPU a step is ticked when it has been
    launched, which in a steady run is paced by the GPU (launching waits for the previous step), so the spacing
    of ticks is the step time.
    """

    def __init__(self, window: int = 20, clock=time.monotonic, warmup_steps: int = 1) -> None:
        self.clock = clock
        self.dts: deque[float] = deque(maxlen=window)
        self.t0 = clock()
        self.last: tuple[float, int] | None = None
        self.first: float | None = None  # seconds the first step took (warm-up included)
        self.step = 0
        # steps after the start that are not steady (train/runtime.CompileGuard.warmup_calls): left out, else a
        # CUDA graph's recording read as the step time gave a first estimate of 1h57m for a 23-minute run
        self.warmup_steps = warmup_steps
        self.ticks = 0

    def tick(self, step: int) -> None:
        now = self.clock()
        self.ticks += 1
        if self.last is None:
            if self.first is None:
                self.first = now - self.t0
        elif step > self.last[1] and self.ticks > self.warmup_steps:
            self.dts.append((now - self.last[0]) / (step - self.last[1]))
        self.last, self.step = (now, step), step

    def pause(self) -> None:
        """The time until the next tick is not training (an evaluation, a checkpoint): do not count it."""
        self.last = None

    def seconds_per_step(self) -> float | None:
        return statistics.median(self.dts) if self.dts else None

    def describe(self) -> str:
        """`11.52 steps/s` or `4.1 s/step` (never `0.00 steps/s`), or the first step's time before a rate."""
        sps = self.seconds_per_step()
        if sps is None:
            return (
                f"first step {fmt_duration(self.first)} (incl. warm-up)"
                if self.first is not None
                else "first step running"
            )
        return fmt_rate(sps)


def fmt_rate(seconds_per_step: float, unit: str = "step", units: str = "steps") -> str:
    """`11.52 steps/s` at one a second or more, else `4.1 s/step`: a slow run never reads `0.00 steps/s`."""
    if seconds_per_step <= 0:
        return f"- {units}/s"
    rate = 1 / seconds_per_step
    return f"{rate:.2f} {units}/s" if rate >= 1 else f"{seconds_per_step:.1f} s/{unit}"


class LineProgress:
    """Progress for logs (stdout not a terminal): one plain line every `interval` s, no carriage returns.
    Implements the part of tqdm's interface the trainer uses. The rate and ETA come from `rate` (steady
    steps only: see StepRate); without one, from the spacing of this bar's own updates."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        interval: float = 60.0,
        batch: int = 0,
        file=None,
        desc: str = "step",
        rate: StepRate | None = None,
        clock=time.monotonic,
        steps_left_at: Callable[[int, int], float] | None = None,
    ):
        import sys

        self.total, self.n, self.interval, self.batch, self.desc = total, initial, interval, batch, desc
        self.steps_left_at = steps_left_at  # as Estimate's: the steps left counted by their cost (None: all alike)
        self.file = file or sys.stdout
        self.clock = clock
        self.rate = rate or StepRate(clock=clock)
        self.own_rate = rate is None
        self.last = clock()
        self.postfix: dict[str, Any] = {}

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.own_rate:
            self.rate.tick(self.n)
        now = self.clock()
        if now - self.last >= self.interval or self.n >= self.total:
            self.last = now
            self.file.write(self.line() + "\n")
            self.file.flush()

    def line(self) -> str:
        label, unit, units = (
            ("step", "step", "steps") if self.desc in ("train", "step") else (self.desc, "batch", "batches")
        )
        parts = [f"{label} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.1f}%)"]
        sps = self.rate.seconds_per_step()
        if sps is None:
            parts.append(self.rate.describe() if self.rate.first is not None else "timing the first steps")
            parts.append("ETA after the next steps")
        else:
            speed = fmt_rate(sps, unit, units)
            if self.batch:
                speed += f", {self.batch / sps:,.0f} examples/s"
            parts.append(speed)
            parts.append(f"ETA {fmt_duration(steps_left(self.n, self.total, self.steps_left_at) * sps)}")
        if self.postfix:
            parts.append(" ".join(f"{k} {v}" for k, v in self.postfix.items()))
        return " | ".join(parts)

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.postfix = kw

    def close(self) -> None:
        pass


def progress_bar(
    total: int,
    initial: int,
    batch: int,
    desc: str = "train",
    rate: StepRate | None = None,
    steps_left_at: Callable[[int, int], float] | None = None,
):
    """tqdm on a terminal; LineProgress when output goes to a file (tmux logs, nohup, CI). `steps_left_at`: the
    log line's ETA counts the steps left by their cost (a depth curriculum's; tqdm's own ETA does not)."""
    import sys

    if sys.stderr.isatty():
        import tqdm

        return tqdm.tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, unit="step")
    return LineProgress(
        total,
        initial,
        interval=float(os.environ.get("HRM_PROGRESS_SECONDS", 60)),
        batch=batch,
        desc=desc,
        rate=rate,
        steps_left_at=steps_left_at,
    )


class Estimate:
    """Prints how long the run will take, as early as it can say anything and from steady steps only:
    after the first step (its time, warm-up included, labelled so), after the first steady step, and once
    more when `span` steady steps are measured."""

    def __init__(
        self,
        start_step: int,
        total: int,
        evals: int,
        log,
        rate: StepRate,
        compiled: bool = False,
        steps_left_at: Callable[[int, int], float] | None = None,
    ) -> None:
        self.start, self.total, self.evals, self.log, self.rate = start_step, total, evals, log, rate
        self.compiled = compiled  # the first step holds torch.compile's minute: extrapolating it says nothing
        # steps_left_at(step, total): the steps left counted in steps of `step`'s cost, where steps cost more later
        # (the depth curriculum's deeper stages, train/curriculum.py); None: every step costs the same
        self.steps_left_at = steps_left_at
        self.span = max(1, min(20, (total - start_step) // 2))
        self.said: set[str] = set()

    def tick(self, step: int) -> None:
        left = self.total - step
        if left <= 0:
            return
        n = len(self.rate.dts)
        sps = self.rate.seconds_per_step()
        if "first" not in self.said and self.rate.first is not None and sps is None:
            self.said.add("first")
            if self.compiled:
                self.log(
                    f"first step took {fmt_seconds(self.rate.first)} (start-up and torch.compile included); "
                    "an estimate follows after a few steady steps"
                )
            else:
                self.log(
                    f"first step took {fmt_seconds(self.rate.first)} (start-up included, so later steps are usually "
                    f"faster); at that pace the remaining {left:,} steps would take {fmt_duration(left * self.rate.first)}"
                )
        elif sps is not None and (n == 1 or n == self.span) and str(n) not in self.said:
            self.said.add(str(n))
            basis = f"timed over {n} steady step{'s' if n > 1 else ''}" + ("; refined later" if n < self.span else "")
            units = steps_left(step, self.total, self.steps_left_at)
            if units != left:
                basis += "; later curriculum stages' steps counted by their cost"
            self.log(
                f"estimate: {fmt_duration(units * sps)} for the remaining {left:,} steps at {fmt_rate(sps)} "
                f"({basis}), plus {self.evals} evaluation(s)"
            )
