"""Fused SwiGLU gate/up Triton kernel (models/fused.py) against the unfused PyTorch math.

The kernel takes the weight with gate/up rows interleaved; `swiglu_gate_up_direct`, what the model calls, takes
the original layout (gate rows first), interleaves it and launches the kernel; `launch` runs it on operands
already interleaved (single configs, any strides).

On CPU these need Triton's interpreter, set before import (triton.jit reads it at decoration time):

    PYTHONPATH=/path/to/triton-site TRITON_INTERPRET=1 python -m pytest tests/test_fused.py

On the GPU machine: `python -m pytest tests/test_fused.py` (the `gpu` tests run there only).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (the fused SwiGLU kernel needs it)")

from models import fused  # noqa: E402
from models.fused import interleave_gate_up, swiglu_gate_up_reference  # noqa: E402

CUDA = torch.cuda.is_available()
needs_kernel = pytest.mark.skipif(
    not (fused.INTERPRET or CUDA), reason="needs TRITON_INTERPRET=1 (CPU interpreter) or a CUDA GPU"
)
gpu_only = pytest.mark.skipif(not CUDA or fused.INTERPRET, reason="needs a CUDA GPU and TRITON_INTERPRET unset")
DEVICE = "cuda" if CUDA and not fused.INTERPRET else "cpu"
SMS = fused.num_sms(torch.device(DEVICE)) if fused.INTERPRET or CUDA else 1


def swiglu_gate_up(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The model's call (models/layers.py binds num_sms once per process the same way)."""
    return fused.swiglu_gate_up_direct(x, w, SMS)


