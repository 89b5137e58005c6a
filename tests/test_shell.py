"""Printed commands paste back as printed: through bash, then through Hydra's and OmegaConf's parsers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from utils import shell

NASTY = [
    "checkpoints/Sudoku-demo ACT-torch/HierarchicalReasoningModel_ACTV1 glaring-tarantula/step_500",
    "data/é",
    "日本/データ",
    "data/a=b",
    "it's",
    'say "hi"',
    "x'y\"z\\",
    "C:\\data\\",
    "${oc.env:HOME}",
    "a,b",
    "[x]",
    "{a: 1}",
    "(x)",
    "a: b",
    "#x",
    " lead and trail ",
    "",
    "null",
    "true",
    "123",
    "1e-3",
    "yes",
    "0x10",
    "12:30",
    "~/data",
    "$HOME/x",
    "`ls`",
    "a!b",
    "tab\tx",
    "nl\nx",
]


def argv_through_bash(command_line: str) -> list[str]:
    """The argv a program gets when `command_line` is pasted into bash."""
    probe = f"{shell.quote(sys.executable)} -c 'import sys, json; print(json.dumps(sys.argv[1:]))'"
    r = subprocess.run(["bash", "-c", f"{probe} {command_line}"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.mark.parametrize("grammar", ["hydra", "yaml"])
def test_values_read_back_exactly(grammar: shell.Grammar) -> None:
    items = [shell.override("data_path", v, grammar) for v in NASTY]
    assert argv_through_bash(" ".join(shell.quote(i) for i in items)) == items  # the shell keeps each word
    for v, item in zip(NASTY, items):
        assert shell.read_back(item, grammar) == v, item


def test_plain_values_stay_readable() -> None:
    assert shell.override("data_path", "data/sudoku-demo") == "data_path=data/sudoku-demo"
    assert shell.quote("checkpoint=checkpoints/Sudoku-demo-ACT-torch/run-a/step_5") == (
        "checkpoint=checkpoints/Sudoku-demo-ACT-torch/run-a/step_5"
    )
    # a value Hydra needs quoted goes in single quotes, the whole word in the shell's double quotes
    assert shell.command("pretrain.py", data_path="my data") == "python pretrain.py \"data_path='my data'\""
    assert shell.command("evaluate.py", checkpoint="runs/a b/step_5") == (
        "python evaluate.py \"checkpoint='runs/a b/step_5'\""
    )


def test_unquoted_forms_are_what_breaks() -> None:
    """Why the quoting is needed: Hydra's lexer refuses these bare, and YAML turns these into non-strings."""
    from hydra.errors import HydraException

    for bad in ("data/é", "a=b", "~/x"):
        with pytest.raises(HydraException):
            shell.read_back(f"k={bad}", "hydra")
    assert shell.read_back("k=yes", "yaml") is True and shell.read_back("k=0x10", "yaml") == 16
