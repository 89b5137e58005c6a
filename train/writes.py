"""Writes to the run folder that can fail (a full disk): each one obeys `save_error`.

stop: one line naming what could not be written, exit 2; the newest complete checkpoint stays intact.
continue: one warning per kind of file, and training goes on without that write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from utils.errors import UserError


def reason(e: OSError) -> str:
    if e.strerror:
        return e.strerror
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def append_all(path: str, data: bytes) -> None:
    """Append `data` whole or not at all: a write cut short by a full disk is truncated away, so a later
    append (space freed, save_error=continue) never glues two rows into one broken line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def replace_atomically(path: str, write: Callable[[str], Any]) -> None:
    """`write(tmp)` to a temporary name, then rename it over `path`: a full disk never leaves `path` truncated."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class WriteGuard:
    def __init__(self, policy: str, hint: Callable[[], str] = lambda: "", log=print) -> None:
        self.policy, self.hint, self.log = policy, hint, log
        self.warned: set[str] = set()

    def failed(self, what: str, e: OSError) -> None:
        msg = f"could not write {what} ({reason(e)})"
        if self.policy == "stop":
            hint = self.hint()
            raise UserError(
                f"{msg}; the newest complete checkpoint is intact. Free some disk space (or set another checkpoint_path), then"
                + (f": {hint}" if hint else " resume=auto")
            )
        self.warn_once(what, f"warning: {msg}; continuing without it (save_error=continue); said once")

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as e:
            self.failed(what, e)
            return None

    def warn_once(self, key: str, msg: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.log(msg)

    def reset(self, key: str) -> None:
        self.warned.discard(key)
