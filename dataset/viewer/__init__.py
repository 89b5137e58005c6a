"""The viewer behind dataset/view.py (its docstring says what it draws), one concern a module:

    style.py   the kinds of dataset (Sudoku, Maze, ARC, any square grid) and their colours
    data.py    a dataset split and evaluate.py's prediction files matched to its examples
    panels.py  what is drawn, the same for both outputs: examples as panels of grids, their scores
    page.py    the self-contained HTML page (inline CSS and SVG)
    png.py     the matplotlib figure
    think.py   one puzzle's prediction after every ACT segment (predict.py picture=): PNG strip, GIF, HTML
    cli.py     the command line

The names below are the viewer's public ones, importable from here.
"""

from dataset.viewer.cli import main
from dataset.viewer.data import Dataset, Preds, match_preds, open_dataset
from dataset.viewer.page import render_html
from dataset.viewer.panels import Example, Panel, arc_grid, build_example, sudoku_digits
from dataset.viewer.png import render_png
from dataset.viewer.style import ARC_PALETTE, GIVEN_INK, MAZE_PALETTE, SOLVED_INK, WRONG, WRONG_FILL, Kind, detect_kind

__all__ = [
    "ARC_PALETTE",
    "GIVEN_INK",
    "MAZE_PALETTE",
    "SOLVED_INK",
    "WRONG",
    "WRONG_FILL",
    "Dataset",
    "Example",
    "Kind",
    "Panel",
    "Preds",
    "arc_grid",
    "build_example",
    "detect_kind",
    "main",
    "match_preds",
    "open_dataset",
    "render_html",
    "render_png",
    "sudoku_digits",
]
