"""Puzzles in and out of token sequences: the text forms predict.py reads and prints, and the arrays of digits the
API takes and returns. The one home of this encoding (predict.py imports it).

Tokens are what the dataset builders write: Sudoku pad 0, blank 1, digits 1-9 as 2-10; Maze pad 0 and the
characters `# SGo` (wall, open, start, goal, path) as 1-5. The API's digits are tokens - 1: a Sudoku grid holds
0 (blank) to 9, a maze grid the index of its character in MAZE_CHARS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from utils.errors import UserError

MAZE_CHARS = "# SGo"  # tokens 1..5 (0 = pad)
SUPPORTED = ("sudoku", "maze")  # the kinds whose puzzles have a text form; ARC tasks are scored by evaluate.py
_SHAPES = {"sudoku": (9, 9), "maze": (30, 30)}
_DIGITS = {"sudoku": 9, "maze": len(MAZE_CHARS) - 1}  # the largest digit of a puzzle grid


def encode(text: str, seq_len: int, vocab: int) -> tuple[np.ndarray, str]:
    """Puzzle text -> (tokens (seq_len,), kind). Sudoku: 81 characters, '.' or '0' blank (spaces, line breaks and
    the `|+-` of a drawn grid are ignored). Maze: 900 characters of `# SGo`, 30 lines of 30 or one line."""
    if seq_len == 81 and vocab == 11:
        from dataset.puzzles.sudoku import parse_puzzle

        flat = "".join(ch for ch in text if not ch.isspace() and ch not in "|+-")
        try:
            return parse_puzzle(flat).astype(np.int64) + 1, "sudoku"
        except ValueError as e:
            raise UserError(f"not a Sudoku: {e} (give 81 characters, '.' or '0' for blanks)") from None
    if seq_len == 900 and vocab == 6:
        # Only line breaks are dropped: spaces are a maze's free cells, also at the start or end of a line
        rows = [r.rstrip("\r") for r in text.split("\n")]
        flat = "".join(r for r in rows if r)
        if len(flat) != 900 or any(c not in MAZE_CHARS for c in flat):
            raise UserError("not a 30x30 maze: give 900 characters of '# SGo' (30 lines of 30, or one line)")
        return np.array([MAZE_CHARS.index(c) + 1 for c in flat], dtype=np.int64), "maze"
    raise UserError(
        f"puzzle text is read for Sudoku (seq 81, vocab 11) and Maze (seq 900, vocab 6); this model has seq {seq_len}, "
        f"vocab {vocab}: score it with python evaluate.py checkpoint=<step_N> data_path=<its dataset>"
    )


def show(tokens: np.ndarray, kind: str) -> str:
    """Tokens (seq_len,) as text: a Sudoku drawn with box lines, a maze as 30 lines of `# SGo`."""
    tokens = np.asarray(tokens).reshape(-1)
    if kind == "sudoku":
        d = (tokens.astype(np.int64) - 1).clip(0, 9).reshape(9, 9)
        lines = []
        for r in range(9):
            if r in (3, 6):
                lines.append("------+-------+------")
            row = " ".join(str(x) if x else "." for x in d[r])
            lines.append(f"{row[:5]} | {row[6:11]} | {row[12:]}")
        return "\n".join(lines)
    return "\n".join("".join(MAZE_CHARS[max(int(t) - 1, 0)] for t in tokens[r * 30 : (r + 1) * 30]) for r in range(30))


def to_tokens(puzzles: Any, kind: str, seq_len: int, vocab: int) -> np.ndarray:
    """Puzzles as the API takes them -> tokens (N, seq_len) int64: one text or a list of texts (as `encode`), or
    an array / torch tensor of digits, (seq_len,), (N, seq_len), one grid (H, W) or (N, H, W)."""
    if kind not in SUPPORTED:
        raise UserError(
            f"this model was trained on {kind} puzzles; solve() reads {' and '.join(SUPPORTED)}: score it with "
            "python evaluate.py checkpoint=<step_N> data_path=<its dataset>"
        )
    if isinstance(puzzles, str):
        puzzles = [puzzles]
    if isinstance(puzzles, (list, tuple)) and not puzzles:
        raise UserError("no puzzles given: give at least one")
    if isinstance(puzzles, (list, tuple)) and puzzles and all(isinstance(p, str) for p in puzzles):
        rows = []
        for i, text in enumerate(puzzles):
            try:
                rows.append(encode(text, seq_len, vocab)[0])
            except UserError as e:
                raise UserError(f"puzzle {i}: {e}" if len(puzzles) > 1 else str(e)) from None
        return np.stack(rows)
    if hasattr(puzzles, "detach"):  # a torch tensor, on any device
        puzzles = puzzles.detach().cpu().numpy()
    try:
        grids = np.asarray(puzzles)
    except (ValueError, TypeError):
        grids = np.asarray([], dtype=object)
    shape = _SHAPES[kind]
    if grids.ndim in (1, 2) and grids.shape[-1] == seq_len:
        grids = grids.reshape(-1, seq_len)
    elif grids.ndim in (2, 3) and grids.shape[-2:] == shape:
        grids = grids.reshape(-1, seq_len)
    else:
        raise UserError(
            f"cannot read {type(puzzles).__name__} of shape {getattr(grids, 'shape', '?')} as {kind} puzzles: give text, a list "
            f"of texts, or digits shaped ({seq_len},), (N, {seq_len}), {shape} or (N, {shape[0]}, {shape[1]})"
        )
    if not grids.size:
        raise UserError("no puzzles given: give at least one")
    if not np.issubdtype(grids.dtype, np.integer) or grids.min() < 0 or grids.max() > _DIGITS[kind]:
        what = "0 (blank) to 9" if kind == "sudoku" else f"0 to {_DIGITS[kind]}, indices into {MAZE_CHARS!r}"
        got = f"{grids.min()} to {grids.max()}" if np.issubdtype(grids.dtype, np.number) else "other values"
        raise UserError(f"{kind} digits must be whole numbers {what}; got {grids.dtype}, {got}")
    return grids.astype(np.int64) + 1


def to_digits(tokens: np.ndarray, kind: str) -> np.ndarray:
    """Tokens (..., seq_len) -> digits (..., H, W) as uint8: Sudoku 0-9, maze indices into MAZE_CHARS; a pad token
    the model predicted reads as 0 (blank, wall)."""
    tokens = np.asarray(tokens)
    digits = (tokens.astype(np.int64) - 1).clip(0, _DIGITS.get(kind, 255)).astype(np.uint8)
    return digits.reshape(*tokens.shape[:-1], *_SHAPES.get(kind, (tokens.shape[-1],)))
