"""Sudoku library for the dataset builder: parsing, an exact solver, an offline generator, augmentation, readers.

Grids are flat row-major arrays of 81 digits, 0 = blank. The solver and the generator work on whole batches of
puzzles at once with numpy: each puzzle runs its own depth-first search, but one propagation round is applied to
every live search in a single vectorised step, which is what makes pure Python/numpy fast enough here.

Difficulty rating: the number of guesses (binary branching decisions) the solver's search makes with naked and
hidden singles as propagation and MRV branching, over the whole tree needed to prove uniqueness; 0 = singles
alone solve it. This is this solver's count, not the `rating` column of sapientinc/sudoku-extreme (tdoku's).

Measured on one busy core of a 2-core CPU machine (numpy 2.4):
- solver, batches: puzzles2_17_clue ~7,000 puzzles/s (all 49,158 in ~7 s); puzzles3_magictour_top1465
  ~1,800/s; puzzles6_forum_hardest_1106 ~160/s. One puzzle per call (`solve`): ~80/s on top1465.
- generator (minimal puzzles, 21-28 clues, mean ~24): ~400 puzzles/s. Share of random minimal puzzles rated
  >= 1 / 5 / 10 guesses: ~58% / 14% / 3%, so `min_guesses` 1 / 5 / 10 yields ~175 / 30 / 9 puzzles/s.
- augment: 1000 puzzles x 1000 augmentations in ~4 s.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TextIO

import numpy as np

from utils.errors import UserError

OnBadRow = Literal["stop", "skip"]

# ---------------------------------------------------------------------------------------------------------------
# Geometry and bit tables. A candidate set is a uint16 mask, bit d-1 set when digit d is still possible.

ALL = np.uint16(0x1FF)
_CELLS = np.arange(81)
ROWS = _CELLS.reshape(9, 9)
COLS = ROWS.T.copy()
BOXES = ROWS.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
UNITS = np.concatenate([ROWS, COLS, BOXES])  # (27, 9): cells of each row, column, box
# (81, 3): the row, column and box unit of each cell
CELL_UNITS = np.stack([_CELLS // 9, 9 + _CELLS % 9, 18 + (_CELLS // 27) * 3 + (_CELLS % 9) // 3], axis=1)

# digit of a single-candidate mask (0 for any other mask)
MASK_DIGIT = np.zeros(512, dtype=np.uint8)
MASK_DIGIT[1 << np.arange(9)] = np.arange(1, 10)
# digit -> mask; a blank (0) may be anything
DIGIT_MASK = np.array([0x1FF] + [1 << d for d in range(9)], dtype=np.uint16)
_GIVEN_MASK = np.array([0] + [1 << d for d in range(9)], dtype=np.uint16)  # same, but a blank adds nothing
# NTH_BIT[m, k]: the k-th lowest set bit of m (as a mask), for picking a random candidate
NTH_BIT = np.zeros((512, 9), dtype=np.uint16)
for _m in range(512):
    _bits = [1 << d for d in range(9) if _m >> d & 1]
    NTH_BIT[_m, : len(_bits)] = _bits
del _m, _bits

_CHAR_DIGIT = np.full(256, -1, dtype=np.int16)  # puzzle characters: '.' or '0' blank, '1'-'9'
_CHAR_DIGIT[ord(".")] = 0
_CHAR_DIGIT[ord("0") : ord("9") + 1] = np.arange(10)
_CHAR_LABEL = np.full(256, -1, dtype=np.int16)  # solution characters: '1'-'9' only
_CHAR_LABEL[ord("1") : ord("9") + 1] = np.arange(1, 10)


# ---------------------------------------------------------------------------------------------------------------
# Parsing, formatting, validation


def parse_puzzle(text: str, check: bool = True) -> np.ndarray:
    """81 characters, '.' or '0' for a blank -> uint8 digits (81,). ValueError says what is wrong."""
    text = text.strip()
    if len(text) != 81:
        raise ValueError(f"expected 81 characters, got {len(text)}")
    for pos, ch in enumerate(text):
        if ch not in ".0123456789":
            raise ValueError(f"bad character {ch!r} at position {pos + 1} (allowed: 1-9, and '.' or '0' for a blank)")
    grid = (np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")).astype(np.uint8)
    grid[grid > 9] = 0  # '.' (below '0') wrapped around
    if check:
        validate_puzzle(grid)
    return grid


def format_puzzle(grid: np.ndarray, blank: str = ".") -> str:
    """uint8 digits (81,) -> 81 characters, `blank` for 0."""
    grid = np.asarray(grid).reshape(81)
    return "".join(blank if d == 0 else str(int(d)) for d in grid)


def conflicts(grids: np.ndarray) -> np.ndarray:
    """Per grid (N, 81) of digits 0-9: True where two equal non-zero digits share a row, column or box."""
    masks = _GIVEN_MASK[np.asarray(grids, dtype=np.intp).reshape(-1, 81).T]  # (81, N): bitmasks, cells first
    _, twice = _once_twice(masks[UNITS])
    return twice.any(axis=0)


def is_solution(labels: np.ndarray) -> np.ndarray:
    """Per grid (N, 81): True where it is a complete valid sudoku (every unit holds 1..9 once)."""
    labels = np.asarray(labels).reshape(-1, 81)
    in_range = ((labels >= 1) & (labels <= 9)).all(axis=1)
    masks = _GIVEN_MASK[np.where(in_range[:, None], labels, 0).astype(np.intp).T]
    once, _ = _once_twice(masks[UNITS])
    return in_range & (once == ALL).all(axis=0)


def agrees(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per pair (N, 81): True where every given of the puzzle equals the label at that cell."""
    inputs = np.asarray(inputs).reshape(-1, 81)
    labels = np.asarray(labels).reshape(-1, 81)
    return ((inputs == 0) | (inputs == labels)).all(axis=1)


