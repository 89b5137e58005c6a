"""Issue 15: bit-exact resume with ACT exploration, no non-finite value ever saved, the last healthy
checkpoint never pruned, a full disk handled at every write, kill -9 leftovers cleaned, checksums."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tests.conftest import SHORT_RUN, pretrain_args, read_metrics, run_py

# 24 steps (passes of 8, evals at 8, 16, 24) with the recipes' kind of exploration: halt_max_steps 8.
EXPLORE = [*SHORT_RUN, "epochs=12", "lr=1e-2", "seed=1", "arch.halt_max_steps=8", "eval_batches=1"]


def run_ok(*a: str) -> str:
    r = run_py(list(a))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def rewind(src: Path, dst: Path, step: int) -> None:
    """A copy of a finished run as it was when stopped right after checkpoint `step` (later files gone)."""
    shutil.copytree(src, dst)
    for p in dst.glob("step_*"):
        if int(p.name.split("_")[1].split(".")[0]) > step:
            p.unlink()


def logged(run_dir: Path) -> list[tuple]:
    return [
        (m["step"], k, v)
        for m in read_metrics(run_dir)
        for k, v in sorted(m.items())
        if k.startswith(("train/", "all/"))
    ]


def assert_same_run(a: Path, b: Path, step: int) -> None:
    wa, wb = torch.load(a / f"step_{step}", weights_only=True), torch.load(b / f"step_{step}", weights_only=True)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ"
    assert logged(a) == logged(b)


def test_resume_mid_pass_with_exploration_is_bit_identical(tiny_sudoku: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_ok(*pretrain_args(tiny_sudoku, ref, EXPLORE, "checkpoint_interval=5", "keep_last=0"))
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)  # step 10: two batches into the second pass
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, EXPLORE, "checkpoint_interval=5", "keep_last=0", "resume=auto"))
    assert "from step 10" in out
    assert_same_run(ref, run_dir, 24)
