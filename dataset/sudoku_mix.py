"""A Sudoku-Extreme-like set assembled from the raw upstream lists (tdoku benchmarks + Kaggle), offline.

Sudoku-Extreme (HF `sapientinc/sudoku-extreme`, per its dataset card) mixes 1.1M "easy" puzzles (puzzles0_kaggle,
puzzles1_unbiased, puzzles2_17_clue) with 3.1M "hard" ones (puzzles3_magictour_top1465,
puzzles4_forum_hardest_1905, puzzles6_forum_hardest_1106, ph_2010/01_file1), exact-deduplicated, each randomly
permuted by row, column, box and digit, with train puzzles mathematically inequivalent to test puzzles.

Of those lists, the `--mix` folder holds top1465 and forum_hardest_1106 (hard), 17_clue and Kaggle rows (easy); its
layout is `SOURCES` (README "Datasets"). The recipe here keeps the card's easy share (1.1 / 4.2 = 26%) in both
splits, solves every puzzle with our solver (labels, uniqueness, and the guess count as a difficulty rating), draws
the train puzzles, and sends the remaining hard puzzles plus easy ones in the same share to test, dropping any test
puzzle that could be equivalent to a train puzzle (see `invariant`). What the mix cannot copy: forum_hardest_1905
(2.1M puzzles, the bulk of the hard part) and the 1M unbiased puzzles are not available, so the hard part is
top1465 + forum_hardest_1106 and the easy part Kaggle + 17-clue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dataset import sudoku
from utils.errors import UserError

# name -> (file under the source folder, group, file has solutions). Order fixes the draw for a given seed.
SOURCES = {
    "puzzles3_magictour_top1465": ("tdoku/puzzles3_magictour_top1465", "hard", False),
    "puzzles6_forum_hardest_1106": ("tdoku/puzzles6_forum_hardest_1106", "hard", False),
    "puzzles2_17_clue": ("tdoku/puzzles2_17_clue", "easy", False),
    "kaggle": ("kaggle-bryanpark/sudoku.csv", "easy", True),
}
EASY_SHARE = 1.1 / 4.2  # Sudoku-Extreme's card: 1.1M easy of 4.2M puzzles


@dataclass
class Pool:
    inputs: np.ndarray  # (N, 81) uint8 digits, 0 blank
    labels: np.ndarray
    guesses: np.ndarray  # our solver's guess count (0: singles alone solve it); 0 for files with solutions
    source: np.ndarray  # (N,) source names
    group: np.ndarray  # (N,) "easy" / "hard"

    def take(self, idx: np.ndarray) -> Pool:
        return Pool(*(a[idx] for a in (self.inputs, self.labels, self.guesses, self.source, self.group)))


@dataclass
class Mix:
    train: Pool
    test: Pool
    dropped_equivalent: int  # test candidates dropped because they may be equivalent to a train puzzle
    duplicates: int  # exact duplicates across the lists, dropped
    notes: dict = field(default_factory=dict)


def invariant(inputs: np.ndarray) -> list[bytes]:
    """A key per puzzle that every Sudoku symmetry leaves unchanged.

    Symmetries: digit relabelling, row swaps within a band, band swaps, the same for columns/stacks, transpose.
    For each given cell take (givens in its row, givens in its band) and (givens in its column, givens in its
    stack) as an unordered pair (transpose swaps them), givens in its box, and how often its digit is given;
    the key is the sorted list of these tuples. Equivalent puzzles get equal keys, so a test puzzle whose key
    no train puzzle has cannot be equivalent to any; distinct puzzles that share a key are dropped too (safe side).
    """
    g = np.asarray(inputs).reshape(-1, 9, 9)
    given = g > 0
    row = given.sum(2, keepdims=True) * np.ones((1, 1, 9), int)
    col = given.sum(1, keepdims=True) * np.ones((1, 9, 1), int)
    band = np.repeat(given.reshape(-1, 3, 27).sum(2), 3, axis=1)[:, :, None] * np.ones((1, 1, 9), int)
    stack = np.repeat(given.reshape(-1, 9, 3, 3).sum((1, 3)), 3, axis=1)[:, None, :] * np.ones((1, 9, 1), int)
    box = given.reshape(-1, 3, 3, 3, 3).sum((2, 4))
    box = np.repeat(np.repeat(box, 3, axis=1), 3, axis=2)
    digit_count = np.stack([(g == d).sum((1, 2)) for d in range(10)], axis=1)  # (N, 10)
    freq = np.take_along_axis(digit_count, g.reshape(len(g), -1), axis=1).reshape(g.shape)
    a = row * 16 + band  # < 256
    b = col * 16 + stack
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    feat = ((lo * 256 + hi) * 16 + box) * 16 + freq  # one integer per cell
    keys = []
    for f, m in zip(feat.reshape(len(g), -1), given.reshape(len(g), -1)):
        keys.append(np.sort(f[m]).astype(np.int64).tobytes())
    return keys


def read_pool(source_dir: str) -> tuple[Pool, int]:
    """Read and solve every list; returns the pool (exact duplicates removed) and the number removed."""
    parts = []
    for name, (rel, group, solved) in SOURCES.items():
        path = os.path.join(source_dir, rel)
        if not os.path.isfile(path):
            raise UserError(
                f"{path} not found: the --mix folder holds {', '.join(r for r, _, _ in SOURCES.values())} "
                "(where to get them: README 'Datasets')"
            )
        data = sudoku.read_any(path)  # puzzle lists are solved here, with uniqueness checked
        if solved:  # a file's own solutions prove nothing about uniqueness: check it
            counts = sudoku.solve_many(data.inputs, limit=2)[1]
            if (counts != 1).any():
                raise UserError(f"{path}: {int((counts != 1).sum())} puzzles do not have exactly one solution")
        parts.append((data.inputs, data.labels, data.ratings, name, group))
    inputs = np.concatenate([p[0] for p in parts])
    pool = Pool(
        inputs,
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([np.full(len(p[0]), p[3]) for p in parts]),
        np.concatenate([np.full(len(p[0]), p[4]) for p in parts]),
    )
    _, first = np.unique(inputs, axis=0, return_index=True)
    keep = np.sort(first)
    return pool.take(keep), len(inputs) - len(keep)


def _split_counts(total: int, share: float) -> tuple[int, int]:
    easy = round(total * share)
    return total - easy, easy


def assemble(source_dir: str, train_size: int, rng: np.random.Generator, test_size: int | None = None) -> Mix:
    """Draw `train_size` train puzzles (26% easy) and a test set of the remaining hard puzzles plus easy ones in
    the same share (at most `test_size` in all), inequivalent to train; every puzzle randomly transformed."""
    pool, duplicates = read_pool(source_dir)
    hard = rng.permutation(np.flatnonzero(pool.group == "hard"))
    easy = rng.permutation(np.flatnonzero(pool.group == "easy"))
    n_hard, n_easy = _split_counts(train_size, EASY_SHARE)
    if n_hard >= len(hard) or n_easy > len(easy):
        raise UserError(
            f"--subsample-size {train_size} needs {n_hard} hard puzzles and leaves none for test "
            f"(the lists hold {len(hard)} hard ones); use at most {int(len(hard) * 0.6)}"
        )
    train_idx = np.concatenate([hard[:n_hard], easy[:n_easy]])
    train_keys = set(invariant(pool.inputs[train_idx]))

    def inequivalent(idx: np.ndarray) -> np.ndarray:
        keys = invariant(pool.inputs[idx])
        return idx[np.array([k not in train_keys for k in keys], dtype=bool)]

    hard_rest = inequivalent(hard[n_hard:])
    easy_rest = inequivalent(easy[n_easy:])
    t_hard = len(hard_rest) if test_size is None else min(len(hard_rest), _split_counts(test_size, EASY_SHARE)[0])
    t_easy = min(len(easy_rest), round(t_hard * EASY_SHARE / (1 - EASY_SHARE)))
    test_idx = np.concatenate([hard_rest[:t_hard], easy_rest[:t_easy]])
    dropped = (len(hard) - n_hard - len(hard_rest)) + (len(easy) - n_easy - len(easy_rest))

    train, test = pool.take(rng.permutation(train_idx)), pool.take(rng.permutation(test_idx))
    for part in (train, test):  # "randomly permuted by row, column, box, and digit", as in Sudoku-Extreme
        for i in range(len(part.inputs)):
            part.inputs[i], part.labels[i] = (a[0] for a in sudoku.augment(part.inputs[i], part.labels[i], rng, 1))
        part.guesses = sudoku.solve_many(part.inputs, limit=2)[2]  # rate the puzzle as stored (ties break by position)
    return Mix(train, test, dropped, duplicates)


def describe(part: Pool) -> dict:
    """Counts per source and the guess-count distribution, for the dataset's mix.json and the README."""
    g = part.guesses
    return {
        "puzzles": int(len(g)),
        "by_source": {s: int((part.source == s).sum()) for s in SOURCES if (part.source == s).any()},
        "easy_share": round(float((part.group == "easy").mean()), 3) if len(g) else 0.0,
        "clues_mean": round(float((part.inputs > 0).sum(1).mean()), 2) if len(g) else 0.0,
        "guesses": {
            "mean": round(float(g.mean()), 2) if len(g) else 0.0,
            "median": float(np.median(g)) if len(g) else 0.0,
            "p90": float(np.percentile(g, 90)) if len(g) else 0.0,
            "max": int(g.max()) if len(g) else 0,
            "zero_share": round(float((g == 0).mean()), 3) if len(g) else 0.0,
        },
        "guesses_mean_by_source": {
            s: round(float(g[part.source == s].mean()), 2) for s in SOURCES if (part.source == s).any()
        },
    }
