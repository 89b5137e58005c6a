"""A Sudoku-Extreme-like set assembled from the raw upstream lists (tdoku benchmarks + Kaggle), offline.

Sudoku-Extreme (HF `sapientinc/sudoku-extreme`, per its dataset card) mixes 1.1M "easy" puzzles (puzzles0_kaggle,
puzzles1_unbiased, puzzles2_17_clue) with 3.1M "hard" ones (puzzles3_magictour_top1465,
puzzles4_forum_hardest_1905, puzzles6_forum_hardest_1106, ph_2010/01_file1), exact-deduplicated, each randomly
permuted by row, column, box and digit, with train puzzles mathematically inequivalent to test puzzles.

Version 1 (`assemble`, `--mix-version 1`, the README's published results). Of those lists, the `--mix` folder
(layout: `SOURCES`, README "Datasets") holds top1465 and forum_hardest_1106 (hard), 17_clue and 10k Kaggle rows
(easy). The recipe keeps the card's easy share (1.1 / 4.2 = 26%) in both splits, solves every puzzle with our solver (labels, uniqueness, and the guess
count as a difficulty rating), draws the train puzzles, and sends the remaining hard puzzles plus easy ones in
the same share to test, dropping any test puzzle that could be equivalent to a train puzzle (see `invariant`).
What it cannot copy: forum_hardest_1905 (2.1M puzzles, the bulk of the hard part) and the 1M unbiased puzzles
are not available, so the hard part is top1465 + forum_hardest_1106 and the easy part Kaggle + 17-clue.

Version 2 (`assemble_v2`, the default) adds `tdoku/puzzles5_forum_hardest_1905_11+*` (here a 24,000-puzzle part
of the 48,766 forum_hardest_1905 puzzles rated 11+ by Sudoku Explainer, the list's hardest ~2%), a 5,000-puzzle
test split and the same hard-source shares in both splits. Difficulty = our solver's guesses; per list: as in the
file (all puzzles: mean / median / p90), after one random transform as the mix stores puzzles (mean), and tdoku's
published guesses/puzzle for the norvig solver (benchmarks/, GCE-c2 clang-11), which propagates and branches as
ours does:
    list               puzzles     file: mean / median / p90    transformed    norvig
    top1465              1,465           46.0 /  24 / 107         43.7         43.5
    forum_1106             375          373.3 / 277 / 751        403.1        402.0
    forum_1905_11+ part 24,000          172.6 / 129 / 330        180.4 (3k)   179.1 (all 48,766)
    forum_1905            2.1M          not here                               144.9
    17_clue             49,158            5.3 /   1 /  11          5.0 (5k)     4.8
    Kaggle 10k          10,000            0   /   0 /   0          0            0 (100k)
Transformed ratings match norvig's within 4% on every list, so forum_1905, about two thirds of Sudoku-Extreme's
hard part, would rate ~145 here: the 11+ part is only ~24% harder by search than the list it comes from, while
v1's hard lists average 116.9 (top1465 far easier, forum_1106 far harder). A hard part with a share s of 11+
puzzles averages 116.9 + 63.5 s, which meets 145 at s = 44% (`P5_MIN_SHARE` = 45%). But the test split's 5,000
puzzles at 26% easy need 3,690 hard ones, plus 738 for train: 4,428, more than the 1,840 other hard puzzles.
Filling the rest with 11+ puzzles (s = 58-59%: hard part ~154, ~6% above the forum_1905 estimate) is the least-bad
choice: raising the easy share would break the card's 26%, a smaller test is noisier, and a test harder than
train would bias the score. So: every other hard puzzle is used (a random subset where there are more than
needed), 11+ puzzles make up the rest and at least `P5_MIN_SHARE` of the hard part, train and test draw from one
hard pool, and test candidates passed over as possibly equivalent to train are replaced by further 11+ puzzles.
Only the puzzles drawn are solved (the draw uses givens only), so the build does not solve the whole 11+ list
(24,000 puzzles: 264 s on a busy 2-core machine). Nothing depends on the files' lengths: a folder with another
part of the 11+ list (or tdoku's whole `puzzles5_forum_hardest_1905_11+`; several matching files are read in name
order, exact duplicates dropped) builds the same way.
What v2 still cannot copy: the rest of forum_hardest_1905 (97.7% of it), ph_2010/01_file1 (about a third of the
hard part; by its name an earlier edition of the same forum list; difficulty not known here) and the unbiased
list (1M of the 1.1M easy puzzles: norvig 2.2 guesses; our easy part, 83% 17-clue, ~4.2).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import numpy as np

from dataset.builder import pick_disjoint
from dataset.puzzles import sudoku
from utils.errors import UserError

# name -> (file under the source folder, group, file has solutions). Order fixes the draw for a given seed.
SOURCES = {
    "puzzles3_magictour_top1465": ("tdoku/puzzles3_magictour_top1465", "hard", False),
    "puzzles6_forum_hardest_1106": ("tdoku/puzzles6_forum_hardest_1106", "hard", False),
    "puzzles2_17_clue": ("tdoku/puzzles2_17_clue", "easy", False),
    "kaggle": ("kaggle-bryanpark/sudoku.csv", "easy", True),
}
EASY_SHARE = 1.1 / 4.2  # Sudoku-Extreme's card: 1.1M easy of 4.2M puzzles
# v2 adds forum_hardest_1905's 11+ puzzles: any file named so (a part, or tdoku's whole list), read in name order
P5 = "puzzles5_forum_hardest_1905_11+"
SOURCES_V2 = {**SOURCES, P5: (f"tdoku/{P5}*", "hard", False)}
P5_MIN_SHARE = 0.45  # of the hard part: its mean guesses then match forum_hardest_1905's (module docstring)
TEST_SIZE_V2 = 5000


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
    # what `draw_val` needs: the pool the splits were drawn from, the pool indices they hold, each one's file (v2)
    pool: Pool | None = None
    used: np.ndarray | None = None
    files: np.ndarray | None = None


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
    return Mix(train, test, dropped, duplicates, pool=pool, used=np.concatenate([train_idx, test_idx]))


def _read_givens(path: str, has_solutions: bool) -> np.ndarray:
    """The puzzles of one file, unsolved: (N, 81) uint8, 0 blank. A malformed line or conflicting givens stop the
    build naming the file and line; uniqueness is checked later, on the puzzles drawn."""
    if has_solutions:
        return sudoku.read_kaggle_csv(path).inputs  # checks each row's solution too; solving is not needed here
    lines, rows = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, start=1):
            text = raw.strip()
            if text and not text.startswith("#"):
                lines.append(n)
                rows.append(text)
    for n, text in zip(lines, rows):
        if len(text) != 81 or not text.isascii():
            raise UserError(f"{path}, line {n}: expected 81 characters of 1-9 and '.', got {text[:90]!r}")
    chars = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(-1, 81)
    digits = np.where(chars == ord("."), ord("0"), chars).astype(np.int16) - ord("0")
    bad = ((digits < 0) | (digits > 9)).any(1)
    bad[~bad] = sudoku.conflicts(digits[~bad])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}, line {lines[i]}: bad puzzle {rows[i]!r} (characters 1-9 and '.', no repeated givens)")
    return digits.reshape(-1, 81).astype(np.uint8)


def read_givens_pool(source_dir: str) -> tuple[Pool, np.ndarray, int]:
    """Every v2 list, unsolved (labels and guesses zero until `_solve`): the pool with exact duplicates removed,
    each puzzle's file, and the number of duplicates."""
    parts = []
    for name, (rel, group, solved) in SOURCES_V2.items():
        paths = sorted(glob.glob(os.path.join(glob.escape(source_dir), rel)))
        if not paths:
            raise UserError(
                f"{os.path.join(source_dir, rel)} not found: --mix expects {', '.join(r for r, _, _ in SOURCES_V2.values())} "
                f"under {source_dir} (without the 11+ list: --mix-version 1)"
            )
        parts += [(_read_givens(path, solved), name, group, path) for path in paths]
    inputs = np.concatenate([p[0] for p in parts])
    pool = Pool(
        inputs,
        np.zeros_like(inputs),
        np.zeros(len(inputs), dtype=np.int64),
        *(np.concatenate([np.full(len(p[0]), p[k]) for p in parts]) for k in (1, 2)),
    )
    files = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
    _, first = np.unique(inputs, axis=0, return_index=True)
    keep = np.sort(first)
    return pool.take(keep), files[keep], len(inputs) - len(keep)


