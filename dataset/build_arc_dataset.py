"""Build the ARC dataset (train and test splits) in the format of the original HRM builder.

Reads ARC task files (`<dataset dir>/<subfolder>/<task id>.json`, `{"train": [...], "test": [...]}` lists of
`{"input": grid, "output": grid}`), as laid out by the original repo's git submodules:

    python dataset/build_arc_dataset.py                     # ARC-AGI-1 + ConceptARC -> data/arc-aug-1000
    python dataset/build_arc_dataset.py --dataset-dirs dataset/raw-data/ARC-AGI-2/data --output-dir data/arc-2-aug-1000

Each task becomes one group: the task itself, then up to `--num-aug` distinct augmentations (one of the 8 dihedral
transforms combined with a permutation of colours 1-9; 0 stays black), each its own puzzle with its own identifier
`<task id>_t<k>_<colour map>`. Every pair of a task is an example of its puzzle, except in a subfolder named
`evaluation`: there the demo (`train`) pairs form the task's puzzle in the train split and the `test` pairs its
puzzle in the test split. Train examples sit at a random offset on the 30x30 canvas (all but one per puzzle); test
examples at the top left. Same splits, augmentations, placement and identifiers as the original builder; with the
same task order the arrays are byte-identical (dataset/puzzles/arc.py says why the order differs from the original's).

`--strict-split` leaves the evaluation tasks' demo pairs out of the train split as well, so that nothing of an
evaluation task is seen in training. Only the train split changes: it loses those groups (the offsets of the other
examples stay as without the flag); the test split, the augmentations and identifiers.json are unchanged. The test
puzzles' identifiers are then never trained, so their puzzle embeddings stay at their initial value: the model has to
solve test puzzles from the input grid alone, not from a per-task embedding learned on the demos (which is how the
original setup, and the paper's ARC numbers, use the demos). Expect much lower scores; they are not comparable with
the paper's.

Validation split (val/): every pair of a training task is a train example, so there is nothing to spare, and val/
is opt-in. `--val-from-train` holds out the test pairs of `--val-size` training tasks (default 1000, at most as
many as the test split's tasks; drawn with a stream of their own, among tasks that keep a demo pair): each becomes
the task's puzzles in val/, augmentations and identifiers as its train puzzles, placed at the top left, the way the
evaluation tasks' test pairs form the test split, so val is scored like test (score_arc.py). Train loses those
pairs (and, as their count changes, the random offsets of later tasks move); test/ and identifiers.json do not
change. Without the flag the build prints a note that val/ was not written.
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
    check_val_args,
    no_val,
    progress,
    run_build,
    split_counts,
    val_rng,
    val_size,
)
from dataset.format import PuzzleDatasetMetadata, save_split, write_identifiers  # noqa: E402
from dataset.puzzles import arc  # noqa: E402
from utils.errors import UserError  # noqa: E402

DEFAULT_DIRS = ["dataset/raw-data/ARC-AGI/data", "dataset/raw-data/ConceptARC/corpus"]
SPLITS = ("train", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build the ARC dataset for HRM training.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--dataset-dirs",
        nargs="+",
        default=DEFAULT_DIRS,
        metavar="DIR",
        help="folders of task subfolders; the given list replaces the default (ARC-AGI-1 + ConceptARC)",
    )
    p.add_argument("--output-dir", default="data/arc-aug-1000")
    p.add_argument("--seed", type=int, default=42, help="seeds the legacy NumPy RandomState, as the original")
    p.add_argument("--num-aug", type=int, default=1000, help="augmented puzzles per task")
    p.add_argument(
        "--strict-split", action="store_true", help="also keep the demo pairs of evaluation tasks out of train"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument(
        "--on-bad-row", choices=["stop", "skip"], default="stop", help="a malformed task file: stop, or leave it out"
    )
    add_val_args(p, "val/ tasks: with --val-from-train, training tasks whose test pairs form val/ as test's do")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.num_aug < 0:
        raise UserError("--num-aug must be >= 0")
    if not 0 <= args.seed < 2**32:
        raise UserError("--seed must be in 0 .. 2**32-1 (a legacy NumPy RandomState seed)")
    check_val_args(args)
    for d in args.dataset_dirs:
        if not os.path.isdir(d):
            hint = (
                " (the original repo's git submodules: clone fchollet/ARC-AGI and victorvikram/ConceptARC under "
                "dataset/raw-data/, or pass --dataset-dirs with your copies)"
                if d in DEFAULT_DIRS
                else ""
            )
            raise UserError(f"--dataset-dirs: {d} is not a folder{hint}")


def load_and_augment(
    args: argparse.Namespace, rs: np.random.RandomState
) -> tuple[list[arc.Task], list[list[tuple[int, np.ndarray]]], arc.ReadReport]:
    """Tasks in build order and each one's puzzle plans. Draw order as the original: per subfolder one shuffle of
    its tasks, then each task's augmentation trials."""
    folders = [(d, sub, files) for d in args.dataset_dirs for sub, files in arc.task_folders(d)]
    for d in args.dataset_dirs:
        if not any(files for dd, _, files in folders if dd == d):
            print(f"warning: no task files in {d}/<subfolder>/*.json", file=sys.stderr)
    report = arc.ReadReport()
    tasks: list[arc.Task] = []
    plans: list[list[tuple[int, np.ndarray]]] = []
    total = sum(len(files) for _, _, files in folders)
    with progress(total=total, desc="read and augment", unit="task") as bar:
        for _, sub, files in folders:
            found = arc.read_folder(files, sub == arc.TEST_FOLDER, args.on_bad_row, report)
            bar.update(len(files) - len(found))
            rs.shuffle(found)  # type: ignore[arg-type]
            for task in found:
                plans.append(arc.augment_task(task, rs, args.num_aug))
                tasks.append(task)
                bar.update(1)
    if not tasks:
        raise UserError(f"no usable task files in {', '.join(args.dataset_dirs)} (expected <dir>/<subfolder>/*.json)")
    return tasks, plans, report


