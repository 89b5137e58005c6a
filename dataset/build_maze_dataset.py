"""Build the Maze dataset (train, test and val splits) in the format of the original HRM builder.

Sources: the Hugging Face dataset `sapientinc/maze-30x30-hard-1k` (default, needs network), a local folder holding its
`train.csv` and `test.csv` (`--source-dir`), or mazes generated offline (`--generate N`, see dataset/puzzles/maze.py).

    python dataset/build_maze_dataset.py                                  # -> data/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --aug --output-dir data/maze-30x30-hard-1k-aug
    python dataset/build_maze_dataset.py --source-dir ~/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --generate 1000                    # -> data/maze-gen-1k

Each maze is one group; with `--aug` (train only) its 8 dihedral transforms are 8 puzzles of that group, else it is
one puzzle. Every puzzle has one example and identifier 0. Tokens: `# SGo` -> 1..5, pad 0, vocab 6.

val/ (`--val-size`, default 1000 but at most as many as test; 0: none): mazes of the training source that train/
and test/ do not hold, none a rotation or reflection of one of theirs (`maze.dihedral_keys`), never augmented,
drawn after train and test from a stream of its own, so those two stay byte-identical. --generate generates them;
a CSV source takes train.csv rows --subsample-size left out. Maze-Hard's train.csv (1,000 mazes) goes to train/
whole by default, so there val/ needs `--val-from-train` (it takes val/ out of train/, which then changes).
"""

from __future__ import annotations

import argparse
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
from dataset.puzzles import maze  # noqa: E402
from dataset.puzzles.dihedral import dihedral_transform  # noqa: E402
from utils.errors import UserError  # noqa: E402

SPLITS = ("train", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build the Maze dataset for HRM training.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--source-repo", default="sapientinc/maze-30x30-hard-1k", help="Hugging Face dataset to download")
    p.add_argument(
        "--output-dir",
        default=None,
        help="[data/maze-30x30-hard-1k; with --generate N: data/maze-gen-N, + -aug with --aug]",
    )
    p.add_argument("--subsample-size", type=int, default=None, help="keep this many random train mazes")
    p.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each train maze")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source-dir", default=None, help="folder with train.csv and test.csv (HF layout); no download")
    src.add_argument("--generate", type=int, default=None, metavar="N", help="generate N train mazes offline")
    p.add_argument("--test-size", type=int, default=None, help="with --generate: test mazes to generate [1000]")
    p.add_argument("--seed", type=int, default=0, help="seeds subsampling and generation")
    add_val_args(p, "val/ mazes, held out of the training source and not augmented")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--on-bad-row", choices=["stop", "skip"], default="stop", help="malformed CSV rows")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.generate is None:
        if args.test_size is not None:
            raise UserError("--test-size only applies with --generate")
    else:
        if args.generate < 1:
            raise UserError("--generate needs a positive number of mazes")
        args.test_size = 1000 if args.test_size is None else args.test_size
        if args.test_size < 0:
            raise UserError("--test-size must be >= 0")
    if args.subsample_size is not None and args.subsample_size < 1:
        raise UserError("--subsample-size must be >= 1")
    check_val_args(args)
    if args.val_from_train and args.generate is not None:
        raise UserError("--val-from-train is for a CSV source: --generate generates val/ mazes of its own")
    if args.source_dir is not None:
        check_source_dir(args.source_dir, SPLITS)
    if args.output_dir is None:  # generated mazes get a name of their own, not the folder the Maze recipe trains on
        args.output_dir = (
            "data/maze-30x30-hard-1k"  # the original's default, for the real data
            if args.generate is None
            else f"data/maze-gen-{count_name(args.generate)}" + ("-aug" if args.aug else "")
        )


def load_split(args: argparse.Namespace, split: str, rng: np.random.Generator, side: int | None) -> maze.MazeSet:
    if args.generate is not None:
        n = args.generate if split == "train" else args.test_size
        with progress(total=n, desc=f"generate {split}", unit="maze") as bar:
            inputs, labels = maze.generate(n, rng, progress=bar.update)
        return maze.MazeSet(inputs, labels, maze.SIZE)
    path = (
        os.path.join(args.source_dir, f"{split}.csv")
        if args.source_dir
        else download(args.source_repo, split, offline_hint="--generate N (mazes made here, no network)")
    )
    with progress(desc=f"read {split}.csv", unit="row") as bar:
        data = maze.read_hf_csv(path, args.on_bad_row, side=side, progress=bar.update)
    if data.skipped:
        first = "; ".join(data.problems[:3])
        print(f"warning: skipped {data.skipped} bad rows of {path} (first: {first})", file=sys.stderr)
    if len(data.inputs) == 0:
        raise UserError(f"{path} holds no usable mazes")
    return data


