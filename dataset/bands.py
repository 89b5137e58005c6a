"""The hard band: the part of a held-out split (test/ or val/) whose exact accuracy is shown beside the overall
figure (the trainer's eval lines and metrics.jsonl, evaluate.py, bench/records_table.py). The one home of its rule.

- Sudoku: the puzzles our solver needs >= HARD_GUESSES guesses for (the size of its search tree: the per-puzzle
  counts `test_guesses` / `val_guesses` that `build_sudoku_dataset.py --mix` writes to mix.json). A Sudoku folder
  without them (a CSV source, generated puzzles, Sudoku-Extreme from Hugging Face) has no band.
- Maze: the longest-path third of the split: path length = the number of path cells ('o') in the solution, and
  the band is every maze at least as long as the ceil(n/3)-th longest (ties included, so it may hold a few more
  than a third). Computed from the labels at load time, so every Maze folder has one.
- Anything else (ARC): no band.

Examples map to puzzles through `puzzle_indices` and puzzles to groups through `group_indices` (dataset/format.py):
the Sudoku counts are per group (one test puzzle = one group), the Maze lengths per example.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from dataset.format import PuzzleDatasetMetadata
from dataset.transforms import puzzle_kind
from utils.errors import UserError

HARD_GUESSES = 100  # Sudoku: solver guesses at or above which a puzzle is hard (score_sudoku's top band)
MAZE_PATH_TOKEN = 5  # 'o' in dataset/puzzles/maze.py's CHARSET "# SGo" (token = index + 1)

RULE = (
    f"hard band: Sudoku puzzles our solver needs >= {HARD_GUESSES} guesses for (mix.json's per-puzzle counts); "
    "Maze: the longest-path third of the split (path cells in the solution, ties included); none for other data"
)


@dataclass
class Band:
    """The hard band of one split: per set, one flag per example; `note`: what it is, for the start-up line."""

    hard: dict[str, np.ndarray]
    note: str


def sudoku_guesses(data_path: str, split: str) -> list | None:
    """mix.json's per-puzzle guess counts of `split` (None: the folder has none)."""
    path = os.path.join(data_path, "mix.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            mix = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}); rebuild the dataset with --mix") from None
    guesses = mix.get(f"{split}_guesses") if isinstance(mix, dict) else None
    return guesses if isinstance(guesses, list) else None


def maze_hard(lengths: np.ndarray) -> np.ndarray:
    """The longest-path third of `lengths`: at least as long as the ceil(n/3)-th longest (ties included)."""
    if lengths.size == 0:
        return np.zeros(0, dtype=bool)
    cut = np.sort(lengths)[::-1][math.ceil(lengths.size / 3) - 1]
    return lengths >= cut


def sudoku_hard(guesses: np.ndarray) -> np.ndarray:
    return guesses >= HARD_GUESSES


def hard_band(
    data_path: str, split: str, metadata: PuzzleDatasetMetadata, data: dict[str, dict[str, np.ndarray]]
) -> Band | None:
    """The hard band of one split (its sets' arrays as dataset/loader.py opens them), or None: no band."""
    kind = puzzle_kind(metadata.seq_len, metadata.vocab_size, metadata.num_puzzle_identifiers)
    hard: dict[str, np.ndarray] = {}
    if kind == "sudoku":
        guesses = sudoku_guesses(data_path, split)
        if guesses is None:
            return None
        offset = 0
        for set_name, d in data.items():
            groups = d["group_indices"].size - 1
            g = np.asarray(guesses[offset : offset + groups], dtype=np.int64)
            offset += groups
            if g.size != groups:
                break
            puzzle_of = np.repeat(np.arange(d["puzzle_indices"].size - 1), np.diff(d["puzzle_indices"]))
            group_of = np.repeat(np.arange(groups), np.diff(d["group_indices"]))
            hard[set_name] = sudoku_hard(g)[group_of[puzzle_of]]
        if offset != len(guesses) or len(hard) != len(data):
            raise UserError(
                f"{os.path.join(data_path, 'mix.json')} has {len(guesses)} {split}_guesses for "
                f"{sum(d['group_indices'].size - 1 for d in data.values())} {split} puzzles: it belongs to another "
                "build; rebuild the dataset (build_sudoku_dataset.py --mix) so both are written together"
            )
        rule = f">= {HARD_GUESSES} solver guesses"
    elif kind == "maze":
        for set_name, d in data.items():
            hard[set_name] = maze_hard((np.asarray(d["labels"]) == MAZE_PATH_TOKEN).sum(1))
        rule = "the longest-path third"
    else:
        return None
    n = sum(int(h.sum()) for h in hard.values())
    total = sum(h.size for h in hard.values())
    return Band(hard, f"{split} hard band: {n:,} of {total:,} puzzles ({rule})")


def no_band_note(data_path: str, split: str, metadata: PuzzleDatasetMetadata) -> str:
    """Why a split has no band, in one line."""
    kind = puzzle_kind(metadata.seq_len, metadata.vocab_size, metadata.num_puzzle_identifiers)
    if kind == "sudoku":
        return (
            f"no {split} hard band: {data_path} has no per-puzzle guess counts ({split}_guesses in mix.json, "
            "written by build_sudoku_dataset.py --mix)"
        )
    return f"no {split} hard band: it is defined for Sudoku (mix) and Maze data only"
