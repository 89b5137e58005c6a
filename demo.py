"""The quick-start demo: build a small set of easy Sudoku offline (45 givens each, all solvable without guessing),
train a small TRM on it until it solves most held-out puzzles, solve one of them with predict.py and say whether
the answer is right, then print the next commands (including the full recipe for hard Sudoku on a GPU).

About 2.5 minutes uncontended on 2 CPU cores (measured 2026-12-07 on an otherwise idle 2-core machine: 141 s wall,
261 CPU-seconds, build and solve included; 500 training steps). It ended at 88.8% exact accuracy on the 500
held-out test puzzles with training seed 0; 86.0% with seed=1 and 87.4% with seed=2. It only runs the commands it
prints, so you can copy them.

    python demo.py                    # extra key=value arguments go to pretrain.py, e.g. seed=1
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np

from utils import shell
from utils.cli_help import format_rows, wants_help

REPO = os.path.dirname(os.path.abspath(__file__))
DATA = "data/sudoku-demo-easy"  # not the old demo's data/sudoku-demo (hard minimal puzzles, never solved here)
TRAIN_PUZZLES, TEST_PUZZLES, GIVENS = 8000, 500, 45


def build_args(data: str = DATA, train: int = TRAIN_PUZZLES, test: int = TEST_PUZZLES) -> list[str]:
    return [
        "dataset/build_sudoku_dataset.py",
        "--generate",
        str(train),
        "--test-size",
        str(test),
        "--min-givens",
        str(GIVENS),
        "--output-dir",
        data,
    ]


def train_args(data: str = DATA) -> list[str]:
    return [
        "pretrain.py",
        f"data_path={data}",
        *TRAIN,
    ]


TRAIN = [
    # TRM with its Sudoku token mixing (an MLP across the 81 cells instead of attention), small enough for a CPU
    "arch=trm",
    "arch.mlp_t=true",
    "arch.pos_encodings=none",
    "arch.hidden_size=64",
    "arch.L_layers=2",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=2",
    "arch.puzzle_emb_ndim=0",  # one kind of puzzle: no per-puzzle embedding
    "arch.puzzle_emb_len=0",
    # 4 passes over the 8,000 train puzzles at batch 64 (500 steps), a test evaluation after each
    "epochs=4",
    "eval_interval=1",
    "global_batch_size=64",
    "lr=3e-3",
    "lr_min_ratio=0.1",  # cosine decay to 3e-4
    "lr_warmup_steps=20",
]

# The full recipe for hard Sudoku on a GPU, as in docs/speedrun.md (the raw lists: docs/datasets.md).
GPU_RECIPE = [
    (
        "hard Sudoku (Sudoku-Extreme-like mix v2, 1k puzzles x 1000 augmentations; the raw lists: docs/datasets.md)",
        "python dataset/build_sudoku_dataset.py --mix data/raw/sudoku --subsample-size 1000 --num-aug 1000 "
        "--output-dir data/sudoku-mix-v2-1k-aug-1000",
    ),
    (
        "the fastest HRM recipe on one GPU (docs/speedrun.md: 24.7-30.5% exact after ~8 minutes on one H200)",
        "python pretrain.py recipe=speedrun-hrm-b384 data_path=data/sudoku-mix-v2-1k-aug-1000",
    ),
    (
        "the HRM paper's Sudoku-1k recipe: 26,041 steps at batch 768 (results/README.md)",
        "python pretrain.py recipe=paper-sudoku data_path=data/sudoku-mix-v2-1k-aug-1000",
    ),
]


def run(args: list[str], capture: bool = False) -> str:
    """Print the command, run it from the repo folder (its output shown as it comes), stop the demo if it fails;
    with `capture`, also return its standard output."""
    print("$ " + shell.join(["python", *args]), flush=True)
    if not capture:
        code, out = subprocess.call([sys.executable, *args], cwd=REPO), ""
    else:
        r = subprocess.run([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
        code, out = r.returncode, r.stdout
        print(out, end="", flush=True)
    if code != 0:
        sys.exit(code)
    return out


def find_run(extra: list[str]) -> str | None:
    """The run folder the training just wrote: `checkpoint_path=` if given, else the run under checkpoints/
    whose metrics.jsonl changed last (names are random; project_name/run_name may be given too)."""
    for arg in extra:
        if arg.lstrip("+").startswith("checkpoint_path="):
            return str(shell.read_back(arg.lstrip("+"), "hydra"))
    runs = glob.glob(os.path.join(REPO, "checkpoints", "*", "*", "metrics.jsonl"))
    return os.path.relpath(os.path.dirname(max(runs, key=os.path.getmtime)), REPO) if runs else None


def test_puzzle(data: str, index: int = 0) -> tuple[str, str]:
    """(puzzle, solution) of one held-out puzzle as 81 characters ('.' blank)."""
    split = os.path.join(REPO, data, "test")
    inputs = np.load(os.path.join(split, "all__inputs.npy"), mmap_mode="r")[index]
    labels = np.load(os.path.join(split, "all__labels.npy"), mmap_mode="r")[index]
    as_text = lambda tokens: "".join("." if t <= 1 else str(int(t) - 1) for t in tokens)  # noqa: E731
    return as_text(inputs), as_text(labels)  # tokens: 1 blank, 2..10 digits 1..9


def last_checkpoint(run_dir: str) -> str | None:
    from train import checkpoint as ckpt

    where = os.path.join(REPO, run_dir) if not os.path.isabs(run_dir) else run_dir
    steps = ckpt.list_complete(where)
    return os.path.join(run_dir, f"step_{steps[0]}") if steps else None


def answer_of(predict_output: str) -> str:
    """The 81 digits of the grid predict.py prints after 'prediction after ...' ('' if none)."""
    lines = (
        predict_output.split("prediction after", 1)[-1].splitlines()[1:] if "prediction after" in predict_output else []
    )
    digits = "".join(ch for line in lines[:11] for ch in line if ch.isdigit() or ch == ".")
    return digits if len(digits) == 81 else ""


def next_commands(run_dir: str, data: str = DATA) -> list[tuple[str, str]]:
    """(what it does, command) for the run just trained, each paste-able as printed (from the repo folder)."""
    last = last_checkpoint(run_dir)
    if last is None:
        return []
    puzzle, _ = test_puzzle(data, 1)
    return [
        ("test metrics of the last checkpoint; writes its predictions", shell.command("evaluate.py", checkpoint=last)),
        ("solve another test puzzle, showing each answer", shell.command("predict.py", checkpoint=last, puzzle=puzzle)),
        (
            "watch it think: that puzzle after every ACT segment, and where the Q head would halt",
            shell.command("predict.py", checkpoint=last, puzzle=puzzle, picture=os.path.join(run_dir, "think.html")),
        ),
        (
            "training curves (needs matplotlib)",
            shell.command("plot.py", run_dir, "-o", os.path.join(run_dir, "curves.png")),
        ),
        (
            "the test puzzles beside the predictions evaluate.py wrote",
            shell.command(
                "dataset/view.py", data, "--preds", f"{last}_all_preds.0", "--html", os.path.join(run_dir, "view.html")
            ),
        ),
    ]


def main(argv: list[str] | None = None, data: str = DATA, train: int = TRAIN_PUZZLES, test: int = TEST_PUZZLES) -> None:
    extra = sys.argv[1:] if argv is None else argv
    if wants_help(extra):
        print(demo_help())
        return
    if os.path.isdir(os.path.join(REPO, data)):
        print(f"{data} exists: skipping the build (delete it to rebuild)")
    else:
        run(build_args(data, train, test))
    run(train_args(data) + extra)
    run_dir = find_run(extra)
    last = last_checkpoint(run_dir) if run_dir else None
    if last is None:
        print("no checkpoint found: nothing to solve")
        return
    puzzle, solution = test_puzzle(data)
    print("\nOne held-out test puzzle (never trained on), solved by the model:")
    answer = answer_of(
        run(["predict.py", shell.override("checkpoint", last, "yaml"), f"puzzle={puzzle}"], capture=True)
    )
    right = answer == solution
    print(f"answer right (equal to the puzzle's one solution): {'yes' if right else 'no'}")
    print(f"\nNext, from {shell.quote(REPO)}:")
    for what, cmd in next_commands(run_dir, data) + GPU_RECIPE:
        print(f"  # {what}\n  {cmd}")


def demo_help() -> str:
    """What it runs and the keys it takes: every pretrain.py key, on top of the demo's own training config."""
    fixed = [(a, "") for a in train_args(DATA)[1:]]
    return "\n".join(
        [
            "usage: python demo.py [key=value ...]",
            "",
            "Builds data/sudoku-demo-easy (offline), trains a small TRM on it, solves one held-out puzzle, prints the",
            "next commands. Any pretrain.py key may be added (python pretrain.py --help lists them), e.g. seed=1;",
            "a key given here replaces the demo's own value. The demo's training keys:",
            format_rows(fixed),
        ]
    )


if __name__ == "__main__":
    main()
