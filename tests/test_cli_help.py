"""`--help` on the key=value commands: every key on one line with its default and what it is (utils/cli_help.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train.config import PretrainConfig, defaults
from utils.cli_help import field_docs, yaml_rows

REPO = Path(__file__).resolve().parent.parent


def run_help(script: str, flag: str = "--help", cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), flag], cwd=cwd, capture_output=True, text=True, timeout=120
    )


class Example:
    a: int = 1  # on its line
    # above it,
    # on two lines
    b: str = "x"
    c: float = 2.0


def test_field_docs_reads_the_comment_beside_or_above() -> None:
    assert field_docs(Example) == {"a": "on its line", "b": "above it, on two lines", "c": ""}


def test_yaml_rows_nests_and_keeps_comments(tmp_path: Path) -> None:
    f = tmp_path / "arch.yaml"
    f.write_text("name: m@C  # the class\nloss:\n  name: l@L\n\n# why\nhidden: 8\nheads: 2\n")
    assert yaml_rows(str(f), "arch.") == [
        ("arch.name=m@C", "the class"),
        ("arch.loss.name=l@L", ""),
        ("arch.hidden=8", "why"),
        ("arch.heads=2", ""),
    ]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_pretrain_help_lists_every_key_once_with_what_it_is(tmp_path: Path, flag: str) -> None:
    r = run_help("pretrain.py", flag, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    for key in defaults():
        rows = [line for line in lines if line.strip().startswith(f"{key}=")]
        assert len(rows) == 1, (key, rows)
        assert len(rows[0].split(None, 1)) == 2, f"{key} has no description: {rows[0]!r}"
    assert set(field_docs(PretrainConfig)) == set(PretrainConfig.model_fields)
    for name, _ in yaml_rows(str(REPO / "config" / "arch" / "hrm_v1.yaml"), "arch."):
        assert any(line.strip().startswith(name) for line in lines), name
    assert "speedrun-trm" in r.stdout and "trm_singlez" in r.stdout  # the recipes and archs, read from config/
    assert list(tmp_path.iterdir()) == []  # no Hydra outputs/ or anything else left behind


def test_demo_help_runs_nothing(tmp_path: Path) -> None:
    r = run_help("demo.py", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: python demo.py"), r.stderr
    assert "$ python" not in r.stdout and "arch=trm" in r.stdout  # lists its keys, runs no command


def keys_read(*files: str) -> set[str]:
    """The key=value names a command's code reads: cli.pop("k"...) / cli.get("k"...) / key in ("k", ...) picks."""
    import re

    found: set[str] = set()
    for f in files:
        text = (REPO / f).read_text()
        found |= set(re.findall(r'cli\.(?:pop|get)\("([a-z_]+)"', text))
        found |= set(re.findall(r'a\.startswith\("([a-z_]+)="\)', text))
        found |= {k for group in re.findall(r"key in \(([^)]*)\)", text) for k in re.findall(r'"([a-z_]+)"', group)}
    return found


@pytest.mark.parametrize(
    "script,files,training_keys",
    [
        (
            "evaluate.py",
            ["evaluate.py", "train/eval_config.py"],
            {"device", "arch"},
        ),  # device, arch: the trainer's keys
        ("predict.py", ["predict.py", "dataset/viewer/think.py"], set()),
    ],
)
def test_command_help_lists_exactly_the_keys_its_code_reads(
    tmp_path: Path, script: str, files: list[str], training_keys: set[str]
) -> None:
    import importlib

    module = importlib.import_module(script.removesuffix(".py"))
    listed = {k.split("=", 1)[0] for k, _ in module.KEYS}
    assert listed == keys_read(*files) - training_keys
    r = run_help(script, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for key, doc in module.KEYS:
        assert any(line.strip().startswith(key) and doc in line for line in r.stdout.splitlines()), key
    assert "python pretrain.py --help" in r.stdout and list(tmp_path.iterdir()) == []
