"""Build the Sudoku dataset (train, test and val splits) in the format of the original HRM builder.

Sources: the Hugging Face dataset `sapientinc/sudoku-extreme` (default, needs network), a local folder holding its
`train.csv` and `test.csv` (`--source-dir`), puzzles generated offline (`--generate N`), or a Sudoku-Extreme-like
mix of the raw tdoku/Kaggle lists (`--mix DIR`, see dataset/puzzles/sudoku_mix.py).

    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 --subsample-size 1000 --num-aug 1000
    python dataset/build_sudoku_dataset.py --source-dir ~/sudoku-extreme --output-dir data/sudoku-extreme-full
    python dataset/build_sudoku_dataset.py --generate 1000 --num-aug 1000 --output-dir data/sudoku-gen-1k-aug-1000
    python dataset/build_sudoku_dataset.py --mix data/raw/sudoku --subsample-size 1000 --num-aug 1000 \
        --output-dir data/sudoku-mix-v2-1k-aug-1000

val/ (`--val-size`, default 1000 but at most as many as test; 0: none) holds training-source puzzles that train/
and test/ do not, none possibly equivalent to one of theirs (`sudoku_mix.invariant`), unaugmented. It is drawn
after train and test are chosen as without it, from a stream of its own: train/ and test/ stay byte-identical.
Sources: --generate generates it; a CSV source takes train.csv rows that --subsample-size left out; the mix takes
puzzles neither split holds (v2: the 11+ list's for the hard part; v1 sends every hard puzzle left to test, so
it has none unless --test-size leaves some). A CSV source without --subsample-size puts every row in train/:
`--val-from-train` then takes val/ out of them (train/ changes), else the build says why val/ was not written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from dataset.builder import (  # noqa: E402
    add_val_args,
    check_source_dir,
    check_val_args,
    count_name,
    download,
    no_val,
    pick_disjoint,
    progress,
    run_build,
    shared_keys,
    split_counts,
    val_rng,
    val_size,
)
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
    add_val_args(p)
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
    check_val_args(args)
    if args.val_from_train and (args.generate is not None or args.mix is not None):
        raise UserError(
            "--val-from-train is for a CSV source (its train.csv rows all go to train/ without --subsample-size); "
            "--generate generates val/, --mix draws it from puzzles neither split holds"
        )
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
    """Write the splits under `root`; return (groups, puzzles, examples) per split."""
    streams = np.random.SeedSequence(args.seed).spawn(4)  # independent: changing one option keeps the others' draws
    rngs = dict(zip(["train", "test", "subsample", "augment"], (np.random.default_rng(s) for s in streams)))
    counts = {}
    if args.mix is not None:
        chosen, val = build_mix(args, root, rngs["subsample"])
    else:
        chosen, val = choose(args, rngs)
    for split in SPLITS:
        inputs, labels = chosen[split]
        arrays = build_arrays(inputs, labels, args.num_aug if split == "train" else 0, rngs["augment"], split)
        counts[split] = save_grid_split(root, split, arrays, seq_len=81, vocab_size=10 + 1)  # pad + digits 0-9
    if val is not None:  # never augmented; drawn after train and test, from its own stream
        arrays = build_arrays(*val, 0, rngs["augment"], "val")
        counts["val"] = save_grid_split(root, "val", arrays, seq_len=81, vocab_size=10 + 1)
    write_identifiers(root, ["<blank>"])
    return counts


Pair = tuple[np.ndarray, np.ndarray]


def build_mix(args: argparse.Namespace, root: str, rng: np.random.Generator) -> tuple[dict[str, Pair], Pair | None]:
    """The mix's train and test (and val, None where it cannot be drawn), with its mix.json written under `root`."""
    print(f"solving the lists in {args.mix} ...", file=sys.stderr, flush=True)
    assemble = sudoku_mix.assemble if args.mix_version == 1 else sudoku_mix.assemble_v2
    mix = assemble(args.mix, args.subsample_size, rng, args.test_size)
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
    n_val = val_size(args, len(mix.test.inputs))
    val = None
    if n_val:
        part, passed = sudoku_mix.draw_val(mix, n_val, val_rng(args.seed))
        if part is None and args.mix_version == 1:
            no_val(
                "mix v1 sends every hard puzzle left after train to test, so none is left for it (a --test-size "
                f"below test's {len(mix.test.inputs)} leaves some, and changes test/; --mix-version 2 has them; "
                "--val-size 0 drops this note)"
            )
        elif part is None:
            no_val(
                f"train and test leave no hard puzzle of {args.mix} over (lower --test-size; --val-size 0 drops this note)"
            )
        else:
            if len(part.inputs) < n_val:
                print(
                    f"note: val/ holds {len(part.inputs)} of the {n_val} puzzles asked: no more hard ones are left",
                    file=sys.stderr,
                )
            val = (part.inputs, part.labels)
            info.update(  # after the keys above, which stay as they were
                val=sudoku_mix.describe(part),
                val_passed_over_as_possibly_equivalent=passed,
                val_sources=part.source.tolist(),
                val_guesses=part.guesses.tolist(),
            )
    with open(os.path.join(root, "mix.json"), "w") as f:
        json.dump(info, f, indent=1)
    return {split: (getattr(mix, split).inputs, getattr(mix, split).labels) for split in SPLITS}, val


