"""Metrics go to `<run folder>/metrics.jsonl` always, and to Weights & Biases when it is set up.

W&B never blocks a run: `wandb_mode=auto` uses it only if it is installed and logged in (env key or
~/.netrc) or WANDB_MODE says otherwise; a failed init prints one line and the run goes on without it.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
from collections.abc import Callable
from typing import Any

from utils.writes import append_all

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _wandb_logged_in() -> bool:
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
            elif _wandb_logged_in():
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


class LineProgress:
    """Progress for logs (stdout not a terminal): one plain line every `interval` s, no carriage returns.
    Implements the part of tqdm's interface the trainer uses."""

    def __init__(
        self, total: int, initial: int = 0, interval: float = 60.0, batch: int = 0, file=None, desc: str = "step"
    ):
        import sys

        self.total, self.n, self.interval, self.batch, self.desc = total, initial, interval, batch, desc
        self.file = file or sys.stdout
        self.start_n, self.t0 = initial, time.time()
        self.last = self.t0
        self.postfix: dict[str, Any] = {}

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.time()
        if now - self.last >= self.interval or self.n >= self.total:
            self.last = now
            self.file.write(self.line(now) + "\n")
            self.file.flush()

    def line(self, now: float) -> str:
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        label, unit = ("step", "steps") if self.desc == "train" else (self.desc, "batches")
        parts = [f"{label} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.1f}%)", f"{rate:.2f} {unit}/s"]
        if self.batch:
            parts[-1] += f", {rate * self.batch:,.0f} examples/s"
        parts.append(f"ETA {fmt_duration(eta) if math.isfinite(eta) else '?'}")
        if self.postfix:
            parts.append(" ".join(f"{k} {v}" for k, v in self.postfix.items()))
        return " | ".join(parts)

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.postfix = kw

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, batch: int, desc: str = "train"):
    """tqdm on a terminal; LineProgress when output goes to a file (tmux logs, nohup, CI)."""
    import sys

    if sys.stderr.isatty():
        import tqdm

        return tqdm.tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, unit="step")
    return LineProgress(
        total, initial, interval=float(os.environ.get("HRM_PROGRESS_SECONDS", 60)), batch=batch, desc=desc
    )


class Estimate:
    """Prints, once, how long the run will take, timed over steps after the first (compile) ones."""

    def __init__(self, start_step: int, total: int, evals: int, log) -> None:
        self.start, self.total, self.evals, self.log = start_step, total, evals, log
        left = total - start_step
        self.warmup, self.span = min(5, left // 4), min(20, left // 2)  # short runs still get an estimate
        self.t: float | None = None

    def tick(self, step: int) -> None:
        if step == self.start + self.warmup:
            self.t = time.monotonic()
        elif step == self.start + self.warmup + self.span and self.t is not None and self.span > 0:
            rate = self.span / (time.monotonic() - self.t)
            left = (self.total - step) / rate
            self.log(
                f"estimate: {fmt_duration(left)} for the remaining {self.total - step:,} steps at {rate:.2f} steps/s, plus {self.evals} evaluation(s)"
            )
