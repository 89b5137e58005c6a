"""Watch it think: one puzzle's prediction after every ACT segment, and where the Q head would halt, as a PNG strip
(one panel a segment, wrapped rows), an animated GIF (one frame a segment) or a static HTML page. The panels are the
viewer's (panels.Panel drawn by png.py and page.py): givens black, predictions blue, cells changed since the
previous segment highlighted, wrong cells red (against the label when one is given; else the cells that break the
puzzle's rules). predict.py's `picture=` calls `picture_args` before loading the model and `write_picture` after.

Each output carries the per-segment predictions it draws as JSON (PNG: the `hrm-think` text chunk; GIF: its
comment; HTML: `data-grid` of each panel), so what a picture shows can be checked against the API's Result.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataset.viewer.panels import Panel
from dataset.viewer.style import CHANGED, CHANGED_FILL, HALT, MAZE_PALETTE, Kind
from utils.errors import UserError
from utils.shell import quote

FORMATS = (".png", ".gif", ".html")
KEY = "hrm-think"  # the PNG text chunk holding the drawn data
ACROSS = 8  # panels a row in the PNG strip
OPEN, PATH = 2, 5  # maze tokens: an open cell, a path cell


@dataclass
class Think:
    kind: Kind
    title: str  # what and from where
    panels: list[Panel]  # one per segment, in order
    confidence: list[float]  # sigmoid(q_halt) after each segment
    halt_at: int  # 1-based segment where the Q head first says halt; 0: not within the segments run
    labelled: bool  # wrong cells are against a label (else: rule breaks)

    def caption(self, k: int) -> str:
        return f"segment {k + 1}: q {self.confidence[k]:.2f}" + (" HALT" if k + 1 == self.halt_at else "")

    def halt_line(self) -> str:
        n = len(self.panels)
        if self.halt_at:
            return (
                f"the Q head says halt at segment {self.halt_at} of {n} (frame in green); later segments: thinking on"
            )
        return f"the Q head does not say halt within these {n} segments"

    def data(self) -> dict[str, Any]:
        """What the picture draws, as JSON: per segment the grid (the API's digits), the confidence, the cells marked
        wrong (1); the halt; whether wrong is against a label."""
        off = 1 if self.kind.name == "maze" else 0  # maze panels hold tokens; the API's digits are tokens - 1
        return {
            "kind": self.kind.name,
            "halt_at": self.halt_at,
            "confidence": [round(c, 6) for c in self.confidence],
            "segments": [(p.grid.astype(np.int64) - off).tolist() for p in self.panels],
            "wrong": [p.wrong.astype(int).tolist() if p.wrong is not None else None for p in self.panels],
            "labelled": self.labelled,
        }


def sudoku_rule_breaks(grid: np.ndarray, puzzle: np.ndarray) -> np.ndarray:
    """Cells that break Sudoku's rules: a digit repeated in its row, column or box (every copy), a given changed."""
    bad = (puzzle > 0) & (grid != puzzle)
    for d in range(1, 10):
        m = grid == d
        bad |= m & (m.sum(1, keepdims=True) > 1)
        bad |= m & (m.sum(0, keepdims=True) > 1)
        box = m.reshape(3, 3, 3, 3).sum((1, 3)) > 1  # (box row, box column)
        bad |= m & np.repeat(np.repeat(box, 3, 0), 3, 1)
    return bad


def build_think(result: Any, i: int = 0, label: np.ndarray | None = None, title: str = "") -> Think:
    """Panels of puzzle i of an API Result (hrm/api.py: segments, segment_confidence, q_halt_segment). `label`: the
    solution's digits (H, W) when known; wrong cells are then those that differ from it."""
    kind = Kind("sudoku", {}) if result.kind == "sudoku" else Kind("maze", MAZE_PALETTE)
    puzzle = np.asarray(result.puzzles[i]).astype(np.int64)
    segs = np.asarray(result.segments[i]).astype(np.int64)
    conf = [float(c) for c in result.segment_confidence[i]]
    lab = None if label is None else np.asarray(label).astype(np.int64).reshape(puzzle.shape)
    panels = []
    for k, grid in enumerate(segs):
        if lab is not None:
            wrong = grid != lab
        elif kind.name == "sudoku":
            wrong = sudoku_rule_breaks(grid, puzzle)
        else:  # a maze's answer only turns open cells into path: any other change breaks it
            wrong = (grid != puzzle) & ~((puzzle == OPEN - 1) & (grid == PATH - 1))
        changed = grid != segs[k - 1] if k else None
        if kind.name == "sudoku":
            panels.append(Panel(f"segment {k + 1}", grid, wrong=wrong, given=puzzle > 0, changed=changed))
        else:
            panels.append(Panel(f"segment {k + 1}", grid + 1, wrong=wrong, changed=changed))
    t = Think(kind, title, panels, conf, int(result.q_halt_segment[i]), lab is not None)
    for k, p in enumerate(t.panels):
        p.caption = t.caption(k)
    return t


# ---------------------------------------------------------------------------------------------------------------
# Where it goes


def check_out(path: str) -> str:
    """Refuse, before any work, a picture that could not be written or would overwrite a file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"picture={path!r}: name a .png (a strip of panels), .gif (animated) or .html (a page) file")
    if os.path.lexists(path):
        raise UserError(f"picture={path!r} already exists: name a new file, or delete that one first")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UserError(f"picture={path!r}: folder {folder!r} does not exist; create it or name another")
    if not os.access(folder, os.W_OK):
        raise UserError(f"picture={path!r}: folder {folder!r} is not writable; name a file in a writable folder")
    return path


def picture_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """predict.py's `picture=PATH` (read as the other key=value arguments are) and `label=SOLUTION` (taken as the
    shell gave it, as puzzle= is: 81 digits would otherwise read as a number), checked:
    (the other arguments, {"picture": ..., "label": ...} of those given)."""
    want: dict[str, str] = {}
    rest = []
    for a in args:
        key = a.split("=", 1)[0]
        if key in ("picture", "label"):
            if key in want:
                raise UserError(f"{key}= is given twice; give one")
            want[key] = a.split("=", 1)[1]
            if key == "picture":  # a path as checkpoint= is read: quoted as utils/shell.py's commands quote it
                want[key] = _read_path(a)
        else:
            rest.append(a)
    if "label" in want and "picture" not in want:
        raise UserError("label= marks wrong cells in a picture: give picture=think.png (or .gif, .html) with it")
    if "picture" in want:
        check_out(want["picture"])
    return rest, want


def _read_path(arg: str) -> str:
    from utils.shell import read_back

    try:
        got = read_back(arg, "yaml")
    except Exception:  # not YAML: the text as given
        got = None
    return got if isinstance(got, str) else arg.split("=", 1)[1]


def write_picture(picture: str, weights: str, result: Any, label: np.ndarray | None = None) -> str:
    """Draw puzzle 0 of `result` (hrm.api.Result) to `picture`, the model's weights file named in the title, cells
    unlike `label` (its digits, predict.py reads label=) in red; returns the line predict.py prints."""
    path = check_out(picture)
    name = {"sudoku": "Sudoku", "maze": "Maze"}[result.kind]
    think = build_think(result, 0, label, f"{name}, {os.path.basename(weights)}: its prediction after each segment")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".html":
        text = render_think_html(think)
        _write(path, text.encode("utf-8"))
    elif ext == ".png":
        _write(path, render_think_png(think))
    else:
        _write(path, render_think_gif(think))
    return f"picture: {quote(path)} ({len(think.panels)} segments; {think.halt_line()})"


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "xb") as f:  # x: never overwrite, even a file made since check_out
            f.write(data)
    except FileExistsError:
        raise UserError(f"picture={path!r} already exists: name a new file, or delete that one first") from None
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------------------------
# PNG strip and GIF


def strip_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of the PNG strip of n segments."""
    across = min(n, ACROSS)
    return math.ceil(n / across), across