def build(args: argparse.Namespace, root: str) -> dict:
    rs = np.random.RandomState(args.seed)
    tasks, plans, report = load_and_augment(args, rs)

    # identifiers: 0 is blank, then every puzzle name in build order (a repeated name keeps its first id)
    puzzle_names = [arc.puzzle_names(task.name, task_plans) for task, task_plans in zip(tasks, plans)]
    ids: dict[str, int] = {}
    for task_names in puzzle_names:
        for name in task_names:
            ids.setdefault(name, len(ids) + 1)
    names = ["<blank>"] + list(ids)

    held_out = hold_out_val(args, tasks)
    counts: dict[str, tuple[int, int, int]] = {}
    for split in SPLITS + (("val",) if held_out else ()):
        canvases = [arc.TaskCanvas(t, split) if t.split_pairs(split) else None for t in tasks]
        kept = [
            c is not None and not (split == "train" and args.strict_split and t.evaluation)
            for t, c in zip(tasks, canvases)
        ]
        groups = [i for i, k in enumerate(kept) if k]
        if not groups:
            if split == "test":
                print(
                    f"warning: no '{arc.TEST_FOLDER}' subfolder in --dataset-dirs, so no test split was written",
                    file=sys.stderr,
                )
                continue
            raise UserError("the train split would be empty")
        examples = sum(len(plans[i]) * canvases[i].n for i in groups)  # type: ignore[union-attr]
        inputs = np.zeros((examples, arc.SEQ_LEN), dtype=np.uint8)
        labels = np.zeros((examples, arc.SEQ_LEN), dtype=np.uint8)
        puzzle_ids: list[int] = []
        puzzle_sizes: list[int] = []
        group_sizes: list[int] = []
        row = 0
        # every train task draws its offsets, even one left out by --strict-split, so the others keep theirs
        order = [i for i, c in enumerate(canvases) if c is not None] if split == "train" else groups
        for i in progress(order, desc=f"place {split}", unit="task"):
            canvas = canvases[i]
            assert canvas is not None
            offsets = canvas.draw_offsets(plans[i], rs) if split == "train" else None
            if not kept[i]:
                continue
            row = canvas.write(inputs, labels, row, plans[i], offsets)
            puzzle_ids += [ids[name] for name in puzzle_names[i]]
            puzzle_sizes += [canvas.n] * len(plans[i])
            group_sizes.append(len(plans[i]))
        assert row == examples
        arrays = {
            "inputs": inputs,
            "labels": labels,
            "puzzle_identifiers": np.array(puzzle_ids, dtype=np.int32),
            "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(np.int32),
            "group_indices": np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32),
        }
        metadata = PuzzleDatasetMetadata(
            seq_len=arc.SEQ_LEN,
            vocab_size=arc.VOCAB_SIZE,
            pad_id=arc.PAD,
            ignore_label_id=arc.PAD,
            blank_identifier_id=0,
            num_puzzle_identifiers=len(names),
            total_groups=len(group_sizes),
            mean_puzzle_examples=examples / len(puzzle_ids),
            sets=["all"],
        )
        with progress(total=1, desc=f"write {split}", unit="split") as bar:
            save_split(root, split, metadata, {"all": arrays})
            bar.update(1)
        counts[split] = (len(group_sizes), len(puzzle_ids), examples)
        del inputs, labels, arrays
    write_identifiers(root, names)

    if report.skipped:
        print(
            f"warning: skipped {report.skipped} bad task files (first: {'; '.join(report.problems[:3])})",
            file=sys.stderr,
        )
    short = [(t.name, len(p) - 1) for t, p in zip(tasks, plans) if len(p) - 1 < args.num_aug]
    if short:
        listed = ", ".join(f"{n} ({k})" for n, k in short[:5])
        print(
            f"note: {len(short)} tasks have fewer than {args.num_aug} distinct augmentations: {listed}"
            + (", ..." if len(short) > 5 else ""),
            file=sys.stderr,
        )
    return {"splits": counts, "tasks": len(tasks), "identifiers": len(names)}


