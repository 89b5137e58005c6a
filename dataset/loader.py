"""PuzzleDataset: streams batches from a dataset folder (format in dataset/common.py).

Train: every pass shuffles the group order for `epochs_per_iter` epochs; each batch takes groups in that
order, one random puzzle per group and random examples of that puzzle (without replacement) until the
global batch is full; the last short batch is dropped; rank r keeps its slice. Test: examples in order,
the last batch padded (pad inputs, ignored labels, blank identifier).

Fixed against the original: its example choice used the unseeded global numpy RNG, so two runs with the
same seed saw different batches (ARC), and ranks disagreed on the global batch. Here every random draw
comes from generators seeded by (seed, pass). Group order and puzzle choice use the same Philox stream
as the original, so on datasets with one example per puzzle (Sudoku, Maze) batches are identical to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pydantic
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dataset.common import FIELDS, PuzzleDatasetMetadata
from models.losses import IGNORE_LABEL_ID
from utils.errors import UserError

Batch = dict[str, torch.Tensor]


def build_hint(data_path: str) -> str:
    name = os.path.basename(os.path.normpath(data_path))
    if "sudoku" in name:
        return (
            f"build it first, e.g. `python dataset/build_sudoku_dataset.py --output-dir {data_path} --subsample-size 1000 --num-aug 1000` "
            f"(offline: add `--generate 1000`)"
        )
    if "maze" in name:
        return f"build it first: `python dataset/build_maze_dataset.py --output-dir {data_path}`"
    if "arc" in name:
        return f"build it first: `python dataset/build_arc_dataset.py --output-dir {data_path}`"
    return "build it first with one of the dataset/build_*_dataset.py scripts (see README)"


def load_metadata(data_path: str, split: str) -> PuzzleDatasetMetadata:
    """Read and check `<data_path>/<split>/dataset.json`, with errors that say how to fix the folder."""
    if not os.path.isdir(data_path):
        raise UserError(f"dataset folder {data_path!r} does not exist; {build_hint(data_path)}")
    path = os.path.join(data_path, split, "dataset.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing: {data_path!r} is not a complete dataset; {build_hint(data_path)}")
    try:
        with open(path) as f:
            raw = json.load(f)
        return PuzzleDatasetMetadata(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); rebuild the dataset") from None
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise UserError(f"{path} has bad metadata ({problems}); rebuild the dataset") from None


def load_arrays(data_path: str, split: str, metadata: PuzzleDatasetMetadata) -> dict[str, dict[str, np.ndarray]]:
    """Open every set of a split (inputs/labels memory-mapped) and check the arrays agree with each other."""
    data: dict[str, dict[str, np.ndarray]] = {}
    for set_name in metadata.sets:
        arrays = {}
        for field in FIELDS:
            path = os.path.join(data_path, split, f"{set_name}__{field}.npy")
            if not os.path.isfile(path):
                raise UserError(f"{path} is missing: the dataset is incomplete; {build_hint(data_path)}")
            try:
                arrays[field] = np.load(path, mmap_mode="r" if field in ("inputs", "labels") else None)
            except Exception as e:
                raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); rebuild the dataset") from None
        _check_set(os.path.join(data_path, split, set_name), arrays, metadata)
        data[set_name] = arrays
    return data


def _check_set(where: str, a: dict[str, np.ndarray], m: PuzzleDatasetMetadata) -> None:
    problems = []
    n = a["inputs"].shape[0]
    if a["inputs"].ndim != 2 or a["inputs"].shape[1] != m.seq_len:
        problems.append(f"inputs shape {a['inputs'].shape} != (N, seq_len={m.seq_len})")
    if a["labels"].shape != a["inputs"].shape:
        problems.append(f"labels shape {a['labels'].shape} != inputs shape {a['inputs'].shape}")
    pi, gi = a["puzzle_indices"], a["group_indices"]
    if pi.size < 1 or int(pi[0]) != 0 or int(pi[-1]) != n:
        problems.append(f"puzzle_indices must run from 0 to the number of examples ({n})")
    if gi.size < 1 or int(gi[0]) != 0 or int(gi[-1]) != pi.size - 1:
        problems.append(f"group_indices must run from 0 to the number of puzzles ({pi.size - 1})")
    if a["puzzle_identifiers"].size != pi.size - 1:
        problems.append(f"{a['puzzle_identifiers'].size} puzzle_identifiers for {pi.size - 1} puzzles")
    if problems:
        raise UserError(f"dataset set {where} is inconsistent: {'; '.join(problems)}; rebuild the dataset")


class PuzzleDatasetConfig(pydantic.BaseModel):
    seed: int
    dataset_path: str
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int  # epochs per pass (= eval_interval): fewer, longer passes
    rank: int
    num_replicas: int
    batch_key: str = "global_batch_size"  # the config key global_batch_size came from, for the error message


def sample_batch(
    rng: np.random.Generator,
    example_rng: np.random.Generator,
    group_order: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
    start_index: int,
    global_batch_size: int,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Fill one global batch from groups in order: (next start, example indices, puzzle index per example)."""
    examples, puzzles = [], []
    size = 0
    while start_index < group_order.size and size < global_batch_size:
        group = group_order[start_index]
        puzzle = rng.integers(group_indices[group], group_indices[group + 1])
        start_index += 1

        first = puzzle_indices[puzzle]
        n = int(puzzle_indices[puzzle + 1] - first)
        take = min(n, global_batch_size - size)
        puzzles.append(np.full(take, puzzle, dtype=np.int32))
        examples.append(
            first + (example_rng.choice(n, take, replace=False) if take < n else example_rng.permutation(n))
        )
        size += take
    return start_index, np.concatenate(examples), np.concatenate(puzzles)


