"""GPU-only checks, run on the device machine: `python -m pytest -m gpu tests/test_gpu.py`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import SHORT_RUN, final_weights, pretrain_args, read_metrics, run_py, start, wait_for_step

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BASE = [*SHORT_RUN, "seed=1", "compile=false"]


def args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return pretrain_args(data, run_dir, BASE, *extra)


def test_gpu_report_and_bf16(tiny_sudoku: Path, tmp_path: Path) -> None:
    r = run_py(args(tiny_sudoku, tmp_path / "run", "epochs=4", "eval_interval=4"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "forward dtype  bfloat16 (GPU supports bf16)" in r.stdout
    assert "device         NVIDIA" in r.stdout


def test_gpu_resume_matches_uninterrupted(tiny_sudoku: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    r = run_py(args(tiny_sudoku, ref))
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "run"
    proc = start(args(tiny_sudoku, run_dir))
    wait_for_step(proc, run_dir, 6)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    r = run_py(args(tiny_sudoku, run_dir, "resume=auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = final_weights(ref), final_weights(run_dir)
    diffs = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    print("max |resumed - uninterrupted| per tensor:", max(diffs.values()))
    for k in a:  # GPU kernels may differ run to run; within bf16-level tolerance
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=2e-2, atol=2e-2)
    la = [m["train/lm_loss"] for m in read_metrics(ref) if "train/lm_loss" in m]
    lb = [m["train/lm_loss"] for m in read_metrics(run_dir) if "train/lm_loss" in m]
    assert la == pytest.approx(lb, rel=2e-2)
