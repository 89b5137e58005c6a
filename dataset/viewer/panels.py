"""What is drawn, the same for the PNG and the HTML page: each example as panels (input, label, prediction) of 2-D
grids cut out of its tokens, with the wrong cells and the scores of a prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataset.puzzles import arc
from dataset.viewer.data import Dataset, Preds


@dataclass
class Panel:
    caption: str
    grid: np.ndarray  # 2-D: digits 0-9 (Sudoku, 0 blank), colours 0-9 (ARC), tokens (Maze, other)
    wrong: np.ndarray | None = None  # bool, grid's shape: cells that differ from the label
    given: np.ndarray | None = None  # Sudoku: the puzzle's givens (black ink; the rest blue)
    note: str = ""  # said under the grid, e.g. a prediction of the wrong size
    changed: np.ndarray | None = None  # bool, grid's shape: cells that differ from the previous ACT segment (think.py)


@dataclass
class Example:
    index: int
    title: str
    panels: list[Panel]
    accuracy: float | None = None  # token accuracy of the prediction
    exact: bool | None = None
    halt: float | None = None  # sigmoid(q_halt_logits)


def sudoku_digits(tokens: np.ndarray) -> np.ndarray:
    """Tokens (digit + 1, blank 1, pad 0) -> 9x9 digits, 0 blank."""
    return np.where(tokens >= 2, tokens - 1, 0).reshape(9, 9)


def arc_grid(tokens: np.ndarray, at: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The grid of a canvas (colours 0-9) and where it sits. Test examples sit at the top left, train examples at a
    random offset: the canvas is shifted so the grid starts at the top left, then cut at its eos frame by arc.crop.
    `at`: cut at this offset instead (a prediction, where its label's grid is)."""
    canvas = np.asarray(tokens).reshape(arc.GRID, arc.GRID)
    if at is None:
        colour = (canvas >= arc.COLOUR_OFFSET) & (canvas < arc.COLOUR_OFFSET + 10)
        rows, cols = colour.any(axis=1), colour.any(axis=0)
        at = (int(rows.argmax()), int(cols.argmax())) if rows.any() else (0, 0)
    shifted = np.full_like(canvas, arc.PAD)
    shifted[: arc.GRID - at[0], : arc.GRID - at[1]] = canvas[at[0] :, at[1] :]
    return arc.crop(shifted.ravel()), at


def build_example(data: Dataset, i: int, preds: Preds | None) -> Example:
    inp, lab, _, title = data.row(i)
    kind = data.kind.name
    pred = acc = exact = halt = None
    if preds is not None:
        fi, r = preds.where[i]
        t = preds.tensors[fi]
        pred = t["logits"][r].argmax(-1).numpy().astype(np.int64)
        scored = lab != data.meta.ignore_label_id if data.meta.ignore_label_id is not None else np.ones_like(lab, bool)
        hits = (pred == lab)[scored]
        acc, exact = (float(hits.mean()) if hits.size else 1.0), bool(hits.all())
        if "q_halt_logits" in t:
            halt = float(1 / (1 + math.exp(-float(t["q_halt_logits"][r]))))

    panels: list[Panel] = []
    if kind == "sudoku":
        given = sudoku_digits(inp) > 0
        panels += [Panel("input", sudoku_digits(inp), given=given), Panel("label", sudoku_digits(lab), given=given)]
        if pred is not None:
            panels.append(Panel("prediction", sudoku_digits(pred), wrong=(pred != lab).reshape(9, 9), given=given))
    elif kind == "arc":
        g_in, _ = arc_grid(inp)
        g_lab, at = arc_grid(lab)
        panels += [
            Panel(f"input {g_in.shape[0]}x{g_in.shape[1]}", g_in),
            Panel(f"label {g_lab.shape[0]}x{g_lab.shape[1]}", g_lab),
        ]
        if pred is not None:
            g_pred, _ = arc_grid(pred, at)
            h, w = g_pred.shape
            wrong = np.ones((h, w), dtype=bool)  # cells outside the label's grid are wrong
            oh, ow = min(h, g_lab.shape[0]), min(w, g_lab.shape[1])
            wrong[:oh, :ow] = g_pred[:oh, :ow] != g_lab[:oh, :ow]
            note = "" if (h, w) == g_lab.shape else f"size {h}x{w}, label {g_lab.shape[0]}x{g_lab.shape[1]}"
            if h == 0 or w == 0:
                note = "no grid: the answer's first token is not a colour"
            panels.append(Panel(f"prediction {h}x{w}", g_pred, wrong=wrong, note=note))
    else:
        side = math.isqrt(data.meta.seq_len)
        panels += [Panel("input", inp.reshape(side, side)), Panel("label", lab.reshape(side, side))]
        if pred is not None:
            panels.append(Panel("prediction", pred.reshape(side, side), wrong=(pred != lab).reshape(side, side)))
    return Example(i, title, panels, acc, exact, halt)


def score_line(ex: Example) -> str:
    if ex.accuracy is None:
        return ""
    line = f"accuracy {100 * ex.accuracy:.1f}%, {'exact' if ex.exact else 'not exact'}"
    return line + (f", halt {ex.halt:.2f}" if ex.halt is not None else "")


def summary_line(examples: list[Example]) -> str:
    scored = [e for e in examples if e.accuracy is not None]
    if not scored:
        return ""
    exact = sum(bool(e.exact) for e in scored)
    mean = sum(e.accuracy for e in scored) / len(scored)  # type: ignore[misc]
    return f"shown: {exact} of {len(scored)} exact, mean token accuracy {100 * mean:.1f}%"