def build_arrays(data: maze.MazeSet, transforms: int) -> dict[str, np.ndarray]:
    """Each maze is one group of `transforms` puzzles (dihedral ids 0..transforms-1), one example each."""
    side, groups = data.side, len(data.inputs)
    puzzles = groups * transforms
    out = {}
    for field, grids in (("inputs", data.inputs), ("labels", data.labels)):
        grids = grids.reshape(groups, side, side)
        arr = np.empty((groups, transforms, side * side), dtype=np.uint8)
        for tid in range(transforms):
            arr[:, tid] = [dihedral_transform(g, tid).ravel() for g in grids]
        out[field] = arr.reshape(puzzles, side * side)
    out["puzzle_identifiers"] = np.zeros(puzzles, dtype=np.int32)
    out["puzzle_indices"] = np.arange(puzzles + 1, dtype=np.int32)
    out["group_indices"] = np.arange(groups + 1, dtype=np.int32) * transforms
    return out


def build(args: argparse.Namespace, root: str) -> dict[str, tuple[int, int, int]]:
    """Write the splits under `root`; return (groups, puzzles, examples) per split."""
    streams = np.random.SeedSequence(args.seed).spawn(3)  # independent: changing one option keeps the others' draws
    rngs = dict(zip(["train", "test", "subsample"], (np.random.default_rng(s) for s in streams)))
    counts = {}
    data: dict[str, maze.MazeSet] = {}
    side = None
    for split in SPLITS:
        data[split] = load_split(args, split, rngs[split], side)
        side = data[split].side
    chosen, val = choose(args, data, rngs["subsample"])
    for split in SPLITS:
        arrays = build_arrays(chosen[split], 8 if (split == "train" and args.aug) else 1)
        counts[split] = save_grid_split(
            root, split, arrays, seq_len=chosen[split].side ** 2, vocab_size=maze.VOCAB_SIZE
        )  # pad + `# SGo`
    if val is not None:  # never augmented
        counts["val"] = save_grid_split(root, "val", build_arrays(val, 1), val.side**2, maze.VOCAB_SIZE)
    write_identifiers(root, ["<blank>"])
    return counts


def choose(
    args: argparse.Namespace, data: dict[str, maze.MazeSet], subsample: np.random.Generator
) -> tuple[dict[str, maze.MazeSet], maze.MazeSet | None]:
    """Train (subsampled as it always was) and test, and val (None: not written) from its own stream."""
    pool, test = data["train"], data["test"]
    n_val = val_size(args, len(test.inputs))
    rng = val_rng(args.seed)
    keys = maze.dihedral_keys
    val = None
    if n_val and args.val_from_train:  # before train is chosen: train loses these mazes
        taken = set(keys(test.inputs)) | shared_keys(keys(pool.inputs))
        idx, _ = pick_disjoint(keys, pool.inputs, rng.permutation(len(pool.inputs)), taken, n_val)
        val = maze.MazeSet(pool.inputs[idx], pool.labels[idx], pool.side)
        rest = np.setdiff1d(np.arange(len(pool.inputs)), idx)
        pool = maze.MazeSet(pool.inputs[rest], pool.labels[rest], pool.side)
    train, keep = pool, None
    if args.subsample_size is not None and args.subsample_size < len(pool.inputs):
        keep = subsample.choice(len(pool.inputs), size=args.subsample_size, replace=False)
        train = maze.MazeSet(pool.inputs[keep], pool.labels[keep], pool.side)
    if n_val and not args.val_from_train:
        if args.generate is not None:
            val = generate_val(n_val, rng, set(keys(train.inputs)) | set(keys(test.inputs)))
        elif keep is None:
            no_val(
                "every train.csv maze goes to train/ (no --subsample-size below its row count); "
                "--val-from-train takes val/ out of them (train/ changes), --val-size 0 drops this note"
            )
        else:
            spare = np.setdiff1d(np.arange(len(pool.inputs)), keep)
            taken = set(keys(train.inputs)) | set(keys(test.inputs))
            idx, _ = pick_disjoint(keys, pool.inputs, rng.permutation(spare), taken, n_val)
            if len(idx):
                val = maze.MazeSet(pool.inputs[idx], pool.labels[idx], pool.side)
            else:
                no_val("every train.csv maze left over by --subsample-size is a transform of a train/test one")
    if val is not None and len(val.inputs) < n_val:
        print(
            f"note: val/ holds {len(val.inputs)} of the {n_val} mazes asked: the training source has no more",
            file=sys.stderr,
        )
    return {"train": train, "test": test}, val


def generate_val(n: int, rng: np.random.Generator, taken: set[bytes]) -> maze.MazeSet:
    """n mazes generated as the train ones, none a rotation or reflection of a train/test maze."""
    inputs, labels = [], []
    have = 0
    with progress(total=n, desc="generate val", unit="maze") as bar:
        for _ in range(20):  # a collision is rare: another round replaces it
            new_in, new_lab = maze.generate(n - have, rng)
            idx, _ = pick_disjoint(maze.dihedral_keys, new_in, np.arange(len(new_in)), taken, n - have)
            taken |= set(maze.dihedral_keys(new_in[idx]))
            inputs.append(new_in[idx])
            labels.append(new_lab[idx])
            have += len(idx)
            bar.update(len(idx))
            if have == n:
                break
    return maze.MazeSet(np.concatenate(inputs), np.concatenate(labels), maze.SIZE)


def main(argv: list[str] | None = None) -> int:
    return run_build(parse_args(argv), check_args, build, split_counts)


if __name__ == "__main__":
    sys.exit(main())
