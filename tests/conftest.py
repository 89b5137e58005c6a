from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HRM_SHARED_DATA", REPO.parent / "shared" / "data"))

# A model small enough to train for a few dozen steps in seconds on 2 CPU cores.
TINY_ARCH = [
    "arch.hidden_size=64",
    "arch.num_heads=2",
    "arch.H_layers=1",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=2",
]


# A short schedule for the long-run tests: 16 steps of 32 on the tiny Sudoku set, evals at steps 8 and 16.
SHORT_RUN = [
    "epochs=8",
    "eval_interval=4",
    "global_batch_size=32",
    "lr=1e-3",
    "lr_warmup_steps=3",
    "checkpoint_minutes=null",
    *TINY_ARCH,
]


# Metrics keys that hold wall-clock times: they differ between otherwise identical runs.
WALL_CLOCK_KEYS = ("time", "elapsed_s")


def pretrain_args(data: Path, run_dir: Path, base: list[str], *extra: str) -> list[str]:
    return ["pretrain.py", f"data_path={data}", f"checkpoint_path={run_dir}", *base, *extra]


def run_py(
    args: list[str], cwd: Path = REPO, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def tiny_config(data: Path, **overrides):
    """A PretrainConfig for calling trainer functions directly (values that matter are passed by the test)."""
    import pretrain

    base = dict(
        arch={"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "loss": {"name": "losses@ACTLossHead"}},
        data_path=str(data),
        global_batch_size=8,
        epochs=4,
        **dict.fromkeys(["lr", "lr_min_ratio", "weight_decay", "beta1", "beta2", "puzzle_emb_lr"], 0.5),
        puzzle_emb_weight_decay=0.5,
        lr_warmup_steps=1,
    )
    return pretrain.PretrainConfig(**(base | overrides))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def tiny_sudoku(tmp_path_factory) -> Path:
    """64 generated puzzles x 8 (7 augmentations), 32 test puzzles: built offline by our builder."""
    out = tmp_path_factory.mktemp("data") / "sudoku-tiny"
    r = run_py(
        [
            "dataset/build_sudoku_dataset.py",
            "--generate",
            "64",
            "--test-size",
            "32",
            "--num-aug",
            "7",
            "--output-dir",
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HRM_SHARED_DATA)")
    return SHARED_DATA
