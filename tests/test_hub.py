"""hrm/hub.py: Hub ids, fetching through huggingface_hub's real cache code offline, and publishing up to the
network call. CI cannot reach the Hub, so the cache is laid out here as huggingface_hub itself lays it out
(models--<org>--<name>/snapshots/<commit>/..., refs/<branch> holding the commit) and read with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrm import hub
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def fake_cache(root: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40, branch: str = "main") -> Path:
    """One snapshot of `repo_id` in a Hub cache at `root`, reachable by `branch` and by `commit`."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return snap


def fetch(source: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    return subprocess.run(
        [sys.executable, "-m", "hrm.hub", "fetch", source], cwd=REPO, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "source,expect",
    [
        ("hf://sapientinc/HRM-checkpoint-sudoku-extreme", ("sapientinc/HRM-checkpoint-sudoku-extreme", None)),
        ("hf://org/name@v1.0", ("org/name", "v1.0")),
        ("hf://org/name@" + "0" * 40, ("org/name", "0" * 40)),
        ("hf://name", ("name", None)),
    ],
)
def test_parse(source: str, expect: tuple) -> None:
    assert hub.parse(source) == expect


@pytest.mark.parametrize(
    "source", ["org/name", "hf://", "hf://org/na me", "hf://org/name@", "hf://a/b/c", "hf://o/n@x..y"]
)
def test_parse_refuses(source: str) -> None:
    with pytest.raises(UserError, match="hf://"):
        hub.parse(source)


@pytest.mark.slow
def test_fetch_offline_reads_the_cache_by_branch_and_commit(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snap = fake_cache(cache, "org/sudoku", {"model.safetensors": b"w", "config.json": b"{}"}, commit="c" * 40)
    fake_cache(cache / "other", "org/x", {}, commit="d" * 40)  # a second cache elsewhere: not read
    for source in ("hf://org/sudoku", "hf://org/sudoku@main", "hf://org/sudoku@" + "c" * 40):
        r = fetch(source, cache)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()) == snap


@pytest.mark.slow
def test_fetch_reads_the_originals_released_layout(tmp_path: Path) -> None:
    # the original's released checkpoints hold `checkpoint` (weights) and `all_config.yaml`
    cache = tmp_path / "hub"
    snap = fake_cache(cache, "sapientinc/HRM-checkpoint-sudoku-extreme", {"checkpoint": b"w", "all_config.yaml": b""})
    r = fetch("hf://sapientinc/HRM-checkpoint-sudoku-extreme", cache)
    assert r.returncode == 0 and Path(r.stdout.strip()) == snap, r.stderr


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize(
    "source,expect",
    [
        ("hf://org/missing", "is not in the Hub cache and HF_HUB_OFFLINE is set"),
        ("hf://org/sudoku@dev", "is not in the Hub cache"),  # a branch the cache has no ref for
        ("hf://org/empty", "holds no model weights"),
        ("hf://org/bad id", "is not a Hub id"),
    ],
)
def test_fetch_errors_are_one_line(tmp_path: Path, source: str, expect: str) -> None:
    cache = tmp_path / "hub"
    fake_cache(cache, "org/sudoku", {"model.safetensors": b"w", "config.json": b"{}"})
    fake_cache(cache, "org/empty", {"README.md": b"# nothing"})
    r = fetch(source, cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr


def test_reproduce_command_names_what_differs_from_the_recipe() -> None:
    config = hub.composed_config(["recipe=trm-sudoku"])
    config.update(data_path="data/x y", eval_interval=500, run_name="r", checkpoint_path="c", recipe="trm-sudoku")
    config["arch"]["L_cycles"] = 4
    command = hub.reproduce_command(config)
    assert command == "python pretrain.py recipe=trm-sudoku 'data_path=data/x y' arch.L_cycles=4 eval_interval=500"
    # an arch group other than the recipe's is named, and the keys are read against it
    config = hub.composed_config(["arch=trm_singlez"])
    config.update(data_path="d", recipe=None)
    assert hub.reproduce_command(config) == "python pretrain.py arch=trm_singlez data_path=d"
