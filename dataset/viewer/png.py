"""One matplotlib figure of the examples (matplotlib imported only when a PNG is asked for)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dataset.viewer.data import Dataset
from dataset.viewer.panels import Example, Panel, score_line
from dataset.viewer.style import CHANGED, CHANGED_FILL, GIVEN_INK, SOLVED_INK, WRONG, WRONG_FILL, Kind
from utils.errors import UserError


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
        for y, x in zip(*np.nonzero(p.changed if p.changed is not None else np.zeros((h, w), bool))):
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=CHANGED_FILL, edgecolor="none"))
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
    if p.changed is not None and p.changed.any():  # drawn under the wrong marks: a changed wrong cell reads wrong
        ys, xs = np.nonzero(p.changed)
        rects = [Rectangle((x - 0.5, y - 0.5), 1, 1) for y, x in zip(ys, xs)]
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor=CHANGED, linewidth=1.0))
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
