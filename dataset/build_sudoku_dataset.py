"""Build the Sudoku dataset (train and test splits) in the format of the original HRM builder.

Sources: the Hugging Face dataset `sapientinc/sudoku-extreme` (default, needs network), a local folder holding its
`train.csv` and `test.csv` (`--source-dir`), puzzles generated offline (`--generate N`), or a Sudoku-Extreme-like
mix of the raw tdoku/Kaggle lists (`--mix DIR`, see dataset/puzzles/sudoku_mix.py).

    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 --subsample-size 1000 --num-aug 1000
    python dataset/build_sudoku_dataset.py --source-dir ~/sudoku-extreme --output-dir data/sudoku-extreme-full
    python dataset/build_sudoku_dataset.py --generate 1000 --num-aug 1000 --output-dir data/sudoku-gen-1k-aug-1000
    python dataset/build_sudoku_dataset.py --mix data/raw/sudoku --subsample-size 1000 --num-aug 1000 \
        --output-dir data/sudoku-mix-v2-1k-aug-1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from dataset.builder import check_source_dir, count_name, download, progress, run_build, split_counts  # noqa: E402
from dataset.format import save_grid_split, write_identifiers  # noqa: E402
from dataset.puzzles import sudoku, sudoku_mix  # noqa: E402
from utils.errors import UserError  # noqa: E402

SPLITS = ("train", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build the Sudoku dataset for HRM training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source-repo", default="sapientinc/sudoku-extreme", help="Hugging Face dataset to download")
    p.add_argument(
        "--output-dir",
        default=None,
        help="[data/sudoku-extreme-full; with --generate N: data/sudoku-gen-N, with --mix: data/sudoku-mix-v2-N "
        "(v1: data/sudoku-mix-N; N = --subsample-size), each + -aug-K with --num-aug K]",
    )
    p.add_argument("--subsample-size", type=int, default=None, help="keep this many random train puzzles")
    p.add_argument("--min-difficulty", type=int, default=None, help="drop CSV rows rated below this")
    p.add_argument("--num-aug", type=int, default=0, help="augmented copies of each train puzzle")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source-dir", default=None, help="folder with train.csv and test.csv (HF layout); no download")
    src.add_argument("--generate", type=int, default=None, metavar="N", help="generate N train puzzles offline")
    src.add_argument(
        "--mix",
        default=None,
        metavar="DIR",
        help="Sudoku-Extreme-like set from the raw tdoku/Kaggle lists in DIR (layout: README 'Datasets'); "
        "--subsample-size train puzzles [1000], 26%% easy in both splits (see --mix-version)",
    )
    p.add_argument(
        "--mix-version",
        type=int,
        default=None,
        help="with --mix: 2 [default] adds forum_hardest_1905's 11+ puzzles and a test split of --test-size; "
        "1 (the README's published results) sends every remaining hard puzzle to test",
    )
    p.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="with --generate: test puzzles [1000]; with --mix: exactly, v2 [5000]; at most, v1 [all]",
    )
    p.add_argument("--min-guesses", type=int, default=None, help="with --generate: keep puzzles rated >= this [0]")
    p.add_argument(
        "--min-givens",
        type=int,
        default=None,
        metavar="K",
        help="with --generate: stop blanking at K givens (17-81; easy, non-minimal puzzles, e.g. 45 for the demo) "
        "[0: minimal puzzles]",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds subsampling, augmentation and generation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--on-bad-row", choices=["stop", "skip"], default="stop", help="malformed CSV rows")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Catch contradictory or out-of-range options before any work is done."""
    if args.mix is not None:
        if args.min_difficulty is not None or args.min_guesses is not None or args.min_givens is not None:
            raise UserError(
                "--min-difficulty / --min-guesses / --min-givens do not apply to --mix (it keeps the lists' own mix)"
            )
        if not os.path.isdir(args.mix):
            raise UserError(f"--mix folder {args.mix} not found (the lists it needs: README 'Datasets')")
        args.subsample_size = 1000 if args.subsample_size is None else args.subsample_size
        args.mix_version = 2 if args.mix_version is None else args.mix_version
        if args.mix_version not in (1, 2):
            raise UserError(f"--mix-version must be 1 or 2, got {args.mix_version}")
        if args.test_size is not None and args.test_size < 1:
            raise UserError("--test-size must be >= 1")
        if args.mix_version == 2 and args.test_size is None:
            args.test_size = sudoku_mix.TEST_SIZE_V2
    elif args.mix_version is not None:
        raise UserError("--mix-version only applies with --mix")
    elif args.generate is None:
        for flag, value in (
            ("--test-size", args.test_size),
            ("--min-guesses", args.min_guesses),
            ("--min-givens", args.min_givens),
        ):
            if value is not None:
                raise UserError(f"{flag} only applies with --generate")
    else:
        if args.generate < 1:
            raise UserError("--generate needs a positive number of puzzles")
        if args.min_difficulty is not None:
            raise UserError(
                "--min-difficulty filters the rating column of CSV sources; with --generate use --min-guesses"
            )
        args.test_size = 1000 if args.test_size is None else args.test_size
        args.min_guesses = 0 if args.min_guesses is None else args.min_guesses
        if args.test_size < 0 or args.min_guesses < 0:
            raise UserError("--test-size and --min-guesses must be >= 0")
        args.min_givens = 0 if args.min_givens is None else args.min_givens
        if args.min_givens != 0 and not 17 <= args.min_givens <= 81:
            raise UserError(f"--min-givens must be 0 (minimal puzzles) or 17-81, got {args.min_givens}")
        if args.min_givens and args.min_guesses:
            raise UserError("--min-guesses rates minimal puzzles; leave --min-givens at 0 with it")
    if args.num_aug < 0:
        raise UserError("--num-aug must be >= 0")
    if args.subsample_size is not None and args.subsample_size < 1:
        raise UserError("--subsample-size must be >= 1")
    if args.source_dir is not None:
        check_source_dir(args.source_dir, SPLITS)
    if args.output_dir is None:
        args.output_dir = default_output_dir(args)


