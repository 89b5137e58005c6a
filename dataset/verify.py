"""Is a predicted answer valid, label or not: Sudoku and Maze checks over a batch of token arrays.

Exact accuracy counts a prediction right only when it equals the label. A Sudoku has one solution, so there
the two agree unless the label is wrong. A maze can have several shortest paths, and the label draws only one
of them. These checks look at the puzzle itself:

- Sudoku (`sudoku_valid`): the prediction is a complete grid whose rows, columns and boxes each hold 1-9 once
  (`sudoku.is_solution`), and it keeps every given (`sudoku.agrees`). The code base has only 9x9 Sudoku.
  Tokens are digit + 1: pad 0, blank 1, digits 2-10 (dataset/build_sudoku_dataset.py).
- Maze (`maze_check`): the prediction is the input grid with one path drawn as `o` on open cells. Walls, S, G
  and every other cell stay as they were. The `o` cells, together with S and G, form one simple path from S to
  G: they are connected, S and G each have exactly one neighbour on the path, and every `o` cell has exactly
  two. The check also says whether the path is a shortest one (BFS on the maze). A path that touches itself,
  where two cells that are not consecutive are neighbours, does not pass: the drawing cannot say which way it
  goes. A shortest path never touches itself. Tokens: `# SGo` -> 1..5, pad 0 (dataset/puzzles/maze.py).

`valid_fractions` gives a batch's (fraction valid, fraction valid but different from the label).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dataset.puzzles import maze, sudoku

Kind = Literal["sudoku", "maze"]


def sudoku_valid(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per row (N, 81 tokens): True where `preds` solves the puzzle `inputs` (a valid grid that keeps the givens)."""
    given = np.asarray(inputs, dtype=np.int64).reshape(-1, 81) - 1  # blank -> 0, digits 1-9
    digits = np.asarray(preds, dtype=np.int64).reshape(-1, 81) - 1
    return sudoku.is_solution(digits) & sudoku.agrees(given, digits)


def _neighbours(on: np.ndarray) -> np.ndarray:
    """(B, H, W) bool -> how many of each cell's 4 neighbours are on."""
    n = np.zeros(on.shape, dtype=np.int8)
    n[:, 1:] += on[:, :-1]
    n[:, :-1] += on[:, 1:]
    n[:, :, 1:] += on[:, :, :-1]
    n[:, :, :-1] += on[:, :, 1:]
    return n


def maze_check(inputs: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (N, side*side tokens): (valid, shortest). valid: `preds` draws one simple S-G path of `o` over
    the unchanged maze. shortest: valid, and no S-G path through the maze takes fewer moves."""
    valid, moves, shortest_moves = maze_paths(inputs, preds)
    return valid, valid & (moves == shortest_moves)


def maze_paths(inputs: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (valid as in `maze_check`, the drawn path's moves (meaningful where valid), the maze's shortest
    S-G moves (-1 where G cannot be reached))."""
    q = np.asarray(inputs, dtype=np.int64)
    a = np.asarray(preds, dtype=np.int64)
    if q.ndim != 2 or a.shape != q.shape:
        raise ValueError(f"inputs {q.shape} and preds {a.shape} must be the same (mazes, side*side) shape")
    b, cells = q.shape
    side = int(round(cells**0.5))
    q, a = q.reshape(b, side, side), a.reshape(b, side, side)
    one_each = ((q == maze.START).sum((1, 2)) == 1) & ((q == maze.GOAL).sum((1, 2)) == 1)
    # walls, S, G and open cells as they were, except open cells drawn as o
    unchanged = ((a == q) | ((a == maze.PATH) & (q == maze.OPEN))).all((1, 2))
    ends = (q == maze.START) | (q == maze.GOAL)
    on = (a == maze.PATH) | ends
    n = _neighbours(on)
    degrees = np.where(ends, n == 1, np.where(on, n == 2, True)).all((1, 2))
    start = (q == maze.START).reshape(b, -1).argmax(1)
    goal = (q == maze.GOAL).reshape(b, -1).argmax(1)
    along = maze.bfs_distances(on, start)
    connected = ((along >= 0) | ~on).all((1, 2))  # every path cell is reached from S along the path
    valid = one_each & unchanged & degrees & connected
    rows = np.arange(b)
    shortest_moves = maze.bfs_distances(q != maze.WALL, start).reshape(b, -1)[rows, goal]
    moves = on.sum((1, 2)) - 1  # a simple path of k moves has k + 1 cells
    return valid, moves, shortest_moves


def verifier_score(kind: str, inputs: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """(N, L) puzzles and (N, K, L) candidate answers -> (N, K) float, higher is better, what a search ranks
    candidates by before any vote (train/search.py). -inf for an invalid answer; Sudoku 0 for a valid completion
    of the givens; Maze minus the moves of a valid S-G path (a shorter valid path ranks higher)."""
    n, k = grids.shape[:2]
    flat = np.asarray(grids).reshape(n * k, -1)
    given = np.repeat(np.asarray(inputs), k, axis=0)
    if kind == "sudoku":
        return np.where(sudoku_valid(given, flat), 0.0, -np.inf).reshape(n, k)
    if kind == "maze":
        valid, moves, _ = maze_paths(given, flat)
        return np.where(valid, -moves.astype(np.float64), -np.inf).reshape(n, k)
    raise ValueError(f"kind must be 'sudoku' or 'maze', got {kind!r}")


def valid_rows(
    kind: Kind, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray, require_shortest: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (valid, valid but different from the label), as `valid_fractions` averages them."""
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if preds.shape != labels.shape or preds.shape != np.shape(inputs):
        raise ValueError(f"inputs {np.shape(inputs)}, preds {preds.shape} and labels {labels.shape} differ in shape")
    if kind == "sudoku":
        ok = sudoku_valid(inputs, preds)
    elif kind == "maze":
        valid, shortest = maze_check(inputs, preds)
        ok = shortest if require_shortest else valid
    else:
        raise ValueError(f"kind must be 'sudoku' or 'maze', got {kind!r}")
    differs = ((preds != labels) & (labels > 0)).any(axis=1)
    return ok, ok & differs


def valid_fractions(
    kind: Kind, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray, require_shortest: bool = False
) -> tuple[float, float]:
    """(fraction of predictions that are valid, fraction that are valid but differ from the label) over a batch of
    token rows. A Maze path counts as valid if it is any simple S-G path; with `require_shortest`, only a shortest
    one counts. Label positions at or below 0 (pad, or the trainer's ignored label) are not compared."""
    ok, differs = valid_rows(kind, inputs, preds, labels, require_shortest)
    if not len(ok):
        return 0.0, 0.0
    return float(ok.mean()), float(differs.mean())
