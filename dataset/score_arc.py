"""Score ARC predictions: pass@k with voting over augmentations (the original did this in arc_eval.ipynb).

    python evaluate.py checkpoint=checkpoints/<project>/<run>/step_<N>          # writes step_<N>_all_preds.<rank>
    python dataset/score_arc.py --preds checkpoints/<project>/<run> --data data/arc-aug-1000 [--k 1 2 10]
    python dataset/score_arc.py --preds <run>/step_*_all_preds.* --pool --data ...   # vote over several checkpoints

Rules, as the notebook's:
- every prediction row (padding rows, identifier 0, are dropped) is mapped back to its original task: the grid is cut
  out of the canvas (largest top-left rectangle of colour tokens, i.e. up to the eos frame), then the augmentation
  named by its identifier (`<task>_t<k>_<colours>`) is undone: inverse dihedral transform, then inverse colours;
- the (un-augmented) test input it answers is found the same way from its input canvas;
- per task and test input, equal answers are pooled: ranked by the number of rows that gave them, then by their mean
  sigmoid(q_halt_logits), ties in order of first appearance; pass@k counts a test input solved when the true output is
  among the top k answers, and a task solved when all its test inputs are;
- the share is over the tasks of the dataset's test split (the notebook divided by the tasks present in the
  predictions: the same number when the predictions cover the test split, which this script checks and reports).
The paper reports pass@2.

Which files vote: a folder gives the prediction files of one step (its latest, or `--step`); files can be named one by
one. Votes come from one evaluation (one folder and step) unless `--pool` is given: mixing checkpoints changes the
score, so it is never done by accident.

Besides the report (`step_<N>_arc_scores.json`) it writes a submission in the ARC Prize format
(`step_<N>_submission.json`): task id -> one `{"attempt_1": grid, "attempt_2": grid}` per test input, in the order of
the task file's test inputs, from the two best-ranked answers above (pass@2's answers). Answers with no grid (a canvas
whose first token is not a colour) are passed over; a missing attempt is `[[0]]`, so every task of the test split
has a well-formed entry.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from dataset.puzzles import arc  # noqa: E402
from utils.errors import UserError, exit_with, load_tensors  # noqa: E402

PREDS_FILE = re.compile(r"^step_(\d+)_all_preds\.(\d+)$")
NEEDED = ("inputs", "puzzle_identifiers", "logits", "q_halt_logits")


def grid_key(grid: np.ndarray) -> bytes:
    """Exact identity of a grid: its shape and its colours."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def cropped(tokens: np.ndarray) -> Iterator[np.ndarray]:
    """The grids (colours 0-9) of many canvases, in order."""
    tokens = np.asarray(tokens).reshape(-1, arc.GRID, arc.GRID)
    heights, widths = arc.crop_sizes(tokens)
    for canvas, h, w in zip(tokens, heights, widths):
        yield (canvas[:h, :w] - arc.COLOUR_OFFSET).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def find_pred_files(
    paths: list[str],
    step: int | None,
    pool: bool = False,
    refusal: str = "votes come from one checkpoint step: choose one (--step N, or its files), or pass --pool to vote over all of them",
    using: str = "scoring step {step} (choose with --step)",
) -> tuple[list[str], int | None]:
    """Expand folders to their `step_<N>_all_preds.<rank>` files (the latest step unless `step`), ranks in order.

    Files of more than one evaluation (folder and step) are refused unless `pool`: voting across checkpoints is an
    ensemble, a choice to make on purpose (before --pool, naming the files of two steps mixed them silently)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = [
                f for f in glob.glob(os.path.join(p, "step_*_all_preds.*")) if PREDS_FILE.match(os.path.basename(f))
            ]
            if not found:
                raise UserError(f"--preds {p}: no step_<N>_all_preds.<rank> files (written by evaluate.py)")
            steps = sorted({int(PREDS_FILE.match(os.path.basename(f))[1]) for f in found})  # type: ignore[index]
            want = steps[-1] if step is None else step
            if want not in steps:
                raise UserError(f"--preds {p}: no predictions of step {want} (found steps {steps})")
            if step is None and len(steps) > 1:
                print(f"note: {p} holds predictions of steps {steps}; {using.format(step=want)}")
            files += [f for f in found if int(PREDS_FILE.match(os.path.basename(f))[1]) == want]  # type: ignore[index]
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise UserError(f"--preds {p}: no such file or folder")

    def order(f: str) -> tuple[int, int, str]:
        m = PREDS_FILE.match(os.path.basename(f))
        return (int(m[1]), int(m[2]), f) if m else (-1, -1, f)

    files = sorted(dict.fromkeys(files), key=order)
    sources = sorted({(os.path.dirname(os.path.realpath(f)), order(f)[0]) for f in files})
    if len(sources) > 1 and not pool:
        shown = ", ".join(f"{d} step {s}" if s >= 0 else d for d, s in sources[:4])
        shown += ", ..." if len(sources) > 4 else ""
        raise UserError(f"--preds holds predictions of {len(sources)} evaluations ({shown}); {refusal}")
    steps = {order(f)[0] for f in files} - {-1}
    return files, (steps.pop() if len(steps) == 1 and len(sources) == 1 else None)


def load_preds(path: str) -> dict:
    preds = load_tensors(path, "cannot load predictions {path}: {why}", mmap=True)  # may exceed RAM: mapped
    if not isinstance(preds, dict):
        raise UserError(f"{path}: expected a dict of tensors as evaluate.py writes")
    missing = [k for k in NEEDED if k not in preds]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}: evaluate with eval_save_outputs including "
            "inputs, puzzle_identifiers, logits and q_halt_logits (evaluate.py's default)"
        )
    return preds


@dataclass
class Truth:
    """The test split's un-augmented puzzles: per task, test input key -> true output keys (a list, in case a task
    repeats an input)."""

    tests: dict[str, dict[bytes, list[bytes]]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    order: dict[str, list[bytes]] = field(default_factory=dict)  # task -> its test input keys, file order, repeats kept

    @property
    def inputs(self) -> int:
        return sum(len(v) for t in self.tests.values() for v in t.values())


def load_truth(data_dir: str) -> Truth:
    ids_path = os.path.join(data_dir, "identifiers.json")
    meta_path = os.path.join(data_dir, "test", "dataset.json")
    for p in (ids_path, meta_path):
        if not os.path.isfile(p):
            raise UserError(f"--data {data_dir}: {p} not found (an ARC dataset folder built by build_arc_dataset.py)")
    with open(ids_path) as f:
        names = json.load(f)
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("seq_len") != arc.SEQ_LEN or meta.get("vocab_size") != arc.VOCAB_SIZE:
        raise UserError(
            f"--data {data_dir} is not an ARC dataset (seq_len {meta.get('seq_len')}, vocab {meta.get('vocab_size')})"
        )
    truth = Truth(names=names)
    for set_name in meta["sets"]:
        pids, pidx, inputs, labels = (
            np.load(os.path.join(data_dir, "test", f"{set_name}__{f}.npy"), mmap_mode="r")
            for f in ("puzzle_identifiers", "puzzle_indices", "inputs", "labels")
        )
        for p in np.flatnonzero([arc.parse_aug_name(names[int(i)])[2] is None for i in pids]):
            start, end = int(pidx[p]), int(pidx[p + 1])
            task = truth.tests.setdefault(names[int(pids[p])], {})
            order = truth.order.setdefault(names[int(pids[p])], [])
            for inp, lab in zip(cropped(inputs[start:end]), cropped(labels[start:end])):
                task.setdefault(grid_key(inp), []).append(grid_key(lab))
                order.append(grid_key(inp))
    if not truth.tests:
        raise UserError(f"--data {data_dir}: the test split holds no un-augmented ARC puzzles")
    return truth


# ---------------------------------------------------------------------------------------------------------------
# Voting


def collect_votes(
    files: list[str], truth: Truth, chunk: int = 4096
) -> tuple[dict[str, dict[bytes, dict[bytes, list[float]]]], int, int]:
    """task -> test input key -> answer key -> [count, sum of sigmoid(q_halt)], in order of first appearance.
    Also returns the number of rows used and of rows whose input matched no test input of their task."""
    import torch

    votes: dict[str, dict[bytes, dict[bytes, list[float]]]] = {}
    used = unmatched = 0
    parsed: dict[int, tuple[str, int, np.ndarray | None]] = {}
    for path in files:
        preds = load_preds(path)
        n = len(preds["puzzle_identifiers"])
        for s in range(0, n, chunk):
            ids = preds["puzzle_identifiers"][s : s + chunk].numpy().astype(np.int64)
            real = ids != 0  # blank identifier: padding rows of the last batch
            if not real.any():
                continue
            ids = ids[real]
            inputs = preds["inputs"][s : s + chunk].numpy()[real]
            answers = preds["logits"][s : s + chunk].argmax(-1).numpy()[real]
            q = torch.sigmoid(preds["q_halt_logits"][s : s + chunk].float()).numpy()[real]
            for pid, inp, ans, qv in zip(ids, cropped(inputs), cropped(answers), q):
                if pid not in parsed:
                    if not 0 < pid < len(truth.names):
                        raise UserError(f"{path}: puzzle identifier {pid} is not in {len(truth.names)} identifiers")
                    parsed[pid] = arc.parse_aug_name(truth.names[pid])
                base, tid, mapping = parsed[pid]
                in_key = grid_key(arc.inverse_augment_grid(inp, tid, mapping))
                if in_key not in truth.tests.get(base, {}):
                    unmatched += 1
                    continue
                answer = (
                    votes.setdefault(base, {})
                    .setdefault(in_key, {})
                    .setdefault(grid_key(arc.inverse_augment_grid(ans, tid, mapping)), [0, 0.0])
                )
                answer[0] += 1
                answer[1] += float(qv)
                used += 1
        del preds
    return votes, used, unmatched


def ranked(answers: dict[bytes, list[float]]) -> list[bytes]:
    """Answer keys best first: by vote count, then mean q_halt; sorted() is stable, so ties keep their
    first-appearance order."""
    return [a for a, _ in sorted(answers.items(), key=lambda kv: (kv[1][0], kv[1][1] / kv[1][0]), reverse=True)]


def key_grid(key: bytes) -> list[list[int]]:
    """The inverse of `grid_key`, as JSON rows."""
    h, w = key[0], key[1]
    return np.frombuffer(key[2:], dtype=np.uint8).reshape(h, w).tolist()


def score(truth: Truth, votes: dict, ks: list[int]) -> dict[str, dict[int, bool]]:
    """task -> k -> solved (every test input's true output among the k best-ranked answers)."""
    out = {}
    for task, tests in truth.tests.items():
        solved = {k: True for k in ks}
        for in_key, outputs in tests.items():
            ranked_keys = ranked(votes.get(task, {}).get(in_key, {}))
            for k in ks:
                top = set(ranked_keys[:k])
                solved[k] &= all(o in top for o in outputs)
        out[task] = solved
    return out


FILLER = [[0]]  # an attempt where the votes offer no grid (the ARC Prize format needs two per test input)


def submission(truth: Truth, votes: dict) -> tuple[dict[str, list[dict[str, list[list[int]]]]], int]:
    """ARC Prize submission: task -> [{"attempt_1": grid, "attempt_2": grid}] per test input (file order), from
    the two best-ranked answers with a grid. Also returns the number of attempts filled with FILLER."""
    out: dict[str, list[dict[str, list[list[int]]]]] = {}
    filled = 0
    for task, in_keys in truth.order.items():
        entries = []
        for in_key in in_keys:
            # an empty crop (h or w 0) is no grid to submit, whatever its votes
            grids = [key_grid(a) for a in ranked(votes.get(task, {}).get(in_key, {})) if a[0] and a[1]][:2]
            filled += 2 - len(grids)
            grids += [FILLER] * (2 - len(grids))
            entries.append({"attempt_1": grids[0], "attempt_2": grids[1]})
        out[task] = entries
    return out, filled


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="ARC pass@k of HRM predictions, voting over augmentations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preds", nargs="+", required=True, help="checkpoint folder(s) or step_<N>_all_preds.<rank> files")
    p.add_argument("--data", required=True, help="the ARC dataset folder the predictions were made on")
    p.add_argument("--k", nargs="+", type=int, default=[1, 2, 10, 100, 1000], help="the k of pass@k")
    p.add_argument("--step", type=int, default=None, help="which step's predictions, when a folder holds several")
    p.add_argument("--out", default=None, help="JSON report [beside the predictions: step_<N>_arc_scores.json]")
    p.add_argument(
        "--submission",
        default=None,
        metavar="PATH",
        help="ARC Prize submission JSON (two attempts per test input) [beside the predictions: step_<N>_submission.json]",
    )
    p.add_argument(
        "--pool", action="store_true", help="let files of several evaluations (checkpoints or steps) vote together"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        if any(k < 1 for k in args.k):
            raise UserError("--k values must be >= 1")
        ks = sorted(set(args.k))
        files, step = find_pred_files(args.preds, args.step, args.pool)
        truth = load_truth(args.data)
        votes, used, unmatched = collect_votes(files, truth)
        if used == 0:
            raise UserError(
                f"no prediction row matched a test puzzle of {args.data}: were the predictions made on this dataset?"
            )
        solved = score(truth, votes, ks)
        prefix = f"step_{step}_" if step is not None else ""
        where = os.path.dirname(os.path.abspath(files[0]))
        out = args.out or os.path.join(where, f"{prefix}arc_scores.json")
        sub_path = args.submission or os.path.join(where, f"{prefix}submission.json")
    except UserError as e:
        exit_with(e)
    tasks = len(truth.tests)
    covered = sum(1 for t in truth.tests if t in votes)
    correct = {k: sum(s[k] for s in solved.values()) for k in ks}
    print(
        f"ARC pass@k: {tasks} tasks ({truth.inputs} test inputs) of {args.data}; {used:,} prediction rows from "
        f"{len(files)} file(s)" + (f", step {step}" if step is not None else "")
    )
    if covered < tasks:
        print(f"warning: {tasks - covered} tasks have no predictions and count as unsolved", file=sys.stderr)
    if unmatched:
        print(f"warning: {unmatched} rows matched no test input of their task and were left out", file=sys.stderr)
    print(f"{'k':>6}  {'solved':>7}  {'share':>7}")
    for k in ks:
        note = "  (the paper's metric)" if k == 2 else ""
        print(f"{k:>6}  {correct[k]:>7}  {100 * correct[k] / tasks:>6.2f}%{note}")
    report = {
        "data": args.data,
        "preds": files,
        "step": step,
        "tasks": tasks,
        "test_inputs": truth.inputs,
        "tasks_with_predictions": covered,
        "rows_used": used,
        "rows_unmatched": unmatched,
        "pass_at_k": {str(k): correct[k] / tasks for k in ks},
        "solved": {str(k): correct[k] for k in ks},
        "per_task": {t: {str(k): s[k] for k in ks} for t, s in solved.items()},
        "submission": sub_path,
    }
    sub, filled = submission(truth, votes)
    try:
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
        with open(sub_path, "w") as f:
            json.dump(sub, f, separators=(",", ":"))  # compact: grids are most of it
    except OSError as e:
        exit_with(UserError(f"cannot write {e.filename}: {e.strerror}"))
    print(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
    note = f"; {filled} of {2 * truth.inputs} attempts had no answer and are [[0]]" if filled else ""
    print(f"wrote {sub_path} (ARC Prize format: {len(sub)} tasks, 2 attempts per test input{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
