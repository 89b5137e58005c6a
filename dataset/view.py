"""Look at a dataset's puzzles, and a model's answers to them, offline: a PNG or one self-contained HTML page.

    python dataset/view.py data/sudoku-extreme-1k-aug-1000        # -> data/sudoku-extreme-1k-aug-1000/view-test-0.html
    python dataset/view.py data/arc-aug-1000 --split train --n 24 --start 100 --png arc.png
    python dataset/view.py data/maze-30x30-hard-1k --preds <run>/step_<N>_all_preds.0 --html maze.html --png maze.png

The kind comes from `<data>/<split>/dataset.json`: Sudoku (seq 81, vocab 11) as a 9x9 grid with box lines, givens
black and the rest blue; Maze (seq 900, vocab 6) with a colour per wall, open cell, start, goal and path; ARC (seq
900, vocab 12) in the ARC colours, each grid cut out of its 30x30 canvas at the eos frame; any other square sequence
as tokens in a fixed palette. Each example is titled with its index, its puzzle's identifier (identifiers.json) and,
for puzzles of several examples, which example it is.

`--preds` adds the model's answer (argmax of the logits) from evaluate.py's `step_<N>_all_preds.<rank>` files, with
wrong cells outlined in red (Sudoku: red digit on a red cell), and per example its token accuracy (over the label
tokens training scores), exact or not, and the halting confidence sigmoid(q_halt). Predictions are of the test split.
One file from a one-process evaluation is matched to the examples by position; the files of a several-process
evaluation (pass them all, or their folder: its latest step) hold interleaved batches, so there each shown example
is found by its puzzle identifier and input. Either way the inputs are checked against the dataset.

`--html` writes one static page (inline CSS and SVG, no scripts, no external addresses) that opens from disk;
`--png` a matplotlib figure. Neither given: the HTML page, in the dataset's folder (the system's temporary folder if
that is not writable), never the current folder, which may be a checkout; the path is printed.
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import math
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from dataset import arc  # noqa: E402
from dataset.common import PuzzleDatasetMetadata  # noqa: E402
from dataset.loader import load_arrays, load_metadata  # noqa: E402
from utils.errors import UserError, exit_with  # noqa: E402

MAX_N = 200  # one page; beyond this a PNG grows past what matplotlib renders in reasonable time
PREDS_FILE = re.compile(r"^step_(\d+)_all_preds\.(\d+)$")
WRONG = "#e00000"  # outline of a wrong cell: outside the ARC palette, so it can be told apart from ARC red
WRONG_FILL = "#ffd9d9"  # Sudoku: background of a wrong cell (its digit is drawn in WRONG)
GIVEN_INK, SOLVED_INK = "#111111", "#1d5fd1"

# The ARC-AGI colours 0-9, as in the ARC testing interface.
ARC_PALETTE = {
    0: ("#000000", "0 black"),
    1: ("#0074D9", "1 blue"),
    2: ("#FF4136", "2 red"),
    3: ("#2ECC40", "3 green"),
    4: ("#FFDC00", "4 yellow"),
    5: ("#AAAAAA", "5 grey"),
    6: ("#F012BE", "6 magenta"),
    7: ("#FF851B", "7 orange"),
    8: ("#7FDBFF", "8 sky"),
    9: ("#870C25", "9 maroon"),
}
# Maze tokens (dataset/maze.py: `# SGo` -> 1..5, pad 0).
MAZE_PALETTE = {
    0: ("#d0d0d0", "pad"),
    1: ("#2b2b2b", "wall #"),
    2: ("#ffffff", "open"),
    3: ("#2ECC40", "start S"),
    4: ("#0074D9", "goal G"),
    5: ("#FF851B", "path o"),
}
# Any other dataset: one colour per token id (repeats after 16).
GENERIC_COLOURS = [
    "#ffffff", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94",
]  # fmt: skip


KIND_TITLES = {"sudoku": "Sudoku", "maze": "Maze", "arc": "ARC", "grid": "grid"}


@dataclass
class Kind:
    name: str  # sudoku | maze | arc | grid
    palette: dict[int, tuple[str, str]]  # value -> (colour, legend text); empty for Sudoku (digits)
    grid_lines: bool = False  # thin lines between cells (ARC, as its own interface draws them)


def detect_kind(meta: PuzzleDatasetMetadata, where: str) -> Kind:
    seq, vocab = meta.seq_len, meta.vocab_size
    if (seq, vocab) == (81, 11):
        return Kind("sudoku", {})
    if (seq, vocab) == (arc.SEQ_LEN, 6):
        return Kind("maze", MAZE_PALETTE)
    if (seq, vocab) == (arc.SEQ_LEN, arc.VOCAB_SIZE):
        return Kind("arc", ARC_PALETTE, grid_lines=True)
    if math.isqrt(seq) ** 2 == seq:
        pal = {t: (GENERIC_COLOURS[t % len(GENERIC_COLOURS)], f"token {t}") for t in range(vocab)}
        return Kind("grid", pal)
    raise UserError(
        f"{where}: seq_len {seq}, vocab {vocab} is none of Sudoku (81, 11), Maze (900, 6) or ARC (900, 12), "
        "and not a square grid the viewer could draw"
    )


# ---------------------------------------------------------------------------------------------------------------
# What is drawn: examples of panels, independent of PNG or HTML


@dataclass
class Panel:
    caption: str
    grid: np.ndarray  # 2-D: digits 0-9 (Sudoku, 0 blank), colours 0-9 (ARC), tokens (Maze, other)
    wrong: np.ndarray | None = None  # bool, grid's shape: cells that differ from the label
    given: np.ndarray | None = None  # Sudoku: the puzzle's givens (black ink; the rest blue)
    note: str = ""  # said under the grid, e.g. a prediction of the wrong size


@dataclass
class Example:
    index: int
    title: str
    panels: list[Panel]
    accuracy: float | None = None  # token accuracy of the prediction
    exact: bool | None = None
    halt: float | None = None  # sigmoid(q_halt_logits)


@dataclass
class Dataset:
    path: str
    split: str
    meta: PuzzleDatasetMetadata
    kind: Kind
    sets: list[tuple[str, dict[str, np.ndarray]]]  # in metadata order: the order evaluation goes through them
    names: list[str] | None  # identifier id -> name (identifiers.json), None when the file is absent
    total: int = 0
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # first global index of each set

    def locate(self, i: int) -> tuple[str, dict[str, np.ndarray], int]:
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        name, arrays = self.sets[s]
        return name, arrays, i - int(self.starts[s])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, int, str]:
        """Input and label tokens (int64), identifier id and a title of global example `i`."""
        set_name, a, r = self.locate(i)
        pidx = a["puzzle_indices"]
        p = int(np.searchsorted(pidx, r, side="right")) - 1
        pid = int(a["puzzle_identifiers"][p])
        title = f"#{i}"
        if pid != self.meta.blank_identifier_id:  # Sudoku and Maze puzzles all share the blank one: no name
            title += f" {self.names[pid]}" if self.names is not None and 0 <= pid < len(self.names) else f" id {pid}"
        count = int(pidx[p + 1]) - int(pidx[p])
        if count > 1:
            title += f" (example {r - int(pidx[p]) + 1} of {count})"
        if len(self.sets) > 1:
            title += f" [{set_name}]"
        return np.asarray(a["inputs"][r], dtype=np.int64), np.asarray(a["labels"][r], dtype=np.int64), pid, title


def open_dataset(path: str, split: str) -> Dataset:
    meta = load_metadata(path, split)
    kind = detect_kind(meta, os.path.join(path, split, "dataset.json"))
    arrays = load_arrays(path, split, meta)
    names = None
    ids_path = os.path.join(path, "identifiers.json")
    if os.path.isfile(ids_path):
        try:
            with open(ids_path) as f:
                names = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{ids_path} cannot be read ({e}); rebuild the dataset") from None
        if not isinstance(names, list):
            raise UserError(f"{ids_path} is not a list of names; rebuild the dataset")
    sets = [(s, arrays[s]) for s in meta.sets]
    sizes = [len(a["inputs"]) for _, a in sets]
    return Dataset(path, split, meta, kind, sets, names, sum(sizes), np.concatenate([[0], np.cumsum(sizes)]))


# ---------------------------------------------------------------------------------------------------------------
# Predictions


@dataclass
class Preds:
    files: list[str]
    tensors: list[dict[str, Any]]  # per file: name -> tensor (memory-mapped: only the shown rows are read)
    where: dict[int, tuple[int, int]] = field(default_factory=dict)  # shown example -> (file, row)

    @property
    def rows(self) -> int:
        return sum(len(t["logits"]) for t in self.tensors)


def pred_files(paths: list[str]) -> list[str]:
    """Files as given; a folder gives the files of its latest step. All must come from one evaluation."""
    from dataset.score_arc import find_pred_files

    refusal = "several evaluations cannot be shown together: pass the files of one"
    return find_pred_files(paths, step=None, refusal=refusal, using="showing step {step} (or name the files)")[0]


def load_pred_file(path: str) -> dict[str, Any]:
    from dataset.score_arc import load_preds

    preds = load_preds(path)
    if "logits" not in preds:
        raise UserError(f"{path}: expected a dict with 'logits', as evaluate.py writes (step_<N>_all_preds.<rank>)")
    return preds


def sibling_ranks(path: str) -> int:
    """How many rank files of the same evaluation lie beside `path` (itself included); 1 when it is not so named."""
    m = PREDS_FILE.match(os.path.basename(path))
    if m is None:
        return 1
    return len(glob.glob(os.path.join(glob.escape(os.path.dirname(path) or "."), f"step_{m[1]}_all_preds.*")))


def match_preds(preds: Preds, data: Dataset, shown: list[int]) -> None:
    """Find the prediction row of every shown example (fills `preds.where`), or say why they do not fit."""
    meta = data.meta
    for f, t in zip(preds.files, preds.tensors):
        shape = tuple(t["logits"].shape)
        if len(shape) != 3 or shape[1:] != (meta.seq_len, meta.vocab_size):
            raise UserError(
                f"--preds {f}: logits of shape {shape} do not fit {data.path} (seq_len {meta.seq_len}, vocab "
                f"{meta.vocab_size}): predictions of another dataset"
            )
    rows = preds.rows
    if len(preds.files) == 1:
        t = preds.tensors[0]
        real = _real_rows(t, data) if rows > data.total and "inputs" in t else None
        if rows == data.total:
            # one evaluation process: rows in the test split's order, padding rows already dropped by evaluate.py
            preds.where = {i: (0, i) for i in shown}
        elif real is not None and len(real) == data.total:
            # the original evaluate.py also saved the padding rows of each set's last batch: skip them
            preds.where = {i: (0, int(real[i])) for i in shown}
        else:
            ranks = sibling_ranks(preds.files[0])
            hint = (
                f"; it is one of {ranks} rank files of one evaluation: pass them all (or their folder)"
                if ranks > 1
                else ": predictions of another dataset or split, or of a bounded evaluation (eval_batches)"
            )
            raise UserError(f"--preds {preds.files[0]} holds {rows} rows for {data.total} test examples{hint}")
    else:
        if rows != data.total:
            raise UserError(
                f"--preds: {len(preds.files)} files hold {rows} rows for {data.total} test examples: "
                "predictions of another dataset, or not all rank files of the evaluation"
            )
        _match_by_content(preds, data, shown)
    for i in shown:  # same input as the dataset's example, or the files belong elsewhere
        f, r = preds.where[i]
        t = preds.tensors[f]
        if "inputs" in t and not np.array_equal(t["inputs"][r].numpy().astype(np.int64), data.row(i)[0]):
            raise UserError(
                f"--preds {preds.files[f]}: row {r} is not the input of test example {i} of {data.path}: "
                "predictions of another dataset (or of another build of it)"
            )


def _real_rows(t: dict[str, Any], data: Dataset) -> np.ndarray:
    """Rows whose input is not all padding (a real example always has some non-pad token)."""
    inputs = t["inputs"]
    chunks = [
        np.flatnonzero((inputs[s : s + 8192].numpy() != data.meta.pad_id).any(axis=1)) + s
        for s in range(0, len(inputs), 8192)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def _match_by_content(preds: Preds, data: Dataset, shown: list[int]) -> None:
    """Rank files interleave the test batches in a way that depends on the batch size, which the files do not
    record; so find each shown example by (puzzle identifier, input) instead. Equal keys mean equal puzzles, so any
    matching row gives the same answer."""
    for t, f in zip(preds.tensors, preds.files):
        missing = [k for k in ("inputs", "puzzle_identifiers") if k not in t]
        if missing:
            raise UserError(f"--preds {f} lacks {', '.join(missing)}: needed to match rank files to examples")
    wanted: dict[tuple[int, bytes], list[int]] = {}
    for i in shown:
        inp, _, pid, _ = data.row(i)
        wanted.setdefault((pid, inp.astype(np.int32).tobytes()), []).append(i)
    pids = {k[0] for k in wanted}
    for fi, t in enumerate(preds.tensors):
        ids = t["puzzle_identifiers"].numpy()
        for s in range(0, len(ids), 8192):
            rows = np.flatnonzero(np.isin(ids[s : s + 8192], list(pids))) + s
            if not len(rows):
                continue
            inputs = t["inputs"][rows].numpy().astype(np.int32)
            for r, inp in zip(rows, inputs):
                for i in wanted.get((int(ids[r]), inp.tobytes()), []):
                    preds.where.setdefault(i, (fi, int(r)))
    lost = [i for i in shown if i not in preds.where]
    if lost:
        raise UserError(
            f"--preds: no prediction row has the input of test example {lost[0]} of {data.path} "
            f"({len(lost)} of {len(shown)} shown examples lack one): predictions of another dataset"
        )


# ---------------------------------------------------------------------------------------------------------------
# Tokens -> panels


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


# ---------------------------------------------------------------------------------------------------------------
# HTML


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.meta { margin: 2px 0; color: #555; font-size: 13px; }
p.meta code, footer code { background: #eee; padding: 1px 4px; border-radius: 3px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 10px 0 14px; font-size: 12px; align-items: center; }
.sw { display: inline-block; width: 14px; height: 14px; border: 1px solid #888; vertical-align: middle; margin-right: 4px; }
.examples { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.example { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 8px 10px; }
.example.bad { border-color: #e00000; }
.example h2 { font-size: 14px; margin: 0 0 2px; font-weight: 600; }
.score { font-size: 12px; margin: 0 0 6px; }
.score.ok { color: #17803a; } .score.bad { color: #c00000; }
.panels { display: flex; gap: 12px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #444; margin-bottom: 3px; }
.note { font-size: 11px; color: #c00000; max-width: 240px; }
svg { display: block; }
footer { margin-top: 18px; font-size: 12px; color: #555; }
"""


