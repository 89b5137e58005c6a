"""The symmetry transforms of a built dataset's token grids, as gathers: what the builders augment with, what
training's `augment_online` applies to each row of a batch (dataset/loader.py), and what test-time augmentation
votes over (train/tta.py).

The families are the builders' own: Sudoku, the original builder's (digit relabelling, transpose, band, stack,
row-in-band and column-in-stack permutations: dataset/puzzles/sudoku.transforms); Maze, the 8 symmetries of the
square (dataset/puzzles/dihedral.py). A dataset's kind is read from its shape (`puzzle_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.puzzles.dihedral import dihedral_transform

MAZE_SIDE = 30


def puzzle_kind(seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> str:
    """'sudoku', 'maze' or 'arc' from the dataset's shape (the builders' fixed layouts), else 'other'."""
    if seq_len == 81 and vocab_size == 11:
        return "sudoku"
    if seq_len == MAZE_SIDE * MAZE_SIDE and vocab_size == 6:
        return "maze"
    if seq_len == 900 and vocab_size == 12:
        return "arc"
    return "other"


@dataclass
class Transforms:
    """K transforms of a token grid, as gathers: forward x' = table[x[src]], backward x = inverse[x'][inv_src]."""

    src: np.ndarray  # (K, L): new cell i reads old cell src[k, i]
    table: np.ndarray  # (K, V): token relabelling applied after the gather
    inverse_table: np.ndarray  # (K, V)

    @property
    def inv_src(self) -> np.ndarray:
        return np.argsort(self.src, axis=1)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        """(N, L) -> (N, K, L): every puzzle under every transform."""
        gathered = tokens[:, self.src]  # (N, K, L)
        return np.take_along_axis(self.table[None], gathered, axis=2)

    def apply_each(self, tokens: np.ndarray) -> np.ndarray:
        """(K, L) -> (K, L): row k under transform k (training batches augmented on the fly)."""
        gathered = np.take_along_axis(np.asarray(tokens, dtype=np.int64), self.src, axis=1)
        return np.take_along_axis(self.table, gathered, axis=1)

    def undo(self, tokens: np.ndarray) -> np.ndarray:
        """(N, K, L) predictions in transformed frames -> the puzzles' own frame."""
        relabelled = np.take_along_axis(self.inverse_table[None], tokens, axis=2)
        return np.take_along_axis(relabelled, np.broadcast_to(self.inv_src[None], tokens.shape), axis=2)


def make_transforms(kind: str, k: int, vocab_size: int, seed: int = 0) -> Transforms:
    """K distinct transforms for voting, copy 0 the identity."""
    if k < 1:
        raise ValueError(f"tta must be >= 1, got {k}")
    if kind == "sudoku":
        from dataset.puzzles.sudoku import transforms

        digit_map, src = transforms(np.random.default_rng(seed), k)
        src[0], digit_map[0] = np.arange(81), np.arange(10)
        return _sudoku_transforms(digit_map, src, vocab_size)
    if kind == "maze":
        if k > 8:
            raise ValueError(f"a maze has 8 symmetries: tta must be <= 8, got {k}")
        rng = np.random.default_rng(seed)
        return _maze_transforms(np.array([0, *rng.permutation(np.arange(1, 8))[: k - 1]]), vocab_size)
    raise ValueError(f"test-time augmentation covers Sudoku and Maze, not {kind}")


def random_transforms(kind: str, n: int, vocab_size: int, rng: np.random.Generator) -> Transforms:
    """n independent random transforms, repeats allowed and none forced to the identity: a fresh symmetry for
    each row of a training batch (`augment_online`)."""
    if kind == "sudoku":
        from dataset.puzzles.sudoku import transforms

        return _sudoku_transforms(*transforms(rng, n), vocab_size)
    if kind == "maze":
        return _maze_transforms(rng.integers(0, 8, n), vocab_size)
    raise ValueError(f"augmentation covers Sudoku and Maze, not {kind}")


def _sudoku_transforms(digit_map: np.ndarray, src: np.ndarray, vocab_size: int) -> Transforms:
    # tokens are digit + 1 (blank digit 0 -> token 1), token 0 is padding
    table = np.tile(np.arange(vocab_size), (len(src), 1))
    table[:, 1:11] = digit_map.astype(np.int64) + 1
    return Transforms(src=src.astype(np.int64), table=table, inverse_table=np.argsort(table, axis=1))


def _maze_transforms(ids: np.ndarray, vocab_size: int) -> Transforms:
    cells = np.arange(MAZE_SIDE * MAZE_SIDE).reshape(MAZE_SIDE, MAZE_SIDE)
    # dihedral_transform moves values: the value at new cell i came from cell src[i]
    by_id = [dihedral_transform(cells, t).ravel() for t in range(8)]
    src = np.stack([by_id[t] for t in ids])
    table = np.tile(np.arange(vocab_size), (len(ids), 1))
    return Transforms(src=src.astype(np.int64), table=table, inverse_table=np.argsort(table, axis=1))