def default_output_dir(args: argparse.Namespace) -> str:
    """Generated puzzles and the mix get names of their own: the real benchmark's folder name (the original's
    default) would pass them off as Sudoku-Extreme."""
    if args.generate is None and args.mix is None:
        return "data/sudoku-extreme-full"
    kind, n = ("gen", args.generate) if args.generate is not None else ("mix", args.subsample_size)
    if args.mix is not None and args.mix_version == 2:
        kind = "mix-v2"
    return f"data/sudoku-{kind}-{count_name(n)}" + (f"-aug-{args.num_aug}" if args.num_aug else "")


def load_split(args: argparse.Namespace, split: str, rng: np.random.Generator) -> sudoku.SudokuSet:
    if args.generate is not None:
        n = args.generate if split == "train" else args.test_size
        with progress(total=n, desc=f"generate {split}", unit="puzzle") as bar:
            inputs, labels, ratings = sudoku.generate(
                n, rng, min_guesses=args.min_guesses, min_clues=args.min_givens, progress=bar.update
            )
        return sudoku.SudokuSet(inputs, labels, ratings)
    path = (
        os.path.join(args.source_dir, f"{split}.csv")
        if args.source_dir
        else download(args.source_repo, split, offline_hint="--generate N (puzzles made here, no network)")
    )
    with progress(desc=f"read {split}.csv", unit="row") as bar:
        data = sudoku.read_hf_csv(path, args.min_difficulty, args.on_bad_row, progress=bar.update)
    if data.skipped:
        first = "; ".join(data.problems[:3])
        print(f"warning: skipped {data.skipped} bad rows of {path} (first: {first})", file=sys.stderr)
    return data


