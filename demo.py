"""The quick-start demo: build a small Sudoku set offline, then train a small HRM on it (about 5 minutes on
2 CPU cores; much faster on a GPU). It only runs the two commands it prints, so you can copy them.

    python demo.py                    # extra key=value arguments go to pretrain.py, e.g. epochs=128
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np

from utils import shell

REPO = os.path.dirname(os.path.abspath(__file__))
DATA = "data/sudoku-demo"

BUILD = [
    "dataset/build_sudoku_dataset.py",
    "--generate",
    "500",
    "--test-size",
    "200",
    "--num-aug",
    "15",
    "--output-dir",
    DATA,
]
TRAIN = [
    "pretrain.py",
    f"data_path={DATA}",
    "epochs=64",
    "eval_interval=16",
    "global_batch_size=64",
    "lr=1e-3",
    "puzzle_emb_lr=1e-3",
    "lr_warmup_steps=20",
    "arch.hidden_size=64",
    "arch.num_heads=2",
    "arch.H_layers=2",
    "arch.L_layers=2",
    "arch.halt_max_steps=2",
]


def run(args: list[str]) -> None:
    print("$ " + shell.join(["python", *args]), flush=True)
    code = subprocess.call([sys.executable, *args], cwd=REPO)
    if code != 0:
        sys.exit(code)


def find_run(extra: list[str]) -> str | None:
    """The run folder the training just wrote: `checkpoint_path=` if given, else the run under checkpoints/
    whose metrics.jsonl changed last (names are random; project_name/run_name may be given too)."""
    for arg in extra:
        if arg.lstrip("+").startswith("checkpoint_path="):
            return str(shell.read_back(arg.lstrip("+"), "hydra"))
    runs = glob.glob(os.path.join(REPO, "checkpoints", "*", "*", "metrics.jsonl"))
    return os.path.relpath(os.path.dirname(max(runs, key=os.path.getmtime)), REPO) if runs else None


def next_commands(run_dir: str, data: str = DATA) -> list[tuple[str, str]]:
    """(what it does, command) for the run just trained, each paste-able as printed (from the repo folder)."""
    from train import checkpoint as ckpt

    where = os.path.join(REPO, run_dir) if not os.path.isabs(run_dir) else run_dir
    steps = ckpt.list_complete(where)
    if not steps:
        return []
    last = os.path.join(run_dir, f"step_{steps[0]}")
    inputs = np.load(os.path.join(REPO, data, "test", "all__inputs.npy"), mmap_mode="r")[0]
    puzzle = "".join("." if t <= 1 else str(int(t) - 1) for t in inputs)  # tokens: 1 blank, 2..10 digits 1..9
    return [
        ("test metrics of the last checkpoint; writes its predictions", shell.command("evaluate.py", checkpoint=last)),
        ("solve one test puzzle, showing each answer", shell.command("predict.py", checkpoint=last, puzzle=puzzle)),
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


def main() -> None:
    if os.path.isdir(os.path.join(REPO, DATA)):
        print(f"{DATA} exists: skipping the build (delete it to rebuild)")
    else:
        run(BUILD)
    run(TRAIN + sys.argv[1:])
    print(
        "\nToken accuracy (all/accuracy) should have risen from ~0.1 to ~0.4+; exact accuracy needs the full recipe (README)."
    )
    run_dir = find_run(sys.argv[1:])
    commands = next_commands(run_dir) if run_dir else []
    if commands:
        print(f"\nNext, from {shell.quote(REPO)}:")
        for what, cmd in commands:
            print(f"  # {what}\n  {cmd}")


if __name__ == "__main__":
    main()
