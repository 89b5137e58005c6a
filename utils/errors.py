"""User-facing errors: one clear line naming the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config, bad data). Printed without a traceback."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' or '' when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def exit_with(err: BaseException, code: int = 2) -> NoReturn:
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


def load_error(e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (its own messages run to paragraphs)."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        return f"{type(e).__name__}: it holds Python objects, not only tensors; refused, nothing in it was run"
    return f"{type(e).__name__}: {text.splitlines()[0][:160] if text else 'empty or truncated file'}"
