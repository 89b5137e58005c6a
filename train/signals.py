"""Stopping a run cleanly: Ctrl-C, SIGTERM (`timeout`, job schedulers) and SIGHUP (a closed tmux pane)."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP (a closed tmux pane) ask the loop to stop after the current step and save;
    a second signal exits at once.

    The same signal again within GRACE_S counts as the first: `timeout` sends SIGTERM to the process and then
    to its whole process group, so one timeout delivers it twice (measured on the GPU machine: the run exited
    without saving before this grace existed).
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
    GRACE_S = 2.0

    def __init__(self, log, plan=None) -> None:
        self.requested: str | None = None
        self.log = log
        self.plan = plan or (lambda: "finishing this step, then saving a checkpoint")  # what happens next
        self._old: dict[int, Any] = {}
        self._first_at = 0.0

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested == name and time.monotonic() - self._first_at < self.GRACE_S:
            return  # the same request delivered twice (process, then process group)
        if self.requested is not None:
            print(f"\n{name} again: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested, self._first_at = name, time.monotonic()
        again = "Ctrl-C again" if name == "SIGINT" else f"send {name} again"
        self.log(f"\n{name} received: {self.plan()}; {again} to quit at once without saving")
        sys.stdout.flush()  # at once, also when stdout is a log file

    def __exit__(self, *exc: Any) -> None:
        if self.requested is not None:
            # The run is stopping, its checkpoint saved: a duplicate delivery on the way out (`timeout` signals
            # twice) must not kill it before exit 130. Python resets its own handlers while it shuts down, an
            # ignored signal stays ignored.
            for sig in self._old:
                signal.signal(sig, signal.SIG_IGN)
            return
        for sig, old in self._old.items():
            signal.signal(sig, old)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """In loader workers: Ctrl-C, `timeout` and a closed tmux pane signal the whole process group; a worker
    killed by them makes PyTorch raise in the main process mid-step, before it can save. The main process
    handles the stop (StopSignals) and ends its workers itself (end_workers_at_exit)."""
    for name in StopSignals.SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


_loaders: weakref.WeakSet[Any] = weakref.WeakSet()


def end_workers_at_exit(loader: Any) -> Any:
    """Register a DataLoader whose workers ignore stop signals, so that they end when the process exits.

    Python's multiprocessing ends daemon workers at exit with SIGTERM and then waits for them, and these ignore
    SIGTERM: a process that exits while the loader still exists waited forever. The loader outlives the run when
    it exits by an exception (a stop by signal exits 130 with sys.exit, a user error exits 2), because the
    traceback keeps the run's frames. Measured: every GPU run stopped by `timeout` hung after saving until
    `timeout -k` killed it, and a second Ctrl-C could not help (the signals are ignored by then). This handler
    runs before multiprocessing's (atexit runs last-registered first) and shuts the workers down the way the
    loader itself would."""
    if not _loaders:
        atexit.unregister(_end_workers)  # once, however many loaders
        atexit.register(_end_workers)
    _loaders.add(loader)
    return loader


def _end_workers() -> None:
    for loader in list(_loaders):
        it = getattr(loader, "_iterator", None)  # where a DataLoader keeps its persistent workers' iterator
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()  # PyTorch's own handshake: stops the pin-memory thread, tells each worker to end, joins
        for worker in getattr(it, "_workers", ()):
            if worker.is_alive():  # past the handshake's timeout: SIGKILL cannot be ignored
                worker.kill()
