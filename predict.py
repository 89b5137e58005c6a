"""Solve one puzzle with a trained checkpoint and show the answer, the ACT steps used and the halting confidence.

    python predict.py checkpoint=<run>/step_N puzzle=<81 chars, '.' or '0' blank>      # Sudoku
    python predict.py checkpoint=<run>/step_N puzzle=path/to/puzzle.txt                  # a file holding one
    python predict.py checkpoint=... puzzle=... halt=q          # stop when the Q head says halt (as in training)
    python predict.py checkpoint=... puzzle=... max_steps=32    # think longer than training's halt_max_steps
    python predict.py checkpoint=... puzzle=... picture=think.png  # every segment drawn (.gif, .html): docs/evaluation.md

`checkpoint=` may also be a run folder (its newest checkpoint) or a folder `python -m hrm export` wrote. Other
key=value pairs are as for evaluate.py (device=cpu; data_path=... only for checkpoints without step_N.json and
all_config.yaml, the original's). Sudoku and Maze (30x30, characters `# SGo`, one row per line or 900 characters)
are read from the text; the checkpoint's metadata (step_N.json; else the dataset's) tells which one it was trained
on. The work is the Python API's (hrm/api.py: hrm.load, Solver.solve); this prints what it found.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import os
import re
import sys
from typing import Any

from omegaconf import OmegaConf

from dataset.viewer.think import picture_args, write_picture
from hrm.api import load
from hrm.puzzles import MAZE_CHARS, encode, show, to_digits  # noqa: F401  (predict.encode, predict.MAZE_CHARS: the tests' names)
from utils.cli_help import command_help, wants_help
from utils.errors import UserError, exit_with

# predict.py's own keys for --help, each read in main() (tests/test_cli_help.py checks the two agree)
KEYS = [
    (
        "checkpoint=<run folder>/step_N",
        "the model (required): a step_N file, a run folder, an exported folder, hf://org/name",
    ),
    ("puzzle=<text or file>", "the puzzle (required): Sudoku 81 characters ('.' or '0' blank), Maze 30x30 of '# SGo'"),
    ("halt=max", "max: run max_steps segments (the paper's protocol) | q: stop where the Q head says halt"),
    ("max_steps=<halt_max_steps>", "segments to run at most; more than training's lets it think longer"),
    ("ema=auto", "auto: the weight average when the run kept one | true: insist on it | false: raw weights"),
    (
        "picture=<file.png|.gif|.html>",
        "draw the prediction after every segment and where the Q head halts (a new file)",
    ),
    ("label=<solution>", "with picture=: cells unlike this solution are drawn red"),
]


def read_text(arg: str) -> str:
    """`puzzle=` is a file when one exists by that name, or when it looks like a path (a `/` or a file
    extension: puzzle text has neither); otherwise it is the puzzle text itself."""
    if os.path.isfile(arg):
        try:
            with open(arg) as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read puzzle file {arg!r} ({getattr(e, 'strerror', None) or e})") from None
    if os.path.isdir(arg):
        raise UserError(f"puzzle={arg!r} is a folder; give puzzle text or a file holding one puzzle")
    # A puzzle's own length (81 Sudoku cells, 900 maze cells) is puzzle text whatever it ends with: "...5.x" is a
    # Sudoku with a bad character, not a file name
    looks_like_file = re.search(r"\.[A-Za-z][A-Za-z0-9]{0,5}$", arg) and len(arg) not in (81, 900)
    if "/" in arg or os.sep in arg or looks_like_file:
        raise UserError(
            f"puzzle file {arg!r} not found (looked for {os.path.abspath(arg)}); give an existing file or the puzzle text"
        )
    return arg


def positive_int(name: str, value: Any) -> int:
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{name}={value!r} must be a whole number >= 1")
    return n


def main() -> None:
    if wants_help(sys.argv[1:]):
        what = "Solves one puzzle and prints the answer, whether it is valid, the segments used and the confidence."
        print(
            command_help(
                "usage: python predict.py checkpoint=<step_N or folder> puzzle=<text or file> [key=value ...]",
                what,
                KEYS,
            )
        )
        return
    try:
        # puzzle= is taken as the shell gave it: through OmegaConf, 81 zeros became the number 0, '01...' an
        # octal, and a maze starting with '#' a YAML comment
        args = sys.argv[1:]
        args, want = picture_args(args)  # picture=PATH (.png, .gif, .html), label=: dataset/viewer/think.py
        given = [a.split("=", 1)[1] for a in args if a.startswith("puzzle=")]
        rest = [a for a in args if not a.startswith("puzzle=")]
        cli: dict[str, Any] = OmegaConf.to_container(OmegaConf.from_cli(rest))  # type: ignore[assignment]
        if len(given) > 1:
            raise UserError("puzzle= is given twice; give one puzzle")
        puzzle = given[0] if given else None
        max_steps = cli.pop("max_steps", None)
        halt = str(cli.pop("halt", "max"))
        ema = cli.pop("ema", "auto")
        if puzzle is None:
            raise UserError(
                "usage: python predict.py checkpoint=<step_N> puzzle=<puzzle text or file> [max_steps=N] [halt=q|max]"
            )
        if halt not in ("q", "max"):
            raise UserError(f"halt must be q (stop when the Q head says so) or max (run max_steps), got {halt!r}")

        if max_steps is not None:
            positive_int("max_steps", max_steps)
        text = read_text(str(puzzle))
        if not cli.get("checkpoint"):
            raise UserError("usage: python predict.py checkpoint=<path to step_N file> puzzle=<puzzle text or file>")
        # the API (hrm/api.py) does the work: its checks, its model, its segments; this prints what it found
        solver = load(str(cli.pop("checkpoint")), ema=ema, overrides=cli, log=print)
        steps_cfg = solver.halt_max_steps
        max_steps = positive_int("max_steps", max_steps) if max_steps is not None else steps_cfg
        tokens = solver.encode(text)
        r = solver.solve(text, max_steps=max_steps, halt=halt)
        kind = r.kind
        print(
            f"{kind} from {solver.weights}:\n{show(tokens[0], kind)}\n\n"
            f"prediction after {r.steps[0]} ACT step(s) (training used {steps_cfg}):"
        )
        print(r.text(0))
        print(f"halting confidence sigmoid(q_halt) = {r.confidence[0]:.3f}")
        if r.kind == "sudoku" and r.valid is not None:
            print("valid solution: " + ("yes" if r.valid[0] else "no"))
        if want.get("picture"):
            label = None
            if "label" in want:
                label = to_digits(solver.encode(read_text(want["label"])), r.kind)[0]
                if r.kind == "sudoku" and (label == 0).any():
                    raise UserError("label= must be a full solution: 81 digits 1-9, no blanks")
            print(write_picture(want["picture"], solver.weights, r, label))
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
