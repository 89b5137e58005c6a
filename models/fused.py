"""Fused SwiGLU gate/up projection for inference, as one Triton GEMM with a silu*mul epilogue.

    h = silu(x @ Wg^T) * (x @ Wu^T),   Wg = weight[:inter], Wu = weight[inter:]

The unfused path (`SwiGLU.forward` in models/layers.py) runs one GEMM that writes [M, 2*inter] and then a
memory-bound silu*mul pass that reads it back. Here the GEMM's epilogue applies silu*mul in registers and
writes only h ([M, inter], half the bytes, no second pass).

Layout: the kernel takes the weight with gate and up rows interleaved, row 2j = gate row j and row 2j+1 = up
row j (`interleave_gate_up`). Then it is a plain tiled GEMM with one accumulator of [BLOCK_M, 2*BLOCK_N]
whose column pairs (2j, 2j+1) are (gate, up) for output column j: the epilogue splits them with a reshape to
[BLOCK_M, BLOCK_N, 2] and `tl.split`. Hopper's wgmma accumulator layout gives each thread adjacent column
pairs, so the split needs no data movement, and the main loop is exactly a plain GEMM's.

Numerics follow the unfused path: the accumulator is rounded to the output dtype first (F.linear writes bf16),
then silu(g) * u is computed in fp32 and rounded once. That is what torch.compile's fused silu*mul does;
eager PyTorch also rounds silu(g) to bf16 before the multiply, so against eager the result can differ by about
one bf16 ulp (plus GEMM summation-order differences, as between any two GEMM kernels).

API:
  swiglu_gate_up_direct(x, weight, num_sms)  what the model uses (models/layers.py). weight [2*inter, K] in
                                             the original layout (gate rows first): interleaved (a copy),
                                             then the kernel launched from Python. Under torch.compile Dynamo
                                             traces that launch and Inductor runs the kernel from its
                                             generated code; no custom op is needed (through one, a compiled
                                             call cost ~270 us of CPU, this ~70 us: BENCHMARKS.md)
  launch(x2d, weight_il, out2d, config)      the kernel alone on 2-D operands, weight already interleaved
                                             (bench/kernels.py times it so); `config` bypasses the autotuner
  swiglu_gate_up_reference(x, weight)        the unfused PyTorch math, original layout

Forward only: there is no backward. Use it under torch.no_grad() / torch.inference_mode().
Triton is imported guarded so this module imports without it; `unavailable_reason` says when it can run.
For CPU tests run with TRITON_INTERPRET=1 (read when this module is imported, as triton.jit reads it then).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from models.common import exception_line

try:
    import triton
    import triton.language as tl
except ImportError:  # the main training environment has no Triton
    triton = None
    tl = None

HAS_TRITON = triton is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


class KernelConfig(NamedTuple):
    block_m: int  # rows of x per tile
    block_n: int  # output columns per tile; the accumulator is block_m x 2*block_n (gate/up pairs)
    block_k: int
    stages: int
    warps: int
    persistent: bool = False  # one program per SM looping over tiles, instead of one program per tile


# Hopper configs, as fast Triton GEMMs use at short K (512 = 8 steps of 64). Shared memory per stage is
# (block_m + 2*block_n) * block_k * 2 bytes; an H100 block can have 227 KB. The fp32 accumulator takes
# block_m * 2*block_n / (32 * warps) registers per thread: 128 for all but the 128x128/8-warp one (64).
# Compiled offline for sm_90 with Triton 3.9 (shared memory below as allocated there): all use wgmma with
# 16-byte cp.async loads and, for K a multiple of 64, no spills; the epilogue's reshape + split stays in
# registers (the only layout conversion is the usual one staging the store). Persistent kernels keep that
# staging buffer beside the pipeline's, hence their larger footprint.
HOPPER_CONFIGS = [
    KernelConfig(128, 128, 64, 3, 8),  # acc 128x256, 144 KB
    KernelConfig(128, 128, 64, 4, 8),  # acc 128x256, 192 KB
    KernelConfig(256, 64, 64, 3, 8),  # acc 256x128, 144 KB
    KernelConfig(128, 64, 64, 3, 8),  # acc 128x128, 96 KB, 128 regs: two blocks per SM overlap their epilogues
    KernelConfig(128, 64, 64, 4, 4),  # acc 128x128 on one warpgroup, 128 KB
    KernelConfig(64, 128, 64, 4, 4),  # acc 64x256 on one warpgroup, 160 KB
    # Persistent: with only 8 K steps per tile, each tile's pipeline fill and epilogue weigh a lot; the
    # flattened tile x K loop (tl.range(flatten=True)) lets the next tile's loads overlap this tile's epilogue.
    KernelConfig(128, 128, 64, 3, 8, persistent=True),  # 176 KB
    KernelConfig(256, 64, 64, 3, 8, persistent=True),  # 160 KB
]
# The interpreter runs programs one by one in numpy: a single config, so the autotuner never benchmarks there.
# unavailable_reason() also launches INTERPRET_CONFIGS[0] on the GPU, as a quick start-up check.
INTERPRET_CONFIGS = [KernelConfig(64, 64, 64, 1, 4)]
INTERPRET_NUM_SMS = 3  # "SMs" for persistent configs under the interpreter: makes programs loop over tiles
GROUP_M = 8  # tiles ordered in groups of 8 M-blocks so that concurrent programs share x and W tiles in L2


def _config_dict(c: tuple) -> dict:
    """Kernel meta-parameters of a KernelConfig (or a plain tuple in its field order)."""
    c = KernelConfig(*c)
    return dict(
        BLOCK_M=c.block_m,
        BLOCK_N=c.block_n,
        BLOCK_K=c.block_k,
        GROUP_M=GROUP_M,
        PERSISTENT=c.persistent,
        num_stages=c.stages,
        num_warps=c.warps,
    )


def interleave_gate_up(weight: torch.Tensor) -> torch.Tensor:
    """[2*inter, K] with gate rows then up rows -> rows (gate 0, up 0, gate 1, up 1, ...), contiguous."""
    two_inter, K = weight.shape
    return weight.reshape(2, two_inter // 2, K).transpose(0, 1).reshape(two_inter, K)


if HAS_TRITON:

    def _triton_configs() -> list:
        out = []
        for c in INTERPRET_CONFIGS if INTERPRET else HOPPER_CONFIGS:
            d = _config_dict(c)
            stages, warps = d.pop("num_stages"), d.pop("num_warps")
            out.append(triton.Config(d, num_stages=stages, num_warps=warps))
        return out

    @triton.jit
    def _round(x, dtype: tl.constexpr, INTERPRET_FIXUPS: tl.constexpr):
        """fp32 `x` rounded to `dtype` (nearest even) and widened back to fp32."""
        if INTERPRET_FIXUPS and dtype == tl.bfloat16:
            # The CPU interpreter's fp32->bf16 cast truncates; round to nearest even on the bits instead.
            bits = x.to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            return bits.to(tl.float32, bitcast=True)
        else:
            return x.to(dtype).to(tl.float32)

    @triton.jit
    def _tile_coords(tile_id, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        # Grouped ordering: consecutive tile ids walk GROUP_M row-blocks down one column of tiles before
        # moving right, so tiles in flight at the same time reuse the same W and x blocks from L2.
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_in_group = GROUP_M * tl.cdiv(N, BLOCK_N)
        first_pid_m = (tile_id // num_pid_in_group) * GROUP_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
        pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
        pid_n = (tile_id % num_pid_in_group) // group_size_m
        return pid_m, pid_n

    @triton.jit
    def _mainloop(
        x_ptr,
        w_ptr,
        pid_m,
        pid_n,
        M,
        N,
        K,
        stride_xm,
        stride_xk,
        stride_wn,
        stride_wk,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr,
        INTERPRET_FIXUPS: tl.constexpr,
    ):
        """fp32 x[rows] @ w_il[cols]^T for one tile: [BLOCK_M, 2*BLOCK_N], column 2j gate and 2j+1 up."""
        # Rows past the end are wrapped (% M, % 2N) rather than masked for the loads: they read valid memory,
        # keep the loads unmasked, and their results are dropped by the store mask. 2N and 2*BLOCK_N are even,
        # so wrapping never splits a (gate, up) pair.
        offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
        offs_w = (pid_n * (2 * BLOCK_N) + tl.arange(0, 2 * BLOCK_N)) % (2 * N)
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            kk = k * BLOCK_K + offs_k
            x_ptrs = x_ptr + offs_m[:, None] * stride_xm + kk[None, :] * stride_xk
            # W^T tile [BLOCK_K, 2*BLOCK_N]: element (k, n) is w_il[n, k].
            w_ptrs = w_ptr + kk[:, None] * stride_wk + offs_w[None, :] * stride_wn
            if EVEN_K:
                a = tl.load(x_ptrs)
                b = tl.load(w_ptrs)
            else:
                a = tl.load(x_ptrs, mask=kk[None, :] < K, other=0.0)
                b = tl.load(w_ptrs, mask=kk[:, None] < K, other=0.0)
            if INTERPRET_FIXUPS:
                # The interpreter's tl.dot multiplies bf16 operands as raw uint16 bits: widen them (exactly).
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        return acc

    @triton.jit
    def _epilogue(
        acc,
        out_ptr,
        pid_m,
        pid_n,
        M,
        N,
        stride_om,
        stride_on,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        INTERPRET_FIXUPS: tl.constexpr,
    ):
        # Round the GEMM result to the output dtype as the unfused F.linear output is, split the (gate, up)
        # column pairs, then silu(g) * u = g * sigmoid(g) * u in fp32, rounded once by the store.
        out_dtype = out_ptr.dtype.element_ty
        acc = _round(acc, out_dtype, INTERPRET_FIXUPS)
        g, u = tl.split(tl.reshape(acc, (BLOCK_M, BLOCK_N, 2)))
        h = _round(g * tl.sigmoid(g) * u, out_dtype, INTERPRET_FIXUPS)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
        tl.store(out_ptrs, h.to(out_dtype), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    @triton.autotune(configs=_triton_configs(), key=["M", "N", "K"])
    @triton.heuristics(
        {
            "EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0,  # drop the K mask when BLOCK_K divides K
            "INTERPRET_FIXUPS": lambda args: INTERPRET,  # work around interpreter bf16 bugs; False on GPUs
        }
    )
    @triton.jit
    def _swiglu_gate_up_kernel(
        x_ptr,
        w_ptr,  # interleaved: row 2j is gate row j, row 2j+1 is up row j
        out_ptr,
        M,
        N,  # inter: output columns; w has 2N rows
        K,
        stride_xm,
        stride_xk,
        stride_wn,
        stride_wk,
        stride_om,
        stride_on,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        PERSISTENT: tl.constexpr,
        NUM_SMS: tl.constexpr,
        EVEN_K: tl.constexpr,
        INTERPRET_FIXUPS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        if PERSISTENT:
            # Grid of min(NUM_SMS, tiles) programs, each taking every NUM_SMS-th tile. The epilogue's tile
            # coordinates come from their own counter (as in Triton's persistent-matmul tutorial), so that no
            # value is shared between the loads of the flattened loop's next tile and this tile's store.
            num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
            tile_id_c = pid - NUM_SMS
            for tile_id in tl.range(pid, num_tiles, NUM_SMS, flatten=True):
                pid_m, pid_n = _tile_coords(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
                acc = _mainloop(
                    x_ptr, w_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                    BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, INTERPRET_FIXUPS,
                )  # fmt: skip
                tile_id_c += NUM_SMS
                pid_m_c, pid_n_c = _tile_coords(tile_id_c, M, N, BLOCK_M, BLOCK_N, GROUP_M)
                _epilogue(
                    acc, out_ptr, pid_m_c, pid_n_c, M, N, stride_om, stride_on, BLOCK_M, BLOCK_N, INTERPRET_FIXUPS
                )
        else:
            pid_m, pid_n = _tile_coords(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
            acc = _mainloop(
                x_ptr, w_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, INTERPRET_FIXUPS,
            )  # fmt: skip
            _epilogue(acc, out_ptr, pid_m, pid_n, M, N, stride_om, stride_on, BLOCK_M, BLOCK_N, INTERPRET_FIXUPS)


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> str:
    """'' when the kernel runs here and matches the reference on a test call; otherwise why not."""
    if not HAS_TRITON:
        return "Triton is not installed"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"it needs bf16/fp16 (forward dtype is {str(dtype).removeprefix('torch.')})"
    if not INTERPRET:
        if device.type != "cuda":
            return f"it needs a CUDA GPU (running on {device.type})"
        if torch.cuda.get_device_capability(device) < (8, 0):
            return f"it needs compute capability >= 8.0, this GPU is {torch.cuda.get_device_capability(device)}"
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(130, 64, generator=g).to(device, dtype)
        w = (torch.randn(256, 64, generator=g) / 8).to(device, dtype)
        out = torch.empty(130, 128, device=device, dtype=dtype)
        # One config: no autotuning at start-up. The reference takes the original layout, so this also checks
        # the interleaving convention.
        launch(x, interleave_gate_up(w), out, INTERPRET_CONFIGS[0])
        ref = swiglu_gate_up_reference(x, w)
        if not torch.allclose(out.float(), ref.float(), atol=3e-2, rtol=3e-2):
            return "the Triton kernel gave wrong results on a test call"
    except Exception as e:  # a Triton/driver mismatch, no compiler, ...
        return f"the Triton kernel failed ({exception_line(e, 120)})"
    return ""


def _check_args(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.dim() != 2 or weight.shape[0] % 2:
        raise ValueError(f"weight must be [2*inter, K], got {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x [..., K] and weight [2*inter, K] disagree on K: {tuple(x.shape)} vs {tuple(weight.shape)}")
    if x.shape[-1] % 16:
        raise ValueError(f"K (= {x.shape[-1]}) must be a multiple of 16 for the fused SwiGLU kernel")
    if x.dtype != weight.dtype:
        raise ValueError(f"x and weight must have the same dtype (cast the weight first): {x.dtype} vs {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"x and weight are on different devices: {x.device} vs {weight.device}")


@functools.cache
def num_sms(device: torch.device) -> int:
    """The GPU's SM count (the grid of persistent configs); a few "SMs" under the interpreter."""
    if INTERPRET:
        return INTERPRET_NUM_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def _extent(t: torch.Tensor) -> int:
    """1 + the largest element offset a tensor view reaches (its numel when contiguous)."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) if t.numel() else 0


def launch(
    x2d: torch.Tensor,
    weight_il: torch.Tensor,
    out2d: torch.Tensor,
    config: KernelConfig | None = None,
    sms: int | None = None,
) -> None:
    """Run the kernel on x2d [M, K], interleaved weight [2N, K] into out2d [M, N], any strides. Unchecked beyond
    the int32 bound: `swiglu_gate_up_direct` checks its arguments first. `config` bypasses the autotuner, for tests of single configs. `sms`: the SM count
    for persistent configs (default: looked up; pass it where the call is traced by torch.compile). Any N works:
    the kernel masks the last column tile."""
    M, K = x2d.shape
    N = weight_il.shape[0] // 2
    # int32 offsets inside the kernel: keep every index below 2**31 (the shapes we use are far below).
    if max(_extent(x2d), _extent(weight_il), _extent(out2d)) >= 2**31:
        raise ValueError("tensors too large for the kernel's int32 offsets; split the batch")
    if sms is None:
        sms = num_sms(x2d.device)

    def grid(meta):
        tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
        return (min(tiles, sms) if meta["PERSISTENT"] else tiles,)

    args = (x2d, weight_il, out2d, M, N, K, *x2d.stride(), *weight_il.stride(), *out2d.stride())
    if config is None:
        _swiglu_gate_up_kernel[grid](*args, NUM_SMS=sms)
    else:  # .fn: the heuristics+jit function under the autotuner
        _swiglu_gate_up_kernel.fn[grid](*args, NUM_SMS=sms, **_config_dict(config))


def swiglu_gate_up_direct(x: torch.Tensor, weight: torch.Tensor, num_sms: int) -> torch.Tensor:
    """silu(x @ Wg^T) * (x @ Wu^T) for x [..., K] and weight [2*inter, K] (gate rows first, in x's dtype):
    [..., inter]. Launches the Triton kernel itself: under torch.compile, Dynamo traces the launch and Inductor
    compiles, autotunes and launches the kernel from its own generated code (no Python per call). `num_sms`:
    the GPU's SM count (persistent configs' grid). Forward only: raises if autograd would need to track it."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        raise RuntimeError(
            "the fused SwiGLU kernel is forward-only (no backward); call it under torch.no_grad() or torch.inference_mode()"
        )
    _check_args(x, weight)  # the interleaved weight has the same shape
    K, N = x.shape[-1], weight.shape[0] // 2
    out = x.new_empty((*x.shape[:-1], N))
    if out.numel():
        launch(x.reshape(-1, K), interleave_gate_up(weight), out.view(-1, N), sms=num_sms)
    return out


def swiglu_gate_up_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The unfused math of SwiGLU.forward, up to down_proj: one GEMM, chunk, silu(gate) * up in x's dtype."""
    gate, up = F.linear(x, weight).chunk(2, dim=-1)
    return F.silu(gate) * up


def chosen_configs() -> dict[str, str]:
    """The autotuner's choice per key (M, N, K, ...) so far: {key: config}."""
    if not HAS_TRITON:
        return {}
    return {str(k): str(v) for k, v in _swiglu_gate_up_kernel.cache.items()}
