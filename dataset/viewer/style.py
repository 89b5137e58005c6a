"""How the viewer draws each kind of dataset: its colours, the marks of a wrong cell, and which kind a dataset's
metadata says it is."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dataset.format import PuzzleDatasetMetadata
from dataset.puzzles import arc
from utils.errors import UserError

WRONG = "#e00000"  # outline of a wrong cell: outside the ARC palette, so it can be told apart from ARC red
WRONG_FILL = "#ffd9d9"  # Sudoku: background of a wrong cell (its digit is drawn in WRONG)
GIVEN_INK, SOLVED_INK = "#111111", "#1d5fd1"
CHANGED_FILL = "#fff0a8"  # Sudoku: background of a cell that changed since the previous ACT segment (think.py)
CHANGED = "#d100d1"  # other grids: outline of such a cell (magenta: not in the maze palette)
HALT = "#17803a"  # the frame of the segment where the Q head says halt

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
# Maze tokens (dataset/puzzles/maze.py: `# SGo` -> 1..5, pad 0).
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
