"""The quick-start demo: build a small Sudoku set offline, then train a small HRM on it (about 5 minutes on
2 CPU cores; much faster on a GPU). It only runs the two commands it prints, so you can copy them.

    python demo.py                    # extra key=value arguments go to pretrain.py, e.g. epochs=128
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

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
    print("$ python " + " ".join(shlex.quote(a) for a in args), flush=True)
    code = subprocess.call([sys.executable, *args], cwd=REPO)
    if code != 0:
        sys.exit(code)


def main() -> None:
    if os.path.isdir(os.path.join(REPO, DATA)):
        print(f"{DATA} exists: skipping the build (delete it to rebuild)")
    else:
        run(BUILD)
    run(TRAIN + sys.argv[1:])
    print(
        "\nToken accuracy (all/accuracy) should have risen from ~0.1 to ~0.4+; exact accuracy needs the full recipe (README)."
    )


if __name__ == "__main__":
    main()