def deinterleave_gate_up(w_il: torch.Tensor) -> torch.Tensor:
    """The inverse of `interleave_gate_up`: rows (gate 0, up 0, gate 1, ...) -> gate rows, then up rows."""
    two_inter, k = w_il.shape
    return w_il.reshape(two_inter // 2, 2, k).transpose(0, 1).reshape(two_inter, k)


def make(m: int, k: int, inter: int, dtype=torch.bfloat16, device=DEVICE, seed=0):
    """Random x and a fp32 'master' weight cast to the compute dtype, as CastedLinear does."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(2 * inter, k, generator=g) / k**0.5).to(dtype)
    return x.to(device), w.to(device)


def emulated(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The kernel's exact recipe in PyTorch: fp32 GEMM rounded to x's dtype, silu(g) * u in fp32, rounded once."""
    g, u = (x.float() @ w.float().T).to(x.dtype).float().chunk(2, dim=-1)
    return (g * torch.sigmoid(g) * u).to(x.dtype)


def check_close(out: torch.Tensor, ref: torch.Tensor, tol: float = 2e-2) -> float:
    """bf16 tolerance relative to the output's scale; returns the max abs diff (printed with -s)."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = ref.float().abs().max().item()
    diff = (out.float() - ref.float()).abs().max().item()
    print(f"shape {tuple(out.shape)}: max abs diff {diff:.3g} (output scale {scale:.3g})")
    torch.testing.assert_close(out.float(), ref.float(), atol=tol * scale, rtol=tol)
    return diff


@needs_kernel
@pytest.mark.parametrize("m", [1, 7, 130, 131])
@pytest.mark.parametrize("k,inter", [(64, 64), (128, 128), (48, 96), (64, 40)])
def test_matches_reference(m: int, k: int, inter: int) -> None:
    # (48, 96): K not a multiple of BLOCK_K (masked K tail) and inter not a multiple of BLOCK_N (masked columns);
    # (64, 40): inter smaller than one tile and not a multiple of 16.
    x, w = make(m, k, inter)
    with torch.no_grad():
        out = swiglu_gate_up(x, w)
    check_close(out, swiglu_gate_up_reference(x, w))
    # Against its own recipe the kernel differs only where fp32 summation order flips a bf16 rounding.
    assert (out == emulated(x, w)).float().mean().item() > 0.99


@needs_kernel
def test_fp16() -> None:
    x, w = make(33, 64, 64, dtype=torch.float16)
    check_close(swiglu_gate_up(x, w), swiglu_gate_up_reference(x, w), tol=5e-3)


def test_interleave_round_trip() -> None:
    inter, k = 5, 3
    w = torch.arange(2 * inter * k, dtype=torch.float32).view(2 * inter, k)
    w_il = interleave_gate_up(w)
    assert w_il.shape == w.shape and w_il.is_contiguous()
    torch.testing.assert_close(w_il[0::2], w[:inter], atol=0, rtol=0)  # row 2j: gate row j
    torch.testing.assert_close(w_il[1::2], w[inter:], atol=0, rtol=0)  # row 2j+1: up row j
    torch.testing.assert_close(deinterleave_gate_up(w_il), w, atol=0, rtol=0)
    torch.testing.assert_close(interleave_gate_up(deinterleave_gate_up(w)), w, atol=0, rtol=0)


@needs_kernel
def test_launch_any_weight_strides() -> None:
    # The kernel reads the interleaved weight through its strides: a column-major copy gives the same result.
    x, w = make(37, 64, 96)
    out = swiglu_gate_up(x, w)
    w_il_t = interleave_gate_up(w).t().contiguous().t()
    assert w_il_t.stride() == (1, 2 * 96)
    got = torch.empty_like(out)
    fused.launch(x, w_il_t, got)
    torch.testing.assert_close(got, out, atol=0, rtol=0)


@needs_kernel
@pytest.mark.parametrize(
    "config", fused.HOPPER_CONFIGS, ids=lambda c: "m{}n{}k{}s{}w{}".format(*c) + ("p" if c.persistent else "")
)
def test_each_hopper_config(config) -> None:
    # The autotuner may pick any of these on the GPU; check each one's tiling (the interpreter ignores stages and
    # warps). inter = 320 is not a multiple of any BLOCK_N (masked last column tile). Persistent configs loop
    # over several tiles per program: under the interpreter there are 3 "SMs"; on a GPU, M makes > 2 tiles per SM.
    m = 300 if fused.INTERPRET else 128 * 400 + 3
    x, w = make(m, 128, 320, seed=1)
    out = torch.empty(m, 320, dtype=x.dtype, device=x.device)
    fused.launch(x, interleave_gate_up(w), out, config)
    check_close(out, swiglu_gate_up_reference(x, w))
    assert (out == emulated(x, w)).float().mean().item() > 0.99


@needs_kernel
def test_unavailable_reason() -> None:
    # The start-up check (one launch of INTERPRET_CONFIGS[0] against the reference) passes where the kernel runs.
    assert fused.unavailable_reason(torch.device(DEVICE), torch.bfloat16) == ""
    assert "bf16/fp16" in fused.unavailable_reason(torch.device(DEVICE), torch.float32)


@needs_kernel
def test_leading_dims_and_strides() -> None:
    x, w = make(2 * 3 * 5, 64, 64)
    out = swiglu_gate_up(x.view(2, 3, 5, 64), w)
    assert out.shape == (2, 3, 5, 64)
    torch.testing.assert_close(out.view(30, 64), swiglu_gate_up(x, w), atol=0, rtol=0)
    # A row-strided view (x[:, :64] of a wider tensor) goes in without a copy and gives the same result.
    wide = torch.cat([x, torch.randn_like(x)], dim=1)
    torch.testing.assert_close(swiglu_gate_up(wide[:, :64], w), swiglu_gate_up(x, w), atol=0, rtol=0)
    assert swiglu_gate_up(x[:0], w).shape == (0, 64)
    assert swiglu_gate_up(x[:0].view(0, 3, 64), w).shape == (0, 3, 64)


@needs_kernel
def test_forward_only() -> None:
    x, w = make(7, 64, 64)
    with pytest.raises(RuntimeError, match="forward-only"):
        swiglu_gate_up(x.clone().requires_grad_(), w)
    with pytest.raises(RuntimeError, match="forward-only"):
        swiglu_gate_up(x, torch.nn.Parameter(w))
    with torch.no_grad():
        swiglu_gate_up(x, torch.nn.Parameter(w))
    with torch.inference_mode():
        swiglu_gate_up(x, w)


def test_bad_shapes() -> None:
    x, w = make(7, 40, 64, device="cpu")
    with pytest.raises(ValueError, match="multiple of 16"):
        swiglu_gate_up(x, w)
    x, w = make(7, 64, 64, device="cpu")
    with pytest.raises(ValueError, match="disagree on K"):
        swiglu_gate_up(x[:, :32], w)
    with pytest.raises(ValueError, match="same dtype"):
        swiglu_gate_up(x, w.float())
    with pytest.raises(ValueError, match=r"\[2\*inter, K\]"):
        swiglu_gate_up(x, w[:-1])


def test_available() -> None:
    cpu = torch.device("cpu")
    assert (fused.unavailable_reason(cpu, torch.bfloat16) == "") == fused.INTERPRET
    assert fused.unavailable_reason(cpu, torch.float32) != ""


@needs_kernel
def test_swiglu_module_uses_kernel() -> None:
    # models/layers.py: SwiGLU.forward calls fused.swiglu_gate_up_direct (original layout) once
    # select_mlp_kernel picked it, in no-grad forwards only.
    from models import layers

    torch.manual_seed(0)
    mlp = layers.SwiGLU(64, 4).to(DEVICE)  # inter 256
    x = torch.randn(2, 9, 64, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        plain = mlp(x)
    try:
        assert layers.select_mlp_kernel("fused", torch.device(DEVICE), torch.bfloat16)[0] == "fused"
        with torch.no_grad():
            out = mlp(x)
        check_close(out, plain)
    finally:
        layers.select_mlp_kernel("plain", torch.device(DEVICE), torch.bfloat16)


@needs_kernel
def test_fp8_no_grad_forwards_take_the_fp8_gemms_instead(monkeypatch) -> None:
    # nograd_fp8: in training's no-grad forwards the SwiGLU runs its two linear layers as fp8 GEMMs (the fused
    # kernel is bf16 only); evaluation (eval mode, inference_mode) keeps the fused kernel.
    from models import layers

    torch.manual_seed(0)
    mlp = layers.SwiGLU(64, 4).to(DEVICE)
    x = torch.randn(2, 8, 64, device=DEVICE, dtype=torch.bfloat16)  # 16 GEMM rows
    calls = {"fused": 0, "fp8": 0}
    real_mm = torch._scaled_mm

    def count_mm(*a, **k):
        calls["fp8"] += 1
        return real_mm(*a, **k)

    try:
        layers.select_mlp_kernel("fused", torch.device(DEVICE), torch.bfloat16)
        real_fused = layers._swiglu_gate_up

        def count_fused(*a, **k):
            calls["fused"] += 1
            return real_fused(*a, **k)

        layers.select_nograd_matmul(True, torch.device(DEVICE), torch.bfloat16)  # (its probe GEMM not counted)
        monkeypatch.setattr(layers, "_swiglu_gate_up", count_fused)
        monkeypatch.setattr(torch, "_scaled_mm", count_mm)
        with torch.no_grad():
            mlp(x)
        assert calls == {"fused": 0, "fp8": 2}
        with torch.inference_mode():
            mlp.eval()(x)
        assert calls == {"fused": 1, "fp8": 2}
    finally:
        layers.select_nograd_matmul(False, torch.device(DEVICE), torch.bfloat16)
        layers.select_mlp_kernel("plain", torch.device(DEVICE), torch.bfloat16)


def test_direct_launch_wrapper_traces(monkeypatch) -> None:
    # The Python around the launch in swiglu_gate_up_direct (checks, interleave, views) must trace without a
    # graph break. The Triton launch itself cannot be traced under the interpreter: a stand-in kernel writes
    # the reference result instead (the GPU test below traces the real one).
    class StandIn:
        def __getitem__(self, grid):
            return self.launch

        def launch(self, x2d, w_il, out, M, N, K, *strides, NUM_SMS):
            out.copy_(swiglu_gate_up_reference(x2d, deinterleave_gate_up(w_il)))

    monkeypatch.setattr(fused, "_swiglu_gate_up_kernel", StandIn())
    x, w = make(18, 64, 128, device="cpu")
    w32 = w.float()

    @torch.compile(fullgraph=True, backend="eager", dynamic=False)
    def f(x, w32):
        return fused.swiglu_gate_up_direct(x, w32.to(x.dtype), 4)

    with torch.no_grad():
        out = f(x.view(2, 9, 64), w32)
    assert out.shape == (2, 9, 128)
    torch.testing.assert_close(out.view(18, 128), swiglu_gate_up_reference(x, w), atol=0, rtol=0)


@pytest.mark.gpu
@gpu_only
def test_direct_launch_compiles() -> None:
    # Dynamo traces the Triton launch (no graph break: fullgraph) and Inductor compiles and launches the kernel
    # itself. GPU only: Dynamo cannot trace the interpreter's launch path.
    x, w = make(50, 64, 64)
    w32 = w.float()
    sms = fused.num_sms(torch.device(DEVICE))

    @torch.compile(fullgraph=True, backend="inductor", dynamic=False)
    def f(x, w32):
        return fused.swiglu_gate_up_direct(x, w32.to(x.dtype), sms)

    with torch.no_grad():
        out = f(x, w32)
    check_close(out, swiglu_gate_up_reference(x, w))
    assert (out == emulated(x, w)).float().mean().item() > 0.99


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("m", [4096 + 17, 768 * 82])
def test_gpu_model_shape(m: int) -> None:
    x, w = make(m, 512, 1536)
    with torch.no_grad():
        out = swiglu_gate_up(x, w)
    check_close(out, swiglu_gate_up_reference(x, w))
    assert (out == emulated(x, w)).float().mean().item() > 0.99
    print("autotuner chose:", fused.chosen_configs())


@pytest.mark.gpu
@gpu_only
def test_gpu_compiled_module_fused_vs_plain() -> None:
    # The model's way: select_mlp_kernel("fused"), then the SwiGLU module compiled whole (fullgraph).
    from models import layers

    mlp = layers.SwiGLU(512, 4).cuda()
    x = torch.randn(8, 82, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        plain = mlp(x)
    try:
        layers.select_mlp_kernel("fused", torch.device("cuda"), torch.bfloat16)
        with torch.no_grad():
            check_close(torch.compile(mlp, fullgraph=True)(x), plain)
    finally:
        layers.select_mlp_kernel("plain", torch.device("cuda"), torch.bfloat16)


@pytest.mark.gpu
@gpu_only
def test_gpu_inductor_model() -> None:
    from models.layers import SwiGLU

    mlp = SwiGLU(512, 4).cuda()
    x = torch.randn(8, 81, 512, device="cuda", dtype=torch.bfloat16)

    @torch.compile(fullgraph=True)
    def fused_mlp(x):
        w = mlp.gate_up_proj.weight.to(x.dtype)
        return mlp.down_proj(swiglu_gate_up(x, w))

    with torch.no_grad():
        check_close(fused_mlp(x), mlp(x))
