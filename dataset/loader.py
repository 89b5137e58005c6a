"""PuzzleDataset: streams batches from a dataset folder (format in dataset/format.py).

Train: every pass shuffles the group order for `epochs_per_iter` epochs; each batch takes groups in that
order, one random puzzle per group and random examples of that puzzle (without replacement) until the
global batch is full; the last short batch is dropped; rank r keeps its slice. Test: examples in order,
the last batch padded (pad inputs, ignored labels, blank identifier). A folder's optional val/ split reads as
test does: PuzzleDataset(config with test_set_mode=True, split="val").

Fixed against the original: its example choice used the unseeded global numpy RNG, so two runs with the
same seed saw different batches (ARC), and ranks disagreed on the global batch. Here every random draw
comes from generators seeded by (seed, pass). Group order and puzzle choice use the same Philox stream
as the original, so on datasets with one example per puzzle (Sudoku, Maze) batches are identical to it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shlex
from collections.abc import Iterator

import numpy as np
import pydantic
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dataset.bands import Band, hard_band
from dataset.format import FIELDS, PuzzleDatasetMetadata
from dataset.transforms import Transforms, puzzle_kind, random_transforms
from models.losses import IGNORE_LABEL_ID
from utils.errors import UserError

Batch = dict[str, torch.Tensor]
SPLITS = ("train", "test", "val")  # split names a folder may hold; val/ is optional (dataset/format.py)


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


def missing_folder_message(data_path: str) -> str:
    """Where it looked (a relative path is relative to the current directory), and a close match among the
    folders beside it (a typo) before the advice to build it (a close name can also be another dataset:
    arc-aug-1000 and arc-2-aug-1000)."""
    full = os.path.abspath(data_path)
    where = f"{data_path!r} does not exist" + (
        f" (looked for {full}: relative to the current directory {os.getcwd()})" if full != data_path else ""
    )
    parent = os.path.dirname(full)
    if os.path.isdir(parent):
        siblings = [n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))]
        near = difflib.get_close_matches(os.path.basename(full), siblings, n=1, cutoff=0.6)
        if near:
            fix = os.path.join(os.path.dirname(os.path.normpath(data_path)), near[0])
            return (
                f"dataset folder {where}; did you mean data_path={shlex.quote(fix)}? (if not: {build_hint(data_path)})"
            )
    return f"dataset folder {where}; {build_hint(data_path)}"


def load_metadata(data_path: str, split: str) -> PuzzleDatasetMetadata:
    """Read and check `<data_path>/<split>/dataset.json`, with errors that say how to fix the folder."""
    if not os.path.isdir(data_path):
        raise UserError(missing_folder_message(data_path))
    path = os.path.join(data_path, split, "dataset.json")
    if os.path.basename(os.path.normpath(data_path)) in SPLITS and not os.path.isfile(path):
        parent = os.path.dirname(os.path.normpath(data_path)) or "."
        if os.path.isfile(os.path.join(data_path, "dataset.json")):
            raise UserError(
                f"{data_path!r} is one split of a dataset; use the parent folder: data_path={shlex.quote(parent)}"
            )
    if split == "val" and not os.path.isfile(path) and os.path.isdir(os.path.join(data_path, "train")):
        raise UserError(
            f"{data_path!r} has no val/ split (built before builders wrote one, with --val-size 0, or from a source "
            "with no puzzle to spare: the build printed why); rebuild it to score val (README 'Datasets')"
        )
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


def has_split(data_path: str, split: str) -> bool:
    """Whether the folder holds `split` (val/ is optional: older builds and some sources have none)."""
    return os.path.isfile(os.path.join(data_path, split, "dataset.json"))


def model_metadata(data_path: str) -> tuple[PuzzleDatasetMetadata, bool]:
    """The metadata that shapes a model (vocabulary, sequence length, puzzle identifiers): the train split's, or,
    in a folder holding only a test split (another held-out set to score a checkpoint on), the test split's,
    which has the same fields. Also says whether the train split was there."""
    if os.path.isfile(os.path.join(data_path, "train", "dataset.json")):
        return load_metadata(data_path, "train"), True
    if os.path.isfile(os.path.join(data_path, "test", "dataset.json")):
        return load_metadata(data_path, "test"), False
    return load_metadata(data_path, "train"), True  # neither: the error names what is missing and how to build it


def load_arrays(
    data_path: str, split: str, metadata: PuzzleDatasetMetadata, check: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Open every set of a split (inputs/labels memory-mapped) and, unless check=False, check them
    (check_split). PuzzleDataset checks once at construction and opens unchecked afterwards."""
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
        data[set_name] = arrays
    if check:
        check_split(os.path.join(data_path, split), data, metadata)
    return data


