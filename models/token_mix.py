"""TRM's token-mixing half-block (mlp_t) for forwards without gradient, as one Triton kernel.

    y = rms_norm_over_positions(x + Wd @ (silu(Wg @ x_b) * (Wu @ x_b)))     for every row b of x [B, L, D]

TRM's Sudoku model mixes positions with a SwiGLU whose width is the sequence length (L = 81 + 16 = 97) and whose
hidden width is inter = 512, applied to every channel. The unfused path (models/recursive_reasoning/trm.py)
transposes x to [B, D, L], runs one GEMM that writes [B*D, 2*inter] (805 MB at batch 768, more than ten times x),
a silu*mul pass that reads it back, a second GEMM, then the residual add and the norm over positions, and
transposes back. With K = L = 97 every GEMM is thin and the step is bound by those bytes, not by the matrix
units (BENCHMARKS.md, "TRM's step").

Here one program owns row b and a tile of BLOCK_D channels: x's tile [L, BLOCK_D] (all positions, padded to a
power of two) stays in registers; for each chunk of BLOCK_I hidden units it computes gate and up [BLOCK_I,
BLOCK_D] with the weights on the left (so no transpose of x is ever made), applies silu*mul, and accumulates
Wd's chunk times that into [L, BLOCK_D]. The residual add and the norm over positions run on the accumulator,
since every position of those channels is in the tile. Memory traffic is x in, y out, and the (L2-resident)
weights: about 1/15 of the unfused path's.

Numerics follow the compiled unfused path: each GEMM result is rounded to the activation dtype where F.linear
would write it, silu(g) * u is computed in fp32 and rounded once, the residual is added in fp32 and rounded, the
norm is taken in fp32 and rounded once. Differences are GEMM summation order (as between any two GEMM kernels).

Forward only, like models/fused.py (whose conventions it shares: Triton imported guarded, TRITON_INTERPRET=1
runs it on the CPU for tests). models/layers.py selects it when mlp_kernel=fused is asked for (not under auto: see
there), after `unavailable_reason` has checked every config at TRM's Sudoku shape on the device.
"""

from __future__ import annotations

import torch

from models.common import exception_line
from models.fused import HAS_TRITON, INTERPRET

# (BLOCK_D, BLOCK_I, warps, stages). The accumulator [BLOCK_L, BLOCK_D] fp32 and x's tile live for the whole
# program; gate and up [BLOCK_I, BLOCK_D] fp32 per chunk: for L <= 128 and 64 x 64, 32 + 16 + 16 KB of registers.
# No BLOCK_D = 32 on the GPU: on an H100 (Triton 3.6, 2026-12-07) every 32-wide config compiled to wrong results at
# [8, 97, 512] (max error 2.3 against 0.02) and (32, 64, 8, 3) to an illegal memory access at [1, 97, 70], which kills
# the CUDA context of the process (so the start-up check could not have refused it); under the interpreter the same
# tile is right. The autotuner benchmarked every config, so one bad config failed the whole kernel: the GPU test
# test_each_config runs every config at those two shapes.
CONFIGS = [(64, 64, 4, 2), (64, 64, 8, 3), (128, 64, 8, 2), (64, 128, 8, 2), (128, 32, 8, 3)]
INTERPRET_CONFIG = (32, 32, 4, 1)  # one config under the interpreter (and for the start-up check): no autotuning
if INTERPRET:
    CONFIGS = [INTERPRET_CONFIG]

if HAS_TRITON:
    import triton
    import triton.language as tl

    from models.fused import _round

    def _configs() -> list:
        return [triton.Config({"BLOCK_D": d, "BLOCK_I": i}, num_warps=w, num_stages=s) for d, i, w, s in CONFIGS]

    @triton.autotune(configs=_configs(), key=["L", "D", "I"])
    @triton.heuristics({"INTERPRET_FIXUPS": lambda args: INTERPRET})
    @triton.jit
    def _token_mix_kernel(
        x_ptr,
        wgu_ptr,  # [2*I, L]: gate rows, then up rows (the module's own layout)
        wd_ptr,  # [L, I]
        out_ptr,
        L,
        D,
        I,
        eps,
        stride_xb,
        stride_xl,
        stride_xd,
        stride_wgu_i,
        stride_wgu_l,
        stride_wd_l,
        stride_wd_i,
        stride_ob,
        stride_ol,
        stride_od,
        BLOCK_L: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_I: tl.constexpr,
        INTERPRET_FIXUPS: tl.constexpr,
    ):
        b = tl.program_id(0)
        offs_l = tl.arange(0, BLOCK_L)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_i = tl.arange(0, BLOCK_I)
        l_ok = offs_l < L
        tile_ok = l_ok[:, None] & (offs_d[None, :] < D)
        dtype = out_ptr.dtype.element_ty

        # Padded positions read as 0 in x and in both weights, so they add nothing and come out as 0.
        x = tl.load(
            x_ptr + b * stride_xb + offs_l[:, None] * stride_xl + offs_d[None, :] * stride_xd, mask=tile_ok, other=0.0
        )
        xd = x.to(tl.float32) if INTERPRET_FIXUPS else x  # the interpreter's bf16 dot multiplies raw bits
        acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        for j in range(0, tl.cdiv(I, BLOCK_I)):
            ii = j * BLOCK_I + offs_i
            i_ok = ii < I
            w_ok = i_ok[:, None] & l_ok[None, :]
            wg = tl.load(wgu_ptr + ii[:, None] * stride_wgu_i + offs_l[None, :] * stride_wgu_l, mask=w_ok, other=0.0)
            wu = tl.load(
                wgu_ptr + (ii[:, None] + I) * stride_wgu_i + offs_l[None, :] * stride_wgu_l, mask=w_ok, other=0.0
            )
            wd = tl.load(
                wd_ptr + offs_l[:, None] * stride_wd_l + ii[None, :] * stride_wd_i,
                mask=l_ok[:, None] & i_ok[None, :],
                other=0.0,
            )
            if INTERPRET_FIXUPS:
                wg, wu, wd = wg.to(tl.float32), wu.to(tl.float32), wd.to(tl.float32)
            g = _round(tl.dot(wg, xd), dtype, INTERPRET_FIXUPS)  # [BLOCK_I, BLOCK_D], as F.linear writes it
            u = _round(tl.dot(wu, xd), dtype, INTERPRET_FIXUPS)
            a = _round(g * tl.sigmoid(g) * u, dtype, INTERPRET_FIXUPS)
            a = a if INTERPRET_FIXUPS else a.to(dtype)
            acc = tl.dot(wd, a, acc)

        s = _round(x.to(tl.float32) + _round(acc, dtype, INTERPRET_FIXUPS), dtype, INTERPRET_FIXUPS)
        inv = 1.0 / tl.sqrt(tl.sum(s * s, axis=0) / L + eps)  # over positions, per channel
        y = s * inv[None, :]
        tl.store(
            out_ptr + b * stride_ob + offs_l[:, None] * stride_ol + offs_d[None, :] * stride_od,
            y.to(dtype),
            mask=tile_ok,
        )


