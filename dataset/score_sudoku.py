"""Exact and cell accuracy of saved Sudoku predictions, overall, per source list and per difficulty band.

    python pretrain.py ... eval_save_outputs=[inputs,labels,logits]    # or evaluate.py with the same key
    python dataset/score_sudoku.py --data data/sudoku-mix-1k-aug-1000 --preds checkpoints/.../step_N_all_preds.0

Per-source and per-band rows need the dataset's mix.json (written by `build_sudoku_dataset.py --mix`); the
saved rows are matched to the test split by their inputs, so any order or a bounded eval works.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import utils.interrupt  # noqa: E402, F401  (first: Ctrl-C while torch imports prints one line)

# isort: split

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataset.bands import HARD_GUESSES  # noqa: E402
from utils.errors import UserError, exit_with, load_tensors  # noqa: E402

# the top band is the hard band of the trainer's evals (dataset/bands.py)
BANDS = (
    (0, 0, "0 guesses"),
    (1, 9, "1-9"),
    (10, HARD_GUESSES - 1, f"10-{HARD_GUESSES - 1}"),
    (HARD_GUESSES, 10**9, f">={HARD_GUESSES}"),
)


def load_preds(pattern: str) -> dict[str, np.ndarray]:
    files = sorted(glob.glob(pattern + "*")) if not os.path.isfile(pattern) else [pattern]
    if not files:
        raise UserError(f"no prediction file matches {pattern} (set eval_save_outputs=[inputs,labels,logits])")
    parts = [read_preds(f) for f in files]
    return {k: torch.cat([p[k] for p in parts]).float().numpy() for k in ("inputs", "labels", "logits")}


def read_preds(path: str) -> dict[str, torch.Tensor]:
    """One step_N_all_preds.<rank> file, checked (weights_only: a crafted file cannot run code, and one of
    another shape is refused here rather than deep inside the scoring)."""
    part = load_tensors(path, "{path} is not a prediction file ({why})")
    if not isinstance(part, dict):
        raise UserError(f"{path} holds a {type(part).__name__}, not the dict of tensors evaluate.py writes")
    for key in ("inputs", "labels", "logits"):
        if key not in part:
            raise UserError(f"{path} has no '{key}' (it has {sorted(map(str, part))}); save inputs, labels and logits")
        if not isinstance(part[key], torch.Tensor):
            raise UserError(f"{path}: '{key}' is a {type(part[key]).__name__}, not a tensor")
    inputs, labels, logits = part["inputs"], part["labels"], part["logits"]
    if inputs.ndim != 2 or labels.shape != inputs.shape or logits.ndim != 3 or logits.shape[:2] != inputs.shape:
        raise UserError(
            f"{path}: shapes inputs {tuple(inputs.shape)}, labels {tuple(labels.shape)}, logits {tuple(logits.shape)} "
            "do not fit (rows x 81, rows x 81, rows x 81 x vocab)"
        )
    return part


def score(data_dir: str, preds_path: str) -> dict:
    saved = load_preds(preds_path)
    pred = saved["logits"].argmax(-1)
    labels = saved["labels"].astype(np.int64)
    mask = labels != 0
    cell = ((pred == labels) | ~mask).all(1)
    out = {
        "puzzles": int(len(pred)),
        "exact_accuracy": round(float(cell.mean()), 4),
        "cell_accuracy": round(float(((pred == labels) & mask).sum() / mask.sum()), 4),
    }
    mix_path = os.path.join(data_dir, "mix.json")
    if not os.path.isfile(mix_path):
        return out
    with open(mix_path) as f:
        mix = json.load(f)
    test_inputs = np.load(os.path.join(data_dir, "test", "all__inputs.npy"))
    row_of = {r.tobytes(): i for i, r in enumerate(test_inputs.astype(np.uint8))}
    idx = np.array([row_of.get(r.astype(np.uint8).tobytes(), -1) for r in saved["inputs"]])
    if (idx < 0).any():
        raise UserError(f"{int((idx < 0).sum())} saved rows are not in {data_dir}/test: wrong --data?")
    sources = np.array(mix["test_sources"])[idx]
    guesses = np.array(mix["test_guesses"])[idx]
    out["by_source"] = {
        s: {"puzzles": int((sources == s).sum()), "exact_accuracy": round(float(cell[sources == s].mean()), 4)}
        for s in dict.fromkeys(mix["test_sources"])
        if (sources == s).any()
    }
    out["by_guesses"] = {
        name: {"puzzles": int(m.sum()), "exact_accuracy": round(float(cell[m].mean()), 4)}
        for lo, hi, name in BANDS
        if (m := (guesses >= lo) & (guesses <= hi)).any()
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (its test split and mix.json)")
    p.add_argument("--preds", required=True, help="step_N_all_preds.0 (or the prefix step_N_all_preds. for all ranks)")
    args = p.parse_args(argv)
    try:
        if not os.path.isdir(os.path.join(args.data, "test")):
            raise UserError(f"{args.data} has no test split (build it with dataset/build_sudoku_dataset.py)")
        print(json.dumps(score(args.data, args.preds), indent=1))
    except UserError as e:
        exit_with(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