def _svg_cells(p: Panel, kind: Kind, cell: int) -> str:
    h, w = p.grid.shape
    if h == 0 or w == 0:
        return f'<svg width="{cell * 3}" height="{cell * 3}"><rect width="100%" height="100%" fill="#eee"/></svg>'
    size = f'width="{w * cell}" height="{h * cell}"'
    out = [f'<svg {size} viewBox="0 0 {w * cell} {h * cell}" shape-rendering="crispEdges">']
    values, counts = np.unique(p.grid, return_counts=True)
    back = int(values[counts.argmax()])  # the commonest value is one background rect; only the rest is drawn
    fill = {int(v): kind.palette.get(int(v), ("#ff00ff", ""))[0] for v in values}
    out.append(f'<rect {size} fill="{fill[back]}"/>')
    for y in range(h):
        row = p.grid[y]
        x = 0
        while x < w:  # one rect per run of equal cells keeps a page of 30x30 mazes small
            end = x + 1
            while end < w and row[end] == row[x]:
                end += 1
            if row[x] != back:
                c = fill[int(row[x])]
                out.append(
                    f'<rect x="{x * cell}" y="{y * cell}" width="{(end - x) * cell}" height="{cell}" fill="{c}"/>'
                )
            x = end
    if kind.grid_lines and cell >= 6:
        d = "".join(f"M0 {y * cell}H{w * cell}" for y in range(1, h)) + "".join(
            f"M{x * cell} 0V{h * cell}" for x in range(1, w)
        )
        out.append(f'<path d="{d}" stroke="#555" stroke-width="1" fill="none"/>')
    out += _svg_wrong(p, cell)
    out.append("</svg>")
    return "".join(out)


