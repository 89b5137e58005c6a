"""Dataset format shared by the builders and the loader.

A dataset folder holds `train/` and `test/`, each with a `dataset.json` (PuzzleDatasetMetadata) and, per
set name S, `S__inputs.npy`, `S__labels.npy` (examples x seq_len), `S__puzzle_identifiers.npy` (one per
puzzle), `S__puzzle_indices.npy` (puzzle -> first example, P+1 long) and `S__group_indices.npy` (group ->
first puzzle, G+1 long); `identifiers.json` beside them maps identifier id -> name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic

from utils.errors import UserError, exit_with

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")

# dihedral transform id -> id of its inverse (rot90 and rot270 swap; flips are their own inverse)
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


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


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every token (the original wrote int64: 8x the disk)."""
    return np.dtype(np.uint8) if vocab_size <= 256 else np.dtype(np.int32)


def save_split(root: str, split: str, metadata: PuzzleDatasetMetadata, sets: dict[str, dict[str, np.ndarray]]) -> None:
    """Write one split (`train` or `test`) of a dataset under `root`."""
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


def count_name(n: int) -> str:
    """A count as the dataset folder names write it: 1000 -> '1k', 250 -> '250'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def prepare_output(output_dir: str, overwrite: bool) -> str:
    """Refuse to clobber an existing dataset unless asked; return a fresh temporary folder beside it.

    Builders write into the temporary folder and call `publish` at the very end, so an interrupted
    build never leaves a half-written dataset that training would accept.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise UserError(f"{output_dir} already exists; pass --overwrite to replace it, or choose another --output-dir")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output_dir)}.partial-{os.getpid()}-{int(time.time())}")
    os.makedirs(tmp)
    return tmp


def publish(tmp_dir: str, output_dir: str) -> None:
    """Move a completely written dataset into place (replacing an old one only now, at the end)."""
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir):
        old = f"{output_dir}.old-{os.getpid()}"
        os.rename(output_dir, old)
        os.rename(tmp_dir, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_dir, output_dir)


def write_identifiers(root: str, names: list[str]) -> None:
    with open(os.path.join(root, "identifiers.json"), "w") as f:
        json.dump(names, f)


def split_counts(counts: dict[str, tuple[int, int, int]]) -> str:
    return "; ".join(f"{s}: {g} groups, {p} puzzles, {e} examples" for s, (g, p, e) in counts.items())


def _disk_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C so the partial output is removed


def run_build(
    args: Any, check_args: Callable[[Any], None], build: Callable[[Any, str], Any], summary: Callable[[Any], str]
) -> int:
    """The builders' main: check, build into a temporary folder, publish; an error or Ctrl-C/SIGTERM leaves
    nothing behind. Prints one summary line (counts, size, time). Returns the exit code."""
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        check_args(args)
        tmp = prepare_output(args.output_dir, args.overwrite)
        try:
            result = build(args, tmp)
            publish(tmp, args.output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except UserError as e:
        exit_with(e)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    size = _disk_bytes(args.output_dir)
    print(
        f"wrote {args.output_dir}: {summary(result)}; {size:,} bytes on disk; {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 0


def progress(iterable=None, **kwargs):
    """A tqdm bar on a terminal; nothing when stderr is a file or pipe (logs, CI), where tqdm's carriage-return
    redraws pile up into one long line: the builder's summary line says what was done and how long it took."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not sys.stderr.isatty(), **kwargs)
