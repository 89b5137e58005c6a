"""GPU-only: TRM, EMA, halting-aware evaluation and test-time augmentation on the fast paths (compile, the
fused SwiGLU kernel, bf16). Run on a GPU machine: `python -m pytest -m gpu tests/test_gpu_models.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import SHORT_RUN, pretrain_args, read_metrics, run_py

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TRM = ["arch=trm", "arch.hidden_size=64", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"]


@pytest.mark.parametrize("mixer", ["attention", "mlp_t"])
def test_trm_compiled_bf16_with_ema_and_tta(tiny_sudoku: Path, tmp_path: Path, mixer: str) -> None:
    extra = ["arch.mlp_t=true", "arch.pos_encodings=none"] if mixer == "mlp_t" else []
    run = tmp_path / "run"
    base = [s for s in SHORT_RUN if not s.startswith("arch.")]
    r = run_py(pretrain_args(tiny_sudoku, run, base, *TRM, *extra, "arch.halt_max_steps=4", "ema=true", "compile=true"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = next(x for x in r.stdout.splitlines() if x.strip().startswith("compile "))
    assert row.split()[1] == "on", row
    assert "torch.compile failed" not in r.stdout, r.stdout[-3000:]
    assert "bfloat16" in r.stdout
    evals = [m for m in read_metrics(run) if "all/accuracy" in m]
    assert evals and all(1 <= m["all/steps_at_halt"] <= 4 for m in evals) and "raw/all/accuracy" in evals[-1]
    last = max(m["step"] for m in evals)
    assert (run / f"step_{last}.ema").is_file()
    out = run_py(["evaluate.py", f"checkpoint={run / f'step_{last}'}", "tta=4"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(the weight average" in out.stdout and "tta_exact_accuracy=" in out.stdout
    acc = float(out.stdout.split("accuracy=")[1].split(",")[0])
    assert acc == pytest.approx(evals[-1]["all/accuracy"], abs=2e-3)  # compiled vs eager bf16 rounding


def test_hrm_fused_kernel_with_ema_compiled(tiny_sudoku: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = run_py(pretrain_args(tiny_sudoku, run, SHORT_RUN, "ema=true", "compile=true", "mlp_kernel=auto"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "torch.compile failed" not in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("SwiGLU"))
    print(line)
    evals = [m for m in read_metrics(run) if "all/accuracy" in m]
    assert evals[-1]["all/exact_accuracy_at_halt"] >= 0 and evals[-1]["raw/all/accuracy"] > 0


def test_cuda_graphs_train_as_the_default_compile(tiny_sudoku: Path, tmp_path: Path) -> None:
    """compile_mode=reduce-overhead on a GPU: cudagraph trees take the step (no skip logged: TORCH_LOGS shows
    Inductor's reasons), and the run learns the same losses as the default compile, up to GPU rounding."""
    base = [*SHORT_RUN, "seed=1", "compile=true", "arch.no_ACT_continue=true", "ema=true"]
    losses = {}
    for mode in ("null", "reduce-overhead"):
        run = tmp_path / mode
        r = run_py(pretrain_args(tiny_sudoku, run, base, f"compile_mode={mode}"), env={"TORCH_LOGS": "perf_hints"})
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        assert "torch.compile failed" not in out and "skipping cudagraphs" not in out, out[-3000:]
        losses[mode] = [m["train/lm_loss"] for m in read_metrics(run) if "train/lm_loss" in m]
        if mode != "null":
            assert f"mode {mode}: CUDA graphs" in out
    assert losses["reduce-overhead"] == pytest.approx(losses["null"], rel=2e-2)


def test_fp8_no_grad_gemms_compile_and_train_close_to_bf16(tiny_sudoku: Path, tmp_path: Path) -> None:
    """nograd_fp8=true on a GPU with fp8 GEMMs (compute capability 8.9+): a compiled linear under no_grad gives
    the eager fp8 result, not bf16's, and a compiled run learns losses close to the bf16 run's."""
    from models import layers

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 GEMMs need compute capability 8.9+")
    lin = layers.CastedLinear(512, 1536, bias=False).cuda()
    x = torch.randn(384, 82, 512, device="cuda", dtype=torch.bfloat16)
    try:
        layers.select_nograd_matmul(True, torch.device("cuda"), torch.bfloat16)
        with torch.no_grad():
            compiled, eager = torch.compile(lin)(x), layers.fp8_linear(x, lin.weight, None)
            bf16 = torch.nn.functional.linear(x, lin.weight.to(torch.bfloat16))
        torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
        assert (compiled.float() - bf16.float()).abs().max() > 0
        assert (compiled.float() - bf16.float()).norm() / bf16.float().norm() < 0.1
    finally:
        layers.select_nograd_matmul(False, torch.device("cuda"), torch.bfloat16)

    base = [*SHORT_RUN, "seed=1", "compile=true", "arch.no_ACT_continue=true"]
    losses = {}
    for name, extra in (("bf16", []), ("fp8", ["nograd_fp8=true"])):
        r = run_py(pretrain_args(tiny_sudoku, tmp_path / name, base, *extra))
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "torch.compile failed" not in out, out[-3000:]
        losses[name] = [m["train/lm_loss"] for m in read_metrics(tmp_path / name) if "train/lm_loss" in m]
    assert losses["fp8"] != losses["bf16"]
    assert losses["fp8"] == pytest.approx(losses["bf16"], rel=5e-2)


def test_muon_on_cuda_orthogonalizes_in_bf16_and_trains_compiled(tiny_sudoku: Path, tmp_path: Path) -> None:
    """muon=true on a GPU: Newton-Schulz runs in bfloat16 there (fp32 on CPU) and still gives singular values
    near 1, and a compiled run with it trains with no skipped step."""
    from muon import orthogonalize

    m = torch.randn(4, 512, 1536, device="cuda") * torch.logspace(-0.5, 0, 1536, device="cuda")
    s = torch.linalg.svdvals(orthogonalize(m).float())
    assert s.min() > 0.5 and s.max() < 1.3, (s.min(), s.max())
    run = tmp_path / "run"
    r = run_py(pretrain_args(tiny_sudoku, run, SHORT_RUN, "muon=true", "compile=true", "arch.no_ACT_continue=true"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Muon for the blocks' weight matrices" in r.stdout and "torch.compile failed" not in r.stdout
    rows = [m for m in read_metrics(run) if "train/lm_loss" in m]
    assert not any(m.get("train/skipped") for m in rows)
    assert rows[-1]["train/lm_loss"] < rows[0]["train/lm_loss"]