def _svg_wrong(p: Panel, cell: int) -> list[str]:
    if p.wrong is None:
        return []
    sw = max(2, cell // 6)
    out = []
    for y, x in zip(*np.nonzero(p.wrong)):
        # red ring with a thin white one inside: visible on dark cells and on ARC red alike
        out.append(
            f'<rect x="{x * cell + sw / 2}" y="{y * cell + sw / 2}" width="{cell - sw}" height="{cell - sw}" '
            f'fill="none" stroke="{WRONG}" stroke-width="{sw}"/>'
        )
        if cell >= 10:
            out.append(
                f'<rect x="{x * cell + sw + 0.5}" y="{y * cell + sw + 0.5}" width="{cell - 2 * sw - 1}" '
                f'height="{cell - 2 * sw - 1}" fill="none" stroke="#ffffff" stroke-width="1"/>'
            )
    return out


def _svg_sudoku(p: Panel, cell: int) -> str:
    size = 9 * cell
    out = [f'<svg width="{size + 2}" height="{size + 2}" viewBox="-1 -1 {size + 2} {size + 2}">']
    out.append(f'<rect width="{size}" height="{size}" fill="#ffffff"/>')
    wrong = p.wrong if p.wrong is not None else np.zeros((9, 9), bool)
    for y, x in zip(*np.nonzero(wrong)):
        out.append(f'<rect x="{x * cell}" y="{y * cell}" width="{cell}" height="{cell}" fill="{WRONG_FILL}"/>')
    fs = int(cell * 0.62)
    for y in range(9):
        for x in range(9):
            d = int(p.grid[y, x])
            if d == 0:
                continue
            ink = WRONG if wrong[y, x] else GIVEN_INK if p.given is not None and p.given[y, x] else SOLVED_INK
            weight = "700" if ink == GIVEN_INK else "400"
            out.append(
                f'<text x="{x * cell + cell / 2}" y="{y * cell + cell / 2}" font-size="{fs}" font-weight="{weight}" '
                f'fill="{ink}" text-anchor="middle" dominant-baseline="central">{d}</text>'
            )
    thin = "".join(f"M0 {i * cell}H{size}M{i * cell} 0V{size}" for i in range(1, 9) if i % 3)
    thick = "".join(f"M0 {i * cell}H{size}M{i * cell} 0V{size}" for i in range(0, 10, 3))
    out.append(f'<path d="{thin}" stroke="#999" stroke-width="1" fill="none"/>')
    out.append(f'<path d="{thick}" stroke="#222" stroke-width="2" fill="none"/>')
    out.append("</svg>")
    return "".join(out)


def _legend_html(kind: Kind, with_preds: bool) -> str:
    items = []
    if kind.name == "sudoku":
        items += [
            f'<span style="color:{GIVEN_INK};font-weight:700">5</span>&nbsp;given',
            f'<span style="color:{SOLVED_INK}">5</span>&nbsp;to fill in',
        ]
        if with_preds:
            items.append(
                f'<span class="sw" style="background:{WRONG_FILL}"></span><span style="color:{WRONG}">5</span>&nbsp;wrong'
            )
    else:
        shown = kind.palette if kind.name != "maze" else {k: v for k, v in kind.palette.items() if k}
        items += [f'<span class="sw" style="background:{c}"></span>{html.escape(t)}' for c, t in shown.values()]
        if with_preds:
            items.append(f'<span class="sw" style="background:#fff;border:2px solid {WRONG}"></span>wrong cell')
    return '<div class="legend">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"


def render_html(examples: list[Example], data: Dataset, header: list[str], next_page: str) -> str:
    kind = data.kind
    with_preds = any(e.accuracy is not None for e in examples)
    cards = []
    for ex in examples:
        biggest = max(max(p.grid.shape) for p in ex.panels) or 1
        cell = 26 if kind.name == "sudoku" else max(6, min(28, 240 // biggest))  # one scale per example
        figs = []
        for p in ex.panels:
            svg = _svg_sudoku(p, cell) if kind.name == "sudoku" else _svg_cells(p, kind, cell)
            note = f'<div class="note">{html.escape(p.note)}</div>' if p.note else ""
            figs.append(f"<figure><figcaption>{html.escape(p.caption)}</figcaption>{svg}{note}</figure>")
        score = ""
        if ex.accuracy is not None:
            score = f'<p class="score {"ok" if ex.exact else "bad"}">{html.escape(score_line(ex))}</p>'
        bad = " bad" if ex.exact is False else ""
        cards.append(
            f'<section class="example{bad}" id="ex-{ex.index}"><h2>{html.escape(ex.title)}</h2>{score}'
            f'<div class="panels">{"".join(figs)}</div></section>'
        )
    title = html.escape(header[0])
    meta = "".join(f'<p class="meta">{html.escape(line)}</p>' for line in header[1:])
    footer = f"next page: <code>{html.escape(next_page)}</code>" if next_page else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{title}</h1>{meta}{_legend_html(kind, with_preds)}</header>"
        f'<main class="examples">{"".join(cards)}</main><footer>{footer}</footer></body></html>\n'
    )


# ---------------------------------------------------------------------------------------------------------------
# PNG


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _draw_panel(ax: Any, p: Panel, kind: Kind, frame: tuple[int, int]) -> None:
    """One grid on `ax`. Grids other than Sudoku are drawn at the scale of a `frame` (rows, columns) shared by the
    example's panels, centred, so a 3x3 input beside a 9x9 output looks a third of its size (as ARC is read)."""
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Rectangle

    ax.set_xticks([])
    ax.set_yticks([])
    h, w = p.grid.shape
    ax.set_title(p.caption, fontsize=8, pad=3)
    if p.note:
        ax.text(0.5, -0.02, p.note, transform=ax.transAxes, ha="center", va="top", fontsize=7, color=WRONG)
    if h == 0 or w == 0:
        ax.set_facecolor("#eeeeee")
        return
    wrong = p.wrong if p.wrong is not None else np.zeros((h, w), bool)
    if kind.name == "sudoku":
        ax.set_xlim(0, 9)
        ax.set_ylim(9, 0)
        ax.set_aspect("equal")
        for y, x in zip(*np.nonzero(wrong)):
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=WRONG_FILL, edgecolor="none"))
        for y, x in zip(*np.nonzero(p.grid)):
            given = p.given is not None and p.given[y, x]
            ink = WRONG if wrong[y, x] else GIVEN_INK if given else SOLVED_INK
            ax.text(x + 0.5, y + 0.53, str(p.grid[y, x]), ha="center", va="center", fontsize=8, color=ink,
                    fontweight="bold" if ink == GIVEN_INK else "normal")  # fmt: skip
        for step, colour, lw in ((1, "#999", 0.4), (3, "#222", 1.6)):  # one collection each: axhline per line is slow
            at = range(0, 10, step)
            segs = [[(0, i), (9, i)] for i in at] + [[(i, 0), (i, 9)] for i in at]
            ax.add_collection(LineCollection(segs, colors=colour, linewidths=lw, clip_on=False))
        return
    lut = np.array([_rgb(kind.palette.get(v, ("#ff00ff", ""))[0]) for v in range(max(16, int(p.grid.max()) + 1))])
    ax.imshow(lut[p.grid], interpolation="nearest")
    ax.axis("off")
    fh, fw = frame
    ax.set_xlim(-0.5 - (fw - w) / 2, w - 0.5 + (fw - w) / 2)
    ax.set_ylim(h - 0.5 + (fh - h) / 2, -0.5 - (fh - h) / 2)
    if kind.grid_lines:
        ax.hlines(np.arange(1, h) - 0.5, -0.5, w - 0.5, color="#555", lw=0.4)
        ax.vlines(np.arange(1, w) - 0.5, -0.5, h - 0.5, color="#555", lw=0.4)
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, facecolor="none", edgecolor="#888", lw=0.8))
    ys, xs = np.nonzero(wrong)
    if len(ys):
        rects = [Rectangle((x - 0.5, y - 0.5), 1, 1) for y, x in zip(ys, xs)]
        lw = 1.6 if max(h, w) <= 15 else 1.3
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor=WRONG, linewidth=lw))
        if max(h, w) <= 15:  # room for a white ring inside the red one: visible on ARC red as on black
            inner = [Rectangle((x - 0.36, y - 0.36), 0.72, 0.72) for y, x in zip(ys, xs)]
            ax.add_collection(PatchCollection(inner, facecolor="none", edgecolor="white", linewidth=0.6))