class PuzzleDataset(IterableDataset):
    def __init__(self, config: PuzzleDatasetConfig, split: str = "train"):
        super().__init__()
        self.config = config
        self.split = split
        self.metadata = load_metadata(config.dataset_path, split)
        if config.global_batch_size % config.num_replicas != 0:
            raise UserError(
                f"{config.batch_key} {config.global_batch_size} must be divisible by the number of processes {config.num_replicas}"
            )
        self.local_batch_size = config.global_batch_size // config.num_replicas
        self._data: dict[str, dict[str, np.ndarray]] | None = None
        self._iters = 0  # passes over the training data so far; seeds each pass
        self._skip = 0  # batches of the next pass to draw and drop (resuming mid-pass)

    def set_position(self, passes_done: int, batches_into_pass: int) -> None:
        """Resume: the next pass is pass number `passes_done + 1` (same seed as before), minus its first
        `batches_into_pass` batches. Only index sampling is replayed, no data is read for skipped batches."""
        self._iters = passes_done
        self._skip = batches_into_pass

    def _lazy_load(self) -> dict[str, dict[str, np.ndarray]]:
        if self._data is None:
            self._data = load_arrays(self.config.dataset_path, self.split, self.metadata)
        return self._data

    def _collate(self, batch: dict[str, np.ndarray]) -> Batch:
        batch = {k: v.astype(np.int32) for k, v in batch.items()}
        if self.metadata.ignore_label_id is not None:
            batch["labels"][batch["labels"] == self.metadata.ignore_label_id] = IGNORE_LABEL_ID

        pad = self.local_batch_size - batch["puzzle_identifiers"].size
        if pad > 0:
            fill = {
                "inputs": self.metadata.pad_id,
                "labels": IGNORE_LABEL_ID,
                "puzzle_identifiers": self.metadata.blank_identifier_id,
            }
            batch = {
                k: np.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1), constant_values=fill[k]) for k, v in batch.items()
            }
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def _iter_test(self) -> Iterator[tuple[str, Batch, int]]:
        for set_name, d in self._lazy_load().items():
            total = len(d["inputs"])
            # puzzle of every example, computed once (the original walked it per batch)
            example_puzzle = np.repeat(np.arange(d["puzzle_indices"].size - 1), np.diff(d["puzzle_indices"]))
            for start in range(0, total, self.config.global_batch_size):
                end = min(total, start + self.config.global_batch_size)
                lo = start + self.config.rank * self.local_batch_size
                hi = min(start + (self.config.rank + 1) * self.local_batch_size, end)
                lo = min(lo, hi)
                batch = self._collate(
                    {
                        "inputs": d["inputs"][lo:hi],
                        "labels": d["labels"][lo:hi],
                        "puzzle_identifiers": d["puzzle_identifiers"][example_puzzle[lo:hi]],
                    }
                )
                yield set_name, batch, end - start

    def _iter_train(self) -> Iterator[tuple[str, Batch, int]]:
        for set_name, d in self._lazy_load().items():
            self._iters += 1
            rng = np.random.Generator(np.random.Philox(seed=self.config.seed + self._iters))
            example_rng = np.random.default_rng([self.config.seed, self._iters, 0xE1])
            n_groups = d["group_indices"].size - 1
            group_order = np.concatenate([rng.permutation(n_groups) for _ in range(self.config.epochs_per_iter)])

            start = 0
            while start < group_order.size:
                start, idx, puzzle_idx = sample_batch(
                    rng,
                    example_rng,
                    group_order,
                    d["puzzle_indices"],
                    d["group_indices"],
                    start,
                    self.config.global_batch_size,
                )
                effective = puzzle_idx.size
                if effective < self.config.global_batch_size:
                    break  # drop the last short batch
                if self._skip > 0:
                    self._skip -= 1
                    continue
                sl = slice(self.config.rank * self.local_batch_size, (self.config.rank + 1) * self.local_batch_size)
                idx, puzzle_idx = idx[sl], puzzle_idx[sl]
                yield (
                    set_name,
                    self._collate(
                        {
                            "inputs": d["inputs"][idx],
                            "labels": d["labels"][idx],
                            "puzzle_identifiers": d["puzzle_identifiers"][puzzle_idx],
                        }
                    ),
                    effective,
                )

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        info = get_worker_info()
        if info is not None and info.num_workers != 1:
            raise RuntimeError("PuzzleDataset supports at most one DataLoader worker")
        return self._iter_test() if self.config.test_set_mode else self._iter_train()