def token_mix_direct(
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, eps: float, config: tuple | None = None
) -> torch.Tensor:
    """rms_norm over positions of x + SwiGLU_over_positions(x), for x [B, L, D]; gate_up [2*I, L] (gate rows
    first) and down [L, I], in x's dtype. Launches the kernel itself (Dynamo traces the launch, as for
    models/fused.py). `config` (BLOCK_D, BLOCK_I, warps, stages) bypasses the autotuner. Forward only: raises
    where autograd would need to track it."""
    if torch.is_grad_enabled() and (x.requires_grad or gate_up.requires_grad or down.requires_grad):
        raise RuntimeError("the fused token-mixing kernel is forward-only; call it under torch.no_grad()")
    B, L, D = x.shape
    I = down.shape[1]
    if gate_up.shape != (2 * I, L) or down.shape != (L, I):
        raise ValueError(
            f"weights must be [2*I, L] and [L, I] for L={L}: got {tuple(gate_up.shape)}, {tuple(down.shape)}"
        )
    if not (x.dtype == gate_up.dtype == down.dtype):
        raise ValueError(f"x and the weights must share a dtype: {x.dtype}, {gate_up.dtype}, {down.dtype}")
    if L > 256:
        raise ValueError(f"the fused token-mixing kernel holds all positions of a tile: L={L} > 256")
    out = torch.empty_like(x)
    if out.numel():
        block_l = max(16, triton.next_power_of_2(L))

        def grid(meta):
            return (B, triton.cdiv(D, meta["BLOCK_D"]))

        args = (x, gate_up, down, out, L, D, I, eps, *x.stride(), *gate_up.stride(), *down.stride(), *out.stride())
        if config is None:
            _token_mix_kernel[grid](*args, BLOCK_L=block_l)
        else:  # .fn: the heuristics+jit function under the autotuner
            d, i, w, s = config
            _token_mix_kernel.fn[grid](*args, BLOCK_L=block_l, BLOCK_D=d, BLOCK_I=i, num_warps=w, num_stages=s)
    return out


def token_mix_reference(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, eps: float) -> torch.Tensor:
    """The unfused math of TRM's mlp_t half-block, in x's layout [B, L, D] (what trm.py computes)."""
    h = x.transpose(1, 2)
    gate, up = torch.nn.functional.linear(h, gate_up).chunk(2, dim=-1)
    s = h + torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, down)
    s32 = s.float()
    return (s32 * torch.rsqrt(s32.square().mean(-1, keepdim=True) + eps)).to(x.dtype).transpose(1, 2)


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> str:
    """'' when the kernel runs here and matches the reference on a small call; otherwise why not."""
    if not HAS_TRITON:
        return "Triton is not installed"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"it needs bf16/fp16 (forward dtype is {str(dtype).removeprefix('torch.')})"
    if not INTERPRET and device.type != "cuda":
        return f"it needs a CUDA GPU (running on {device.type})"
    try:
        # TRM's Sudoku positions (97: a padded tile), a ragged channel count, its hidden width; every config the
        # autotuner may pick, each against the fp32 math (a config that miscompiles must not be chosen later).
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(2, 97, 70, generator=g)
        wgu, wd = torch.randn(1024, 97, generator=g) / 97**0.5, torch.randn(97, 512, generator=g) / 512**0.5
        exact = token_mix_reference(x, wgu, wd, 1e-5)
        x, wgu, wd = (t.to(device, dtype) for t in (x, wgu, wd))
        for config in CONFIGS:
            out = token_mix_direct(x, wgu, wd, 1e-5, config=config).float().cpu()
            if not torch.allclose(out, exact, atol=0.1, rtol=0.05):
                err = (out - exact).abs().max().item()
                return f"the Triton kernel gave wrong results on a test call (config {config}, max error {err:.3g})"
    except Exception as e:  # a Triton/driver mismatch, no compiler, ...
        return f"the Triton kernel failed ({exception_line(e, 120)})"
    return ""
