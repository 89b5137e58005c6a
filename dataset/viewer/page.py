"""One static HTML page of the examples: inline CSS and SVG, no scripts, no external addresses."""

from __future__ import annotations

import html

import numpy as np

from dataset.viewer.data import Dataset
from dataset.viewer.panels import Example, Panel, score_line
from dataset.viewer.style import CHANGED, CHANGED_FILL, GIVEN_INK, SOLVED_INK, WRONG, WRONG_FILL, Kind

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
    if p.changed is not None:  # under the wrong marks: a changed wrong cell reads wrong
        sw = max(1, cell // 8)
        out += [
            f'<rect x="{x * cell + sw / 2}" y="{y * cell + sw / 2}" width="{cell - sw}" height="{cell - sw}" '
            f'fill="none" stroke="{CHANGED}" stroke-width="{sw}"/>'
            for y, x in zip(*np.nonzero(p.changed))
        ]
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
    for y, x in zip(*np.nonzero(p.changed if p.changed is not None else np.zeros((9, 9), bool))):
        out.append(f'<rect x="{x * cell}" y="{y * cell}" width="{cell}" height="{cell}" fill="{CHANGED_FILL}"/>')
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
