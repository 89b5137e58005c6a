"""The 8 symmetries of the square, as the original builders number them (ARC and Maze augmentation, their
transforms as token-grid gathers in dataset/transforms.py)."""

from __future__ import annotations

import numpy as np

# dihedral transform id -> id of its inverse (rot90 and rot270 swap; flips are their own inverse)
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


def dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    """One of the 8 symmetries of the square; ids as in the original builders."""
    if tid == 0:
        return arr
    if tid in (1, 2, 3):
        return np.rot90(arr, k=tid)
    if tid == 4:
        return np.fliplr(arr)
    if tid == 5:
        return np.flipud(arr)
    if tid == 6:
        return arr.T
    if tid == 7:
        return np.fliplr(np.rot90(arr, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


def inverse_dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    return dihedral_transform(arr, DIHEDRAL_INVERSE[tid])