def _solve(part: Pool, files: np.ndarray) -> None:
    """Labels and guesses of the puzzles as stored; a puzzle without exactly one solution stops the build."""
    part.labels, counts, part.guesses = sudoku.solve_many(part.inputs, limit=2)
    if (counts != 1).any():
        i = int(np.flatnonzero(counts != 1)[0])
        raise UserError(
            f"{files[i]}: {int((counts != 1).sum())} drawn puzzles do not have exactly one solution "
            f"(one of them, transformed: {sudoku.format_puzzle(part.inputs[i])}); fix or drop them in that list"
        )


def assemble_v2(source_dir: str, train_size: int, rng: np.random.Generator, test_size: int = TEST_SIZE_V2) -> Mix:
    """Version 2 (module docstring): `train_size` train and exactly `test_size` test puzzles, 26% easy in both,
    the hard ones from one pool of every other hard list plus 11+ puzzles, test inequivalent to train."""
    pool, files, duplicates = read_givens_pool(source_dir)
    p5 = rng.permutation(np.flatnonzero(pool.source == P5))
    other = rng.permutation(np.flatnonzero((pool.group == "hard") & (pool.source != P5)))
    easy = rng.permutation(np.flatnonzero(pool.group == "easy"))
    n_hard, n_easy = _split_counts(train_size, EASY_SHARE)
    t_hard, t_easy = _split_counts(test_size, EASY_SHARE)
    need = n_hard + t_hard
    n5 = max(need - len(other), int(np.ceil(P5_MIN_SHARE * need)))
    if n5 > len(p5) or n_easy + t_easy > len(easy):
        raise UserError(
            f"--subsample-size {train_size} with --test-size {test_size} needs {n5} of the {len(p5)} {P5} "
            f"puzzles and {n_easy + t_easy} of the {len(easy)} easy ones in {source_dir}; "
            "lower --test-size or --subsample-size"
        )
    hard = rng.permutation(np.concatenate([other[: need - n5], p5[:n5]]))
    train_idx = np.concatenate([hard[:n_hard], easy[:n_easy]])
    train_keys = set(invariant(pool.inputs[train_idx]))

    def first_inequivalent(candidates: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        """The first k candidates whose key no train puzzle has, and how many were passed over to find them."""
        ok = np.array([key not in train_keys for key in invariant(pool.inputs[candidates])], dtype=bool)
        if ok.sum() < k:
            raise UserError(
                f"only {int(ok.sum())} of {len(candidates)} test candidates in {source_dir} are inequivalent to "
                f"train, {k} needed; lower --test-size"
            )
        passed = int(np.flatnonzero(ok)[k - 1]) + 1 - k if k else 0
        return candidates[ok][:k], passed

    # candidates possibly equivalent to a train puzzle are passed over; further 11+ puzzles replace hard ones
    test_hard, hard_dropped = first_inequivalent(np.concatenate([hard[n_hard:], p5[n5:]]), t_hard)
    test_easy, easy_dropped = first_inequivalent(easy[n_easy:], t_easy)
    test_idx = np.concatenate([test_hard, test_easy])
    dropped = hard_dropped + easy_dropped

    order = {"train": rng.permutation(train_idx), "test": rng.permutation(test_idx)}
    parts = {}
    for split, idx in order.items():
        part = pool.take(idx)
        for i in range(len(part.inputs)):  # the same transform family as v1; labels come from the solve below
            part.inputs[i] = sudoku.augment(part.inputs[i], part.labels[i], rng, 1)[0][0]
        _solve(part, files[idx])
        parts[split] = part
    return Mix(
        parts["train"],
        parts["test"],
        dropped,
        duplicates,
        {"mix_version": 2, "hard_pool": {P5: int(n5), "other": need - n5}},
        pool=pool,
        used=np.concatenate([train_idx, test_idx]),
        files=files,
    )


def draw_val(mix: Mix, size: int, rng: np.random.Generator) -> tuple[Pool | None, int]:
    """The validation split: `size` puzzles of the pool that neither split holds, 26% easy as both splits, none
    possibly equivalent to a train or test puzzle (`invariant`) or to another val puzzle, each randomly transformed
    and solved as the splits' puzzles are. Drawn with its own `rng` after train and test are final, so they do not
    change. The hard ones come from whatever hard puzzles are left: in v2 the 11+ list's (every other hard puzzle
    is in train or test), in v1 none unless --test-size left some. With fewer hard puzzles than wanted the easy
    ones shrink to keep the share. Returns (val, or None when no hard puzzle is left; candidates passed over)."""
    assert mix.pool is not None and mix.used is not None, "draw_val needs a Mix from assemble/assemble_v2"
    pool = mix.pool
    free = np.ones(len(pool.inputs), dtype=bool)
    free[mix.used] = False
    hard = rng.permutation(np.flatnonzero(free & (pool.group == "hard")))
    easy = rng.permutation(np.flatnonzero(free & (pool.group == "easy")))
    taken = set(invariant(mix.train.inputs)) | set(invariant(mix.test.inputs))
    n_hard, n_easy = _split_counts(size, EASY_SHARE)
    got_hard, passed_hard = pick_disjoint(invariant, pool.inputs, hard, taken, n_hard)
    if n_hard and not len(got_hard):
        return None, passed_hard
    if len(got_hard) < n_hard:
        n_easy = round(len(got_hard) * EASY_SHARE / (1 - EASY_SHARE))
    taken |= set(invariant(pool.inputs[got_hard]))
    got_easy, passed_easy = pick_disjoint(invariant, pool.inputs, easy, taken, n_easy)
    idx = rng.permutation(np.concatenate([got_hard, got_easy]))
    part = pool.take(idx)
    for i in range(len(part.inputs)):  # the splits' transform family; labels come from the solve below
        part.inputs[i] = sudoku.augment(part.inputs[i], part.labels[i], rng, 1)[0][0]
    _solve(part, mix.files[idx] if mix.files is not None else part.source)
    return part, passed_hard + passed_easy


def describe(part: Pool) -> dict:
    """Counts per source and the guess-count distribution, for the dataset's mix.json and the README."""
    g = part.guesses
    return {
        "puzzles": int(len(g)),
        "by_source": {s: int((part.source == s).sum()) for s in SOURCES_V2 if (part.source == s).any()},
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
            s: round(float(g[part.source == s].mean()), 2) for s in SOURCES_V2 if (part.source == s).any()
        },
    }