def validate_puzzle(grid: np.ndarray) -> None:
    """Raise ValueError naming the first problem: wrong size, digit out of range, two equal givens in a unit."""
    grid = np.asarray(grid)
    if grid.size != 81:
        raise ValueError(f"expected 81 cells, got {grid.size}")
    grid = grid.reshape(81)
    if ((grid < 0) | (grid > 9)).any():
        raise ValueError("digits must be 0-9")
    for u, cells in enumerate(UNITS):
        vals = grid[cells]
        vals = vals[vals != 0]
        if len(np.unique(vals)) != len(vals):
            kind, idx = ("row", "column", "box")[u // 9], u % 9 + 1
            digit = int(next(v for v in vals if (vals == v).sum() > 1))
            raise ValueError(f"conflicting givens: digit {digit} appears twice in {kind} {idx}")


# ---------------------------------------------------------------------------------------------------------------
# Solver


@dataclass
class SolveResult:
    """`solution` is the first solution found (zeros if none); `count` the number found, at most the limit asked;
    `guesses` the branching decisions the search made (its difficulty rating)."""

    solution: np.ndarray
    count: int
    guesses: int


def _once_twice(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (units, 9 cells, m) -> bits seen at least once, bits seen at least twice, per unit (units, m)."""
    once = v[:, 0].copy()
    twice = np.zeros_like(once)
    for j in range(1, v.shape[1]):
        x = v[:, j]
        twice |= once & x
        once |= x
    return once, twice


def _propagate(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One round of naked and hidden singles on candidate masks laid out (81 cells, m searches).

    Naked single: a cell with one candidate removes it from its peers. Hidden single: a digit with one possible
    cell in a unit must go there. Contradictions (flag per search): a digit fixed twice in a unit, a digit with no
    cell left in a unit, a cell that must hold two digits, a cell with no candidate. Cells-first layout keeps
    every numpy operation on contiguous rows: about 4x faster than searches-first.
    """
    # np.where is slow on these small integer arrays; multiplying by a bool mask does the same select
    single = np.bitwise_count(c) == 1
    once, twice = _once_twice((c * single)[UNITS])
    bad = twice.any(axis=0)
    seen = once[CELL_UNITS]
    c = c & ~((seen[:, 0] | seen[:, 1] | seen[:, 2]) * ~single)

    once, twice = _once_twice(c[UNITS])
    bad |= (once != ALL).any(axis=0)
    only = (once & ~twice)[CELL_UNITS]
    hidden = (only[:, 0] | only[:, 1] | only[:, 2]) & c
    bad |= (np.bitwise_count(hidden) > 1).any(axis=0)
    c = hidden | c * (hidden == 0)
    bad |= (c == 0).any(axis=0)
    return c, bad


def search_masks(
    start: np.ndarray,
    limit: int = 2,
    rng: np.random.Generator | None = None,
    slots: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth-first search on many starting candidate masks (N, 81) at once.

    Returns (solutions (N, 81) uint8, counts (N,) int64 capped at `limit`, guesses (N,) int64).
    Branching takes the cell with the fewest candidates (MRV) and tries its lowest candidate first (a random one
    when `rng` is given, for generating grids); every such binary split counts as one guess.

    Up to `slots` search nodes run side by side. A search that finishes hands its slot to the next puzzle; once
    no puzzle is waiting, idle slots take pending branches from the bottom of busy searches' stacks, so that the
    last few hard puzzles are searched in parallel instead of one node per round. The tree explored is the same
    either way, so for a puzzle with at most `limit` solutions the counts and guesses do not depend on the
    batch; for one with more, which solution comes first and the guesses made before stopping can.
    """
    start = np.asarray(start, dtype=np.uint16).reshape(-1, 81)
    n = len(start)
    solutions = np.zeros((n, 81), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int64)
    guesses = np.zeros(n, dtype=np.int64)
    if n == 0:
        return solutions, counts, guesses
    closed = np.zeros(n, dtype=bool)  # search over: enough solutions, or tree exhausted
    nodes = np.zeros(n, dtype=np.int64)  # slots working on each puzzle

    s = min(slots, max(n, 256))  # spare slots let even a single hard puzzle be searched on many branches at once
    state = np.zeros((81, s), dtype=np.uint16)  # one column per slot
    # pending alternatives per slot, entries base..depth-1; depth <= 81 since each split on a path fixes a cell
    stack = np.empty((s, 82, 81), dtype=np.uint16)
    base = np.zeros(s, dtype=np.int64)
    depth = np.zeros(s, dtype=np.int64)
    owner = np.full(s, -1)
    next_puzzle = min(n, s)
    owner[:next_puzzle] = np.arange(next_puzzle)
    state[:, :next_puzzle] = start[:next_puzzle].T
    nodes[:next_puzzle] = 1

    while True:
        live = np.flatnonzero(owner >= 0)
        if len(live) == 0:
            break
        old = state[:, live]
        new, bad = _propagate(old)
        state[:, live] = new
        own = owner[live]
        stalled = ~bad & (new == old).all(axis=0)
        cnt = np.bitwise_count(new)
        solved = stalled & (cnt == 1).all(axis=0)
        branch = stalled & ~solved

        if solved.any():
            so = own[solved]
            first = counts[so] == 0
            solutions[so[first]] = MASK_DIGIT[new[:, solved][:, first]].T
            np.add.at(counts, so, 1)
            full = so[counts[so] >= limit]
            counts[full] = limit
            closed[full] = True

        # a dead end or a recorded solution: resume from the slot's latest pending branch, or free the slot
        back = (bad | solved) & ~closed[own]
        if back.any():
            sl = live[back]
            has = depth[sl] > base[sl]
            pop = sl[has]
            depth[pop] -= 1
            state[:, pop] = stack[pop, depth[pop]].T
            gone = own[back][~has]
            owner[sl[~has]] = -1
            np.add.at(nodes, gone, -1)
            closed[gone[nodes[gone] == 0]] = True

        branch &= ~closed[own]
        if branch.any():
            sl = live[branch]
            c = new[:, branch].T.copy()
            k = cnt[:, branch].T
            cell = np.where(k >= 2, k, 99).argmin(axis=1)
            rows = np.arange(len(sl))
            mask = c[rows, cell]
            if rng is None:
                bit = mask & (~mask + np.uint16(1))  # lowest set bit
            else:
                pick = (rng.random(len(sl)) * np.bitwise_count(mask)).astype(np.int64)
                bit = NTH_BIT[mask, pick]
            c[rows, cell] = mask & ~bit
            stack[sl, depth[sl]] = c
            depth[sl] += 1
            state[cell, sl] = bit
            np.add.at(guesses, own[branch], 1)

        busy = owner >= 0
        busy[busy] = ~closed[owner[busy]]
        owner[~busy] = -1
        free = np.flatnonzero(~busy)
        if len(free) == 0:
            continue
        take = min(len(free), n - next_puzzle)
        if take:
            refill = free[:take]
            owner[refill] = np.arange(next_puzzle, next_puzzle + take)
            state[:, refill] = start[next_puzzle : next_puzzle + take].T
            base[refill] = depth[refill] = 0
            nodes[next_puzzle : next_puzzle + take] = 1
            next_puzzle += take
            free = free[take:]
        if len(free):
            donors = np.flatnonzero(busy & (depth > base))[: len(free)]
            if len(donors):
                helpers = free[: len(donors)]
                owner[helpers] = owner[donors]
                state[:, helpers] = stack[donors, base[donors]].T
                base[donors] += 1
                base[helpers] = depth[helpers] = 0
                np.add.at(nodes, owner[donors], 1)
    return solutions, counts, guesses


def givens_to_masks(grids: np.ndarray) -> np.ndarray:
    """Digits (N, 81), 0 blank -> candidate masks (N, 81)."""
    return DIGIT_MASK[np.asarray(grids, dtype=np.int64).reshape(-1, 81)]


def solve_many(grids: np.ndarray, limit: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve puzzles (N, 81) (0 blank). Returns (solutions uint8 (N, 81), counts (N,), guesses (N,)).

    With limit=2 a count of 1 proves the puzzle has a unique solution, and `guesses` is the size of the whole
    search tree (the difficulty rating); 0 means naked and hidden singles alone solve it. Puzzles with
    conflicting givens get count 0.
    """
    return search_masks(givens_to_masks(grids), limit=limit)


def solve(grid: np.ndarray | str, limit: int = 2) -> SolveResult:
    """Solve one puzzle (digits or an 81-character string)."""
    if isinstance(grid, str):
        grid = parse_puzzle(grid, check=False)
    sol, cnt, g = solve_many(np.asarray(grid).reshape(1, 81), limit=limit)
    return SolveResult(solution=sol[0], count=int(cnt[0]), guesses=int(g[0]))


# ---------------------------------------------------------------------------------------------------------------
# Generator


def random_grids(n: int, rng: np.random.Generator) -> np.ndarray:
    """n random complete grids (n, 81): the solver run on empty grids, taking a random candidate at each guess."""
    start = np.full((n, 81), ALL, dtype=np.uint16)
    grids, counts, _ = search_masks(start, limit=1, rng=rng)
    assert (counts == 1).all()
    return grids


def remove_clues(grids: np.ndarray, rng: np.random.Generator, min_clues: int = 0) -> np.ndarray:
    """Blank the cells of complete grids in a random order, skipping any blank that would allow a second solution.

    One pass over all 81 cells leaves a minimal puzzle (every remaining clue is needed): a clue needed while more
    clues were present is still needed with fewer. With `min_clues` the pass stops once a puzzle is down to that
    many clues (easier, non-minimal puzzles). A blank keeps the solution unique exactly when the puzzle with that
    cell forced to differ from the solution has no solution, so each test is a search for one solution (limit 1),
    run for the whole batch at once.
    """
    grids = np.asarray(grids, dtype=np.uint8).reshape(-1, 81)
    n = len(grids)
    puzzles = grids.copy()
    order = rng.permuted(np.tile(np.arange(81), (n, 1)), axis=1)
    rows = np.arange(n)
    for t in range(81):
        test = rows[(puzzles != 0).sum(axis=1) > min_clues]
        if len(test) == 0:
            break
        cell = order[test, t]
        start = givens_to_masks(puzzles[test])
        start[np.arange(len(test)), cell] = ALL & ~DIGIT_MASK[grids[test, cell]]
        _, found, _ = search_masks(start, limit=1)
        keep_unique = found == 0
        puzzles[test[keep_unique], cell[keep_unique]] = 0
    return puzzles


def generate(
    n: int,
    rng: np.random.Generator,
    min_guesses: int = 0,
    min_clues: int = 0,
    batch: int = 1024,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n uniquely solvable puzzles: (inputs (n, 81) uint8, labels (n, 81) uint8, ratings (n,) int64).

    Random grid, then clues removed in random order while the solution stays unique (minimal puzzles unless
    `min_clues` stops earlier). The rating is the solver's guess count (see `solve_many`). With `min_guesses`,
    only puzzles rated at least that are kept and more batches are made until n are found (random minimal
    puzzles are mostly easy: see the module notes for how many pass). `progress(k)` is called with the number of
    puzzles accepted after each batch. Same seed, n and options give the same puzzles.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if min_guesses > 0 and min_clues > 0:
        raise ValueError("min_guesses needs minimal puzzles; leave min_clues at 0")
    inputs, labels, ratings = [], [], []
    found = tried = hardest = 0
    while found < n:
        if found == 0 and tried >= 20 * batch:
            raise UserError(
                f"none of {tried} generated puzzles was rated >= {min_guesses} guesses (the hardest: {hardest}); "
                "lower --min-guesses"
            )
        size = min(batch, n - found) if min_guesses <= 0 else batch
        grids = random_grids(size, rng)
        puzzles = remove_clues(grids, rng, min_clues=min_clues)
        solutions, counts, guesses = solve_many(puzzles, limit=2)
        assert (counts == 1).all() and (solutions == grids).all()
        keep = np.flatnonzero(guesses >= min_guesses)[: n - found]
        tried, hardest = tried + size, max(hardest, int(guesses.max()))
        inputs.append(puzzles[keep])
        labels.append(grids[keep])
        ratings.append(guesses[keep])
        found += len(keep)
        if progress is not None:
            progress(len(keep))
    if not inputs:
        return np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(inputs), np.concatenate(labels), np.concatenate(ratings)


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


def _block_permutations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n permutations of 0..8 that move whole bands (groups of 3) and shuffle inside each: (n, 9)."""
    blocks = rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1)  # new block position -> old block
    inner = rng.permuted(np.tile(np.arange(3), (n, 3, 1)), axis=2)  # independent order inside each block
    return (blocks[:, :, None] * 3 + inner).reshape(n, 9)


def transforms(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random validity-preserving transforms as index arrays: (digit_map (n, 10), src (n, 81)).

    The transform family of the original builder: relabel digits 1-9 (0 stays blank), transpose with probability
    1/2, permute bands and the rows inside each band, permute stacks and the columns inside each stack. A grid
    g becomes digit_map[g[src]]: new cell i reads old cell src[i] (transposed first if chosen).
    """
    digit_map = np.zeros((n, 10), dtype=np.uint8)
    digit_map[:, 1:] = rng.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (n, 1)), axis=1)
    transpose = rng.random(n) < 0.5
    row_perm = _block_permutations(rng, n)
    col_perm = _block_permutations(rng, n)
    src_r = np.repeat(row_perm, 9, axis=1)
    src_c = np.tile(col_perm, (1, 9))
    return digit_map, np.where(transpose[:, None], src_c * 9 + src_r, src_r * 9 + src_c)


def augment(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random transforms (see `transforms`) of one puzzle and its solution: two (n, 81) uint8 arrays, all
    drawn and applied at once as index arrays instead of one Python call per augmentation."""
    inputs = np.asarray(inputs, dtype=np.uint8).reshape(81)
    labels = np.asarray(labels, dtype=np.uint8).reshape(81)
    digit_map, src = transforms(rng, n)
    rows = np.arange(n)[:, None]
    return digit_map[rows, inputs[src]], digit_map[rows, labels[src]]


# ---------------------------------------------------------------------------------------------------------------
# Readers


@dataclass
class SudokuSet:
    """Puzzles read from a file: digits (N, 81) uint8, 0 blank; `ratings` from the file, or the solver's guesses
    where the file has no solutions, or 0 where it has solutions but no ratings (Kaggle)."""

    inputs: np.ndarray
    labels: np.ndarray
    ratings: np.ndarray
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, as "file, line n: reason"


class _Rows:
    """Collects rows of one file and checks them a chunk at a time with vectorised tests.

    A bad row either stops the read with a UserError naming the file and line (`on_bad_row="stop"`, the first bad
    row in file order) or is dropped and counted (`"skip"`). Without labels in the file the solver makes them, and
    a puzzle without exactly one solution is a bad row.
    """

    CHUNK = 65536
    KEEP_PROBLEMS = 5

    def __init__(
        self,
        path: str,
        on_bad_row: OnBadRow,
        solve_labels: bool,
        min_rating: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        if on_bad_row not in ("stop", "skip"):
            raise ValueError(f"on_bad_row must be 'stop' or 'skip', got {on_bad_row!r}")
        self.path, self.on_bad_row, self.solve_labels, self.min_rating = path, on_bad_row, solve_labels, min_rating
        self.progress = progress
        self.lines: list[int] = []
        self.questions: list[str] = []
        self.answers: list[str] = []
        self.ratings: list[int] = []
        self.rejected: list[tuple[int, str]] = []
        self.out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.skipped = 0
        self.problems: list[str] = []

    def add(self, line: int, question: str, answer: str | None = None, rating: int = 0) -> None:
        if len(question) != 81:
            return self.reject(line, f"puzzle has {len(question)} characters, expected 81")
        if answer is not None and len(answer) != 81:
            return self.reject(line, f"solution has {len(answer)} characters, expected 81")
        if not question.isascii() or (answer is not None and not answer.isascii()):
            return self.reject(line, "non-ASCII character")
        self.lines.append(line)
        self.questions.append(question)
        self.answers.append(answer or "")
        self.ratings.append(rating)
        if len(self.lines) >= self.CHUNK:
            self.flush()

    def reject(self, line: int, reason: str) -> None:
        self.rejected.append((line, reason))
        if len(self.rejected) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        lines = np.array(self.lines, dtype=np.int64)
        m = len(lines)
        q = _CHAR_DIGIT[np.frombuffer("".join(self.questions).encode("ascii"), dtype=np.uint8)].reshape(m, 81)
        problem = np.full(m, "", dtype=object)
        bad = (q < 0).any(axis=1) | conflicts(np.maximum(q, 0))
        for i in np.flatnonzero(bad):
            problem[i] = "puzzle: " + _describe(self.questions[i])
        qd = np.maximum(q, 0).astype(np.uint8)
        ratings = np.array(self.ratings, dtype=np.int64)
        if self.solve_labels:
            ok = np.flatnonzero(~bad)
            labels = np.zeros((m, 81), dtype=np.uint8)
            sol, counts, guesses = solve_many(qd[ok], limit=2)
            labels[ok], ratings[ok] = sol, guesses
            for i, c in zip(ok, counts):
                if c != 1:
                    problem[i] = "puzzle has no solution" if c == 0 else "puzzle has more than one solution"
        else:
            a = _CHAR_LABEL[np.frombuffer("".join(self.answers).encode("ascii"), dtype=np.uint8)].reshape(m, 81)
            labels = np.maximum(a, 0).astype(np.uint8)
            bad_a = (a < 0).any(axis=1) | ~is_solution(labels)
            mismatch = ~agrees(qd, labels)
            for i in np.flatnonzero(~bad & (bad_a | mismatch)):
                if bad_a[i]:
                    problem[i] = "solution is not a complete valid sudoku (digits 1-9, each once per row/column/box)"
                else:
                    cell = int(np.flatnonzero((qd[i] != 0) & (qd[i] != labels[i]))[0])
                    problem[i] = (
                        f"solution does not solve the puzzle (given at row {cell // 9 + 1}, column {cell % 9 + 1})"
                    )
        failed = [(int(lines[i]), str(problem[i])) for i in np.flatnonzero(problem != "")]
        self._report(sorted(self.rejected + failed))

        good = problem == ""
        if self.min_rating is not None:
            good &= ratings >= self.min_rating
        self.out.append((qd[good], labels[good], ratings[good]))
        if self.progress is not None:
            self.progress(m + len(self.rejected))
        self.lines, self.questions, self.answers, self.ratings, self.rejected = [], [], [], [], []

    def _report(self, failed: list[tuple[int, str]]) -> None:
        if not failed:
            return
        if self.on_bad_row == "stop":
            line, reason = failed[0]
            raise UserError(f"{self.path}, line {line}: {reason} (pass --on-bad-row skip to drop such rows)")
        self.skipped += len(failed)
        room = self.KEEP_PROBLEMS - len(self.problems)
        self.problems += [f"{self.path}, line {line}: {reason}" for line, reason in failed[:room]]

    def finish(self) -> SudokuSet:
        self.flush()
        inputs, labels, ratings = (np.concatenate(parts) for parts in zip(*self.out))
        return SudokuSet(inputs, labels, ratings, skipped=self.skipped, problems=self.problems)


def _describe(question: str) -> str:
    """Why a puzzle string that failed the vectorised checks is bad."""
    try:
        parse_puzzle(question)
    except ValueError as e:
        return str(e)
    return "invalid"


def _open_text(path: str) -> TextIO:
    """Text with line endings kept for csv; a BOM is dropped and undecodable bytes become U+FFFD (then a bad row)."""
    try:
        return open(path, newline="", encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def _csv_rows(path: str, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file after checking its header; blank lines are passed over."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            first = next(reader, None)
            if first is None or [h.strip().lower() for h in first] != header:
                got = "an empty file" if first is None else repr(",".join(first))
                raise UserError(f"{path}, line 1: expected the header {','.join(header)!r}, got {got}")
            for row in reader:
                fields = [f.strip() for f in row]
                if any(fields):
                    yield reader.line_num, fields
        except csv.Error as e:
            raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None


def read_hf_csv(
    path: str,
    min_difficulty: int | None = None,
    on_bad_row: OnBadRow = "stop",
    progress: Callable[[int], object] | None = None,
) -> SudokuSet:
    """Hugging Face layout (sapientinc/sudoku-extreme): header `source,question,answer,rating`, '.' blank.

    Rows rated below `min_difficulty` are dropped after their checks (as the original builder filtered them).
    `progress(k)` is called after each chunk of k rows.
    """
    rows = _Rows(path, on_bad_row, solve_labels=False, min_rating=min_difficulty, progress=progress)
    for line, fields in _csv_rows(path, ["source", "question", "answer", "rating"]):
        if len(fields) != 4:
            rows.reject(line, f"expected 4 fields (source,question,answer,rating), got {len(fields)}")
            continue
        _, question, answer, rating = fields
        try:
            value = int(rating)
        except ValueError:
            rows.reject(line, f"rating {rating!r} is not an integer")
            continue
        rows.add(line, question, answer, value)
    return rows.finish()


def read_kaggle_csv(path: str, on_bad_row: OnBadRow = "stop") -> SudokuSet:
    """Kaggle layout (bryanpark/sudoku): header `quizzes,solutions`, 81 digits each, '0' blank; ratings are 0."""
    rows = _Rows(path, on_bad_row, solve_labels=False)
    for line, fields in _csv_rows(path, ["quizzes", "solutions"]):
        if len(fields) != 2:
            rows.reject(line, f"expected 2 fields (quizzes,solutions), got {len(fields)}")
            continue
        rows.add(line, fields[0], fields[1])
    return rows.finish()


def read_puzzle_lines(path: str, on_bad_row: OnBadRow = "stop") -> SudokuSet:
    """One puzzle a line (tdoku benchmark lists): '#' lines are comments, whitespace (CRLF too) is stripped.

    The files have no solutions: the solver makes the labels and rates each puzzle by its guess count.
    """
    rows = _Rows(path, on_bad_row, solve_labels=True)
    with _open_text(path) as f:
        for line, raw in enumerate(f, start=1):
            text = raw.strip()
            if text and not text.startswith("#"):
                rows.add(line, text)
    return rows.finish()


def write_hf_csv(
    path: str, inputs: np.ndarray, labels: np.ndarray, ratings: np.ndarray | None = None, source: str = ""
) -> None:
    """Write puzzles in the Hugging Face layout that `read_hf_csv` and `--source-dir` take."""
    inputs = np.asarray(inputs).reshape(-1, 81)
    labels = np.asarray(labels).reshape(-1, 81)
    ratings = np.zeros(len(inputs), dtype=np.int64) if ratings is None else np.asarray(ratings)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["source", "question", "answer", "rating"])
        for q, a, r in zip(inputs, labels, ratings):
            writer.writerow([source, format_puzzle(q), format_puzzle(a), int(r)])


def read_any(path: str, on_bad_row: OnBadRow = "stop", min_difficulty: int | None = None) -> SudokuSet:
    """Pick the reader from the file's first line: HF CSV, Kaggle CSV, or a puzzle list."""
    with _open_text(path) as f:
        first = f.readline().strip().lower()
    if first.startswith("source,question"):
        return read_hf_csv(path, min_difficulty=min_difficulty, on_bad_row=on_bad_row)
    if first.startswith("quizzes"):
        return read_kaggle_csv(path, on_bad_row=on_bad_row)
    return read_puzzle_lines(path, on_bad_row=on_bad_row)
