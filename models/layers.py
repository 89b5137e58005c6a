"""Building blocks of HRM: casted linear/embedding, RoPE, attention, SwiGLU (with its kernel choice), RMSNorm.

The attention backend (FlashAttention 3/2 or SDPA) is probed and chosen in models/attention.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import attention
from models.common import exception_line, trunc_normal_init_

CosSin = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# SwiGLU kernel: `fused` runs gate/up GEMMs and silu*mul as one Triton kernel (models/fused.py) wherever no
# gradient is needed (the no-grad part of each segment, the Q-target forward, evaluation); `plain` is cuBLAS
# plus an elementwise pass. Chosen once per process (select_mlp_kernel), like the attention backend
# (models/attention.py).

MLP_KERNELS = ("auto", "fused", "plain")
_swiglu_gate_up: Callable | None = None
# TRM's token-mixing half-block (mlp_t) without gradient as one Triton kernel (models/token_mix.py). Only when
# mlp_kernel=fused is asked for, not under auto: on an H100 it gave 1.08x a training step and 1.27x evaluation,
# measured while 32-wide tiles that miscompile there were still among its configs (removed since, BENCHMARKS.md);
# it becomes a default only once re-measured without them.
_token_mix: Callable | None = None


def fused_token_mix() -> Callable | None:
    """models/token_mix.token_mix_direct where the fused kernels were selected and it runs here, else None."""
    return _token_mix


def select_mlp_kernel(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Pick the SwiGLU kernel; return (name, reason). Asking for `fused` where it cannot run raises ValueError."""
    global _swiglu_gate_up, _token_mix
    if requested not in MLP_KERNELS:
        raise ValueError(f"mlp_kernel must be one of {', '.join(MLP_KERNELS)}, got {requested!r}")
    _swiglu_gate_up = _token_mix = None
    if requested == "plain":
        return "plain", "requested"
    from models import fused

    why = fused.unavailable_reason(device, dtype)
    if why:
        if requested == "fused":
            raise ValueError(f"mlp_kernel=fused was requested but {why}; use mlp_kernel=auto or plain")
        return "plain", why
    # Launched directly, not wrapped in a custom op: under torch.compile Dynamo traces the launch and Inductor
    # runs the kernel from its own code. Through a custom op each call cost ~270 us of CPU, which made
    # launch-bound small-batch steps slower than the plain path (BENCHMARKS.md).
    _swiglu_gate_up = functools.partial(fused.swiglu_gate_up_direct, num_sms=fused.num_sms(device))
    if requested != "fused":
        return "fused", "Triton dual GEMM for no-grad forwards"
    from models import token_mix

    why_not_mix = token_mix.unavailable_reason(device, dtype)
    if not why_not_mix:
        _token_mix = token_mix.token_mix_direct
    return "fused", f"requested; TRM's mlp_t {'one Triton kernel' if not why_not_mix else 'unfused: ' + why_not_mix}"


# ----------------------------------------------------------------------------------------------------------
# fp8 for training's no-grad forwards (`nograd_fp8`, a recipe change, off by default). In a training step most
# forwards carry no gradient: all but the last f_L and f_H of each segment, and the Q-target forward. With it on,
# their linear layers run as e4m3 GEMMs (torch._scaled_mm), one scale per row of the activations and one per
# output channel of the weights, quantized from the fp32 master weights at use. Forwards with a gradient stay in
# the forward dtype, and so does evaluation: it runs in eval mode (module.training is False), so a score measures
# the weights, not fp8's rounding. (The training flag, not torch.is_inference_mode_enabled(): Dynamo breaks the
# graph on that call, and guards on the flag.) Chosen once per process (select_nograd_matmul), like the SwiGLU
# kernel above.

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
_nograd_fp8 = False


def select_nograd_matmul(enabled: bool, device: torch.device, dtype: torch.dtype) -> str:
    """Turn fp8 no-grad matmuls on or off for this process; return the report's note ('' when off). Where fp8
    GEMMs cannot run, raise ValueError naming the fix."""
    global _nograd_fp8
    _nograd_fp8 = False
    if not enabled:
        return ""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise ValueError(
                f"nograd_fp8=true needs fp8 GEMMs (compute capability 8.9 or newer: Ada, Hopper, Blackwell); "
                f"{torch.cuda.get_device_name(device)} is {major}.{minor}. Drop nograd_fp8"
            )
        if dtype != torch.bfloat16:
            raise ValueError(
                f"nograd_fp8=true needs the forward dtype bfloat16 on CUDA (row-scaled fp8 GEMMs return "
                f"bfloat16), not {str(dtype).removeprefix('torch.')}. Drop nograd_fp8 or arch.forward_dtype"
            )
    elif device.type != "cpu":
        raise ValueError(f"nograd_fp8=true runs on CUDA (and on CPU, for tests), not on {device.type}. Drop nograd_fp8")
    failure = fp8_gemm_failure(device, dtype)
    if failure:
        raise ValueError(
            f"nograd_fp8=true: an fp8 GEMM fails on this {device.type} with torch {torch.__version__} ({failure}). "
            "Drop nograd_fp8, or use a newer torch"
        )
    _nograd_fp8 = True
    cpu = "; no faster on CPU" if device.type == "cpu" else ""
    return f"training's no-grad GEMMs in fp8 e4m3 (nograd_fp8=true){cpu}"