def build_arrays(inputs: np.ndarray, labels: np.ndarray, num_aug: int, rng: np.random.Generator, split: str) -> dict:
    """Each puzzle is one group: the original, then its `num_aug` augmentations; every puzzle has one example."""
    groups, per = len(inputs), 1 + num_aug
    puzzles = groups * per
    if puzzles + 1 > np.iinfo(np.int32).max:
        raise UserError(f"{puzzles} puzzles do not fit the int32 index arrays; lower --num-aug or --subsample-size")
    out_inputs = np.empty((puzzles, 81), dtype=np.uint8)
    out_labels = np.empty((puzzles, 81), dtype=np.uint8)
    out_inputs[::per], out_labels[::per] = inputs, labels
    if num_aug:
        for i in progress(range(groups), desc=f"augment {split}", unit="puzzle"):
            aug_in, aug_lab = sudoku.augment(inputs[i], labels[i], rng, num_aug)
            out_inputs[i * per + 1 : (i + 1) * per] = aug_in
            out_labels[i * per + 1 : (i + 1) * per] = aug_lab
    out_inputs += 1  # token = digit + 1, so that 0 is free for padding
    out_labels += 1
    return {
        "inputs": out_inputs,
        "labels": out_labels,
        "puzzle_identifiers": np.zeros(puzzles, dtype=np.int32),
        "puzzle_indices": np.arange(puzzles + 1, dtype=np.int32),
        "group_indices": np.arange(groups + 1, dtype=np.int32) * per,
    }


def build(args: argparse.Namespace, root: str) -> dict[str, tuple[int, int, int]]:
    """Write both splits under `root`; return (groups, puzzles, examples) per split."""
    streams = np.random.SeedSequence(args.seed).spawn(4)  # independent: changing one option keeps the others' draws
    rngs = dict(zip(["train", "test", "subsample", "augment"], (np.random.default_rng(s) for s in streams)))
    counts = {}
    mix = None
    if args.mix is not None:
        print(f"solving the lists in {args.mix} ...", file=sys.stderr, flush=True)
        assemble = sudoku_mix.assemble if args.mix_version == 1 else sudoku_mix.assemble_v2
        mix = assemble(args.mix, args.subsample_size, rngs["subsample"], args.test_size)
        info = {
            "recipe": "dataset/puzzles/sudoku_mix.py (docstring); guesses = our solver's search-tree size with uniqueness proof",
            **mix.notes,  # v2: its version and draw; v1 writes none, so its mix.json stays as it was
            "seed": args.seed,
            "duplicates_dropped": mix.duplicates,
            "test_dropped_as_possibly_equivalent_to_train": mix.dropped_equivalent,
            **{split: sudoku_mix.describe(getattr(mix, split)) for split in SPLITS},
            "test_sources": mix.test.source.tolist(),
            "test_guesses": mix.test.guesses.tolist(),
        }
        with open(os.path.join(root, "mix.json"), "w") as f:
            json.dump(info, f, indent=1)
    for split in SPLITS:
        if mix is not None:  # already drawn and sized by the mix
            inputs, labels = getattr(mix, split).inputs, getattr(mix, split).labels
        else:
            data = load_split(args, split, rngs[split])
            inputs, labels = data.inputs, data.labels
            if split == "train" and args.subsample_size is not None and args.subsample_size < len(inputs):
                keep = rngs["subsample"].choice(len(inputs), size=args.subsample_size, replace=False)
                inputs, labels = inputs[keep], labels[keep]
        arrays = build_arrays(inputs, labels, args.num_aug if split == "train" else 0, rngs["augment"], split)
        counts[split] = save_grid_split(root, split, arrays, seq_len=81, vocab_size=10 + 1)  # pad + digits 0-9
    write_identifiers(root, ["<blank>"])
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_build(parse_args(argv), check_args, build, split_counts)


if __name__ == "__main__":
    sys.exit(main())