def check_split(split_dir: str, data: dict[str, dict[str, np.ndarray]], m: PuzzleDatasetMetadata) -> None:
    """Everything the model would trip over later (an IndexError on CPU, a device-side assert on a GPU) or
    get silently wrong (a schedule from a wrong total_groups, float tokens truncated), checked once at load:
    dtypes, value ranges (min/max over the memory-mapped arrays), monotonic indices, dataset.json vs the
    arrays. The first problem found is raised as one line naming the file and the fix."""
    meta_file = os.path.join(split_dir, "dataset.json")

    def bad(file: str, problem: str, fix: str = "rebuild the dataset") -> UserError:
        return UserError(f"{file}: {problem}; {fix}")

    for name, value, low in (
        ("vocab_size", m.vocab_size, 1),
        ("seq_len", m.seq_len, 1),
        ("num_puzzle_identifiers", m.num_puzzle_identifiers, 1),
        ("total_groups", m.total_groups, 0),
    ):
        if value < low:
            raise bad(meta_file, f"{name}={value} must be >= {low}")
    if not 0 <= m.pad_id < m.vocab_size:
        raise bad(meta_file, f"pad_id={m.pad_id} is outside the vocabulary 0..{m.vocab_size - 1}")
    if not 0 <= m.blank_identifier_id < m.num_puzzle_identifiers:
        raise bad(
            meta_file, f"blank_identifier_id={m.blank_identifier_id} is outside 0..{m.num_puzzle_identifiers - 1}"
        )
    groups = examples = puzzles = 0
    for set_name, a in data.items():
        file = {f: os.path.join(split_dir, f"{set_name}__{f}.npy") for f in FIELDS}
        for f in FIELDS:
            if a[f].dtype == np.bool_ or not np.issubdtype(a[f].dtype, np.integer):
                raise bad(file[f], f"dtype {a[f].dtype} is not an integer type (values would be truncated or fail)")
        n = a["inputs"].shape[0]
        if a["inputs"].ndim != 2 or a["inputs"].shape[1] != m.seq_len:
            raise bad(file["inputs"], f"shape {a['inputs'].shape} is not (examples, seq_len={m.seq_len})")
        if a["labels"].shape != a["inputs"].shape:
            raise bad(file["labels"], f"shape {a['labels'].shape} differs from the inputs' {a['inputs'].shape}")
        pi, gi, ids = a["puzzle_indices"], a["group_indices"], a["puzzle_identifiers"]
        for f, arr in (("puzzle_indices", pi), ("group_indices", gi), ("puzzle_identifiers", ids)):
            if arr.ndim != 1:
                raise bad(file[f], f"shape {arr.shape} is not one-dimensional")
        if pi.size < 1 or int(pi[0]) != 0 or int(pi[-1]) != n:
            raise bad(file["puzzle_indices"], f"must run from 0 to the number of examples ({n})")
        if gi.size < 1 or int(gi[0]) != 0 or int(gi[-1]) != pi.size - 1:
            raise bad(file["group_indices"], f"must run from 0 to the number of puzzles ({pi.size - 1})")
        for f, arr in (("puzzle_indices", pi), ("group_indices", gi)):
            if arr.size > 1 and not (np.diff(arr) > 0).all():
                at = int(np.argmax(np.diff(arr) <= 0))
                raise bad(file[f], f"must increase, but entry {at + 1} ({int(arr[at + 1])}) follows {int(arr[at])}")
        if ids.size != pi.size - 1:
            raise bad(file["puzzle_identifiers"], f"{ids.size} entries for {pi.size - 1} puzzles")
        if n:
            for f, hi in (("inputs", m.vocab_size), ("labels", m.vocab_size)):
                lo_v, hi_v = int(a[f].min()), int(a[f].max())
                if lo_v >= 0 and hi_v < hi:
                    continue
                if f == "labels" and m.ignore_label_id is not None:  # the ignored label may lie outside the vocabulary
                    arr = a[f]
                    if not (((arr < 0) | (arr >= hi)) & (arr != m.ignore_label_id)).any():
                        continue
                raise bad(
                    file[f], f"token values {lo_v}..{hi_v} outside vocab_size {hi} (tokens 0..{hi - 1}, {meta_file})"
                )
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= m.num_puzzle_identifiers):
                raise bad(
                    file["puzzle_identifiers"],
                    f"identifiers {int(ids.min())}..{int(ids.max())} fall outside 0..{m.num_puzzle_identifiers - 1} "
                    f"(num_puzzle_identifiers in {meta_file})",
                )
        groups, examples, puzzles = groups + gi.size - 1, examples + n, puzzles + pi.size - 1
    if examples == 0:
        raise bad(
            split_dir,
            "the split has no examples (nothing to train on or evaluate)",
            "rebuild the dataset with a non-empty split",
        )
    if m.total_groups != groups:
        raise bad(
            meta_file,
            f"total_groups={m.total_groups} but the arrays hold {groups} groups (the step schedule depends on it)",
        )
    if not math.isclose(m.mean_puzzle_examples, examples / puzzles, rel_tol=1e-3):
        raise bad(
            meta_file,
            f"mean_puzzle_examples={m.mean_puzzle_examples} but the arrays hold {examples / puzzles:.4g} examples per puzzle",
        )
    train_file = os.path.join(os.path.dirname(split_dir), "train", "dataset.json")
    if os.path.basename(split_dir) in ("test", "val") and os.path.isfile(train_file):  # the model is built from train's
        train = load_metadata(os.path.dirname(split_dir), "train")
        for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
            if getattr(train, key) != getattr(m, key):
                raise bad(meta_file, f"{key}={getattr(m, key)} but the train split's is {getattr(train, key)}")