def render_png(examples: list[Example], data: Dataset, header: list[str], out: str) -> tuple[int, int]:
    """One figure: a header (what, where, legend), then the examples, each a row of panels under its title."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--png needs matplotlib: pip install matplotlib (or use --html)") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    kind = data.kind
    with_preds = any(e.accuracy is not None for e in examples)
    per_ex = len(examples[0].panels)
    across = max(1, min(len(examples), 6 // per_ex))  # examples side by side: about six panels a row
    down = math.ceil(len(examples) / across)
    panel_in = {"sudoku": 2.0, "arc": 2.2}.get(kind.name, 2.8)  # 30x30 mazes need room
    title_in, head_in = 0.75 if with_preds else 0.55, 0.35 + 0.2 * len(header)
    width = max(across * per_ex * panel_in + 0.4, 6.0)
    fig = plt.figure(figsize=(width, head_in + down * (panel_in + title_in)), dpi=100, facecolor="white")
    head, body = fig.subfigures(2, 1, height_ratios=[head_in, down * (panel_in + title_in)])

    head.text(0.01, 1 - 0.2 / head_in, header[0], fontsize=11, va="top", fontweight="bold")
    for k, line in enumerate(header[1:]):
        head.text(0.01, 1 - (0.45 + 0.2 * k) / head_in, line, fontsize=8, va="top", color="#444")
    if kind.name == "sudoku":
        handles = [Patch(color=GIVEN_INK, label="given"), Patch(color=SOLVED_INK, label="to fill in")]
        if with_preds:
            handles.append(Patch(facecolor=WRONG_FILL, edgecolor=WRONG, label="wrong"))
    else:
        shown = kind.palette if kind.name != "maze" else {k: v for k, v in kind.palette.items() if k}
        handles = [Patch(facecolor=c, edgecolor="#888", label=t) for c, t in list(shown.values())[:16]]
        if with_preds:
            handles.append(Patch(facecolor="white", edgecolor=WRONG, lw=1.5, label="wrong cell"))
    head.legend(handles=handles, loc="lower right", ncols=min(len(handles), 6), fontsize=7, frameon=False)

    for k, sub in enumerate(body.subfigures(down, across, squeeze=False).ravel()):
        if k >= len(examples):
            continue
        ex = examples[k]
        colour = "#222222" if ex.exact is None else ("#17803a" if ex.exact else "#c00000")
        sub.suptitle(ex.title + (f"\n{score_line(ex)}" if with_preds else ""), fontsize=8, color=colour, y=0.99)
        axes = sub.subplots(1, per_ex, squeeze=False)[0]
        top = 1 - (title_in - 0.1) / (panel_in + title_in)
        sub.subplots_adjust(left=0.04, right=0.96, top=top, bottom=0.07, wspace=0.12)
        frame = (max(p.grid.shape[0] for p in ex.panels), max(p.grid.shape[1] for p in ex.panels))
        for ax, p in zip(axes, ex.panels):
            _draw_panel(ax, p, kind, frame)
    try:
        fig.savefig(out, dpi=100, facecolor="white")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    size = fig.canvas.get_width_height()
    plt.close(fig)
    return size


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Draw a dataset's puzzles (and a model's predictions) into a PNG or a self-contained HTML page.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", metavar="DATA_DIR", help="dataset folder (holding train/ and test/)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--n", type=int, default=12, help=f"how many examples (1 to {MAX_N})")
    p.add_argument("--start", type=int, default=0, help="index of the first example shown")
    p.add_argument(
        "--preds",
        nargs="+",
        default=None,
        metavar="FILE",
        help="evaluate.py's step_<N>_all_preds.<rank> file(s), or their folder (latest step): adds the predictions",
    )
    p.add_argument("--png", default=None, metavar="PATH", help="write a PNG figure")
    p.add_argument(
        "--html",
        default=None,
        metavar="PATH",
        help="write one HTML page [neither given: <data>/view-<split>-<start>.html]",
    )
    return p.parse_args(argv)


def default_html(data_dir: str, split: str, start: int) -> str:
    """Where the page goes when no output is named: beside the data it shows (datasets live under the git-ignored
    data/), or the temporary folder for a read-only dataset; not the working directory, a checkout for most users."""
    folder = data_dir if os.access(data_dir, os.W_OK) else os.path.join(tempfile.gettempdir(), "hrm-view")
    os.makedirs(folder, exist_ok=True)
    name = f"view-{split}-{start}.html"
    if folder != data_dir:  # the shared folder holds pages of several datasets
        name = f"{os.path.basename(os.path.normpath(data_dir))}-{name}"
    return os.path.join(folder, name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not 1 <= args.n <= MAX_N:
            raise UserError(f"--n {args.n}: show 1 to {MAX_N} examples at a time (page on with --start)")
        if args.start < 0:
            raise UserError(f"--start {args.start}: must be 0 or more")
        if args.preds and args.split != "test":
            raise UserError("--preds: evaluate.py predicts the test split; leave out --split train")
        data = open_dataset(args.data, args.split)
        if data.total == 0:
            raise UserError(f"{os.path.join(args.data, args.split)} holds no examples")
        if args.start >= data.total:
            raise UserError(
                f"--start {args.start}: the {args.split} split has {data.total} examples (0 to {data.total - 1})"
            )
        shown = list(range(args.start, min(data.total, args.start + args.n)))
        preds = None
        if args.preds:
            files = pred_files(args.preds)
            preds = Preds(files, [load_pred_file(f) for f in files])
            match_preds(preds, data, shown)
        examples = [build_example(data, i, preds) for i in shown]

        name = os.path.basename(os.path.normpath(args.data))
        header = [  # plain text lines: title, dataset, then predictions and their summary
            f"{name}: {KIND_TITLES[data.kind.name]}, {args.split} examples {shown[0]}-{shown[-1]} of {data.total}",
            f"{os.path.abspath(args.data)} ({args.split}, seq {data.meta.seq_len}, vocab {data.meta.vocab_size})",
        ]
        if preds is not None:
            which = ", ".join(os.path.basename(f) for f in preds.files[:3]) + (", ..." if len(preds.files) > 3 else "")
            header.append(f"predictions: {which} ({os.path.dirname(os.path.abspath(preds.files[0]))})")
            header.append(summary_line(examples))
        next_page = ""
        if shown[-1] + 1 < data.total:
            cmd = ["python", "dataset/view.py", args.data, "--split", args.split, "--n", str(args.n)]
            cmd += ["--start", str(shown[-1] + 1)] + (["--preds", *args.preds] if args.preds else [])
            next_page = shlex.join(cmd)
        html_out = args.html or (None if args.png else default_html(args.data, args.split, args.start))
        if html_out:
            page = render_html(examples, data, header, next_page)
            try:
                with open(html_out, "w", encoding="utf-8") as f:
                    f.write(page)
            except OSError as e:
                raise UserError(f"cannot write {html_out}: {e.strerror or e}") from None
            print(f"wrote {shlex.quote(html_out)} ({len(examples)} examples; open it in a browser, no network needed)")
        if args.png:
            w, h = render_png(examples, data, header, args.png)
            print(f"wrote {args.png} ({w}x{h} px, {len(examples)} examples)")
        if preds is not None:
            print(summary_line(examples))
    except UserError as e:
        exit_with(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
