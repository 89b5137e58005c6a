"""The viewer's input: a dataset split read through the loader, and evaluate.py's prediction files matched to its
examples (by position, or by puzzle identifier and input for the files of several processes)."""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataset.format import PuzzleDatasetMetadata
from dataset.loader import load_arrays, load_metadata
from dataset.viewer.style import Kind, detect_kind
from utils.errors import UserError

PREDS_FILE = re.compile(r"^step_(\d+)_all_preds\.(\d+)$")


@dataclass
class Dataset:
    path: str
    split: str
    meta: PuzzleDatasetMetadata
    kind: Kind
    sets: list[tuple[str, dict[str, np.ndarray]]]  # in metadata order: the order evaluation goes through them
    names: list[str] | None  # identifier id -> name (identifiers.json), None when the file is absent
    total: int = 0
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # first global index of each set

    def locate(self, i: int) -> tuple[str, dict[str, np.ndarray], int]:
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        name, arrays = self.sets[s]
        return name, arrays, i - int(self.starts[s])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, int, str]:
        """Input and label tokens (int64), identifier id and a title of global example `i`."""
        set_name, a, r = self.locate(i)
        pidx = a["puzzle_indices"]
        p = int(np.searchsorted(pidx, r, side="right")) - 1
        pid = int(a["puzzle_identifiers"][p])
        title = f"#{i}"
        if pid != self.meta.blank_identifier_id:  # Sudoku and Maze puzzles all share the blank one: no name
            title += f" {self.names[pid]}" if self.names is not None and 0 <= pid < len(self.names) else f" id {pid}"
        count = int(pidx[p + 1]) - int(pidx[p])
        if count > 1:
            title += f" (example {r - int(pidx[p]) + 1} of {count})"
        if len(self.sets) > 1:
            title += f" [{set_name}]"
        return np.asarray(a["inputs"][r], dtype=np.int64), np.asarray(a["labels"][r], dtype=np.int64), pid, title


def open_dataset(path: str, split: str) -> Dataset:
    meta = load_metadata(path, split)
    kind = detect_kind(meta, os.path.join(path, split, "dataset.json"))
    arrays = load_arrays(path, split, meta)
    names = None
    ids_path = os.path.join(path, "identifiers.json")
    if os.path.isfile(ids_path):
        try:
            with open(ids_path) as f:
                names = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{ids_path} cannot be read ({e}); rebuild the dataset") from None
        if not isinstance(names, list):
            raise UserError(f"{ids_path} is not a list of names; rebuild the dataset")
    sets = [(s, arrays[s]) for s in meta.sets]
    sizes = [len(a["inputs"]) for _, a in sets]
    return Dataset(path, split, meta, kind, sets, names, sum(sizes), np.concatenate([[0], np.cumsum(sizes)]))


# ---------------------------------------------------------------------------------------------------------------
# Predictions


@dataclass
class Preds:
    files: list[str]
    tensors: list[dict[str, Any]]  # per file: name -> tensor (memory-mapped: only the shown rows are read)
    where: dict[int, tuple[int, int]] = field(default_factory=dict)  # shown example -> (file, row)

    @property
    def rows(self) -> int:
        return sum(len(t["logits"]) for t in self.tensors)


def pred_files(paths: list[str]) -> list[str]:
    """Files as given; a folder gives the files of its latest step. All must come from one evaluation."""
    from dataset.score_arc import find_pred_files

    refusal = "several evaluations cannot be shown together: pass the files of one"
    return find_pred_files(paths, step=None, refusal=refusal, using="showing step {step} (or name the files)")[0]


def load_pred_file(path: str) -> dict[str, Any]:
    from dataset.score_arc import load_preds

    preds = load_preds(path)
    if "logits" not in preds:
        raise UserError(f"{path}: expected a dict with 'logits', as evaluate.py writes (step_<N>_all_preds.<rank>)")
    return preds


def sibling_ranks(path: str) -> int:
    """How many rank files of the same evaluation lie beside `path` (itself included); 1 when it is not so named."""
    m = PREDS_FILE.match(os.path.basename(path))
    if m is None:
        return 1
    return len(glob.glob(os.path.join(glob.escape(os.path.dirname(path) or "."), f"step_{m[1]}_all_preds.*")))


