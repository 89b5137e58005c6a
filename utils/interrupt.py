"""Imported first by the entry scripts: Ctrl-C before a script's own handling starts (while torch and the
rest import, which takes seconds) prints one line instead of a traceback. The process still ends as killed by
SIGINT, as Python does for an unhandled Ctrl-C: exit status 130 in a shell."""

from __future__ import annotations

import sys
from types import TracebackType

_previous = sys.excepthook


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return
    _previous(kind, value, tb)


sys.excepthook = _hook
