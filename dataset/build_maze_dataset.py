"""Build the Maze dataset (train and test splits) in the format of the original HRM builder.

Sources: the Hugging Face dataset `sapientinc/maze-30x30-hard-1k` (default, needs network), a local folder holding its
`train.csv` and `test.csv` (`--source-dir`), or mazes generated offline (`--generate N`, see dataset/puzzles/maze.py).

    python dataset/build_maze_dataset.py                                  # -> data/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --aug --output-dir data/maze-30x30-hard-1k-aug
    python dataset/build_maze_dataset.py --source-dir ~/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --generate 1000                    # -> data/maze-gen-1k

Each maze is one group; with `--aug` (train only) its 8 dihedral transforms are 8 puzzles of that group, else it is
one puzzle. Every puzzle has one example and identifier 0. Tokens: `# SGo` -> 1..5, pad 0, vocab 6.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from dataset.builder import check_source_dir, count_name, download, progress, run_build, split_counts  # noqa: E402
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
    """Write both splits under `root`; return (groups, puzzles, examples) per split."""
    streams = np.random.SeedSequence(args.seed).spawn(3)  # independent: changing one option keeps the others' draws
    rngs = dict(zip(["train", "test", "subsample"], (np.random.default_rng(s) for s in streams)))
    counts = {}
    side = None
    for split in SPLITS:
        data = load_split(args, split, rngs[split], side)
        side = data.side
        if split == "train" and args.subsample_size is not None and args.subsample_size < len(data.inputs):
            keep = rngs["subsample"].choice(len(data.inputs), size=args.subsample_size, replace=False)
            data = maze.MazeSet(data.inputs[keep], data.labels[keep], data.side)
        arrays = build_arrays(data, 8 if (split == "train" and args.aug) else 1)
        counts[split] = save_grid_split(
            root, split, arrays, seq_len=side * side, vocab_size=maze.VOCAB_SIZE
        )  # pad + `# SGo`
    write_identifiers(root, ["<blank>"])
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_build(parse_args(argv), check_args, build, split_counts)


if __name__ == "__main__":
    sys.exit(main())