def _figure(think: Think, shown: list[int], rows: int, across: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from dataset.viewer.png import _draw_panel

    panel_in, title_in = (2.0, 0.35) if think.kind.name == "sudoku" else (2.8, 0.35)
    width = max(across * panel_in + 0.4, 3.2)
    note = "red: wrong against the label" if think.labelled else "red: breaks the rules (no label given)"
    legend = "q: sigmoid(q_halt), the Q head's confidence it is done; highlighted: changed since the previous segment"
    lines = textwrap.wrap(f"{think.halt_line()}; {legend}; {note}", int(width * 17))  # about 17 characters an inch
    head_in = 0.4 + 0.13 * len(lines)
    height = head_in + rows * (panel_in + title_in)
    fig = plt.figure(figsize=(width, height), dpi=100)
    fig.patch.set_facecolor("white")
    fig.text(0.01, 1 - 0.12 / height, think.title, fontsize=9 if across > 1 else 7, va="top", fontweight="bold")
    fig.text(0.01, 1 - 0.36 / height, "\n".join(lines), fontsize=7, va="top", color="#444", linespacing=1.2)
    x0 = (width - across * panel_in) / 2 / width  # the panels centred
    for slot, k in enumerate(shown):
        r, c = divmod(slot, across)
        w = panel_in / width
        bottom = height - head_in - r * (panel_in + title_in) - title_in - 0.92 * panel_in  # inches, from below
        ax = fig.add_axes((x0 + c * w + 0.06 * w, bottom / height, 0.88 * w, 0.92 * panel_in / height))
        p = think.panels[k]
        _draw_panel(ax, p, think.kind, p.grid.shape)
        if k + 1 == think.halt_at:
            ax.set_title(p.caption, fontsize=8, pad=7, color=HALT, fontweight="bold")  # above the frame
            frame = Rectangle((-0.025, -0.025), 1.05, 1.05, transform=ax.transAxes, fill=False, lw=3, edgecolor=HALT)
            frame.set_clip_on(False)
            ax.add_patch(frame)
    return fig


def _png_bytes(fig: Any, meta: dict[str, Any] | None) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white", metadata={KEY: json.dumps(meta)} if meta else None)
    plt.close(fig)
    return buf.getvalue()


def render_think_png(think: Think) -> bytes:
    rows, across = strip_shape(len(think.panels))
    return _png_bytes(_figure(think, list(range(len(think.panels))), rows, across), think.data())


def render_think_gif(think: Think, ms: int = 700) -> bytes:
    """One frame a segment (the halting one held longer), looping; the data as the GIF's comment."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("picture=*.gif needs Pillow (pip install pillow); or name a .png or .html picture") from None
    frames = [Image.open(io.BytesIO(_png_bytes(_figure(think, [k], 1, 1), None))).convert("RGB") for k in range(len(think.panels))]  # fmt: skip
    durations = [3 * ms if k + 1 == think.halt_at else ms for k in range(len(frames))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   comment=json.dumps(think.data()).encode())  # fmt: skip
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# HTML

THINK_CSS = f"""
.segments {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
figure.seg {{ background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 6px 8px; }}
figure.seg.halt {{ border: 3px solid {HALT}; }}
figure.seg.halt figcaption {{ color: {HALT}; font-weight: 700; }}
"""


def render_think_html(think: Think) -> str:
    from dataset.viewer.page import CSS, _legend_html, _svg_cells, _svg_sudoku

    cell = 22 if think.kind.name == "sudoku" else 8
    figs = []
    off = 1 if think.kind.name == "maze" else 0
    for k, p in enumerate(think.panels):
        svg = _svg_sudoku(p, cell) if think.kind.name == "sudoku" else _svg_cells(p, think.kind, cell)
        grid = json.dumps((p.grid.astype(np.int64) - off).tolist(), separators=(",", ":"))
        cls = "seg halt" if k + 1 == think.halt_at else "seg"
        figs.append(
            f'<figure class="{cls}" data-segment="{k + 1}" data-confidence="{think.confidence[k]:.6f}" '
            f'data-grid="{grid}"><figcaption>{html.escape(p.caption)}</figcaption>{svg}</figure>'
        )
    note = "red: wrong against the label" if think.labelled else "red: breaks the rules (no label given)"
    meta = [
        think.halt_line(),
        f"q: sigmoid(q_halt), the Q head's confidence it is done; highlighted: changed since the previous segment; {note}",
    ]
    title = html.escape(think.title)
    lines = "".join(f'<p class="meta">{html.escape(m)}</p>' for m in meta)
    swatch = (
        f"background:{CHANGED_FILL}" if think.kind.name == "sudoku" else f"background:#fff;border:2px solid {CHANGED}"
    )
    changed = f'<span class="sw" style="{swatch}"></span>changed since the previous segment'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}{THINK_CSS}</style></head><body>"
        f"<header><h1>{title}</h1>{lines}"
        f"{_legend_html(think.kind, True).removesuffix('</div>')}<span>{changed}</span></div></header>"
        f'<main class="segments">{"".join(figs)}</main></body></html>\n'
    )
