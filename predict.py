"""Solve one puzzle with a trained checkpoint and show the answer, the ACT steps used and the halting confidence.

    python predict.py checkpoint=<run>/step_N puzzle=<81 chars, '.' or '0' blank>      # Sudoku
    python predict.py checkpoint=<run>/step_N puzzle=path/to/puzzle.txt                  # a file holding one
    python predict.py checkpoint=... puzzle=... halt=q          # stop when the Q head says halt (as in training)
    python predict.py checkpoint=... puzzle=... max_steps=32    # think longer than training's halt_max_steps

Other key=value pairs are as for evaluate.py (data_path=... for checkpoints without all_config.yaml, device=cpu).
Sudoku and Maze (30x30, characters `# SGo`, one row per line or 900 characters) are read from the text;
the dataset's metadata (data_path) tells which one the checkpoint was trained on.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import os
import re
import sys
from typing import Any, cast

import numpy as np
import torch
from omegaconf import OmegaConf

from evaluate import load_eval_config
from models.losses import ACTLossHead
from train.runtime import Dist, setup_runtime
from train.steps import create_model
from train.weights import load_checkpoint, weights_file
from utils.errors import UserError, exit_with

MAZE_CHARS = "# SGo"  # tokens 1..5 (0 = pad)


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


def encode(text: str, seq_len: int, vocab: int) -> tuple[np.ndarray, str]:
    """Puzzle text -> (tokens (seq_len,), kind)."""
    if seq_len == 81 and vocab == 11:
        from dataset.puzzles.sudoku import parse_puzzle

        flat = "".join(ch for ch in text if not ch.isspace() and ch not in "|+-")
        try:
            return parse_puzzle(flat).astype(np.int64) + 1, "sudoku"
        except ValueError as e:
            raise UserError(f"not a Sudoku: {e} (give 81 characters, '.' or '0' for blanks)") from None
    if seq_len == 900 and vocab == 6:
        # Only line breaks are dropped: spaces are a maze's free cells, also at the start or end of a line
        rows = [r.rstrip("\r") for r in text.split("\n")]
        flat = "".join(r for r in rows if r)
        if len(flat) != 900 or any(c not in MAZE_CHARS for c in flat):
            raise UserError("not a 30x30 maze: give 900 characters of '# SGo' (30 lines of 30, or one line)")
        return np.array([MAZE_CHARS.index(c) + 1 for c in flat], dtype=np.int64), "maze"
    raise UserError(
        f"predict.py knows Sudoku (seq 81, vocab 11) and Maze (seq 900, vocab 6); this dataset has seq {seq_len}, vocab {vocab}"
    )


def show(tokens: np.ndarray, kind: str) -> str:
    if kind == "sudoku":
        d = (tokens - 1).clip(0, 9).reshape(9, 9)
        lines = []
        for r in range(9):
            if r in (3, 6):
                lines.append("------+-------+------")
            row = " ".join(str(x) if x else "." for x in d[r])
            lines.append(f"{row[:5]} | {row[6:11]} | {row[12:]}")
        return "\n".join(lines)
    return "\n".join("".join(MAZE_CHARS[max(t - 1, 0)] for t in tokens[r * 30 : (r + 1) * 30]) for r in range(30))


@torch.inference_mode()
def solve(
    inner: Any, tokens: np.ndarray, device: torch.device, max_steps: int, halt: str, says_halt: Any
) -> tuple[np.ndarray, int, float]:
    """Run ACT segments on one puzzle; returns (prediction, segments used, sigmoid(q_halt) at the end)."""
    batch = {
        "inputs": torch.from_numpy(tokens).to(torch.int32).unsqueeze(0).to(device),
        "puzzle_identifiers": torch.zeros(1, dtype=torch.int32, device=device),
    }
    carry = inner.reset_carry(torch.ones(1, dtype=torch.bool, device=device), inner.empty_carry(1, device=device))
    used, q = 0, 0.0
    while used < max_steps:
        carry, logits, (q_halt, q_continue) = inner(carry, batch)
        used += 1
        q = torch.sigmoid(q_halt).item()
        if halt == "q" and bool(says_halt(q_halt, q_continue)):  # the model's own rule (no_ACT_continue too)
            break
    return logits.argmax(-1)[0].cpu().numpy(), used, q


def main() -> None:
    try:
        # puzzle= is taken as the shell gave it: through OmegaConf, 81 zeros became the number 0, '01...' an
        # octal, and a maze starting with '#' a YAML comment
        args = sys.argv[1:]
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
        cli["save_outputs"] = []  # predict.py writes no prediction files (so a read-only run folder is fine)
        config, ckpt, _ = load_eval_config(cli)
        d = Dist()
        rt = setup_runtime(config, d)
        from dataset.loader import model_metadata

        meta, _ = model_metadata(config.data_path)  # a test-only folder gives the shape too
        model, _, _ = create_model(config, meta, d, rt.device, rt.forward_dtype, use_compile=False)
        ckpt = weights_file(ckpt, ema)
        load_checkpoint(ckpt, model.eager, config.data_path)
        model.eager.eval()
        head = cast(ACTLossHead, model.eager)
        inner = head.model.inner  # solve() runs the inner model segment by segment, as the ACT wrapper would
        steps_cfg = head.halt_max_steps
        max_steps = positive_int("max_steps", max_steps) if max_steps is not None else steps_cfg

        tokens, kind = encode(text, meta.seq_len, meta.vocab_size)
        pred, used, q = solve(inner, tokens, rt.device, max_steps, halt, head.says_halt)
        print(
            f"{kind} from {ckpt}:\n{show(tokens, kind)}\n\nprediction after {used} ACT step(s) (training used {steps_cfg}):"
        )
        print(show(pred, kind))
        print(f"halting confidence sigmoid(q_halt) = {q:.3f}")
        if kind == "sudoku":
            from dataset.puzzles.sudoku import agrees, is_solution

            digits = (pred - 1).clip(0, 9)
            ok = bool(is_solution(digits)[0]) and bool(agrees(tokens - 1, digits)[0])
            print("valid solution: " + ("yes" if ok else "no"))
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