def match_preds(preds: Preds, data: Dataset, shown: list[int]) -> None:
    """Find the prediction row of every shown example (fills `preds.where`), or say why they do not fit."""
    meta = data.meta
    for f, t in zip(preds.files, preds.tensors):
        shape = tuple(t["logits"].shape)
        if len(shape) != 3 or shape[1:] != (meta.seq_len, meta.vocab_size):
            raise UserError(
                f"--preds {f}: logits of shape {shape} do not fit {data.path} (seq_len {meta.seq_len}, vocab "
                f"{meta.vocab_size}): predictions of another dataset"
            )
    rows = preds.rows
    if len(preds.files) == 1:
        t = preds.tensors[0]
        real = _real_rows(t, data) if rows > data.total and "inputs" in t else None
        if rows == data.total:
            # one evaluation process: rows in the test split's order, padding rows already dropped by evaluate.py
            preds.where = {i: (0, i) for i in shown}
        elif real is not None and len(real) == data.total:
            # the original evaluate.py also saved the padding rows of each set's last batch: skip them
            preds.where = {i: (0, int(real[i])) for i in shown}
        else:
            ranks = sibling_ranks(preds.files[0])
            hint = (
                f"; it is one of {ranks} rank files of one evaluation: pass them all (or their folder)"
                if ranks > 1
                else ": predictions of another dataset or split, or of a bounded evaluation (eval_batches)"
            )
            raise UserError(f"--preds {preds.files[0]} holds {rows} rows for {data.total} test examples{hint}")
    else:
        if rows != data.total:
            raise UserError(
                f"--preds: {len(preds.files)} files hold {rows} rows for {data.total} test examples: "
                "predictions of another dataset, or not all rank files of the evaluation"
            )
        _match_by_content(preds, data, shown)
    for i in shown:  # same input as the dataset's example, or the files belong elsewhere
        f, r = preds.where[i]
        t = preds.tensors[f]
        if "inputs" in t and not np.array_equal(t["inputs"][r].numpy().astype(np.int64), data.row(i)[0]):
            raise UserError(
                f"--preds {preds.files[f]}: row {r} is not the input of test example {i} of {data.path}: "
                "predictions of another dataset (or of another build of it)"
            )


def _real_rows(t: dict[str, Any], data: Dataset) -> np.ndarray:
    """Rows whose input is not all padding (a real example always has some non-pad token)."""
    inputs = t["inputs"]
    chunks = [
        np.flatnonzero((inputs[s : s + 8192].numpy() != data.meta.pad_id).any(axis=1)) + s
        for s in range(0, len(inputs), 8192)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def _match_by_content(preds: Preds, data: Dataset, shown: list[int]) -> None:
    """Rank files interleave the test batches in a way that depends on the batch size, which the files do not
    record; so find each shown example by (puzzle identifier, input) instead. Equal keys mean equal puzzles, so any
    matching row gives the same answer."""
    for t, f in zip(preds.tensors, preds.files):
        missing = [k for k in ("inputs", "puzzle_identifiers") if k not in t]
        if missing:
            raise UserError(f"--preds {f} lacks {', '.join(missing)}: needed to match rank files to examples")
    wanted: dict[tuple[int, bytes], list[int]] = {}
    for i in shown:
        inp, _, pid, _ = data.row(i)
        wanted.setdefault((pid, inp.astype(np.int32).tobytes()), []).append(i)
    pids = {k[0] for k in wanted}
    for fi, t in enumerate(preds.tensors):
        ids = t["puzzle_identifiers"].numpy()
        for s in range(0, len(ids), 8192):
            rows = np.flatnonzero(np.isin(ids[s : s + 8192], list(pids))) + s
            if not len(rows):
                continue
            inputs = t["inputs"][rows].numpy().astype(np.int32)
            for r, inp in zip(rows, inputs):
                for i in wanted.get((int(ids[r]), inp.tobytes()), []):
                    preds.where.setdefault(i, (fi, int(r)))
    lost = [i for i in shown if i not in preds.where]
    if lost:
        raise UserError(
            f"--preds: no prediction row has the input of test example {lost[0]} of {data.path} "
            f"({len(lost)} of {len(shown)} shown examples lack one): predictions of another dataset"
        )
