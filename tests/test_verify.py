"""dataset/verify.py: Sudoku and Maze answers checked against the puzzle, not the label."""

from __future__ import annotations

import numpy as np
import pytest

from dataset import verify
from dataset.puzzles import maze, sudoku

# ---------------------------------------------------------------------------------------------------------------
# Sudoku (tokens: digit + 1, blank 1)


@pytest.fixture(scope="module")
def puzzles() -> tuple[np.ndarray, np.ndarray]:
    inputs, labels, _ = sudoku.generate(6, np.random.default_rng(7))
    return inputs.astype(np.int64) + 1, labels.astype(np.int64) + 1


def test_sudoku_solutions_are_valid(puzzles: tuple[np.ndarray, np.ndarray]) -> None:
    inputs, labels = puzzles
    assert verify.sudoku_valid(inputs, labels).all()
    assert verify.valid_fractions("sudoku", inputs, labels, labels) == (1.0, 0.0)


def latin(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (r * 3 + r // 3 + c) % 9 + 1  # a valid grid: the usual shifted-rows pattern


def test_sudoku_crafted_invalid_grids(puzzles: tuple[np.ndarray, np.ndarray]) -> None:
    r, c = np.divmod(np.arange(81), 9)
    good = latin(r, c)
    assert sudoku.is_solution(good[None]).all()
    blank = np.ones((1, 81), dtype=np.int64)  # no givens: only the grid's own rules count
    row = good.copy()
    row[1] = row[0]  # a digit twice in row 0 (and in column 1, box 0)
    column = (c + 1).copy()  # every row 1..9, every column one digit nine times, boxes repeat
    box = (r + c) % 9 + 1  # rows and columns are permutations, boxes are not
    assert not sudoku.is_solution(column[None]).any()
    assert (np.sort(box.reshape(9, 9), axis=1) == np.arange(1, 10)).all()
    assert (np.sort(box.reshape(9, 9), axis=0) == np.arange(1, 10)[:, None]).all()
    grids = np.stack([good, row, column, box]) + 1
    assert verify.sudoku_valid(np.repeat(blank, 4, 0), grids).tolist() == [True, False, False, False]
    # a changed given: the prediction is a valid grid, but not this puzzle's
    inputs, labels = puzzles
    swapped = labels.copy()
    d1, d2 = labels[0, 0], labels[0, 1]  # relabel two digits everywhere: still a valid grid
    swapped[0] = np.where(labels[0] == d1, d2, np.where(labels[0] == d2, d1, labels[0]))
    assert sudoku.is_solution(swapped[:1] - 1).all() and not sudoku.agrees(inputs[:1] - 1, swapped[:1] - 1).all()
    assert verify.sudoku_valid(inputs, swapped).tolist() == [False] + [True] * 5
    # out-of-range tokens: a blank or pad left in the answer
    holes = labels.copy()
    holes[0, np.flatnonzero(inputs[0] == 1)[0]] = 1
    holes[1, 5] = 0
    assert verify.sudoku_valid(inputs, holes).tolist() == [False, False] + [True] * 4


def test_sudoku_valid_but_not_the_label() -> None:
    # a puzzle with many solutions (no givens): another valid grid is valid, and differs from the label
    r, c = np.divmod(np.arange(81), 9)
    a = latin(r, c)
    b = latin(c, r)  # the transpose: valid too
    inputs = np.ones((2, 81), dtype=np.int64)
    preds = np.stack([a, b]) + 1
    labels = np.stack([a, a]) + 1
    assert verify.valid_fractions("sudoku", inputs, preds, labels) == (1.0, 0.5)
    preds[1, 0] = preds[1, 1]
    assert verify.valid_fractions("sudoku", inputs, preds, labels) == (0.5, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Maze (tokens: `# SGo` -> 1..5)


def grid(*rows: str) -> np.ndarray:
    """A square maze written row by row, `.` for an open cell (the dataset's space)."""
    return maze.encode(["".join(rows).replace(".", " ")]).astype(np.int64)


def check(question: np.ndarray, answer: np.ndarray) -> tuple[bool, bool]:
    valid, shortest = verify.maze_check(question, answer)
    return bool(valid[0]), bool(shortest[0])


def test_generated_maze_labels_are_valid_shortest_paths() -> None:
    inputs, labels = maze.generate(8, np.random.default_rng(5))
    valid, shortest = verify.maze_check(inputs, labels)
    assert valid.all() and shortest.all()
    assert verify.valid_fractions("maze", inputs, labels, labels, require_shortest=True) == (1.0, 0.0)
    # a gap in the path, and the path's last cell before G removed (it no longer reaches G)
    broken, short = labels.copy(), labels.copy()
    broken[0, np.flatnonzero(labels[0] == maze.PATH)[7]] = maze.OPEN
    g = int(np.flatnonzero(inputs[1] == maze.GOAL)[0])
    next_to_g = [g + d for d in (-30, 30, -1, 1) if 0 <= g + d < 900 and labels[1, g + d] == maze.PATH]
    short[1, next_to_g] = maze.OPEN
    valid, shortest = verify.maze_check(inputs[:2], np.concatenate([broken[:1], short[1:2]]))
    assert not valid.any() and not shortest.any()


OPEN_5 = ("S...G", ".....", ".....", ".....", ".....")


def test_maze_crafted_paths() -> None:
    q = grid(*OPEN_5)
    assert check(q, grid("SoooG", ".....", ".....", ".....", ".....")) == (True, True)
    # longer than the shortest, but a valid path
    assert check(q, grid("S...G", "o...o", "ooooo", ".....", ".....")) == (True, False)
    # not reaching the goal; a stray o apart from the path; a spur off the path; a path that touches itself
    assert check(q, grid("Soo.G", ".....", ".....", ".....", ".....")) == (False, False)
    assert check(q, grid("SoooG", ".....", ".....", "..o..", ".....")) == (False, False)
    assert check(q, grid("SoooG", "..o..", ".....", ".....", ".....")) == (False, False)
    assert check(q, grid("SoooG", "oo...", ".....", ".....", ".....")) == (False, False)  # S-down-right-up-...
    # a path through a wall: the wall cell is drawn over
    walled = grid("S.#.G", "..#..", "..#..", ".....", ".....")
    assert check(walled, grid("So#oG", "..#..", "..#..", ".....", ".....")) == (False, False)
    assert check(walled, grid("SoooG", "..#..", "..#..", ".....", ".....")) == (False, False)
    around = grid("So#oG", ".o#o.", ".o#o.", ".ooo.", ".....")
    assert check(walled, around) == (True, True)
    # other cells changed: a wall removed elsewhere, S moved
    assert check(walled, grid("So#oG", ".o#o.", ".o.o.", ".ooo.", ".....")) == (False, False)
    assert check(q, grid(".oooG", "S....", ".....", ".....", ".....")) == (False, False)
    # S next to G: no o needed
    assert check(grid("SG...", *OPEN_5[1:]), grid("SG...", *OPEN_5[1:])) == (True, True)


def test_maze_another_shortest_path_is_valid_but_not_the_label() -> None:
    q = grid("S....", ".....", "..G..", ".....", ".....")
    label = grid("Soo..", "..o..", "..G..", ".....", ".....")
    other = grid("S....", "o....", "ooG..", ".....", ".....")
    longer = grid("S....", "o....", "o.G..", "ooo..", ".....")
    inputs = np.concatenate([q, q, q])
    preds = np.concatenate([label, other, longer])
    labels = np.concatenate([label, label, label])
    assert verify.valid_fractions("maze", inputs, preds, labels) == (1.0, 2 / 3)
    assert verify.valid_fractions("maze", inputs, preds, labels, require_shortest=True) == (2 / 3, 1 / 3)


def test_valid_fractions_edge_cases() -> None:
    empty = np.zeros((0, 81), dtype=np.int64)
    assert verify.valid_fractions("sudoku", empty, empty, empty) == (0.0, 0.0)
    with pytest.raises(ValueError, match="kind"):
        verify.valid_fractions("arc", empty, empty, empty)  # type: ignore[arg-type]