class PuzzleDatasetConfig(pydantic.BaseModel):
    seed: int
    dataset_path: str
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int  # epochs per pass (= eval_interval): fewer, longer passes
    rank: int
    num_replicas: int
    batch_key: str = "global_batch_size"  # the config key global_batch_size came from, for the error message
    augment_online: bool = False  # train: each example under a fresh random symmetry of its kind (Sudoku, Maze)


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
        # checked here, once; opened again lazily (a DataLoader worker gets the dataset without its arrays)
        load_arrays(config.dataset_path, split, self.metadata)
        self._data: dict[str, dict[str, np.ndarray]] | None = None
        self._iters = 0  # passes over the training data so far; seeds each pass
        self._skip = 0  # batches of the next pass to draw and drop (resuming mid-pass)
        self._augment = None
        self._band: Band | None = None
        self._band_done = False
        if config.augment_online and split == "train":
            m = self.metadata
            self._augment = puzzle_kind(m.seq_len, m.vocab_size, m.num_puzzle_identifiers)
            if self._augment not in ("sudoku", "maze"):
                raise UserError(
                    "augment_online=true needs a Sudoku (seq 81, vocab 11) or Maze (seq 900, vocab 6) dataset, whose "
                    "symmetries it applies; ARC's augmentations are built into its dataset. Drop augment_online=true"
                )

    def set_position(self, passes_done: int, batches_into_pass: int) -> None:
        """Resume: the next pass is pass number `passes_done + 1` (same seed as before), minus its first
        `batches_into_pass` batches. Only index sampling is replayed, no data is read for skipped batches."""
        self._iters = passes_done
        self._skip = batches_into_pass

    def set_sizes(self) -> dict[str, int]:
        """Examples per set of this split (rows of its inputs), for progress bars and the start-up report."""
        return {name: len(arrays["inputs"]) for name, arrays in self._lazy_load().items()}

    def _lazy_load(self) -> dict[str, dict[str, np.ndarray]]:
        if self._data is None:
            self._data = load_arrays(self.config.dataset_path, self.split, self.metadata, check=False)
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

    def test_rows(self, set_name: str, batch_no: int) -> tuple[int, int]:
        """The examples [lo, hi) of `set_name` that this rank's rows of test batch `batch_no` (0-based) hold, in
        order (the rows after them are padding): what maps an eval row to its example, on any number of ranks."""
        total = len(self._lazy_load()[set_name]["inputs"])
        start = batch_no * self.config.global_batch_size
        end = min(total, start + self.config.global_batch_size)
        hi = min(start + (self.config.rank + 1) * self.local_batch_size, end)
        return min(start + self.config.rank * self.local_batch_size, hi), hi

    def hard_band(self) -> Band | None:
        """This split's hard band (dataset/bands.py: the rule), computed once; None: the data has none."""
        if not self._band_done:
            self._band, self._band_done = (
                hard_band(self.config.dataset_path, self.split, self.metadata, self._lazy_load()),
                True,
            )
        return self._band

    def _iter_test(self) -> Iterator[tuple[str, Batch, int]]:
        for set_name, d in self._lazy_load().items():
            total = len(d["inputs"])
            # puzzle of every example, computed once (the original walked it per batch)
            example_puzzle = np.repeat(np.arange(d["puzzle_indices"].size - 1), np.diff(d["puzzle_indices"]))
            for batch_no, start in enumerate(range(0, total, self.config.global_batch_size)):
                end = min(total, start + self.config.global_batch_size)
                lo, hi = self.test_rows(set_name, batch_no)
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

            start, batch_no = 0, 0
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
                batch_no += 1
                if self._skip > 0:
                    self._skip -= 1
                    continue
                sl = slice(self.config.rank * self.local_batch_size, (self.config.rank + 1) * self.local_batch_size)
                idx, puzzle_idx = idx[sl], puzzle_idx[sl]
                inputs, labels = d["inputs"][idx], d["labels"][idx]
                if self._augment is not None:
                    inputs, labels = self._augmented(inputs, labels, batch_no, sl)
                yield (
                    set_name,
                    self._collate(
                        {
                            "inputs": inputs,
                            "labels": labels,
                            "puzzle_identifiers": d["puzzle_identifiers"][puzzle_idx],
                        }
                    ),
                    effective,
                )

    def _augmented(
        self, inputs: np.ndarray, labels: np.ndarray, batch_no: int, rows: slice
    ) -> tuple[np.ndarray, np.ndarray]:
        """This rank's rows of the global batch, each under its own random symmetry (the same one for the puzzle
        and its solution). Drawn for the whole global batch from (seed, pass, batch): any world size and a resume
        mid-pass see the same examples."""
        rng = np.random.default_rng([self.config.seed, self._iters, 0xA6, batch_no])
        every = random_transforms(self._augment, self.config.global_batch_size, self.metadata.vocab_size, rng)
        mine = Transforms(every.src[rows], every.table[rows], every.inverse_table[rows])
        return mine.apply_each(inputs), mine.apply_each(labels)

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        info = get_worker_info()
        if info is not None and info.num_workers != 1:
            raise RuntimeError("PuzzleDataset supports at most one DataLoader worker")
        return self._iter_test() if self.config.test_set_mode else self._iter_train()