def hold_out_val(args: argparse.Namespace, tasks: list[arc.Task]) -> int:
    """With --val-from-train, mark --val-size training tasks `held_out` (their test pairs go to val/, out of
    train); return how many. Drawn from the val stream, after the legacy stream's draws that fix the augmentations,
    over tasks that have test pairs and keep at least one demo pair."""
    n = val_size(args, sum(t.evaluation for t in tasks))
    if not n:
        return 0
    if not args.val_from_train:
        no_val(
            "every pair of a training task is a train example; --val-from-train holds out the test pairs of "
            f"{n} training tasks as val/ (train/ changes), --val-size 0 drops this note"
        )
        return 0
    candidates = [i for i, t in enumerate(tasks) if not t.evaluation and 0 < sum(t.from_test) < len(t.pairs)]
    if not candidates:
        no_val("no training task has both demo and test pairs")
        return 0
    picked = val_rng(args.seed).permutation(candidates)[:n]
    for i in picked:
        tasks[i].held_out = True
    if len(picked) < n:
        print(
            f"note: val/ holds {len(picked)} of the {n} tasks asked: every training task is held out", file=sys.stderr
        )
    return len(picked)


def arc_summary(result: dict) -> str:
    return (
        f"{result['tasks']} tasks; {split_counts(result['splits'])}; {result['identifiers']} identifiers (with <blank>)"
    )


def main(argv: list[str] | None = None) -> int:
    return run_build(parse_args(argv), check_args, build, arc_summary)


if __name__ == "__main__":
    sys.exit(main())
