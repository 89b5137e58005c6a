"""Micro-benchmark of the SwiGLU gate/up projection: unfused (cuBLAS GEMM + compiled silu*mul) vs fused Triton.

    python bench/kernels.py      # from the repo root, on a CUDA GPU (written for an H100); no arguments

Shapes: x [M, 512] bf16, weight [2*1536, 512] bf16, M = 768*82 (training batch) and 3072*82 (eval batch).
Variants, each timed with CUDA events over 3 windows of 50 iterations after warm-up (the fused kernel's
autotuning happens in its warm-up), the median window reported:
  gemm_only          F.linear alone ([M, 3072] bf16 out): the cuBLAS floor, no activation
  unfused_compiled   F.linear, then torch.compile'd silu(gate) * up (what SwiGLU.forward costs under compile)
  fused_triton       the model's kernel (models.fused.launch): one GEMM over the gate/up-interleaved weight
                     with silu*mul in its epilogue. The weight is interleaved once, outside the timing
                     (the model's swiglu_gate_up_direct does it per call: a [3072, 512] copy)
Prints one JSON line per (shape, variant): ms, TFLOP/s counted as 2*M*K*(2*inter) for every variant, and the
max abs diff against the eager reference (swiglu_gate_up_reference); then the autotuner's choices.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models import fused  # noqa: E402

K, INTER = 512, 1536
SHAPES = {"train": 768 * 82, "eval": 3072 * 82}
WARMUP, ITERS, WINDOWS = 5, 50, 3


@torch.compile(dynamic=False)
def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def fused_interleaved(x: torch.Tensor, w_il: torch.Tensor) -> torch.Tensor:
    """The fused kernel, autotuned, on a weight interleaved beforehand (fused.interleave_gate_up)."""
    out = x.new_empty(x.shape[0], w_il.shape[0] // 2)
    fused.launch(x, w_il, out)
    return out


def time_ms(fn) -> float:
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    windows = []
    for _ in range(WINDOWS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(ITERS):
            fn()
        end.record()
        end.synchronize()
        windows.append(start.elapsed_time(end) / ITERS)
    return statistics.median(windows)


@torch.inference_mode()
def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/kernels.py needs a CUDA GPU")
    why = fused.unavailable_reason(torch.device("cuda"), torch.bfloat16)
    if why:
        sys.exit(f"the fused kernel cannot run here: {why}")
    import triton

    device = torch.cuda.get_device_name()
    print(json.dumps(dict(device=device, torch=torch.__version__, triton=triton.__version__)), flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape, M in SHAPES.items():
        x = torch.randn(M, K, device="cuda", generator=gen).bfloat16()
        # fp32 master weight cast to bf16 at use, as CastedLinear does (std 1/sqrt(K) like its init).
        w = (torch.randn(2 * INTER, K, device="cuda", generator=gen) / K**0.5).bfloat16()
        ref = fused.swiglu_gate_up_reference(x, w)
        w_il = fused.interleave_gate_up(w)
        variants = {
            "gemm_only": lambda x=x, w=w: F.linear(x, w),
            "unfused_compiled": lambda x=x, w=w: silu_mul(F.linear(x, w)),
            "fused_triton": lambda x=x, w_il=w_il: fused_interleaved(x, w_il),
        }
        for name, fn in variants.items():
            ms = time_ms(fn)
            out = fn()
            diff = None if name == "gemm_only" else (out.float() - ref.float()).abs().max().item()
            row = dict(
                shape=shape,
                variant=name,
                M=M,
                K=K,
                inter=INTER,
                ms=round(ms, 4),
                tflops=round(2 * M * K * 2 * INTER / (ms * 1e-3) / 1e12, 1),
                max_abs_diff=diff,
                out_scale=round(ref.float().abs().max().item(), 3),
            )
            print(json.dumps(row), flush=True)
            del out
        del x, w, w_il, ref
        torch.cuda.empty_cache()
    print(json.dumps(dict(autotune_chosen=fused.chosen_configs())), flush=True)


if __name__ == "__main__":
    main()
