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

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from dataset.viewer import main  # noqa: E402  (the code lives in dataset/viewer/, one concern a module)

if __name__ == "__main__":
    sys.exit(main())