def choose(args: argparse.Namespace, rngs: dict[str, np.random.Generator]) -> tuple[dict[str, Pair], Pair | None]:
    """Train and test of a CSV or generated source, drawn as they always were, and val (None: not written)."""
    data = {split: load_split(args, split, rngs[split]) for split in SPLITS}  # each split has its own stream
    pool: Pair = (data["train"].inputs, data["train"].labels)
    test: Pair = (data["test"].inputs, data["test"].labels)
    n_val = val_size(args, len(test[0]))
    rng = val_rng(args.seed)
    keys = sudoku_mix.invariant
    val = None
    if n_val and args.val_from_train:  # before train is chosen: train loses these puzzles
        taken = set(keys(test[0])) | shared_keys(keys(pool[0]))
        idx, _ = pick_disjoint(keys, pool[0], rng.permutation(len(pool[0])), taken, n_val)
        val = (pool[0][idx], pool[1][idx])
        rest = np.setdiff1d(np.arange(len(pool[0])), idx)
        pool = (pool[0][rest], pool[1][rest])
    train, keep = pool, None
    if args.subsample_size is not None and args.subsample_size < len(pool[0]):
        keep = rngs["subsample"].choice(len(pool[0]), size=args.subsample_size, replace=False)
        train = (pool[0][keep], pool[1][keep])
    if n_val and not args.val_from_train:
        if args.generate is not None:
            val = generate_val(args, n_val, rng, set(keys(train[0])) | set(keys(test[0])))
        elif keep is None:
            no_val(
                "every train.csv puzzle goes to train/ (no --subsample-size below its row count); "
                "--val-from-train takes val/ out of them (train/ changes), --val-size 0 drops this note"
            )
        else:
            spare = np.setdiff1d(np.arange(len(pool[0])), keep)
            taken = set(keys(train[0])) | set(keys(test[0]))
            idx, _ = pick_disjoint(keys, pool[0], rng.permutation(spare), taken, n_val)
            val = (pool[0][idx], pool[1][idx]) if len(idx) else None
            if val is None:
                no_val("every train.csv puzzle left over by --subsample-size may be equivalent to a train/test one")
    if val is not None and len(val[0]) < n_val:
        print(
            f"note: val/ holds {len(val[0])} of the {n_val} puzzles asked: the training source has no more",
            file=sys.stderr,
        )
    return {"train": train, "test": test}, val


def generate_val(args: argparse.Namespace, n: int, rng: np.random.Generator, taken: set[bytes]) -> Pair:
    """n puzzles generated as the train and test ones (same --min-guesses and --min-givens: val must be drawn like
    test, or choosing a step on it means nothing), none possibly equivalent to a train/test puzzle."""
    inputs, labels = [], []
    have = 0
    with progress(total=n, desc="generate val", unit="puzzle") as bar:
        for _ in range(20):  # a collision is rare: another round replaces it
            new_in, new_lab, _ = sudoku.generate(n - have, rng, min_guesses=args.min_guesses, min_clues=args.min_givens)
            idx, _ = pick_disjoint(sudoku_mix.invariant, new_in, np.arange(len(new_in)), taken, n - have)
            taken |= set(sudoku_mix.invariant(new_in[idx]))
            inputs.append(new_in[idx])
            labels.append(new_lab[idx])
            have += len(idx)
            bar.update(len(idx))
            if have == n:
                break
    return np.concatenate(inputs), np.concatenate(labels)


def main(argv: list[str] | None = None) -> int:
    return run_build(parse_args(argv), check_args, build, split_counts)


if __name__ == "__main__":
    sys.exit(main())
