"""The on-disk dataset format: what the builders write and the loader (dataset/loader.py) reads.

A dataset folder holds `train/` and `test/`, and optionally `val/` (held-out puzzles of the training source,
never augmented, scored like test; folders without it work as before), each with a `dataset.json`
(PuzzleDatasetMetadata) and, per set name S, `S__inputs.npy`, `S__labels.npy` (examples x seq_len),
`S__puzzle_identifiers.npy` (one per puzzle), `S__puzzle_indices.npy` (puzzle -> first example, P+1 long) and
`S__group_indices.npy` (group -> first puzzle, G+1 long); `identifiers.json` beside them maps identifier id ->
name.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pydantic

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


class PuzzleDatasetMetadata(pydantic.BaseModel):
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int

    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int

    total_groups: int
    mean_puzzle_examples: float

    sets: list[str]


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every token (the original wrote int64: 8x the disk)."""
    return np.dtype(np.uint8) if vocab_size <= 256 else np.dtype(np.int32)


def save_split(root: str, split: str, metadata: PuzzleDatasetMetadata, sets: dict[str, dict[str, np.ndarray]]) -> None:
    """Write one split (`train`, `test` or `val`) of a dataset under `root`."""
    split_dir = os.path.join(root, split)
    os.makedirs(split_dir, exist_ok=True)
    for set_name, arrays in sets.items():
        missing = set(FIELDS) - set(arrays)
        if missing:
            raise ValueError(f"set {set_name!r} lacks {sorted(missing)}")
        for field in FIELDS:
            arr = np.asarray(arrays[field])
            if field in ("inputs", "labels"):
                arr = arr.astype(token_dtype(metadata.vocab_size), copy=False)
            else:
                arr = arr.astype(np.int32, copy=False)
            np.save(os.path.join(split_dir, f"{set_name}__{field}.npy"), arr)
    with open(os.path.join(split_dir, "dataset.json"), "w") as f:
        json.dump(metadata.model_dump(), f)


def save_grid_split(
    root: str, split: str, arrays: dict[str, np.ndarray], seq_len: int, vocab_size: int
) -> tuple[int, int, int]:
    """Save one split of a Sudoku/Maze-style dataset (set "all", one example per puzzle, no identifiers;
    pad 0 and ignored label 0 as the original builders). Returns (groups, puzzles, examples)."""
    groups = len(arrays["group_indices"]) - 1
    metadata = PuzzleDatasetMetadata(
        seq_len=seq_len,
        vocab_size=vocab_size,
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        num_puzzle_identifiers=1,
        total_groups=groups,
        mean_puzzle_examples=1,
        sets=["all"],
    )
    save_split(root, split, metadata, {"all": arrays})
    return groups, len(arrays["puzzle_identifiers"]), len(arrays["inputs"])


def write_identifiers(root: str, names: list[str]) -> None:
    with open(os.path.join(root, "identifiers.json"), "w") as f:
        json.dump(names, f)
