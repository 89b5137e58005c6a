"""What the three build_*_dataset.py commands share: a build that publishes its folder only when complete
(`run_build`), the progress bar, counts for the summary line and folder names, the validation split's options and
draw (`add_val_args`, `val_rng`, `pick_disjoint`), and Hugging Face downloads of the published raw sets (cached
copy first, a quick reachability check, one clear error)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import numpy as np

from utils.errors import UserError, exit_with


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


def split_counts(counts: dict[str, tuple[int, int, int]]) -> str:
    return "; ".join(f"{s}: {g} groups, {p} puzzles, {e} examples" for s, (g, p, e) in counts.items())


# The validation split (val/): puzzles of the training source that neither train/ nor test/ holds, drawn after
# those two are chosen exactly as before, from a random stream of its own, so a build with val/ writes train/ and
# test/ byte for byte as one without it (--val-size 0). Scored like test: never augmented.

VAL_SIZE = 1000  # default --val-size, capped at the test split's size (a 4-puzzle test build gets a 4-puzzle val)
_VAL_STREAM = int.from_bytes(b"val", "big")  # the draw's seed is (seed, this): no other stream uses it


def add_val_args(p: Any, what: str = "val/ puzzles, held out of the training source and not augmented") -> None:
    p.add_argument(
        "--val-size",
        type=int,
        default=None,
        help=f"{what}; 0: no val/ [{VAL_SIZE}, at most as many as test]",
    )
    p.add_argument(
        "--val-from-train",
        action="store_true",
        help="where the training source has no puzzle to spare, take val/ out of it (train/ then differs from "
        "a build without this flag)",
    )


def check_val_args(args: Any) -> None:
    if args.val_size is not None and args.val_size < 0:
        raise UserError("--val-size must be >= 0 (0: no val/ split)")
    if args.val_from_train and args.val_size == 0:
        raise UserError("--val-from-train with --val-size 0 takes nothing: drop one of them")


def val_size(args: Any, test_size: int) -> int:
    """Puzzles wanted in val/: --val-size, or by default VAL_SIZE at most as many as the test split holds."""
    return min(VAL_SIZE, test_size) if args.val_size is None else args.val_size


def val_rng(seed: int) -> np.random.Generator:
    """The validation split's own stream, seeded from (seed, "val"): drawing it changes no other draw."""
    return np.random.default_rng([seed, _VAL_STREAM])


def no_val(why: str) -> None:
    """The one line a build prints when it was asked for val/ (the default) but cannot write it."""
    print(f"note: val/ not written: {why}", file=sys.stderr, flush=True)


def pick_disjoint(
    keys: Callable[[np.ndarray], list[bytes]],
    inputs: np.ndarray,
    order: np.ndarray,
    taken: set[bytes],
    n: int,
    chunk: int = 4096,
) -> tuple[np.ndarray, int]:
    """Indices, in `order`'s order, of the first n puzzles whose key (`keys`: a symmetry-invariant signature) is
    neither in `taken` (train's and test's) nor that of an earlier pick; and how many were passed over. Keys are
    computed a chunk at a time, so a large pool is only read as far as needed."""
    picked: list[int] = []
    seen: set[bytes] = set()
    passed = 0
    for start in range(0, len(order), chunk):
        idx = np.asarray(order[start : start + chunk])
        for i, k in zip(idx.tolist(), keys(inputs[idx])):
            if k in taken or k in seen:
                passed += 1
                continue
            seen.add(k)
            picked.append(i)
            if len(picked) == n:
                return np.array(picked, dtype=np.int64), passed
    return np.array(picked, dtype=np.int64), passed


def shared_keys(keys: list[bytes]) -> set[bytes]:
    """Keys that more than one puzzle of a pool has (a val puzzle taken out of that pool must not have one: an
    equivalent puzzle would stay in train)."""
    seen: set[bytes] = set()
    twice: set[bytes] = set()
    for k in keys:
        (twice if k in seen else seen).add(k)
    return twice


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


# Hugging Face downloads


def _hub_unreachable() -> str | None:
    """A reason when the Hub's host cannot even be resolved/connected: fails in seconds where the client would
    retry for ~25 s. Skipped (None) behind a proxy, where a direct connection says nothing."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE")):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=10).close()
    except OSError as e:
        return f"cannot reach {host}: {e.strerror or e}"
    return None


def download(repo: str, split: str, offline_hint: str) -> str:
    """Local path of `<split>.csv` of the HF dataset (cached copy first); UserError naming the offline options."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line message
    try:
        return hf_hub_download(repo, f"{split}.csv", repo_type="dataset", local_files_only=True)
    except Exception:
        pass
    reason = _hub_unreachable()
    if reason is None:
        try:
            return hf_hub_download(repo, f"{split}.csv", repo_type="dataset")
        except Exception as e:  # the client raises many types (HTTP, offline mode, missing repo or file)
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            reason = f"{type(e).__name__}: {first_line}"
    raise UserError(
        f"could not download {split}.csv of the Hugging Face dataset {repo} ({reason}). "
        "Offline, use --source-dir DIR (a folder holding train.csv and test.csv in that layout) "
        f"or {offline_hint}"
    )


def check_source_dir(source_dir: str, splits: tuple[str, ...]) -> None:
    """`--source-dir` must be a folder holding `<split>.csv` for every split, in the HF layout."""
    if not os.path.isdir(source_dir):
        raise UserError(f"--source-dir {source_dir} is not a folder")
    missing = [f"{s}.csv" for s in splits if not os.path.isfile(os.path.join(source_dir, f"{s}.csv"))]
    if missing:
        raise UserError(
            f"--source-dir {source_dir} lacks {' and '.join(missing)} (HF layout: source,question,answer,rating)"
        )