def fp8_gemm_failure(device: torch.device, dtype: torch.dtype) -> str:
    """'' if one small fp8 GEMM runs on device, else why not: an older torch may lack the row-scaled kernel."""
    try:
        probe = torch.ones(16, 16, device=device)
        fp8_linear(probe.to(dtype), probe, None)
    except Exception as e:  # any failure of the kernel call: named, and the run stops before training
        return exception_line(e, 200)
    return ""


def fp8_applies(x: torch.Tensor, out_features: int, training: bool) -> bool:
    """fp8 for this call: switched on, a training forward (the module in train mode) without gradient, and GEMM
    dimensions that fp8 kernels take (multiples of 16; TRM's mlp_t over 97 positions is not and stays in the
    forward dtype)."""
    k = x.shape[-1]
    return (
        _nograd_fp8
        and training
        and not torch.is_grad_enabled()
        and k % 16 == 0
        and out_features % 16 == 0
        and (x.numel() // k) % 16 == 0
    )


def _to_fp8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t (R, K) as e4m3 with one fp32 scale per row: t ~= q * scale."""
    t = t.float()
    scale = t.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (t / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T (+ bias) as one row-scaled e4m3 GEMM, returned in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    xq, x_scale = _to_fp8_rows(rows)
    wq, w_scale = _to_fp8_rows(weight)
    out = torch._scaled_mm(xq, wq.t(), scale_a=x_scale, scale_b=w_scale.t(), out_dtype=x.dtype)
    if bias is not None:
        out = out + bias.to(x.dtype)
    return out.view(*x.shape[:-1], weight.shape[0])


# ----------------------------------------------------------------------------------------------------------


def _find_multiple(a: int, b: int) -> int:
    return -(a // -b) * b


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE in the half-split layout. q, k: (B, S, H, D); cos, sin: (S, D), fp32. Computed in fp32."""
    dtype = q.dtype
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q_rot = q * cos + rotate_half(q) * sin
    k_rot = k * cos + rotate_half(k) * sin
    return q_rot.to(dtype), k_rot.to(dtype)


class CastedLinear(nn.Module):
    """Linear layer with fp32 master weights cast to the input's dtype at use. LeCun truncated-normal init."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(
            trunc_normal_init_(torch.empty(out_features, in_features), std=1.0 / math.sqrt(in_features))
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fp8_applies(x, self.weight.shape[0], self.training):
            return fp8_linear(x, self.weight, self.bias)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(
            trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std)
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables (not saved in checkpoints)."""

    def __init__(self, dim: int, max_position_embeddings: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(max_position_embeddings, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # half-split layout, matches rotate_half
        self.cos_cached = nn.Buffer(emb.cos(), persistent=False)
        self.sin_cached = nn.Buffer(emb.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


class Attention(nn.Module):
    """Multi-head attention with a fused qkv projection (no bias)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_key_value_heads: int, causal: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.output_size = head_dim * num_heads
        self.causal = causal
        self.qkv_proj = CastedLinear(hidden_size, (num_heads + 2 * num_key_value_heads) * head_dim, bias=False)
        self.o_proj = CastedLinear(self.output_size, hidden_size, bias=False)

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        B, S, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(B, S, self.num_heads + 2 * self.num_key_value_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_key_value_heads, self.num_key_value_heads], dim=2)
        if cos_sin is not None:
            q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        out = attention(q, k, v, self.causal)
        return self.o_proj(out.reshape(B, S, self.output_size))


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = _find_multiple(round(expansion * hidden_size * 2 / 3), 256)
        self.gate_up_proj = CastedLinear(hidden_size, inter * 2, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same math, one kernel (see above); the kernel needs K % 16 == 0, which TRM's mlp_t over the
        # positions (e.g. 81 + 16 = 97) is not: that SwiGLU stays plain. Where fp8 applies, the fp8 GEMMs of
        # the plain path run instead (the fused kernel is bf16 only).
        if (
            _swiglu_gate_up is not None
            and not torch.is_grad_enabled()
            and x.shape[-1] % 16 == 0
            and not fp8_applies(x, self.gate_up_proj.weight.shape[0], self.training)
        ):
            return self.down_proj(_swiglu_gate_up(x, self.gate_up_proj.weight.to(x.dtype)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def rms_norm(x: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """RMSNorm without a weight, computed in fp32."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + variance_epsilon)
    return x.to(dtype)
