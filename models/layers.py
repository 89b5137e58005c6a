"""Building blocks of HRM: casted linear/embedding, RoPE, attention with a backend fallback, SwiGLU, RMSNorm.

Attention backends, tried in order by `attn_backend=auto`:
    fa3   FlashAttention 3 (`flash_attn_interface`, Hopper only)
    fa2   FlashAttention 2 (`flash_attn`, Ampere or newer)
    sdpa  torch.nn.functional.scaled_dot_product_attention (always there; PyTorch picks cuDNN/flash/math)
An import that fails for any reason (missing module, undefined CUDA symbol, wrong GPU) counts as absent.
The model works in (batch, seq, heads, head_dim); FlashAttention takes that layout, SDPA wants
(batch, heads, seq, head_dim): we transpose in and out and always `reshape` (never `view`) the result,
so no path depends on a tensor happening to be contiguous.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.common import trunc_normal_init_

CosSin = tuple[torch.Tensor, torch.Tensor]
ATTN_BACKENDS = ("auto", "fa3", "fa2", "sdpa")


# ----------------------------------------------------------------------------------------------------------
# Attention backend: chosen once per process (select_attention_backend), used by every Attention module.


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)  # (B, S, H, D), not contiguous: callers reshape


def _load_fa3() -> Callable:
    from flash_attn_interface import flash_attn_func  # type: ignore[import-not-found]

    def fa3(q, k, v, causal):
        out = flash_attn_func(q, k, v, causal=causal)
        return out[0] if isinstance(out, tuple) else out  # some FA3 releases also return the LSE

    return fa3


def _load_fa2() -> Callable:
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]

    def fa2(q, k, v, causal):
        return flash_attn_func(q, k, v, causal=causal)

    return fa2


_LOADERS: dict[str, Callable[[], Callable]] = {"fa3": _load_fa3, "fa2": _load_fa2}
_MIN_CAPABILITY = {"fa3": (9, 0), "fa2": (8, 0)}
_attn_impl: Callable = _sdpa
_attn_name = "sdpa"


def _probe(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Callable | None, str]:
    """Return (impl, '') if backend `name` works here, else (None, why not)."""
    if device.type != "cuda":
        return None, f"{name} needs a CUDA device (running on {device.type})"
    if dtype not in (torch.float16, torch.bfloat16):
        return None, f"{name} needs fp16/bf16 (forward dtype is {str(dtype).removeprefix('torch.')})"
    cap = torch.cuda.get_device_capability(device)
    if cap < _MIN_CAPABILITY[name]:
        return None, f"{name} needs compute capability >= {_MIN_CAPABILITY[name]}, this GPU is {cap}"
    try:
        impl = _LOADERS[name]()
        x = torch.randn(1, 8, 2, 64, device=device, dtype=dtype)
        ref = _sdpa(x, x, x, False)
        got = impl(x, x, x, False)
        if not torch.allclose(got.float(), ref.float(), atol=2e-2, rtol=2e-2):
            return None, f"{name} imported but gave wrong results on a test call"
    except Exception as e:  # ImportError, OSError (undefined symbol), RuntimeError (no kernel for this GPU)...
        return None, f"{name} unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return impl, ""


def select_attention_backend(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Pick the attention implementation once; return (name, reason) for the start-up report.

    `requested` is auto|fa3|fa2|sdpa. Asking for a backend that does not work here raises ValueError.
    """
    global _attn_impl, _attn_name
    if requested not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend must be one of {', '.join(ATTN_BACKENDS)}, got {requested!r}")

    if requested == "sdpa":
        _attn_impl, _attn_name = _sdpa, "sdpa"
        return "sdpa", "requested"
    if requested in _LOADERS:
        impl, why = _probe(requested, device, dtype)
        if impl is None:
            raise ValueError(f"attn_backend={requested} was requested but {why}; use attn_backend=auto or sdpa")
        _attn_impl, _attn_name = impl, requested
        return requested, "requested"

    reasons = []
    for name in ("fa3", "fa2"):
        impl, why = _probe(name, device, dtype)
        if impl is not None:
            _attn_impl, _attn_name = impl, name
            return name, "fastest available" + (f" ({'; '.join(reasons)})" if reasons else "")
        reasons.append(why)
    _attn_impl, _attn_name = _sdpa, "sdpa"
    return "sdpa", "; ".join(reasons)


def attention_backend() -> str:
    return _attn_name


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """q, k, v: (B, S, H, D) -> (B, S, H, D) with the selected backend."""
    return _attn_impl(q, k, v, causal)


# ----------------------------------------------------------------------------------------------------------
# SwiGLU kernel: `fused` runs gate/up GEMMs and silu*mul as one Triton kernel (models/fused.py) wherever no
# gradient is needed (the no-grad part of each segment, the Q-target forward, evaluation); `plain` is cuBLAS
# plus an elementwise pass. Chosen once per process (select_mlp_kernel), like the attention backend.

MLP_KERNELS = ("auto", "fused", "plain")
_swiglu_gate_up: Callable | None = None


def select_mlp_kernel(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Pick the SwiGLU kernel; return (name, reason). Asking for `fused` where it cannot run raises ValueError."""
    global _swiglu_gate_up
    if requested not in MLP_KERNELS:
        raise ValueError(f"mlp_kernel must be one of {', '.join(MLP_KERNELS)}, got {requested!r}")
    _swiglu_gate_up = None
    if requested == "plain":
        return "plain", "requested"
    from models import fused

    why = fused.unavailable_reason(device, dtype)
    if why:
        if requested == "fused":
            raise ValueError(f"mlp_kernel=fused was requested but {why}; use mlp_kernel=auto or plain")
        return "plain", why
    # The direct launch, not the custom op: under torch.compile Inductor then launches the kernel from its own
    # code. Through the custom op each call cost ~270 us of CPU, which made launch-bound small-batch steps
    # slower than the plain path (BENCHMARKS.md).
    _swiglu_gate_up = functools.partial(fused.swiglu_gate_up_direct, num_sms=fused.num_sms(device))
    return "fused", "requested" if requested == "fused" else "Triton dual GEMM for no-grad forwards"


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
        # positions (e.g. 81 + 16 = 97) is not: that SwiGLU stays plain.
        if _swiglu_gate_up is not None and not torch.is_grad_enabled() and x.shape[-1] % 16 == 0:
            return self.down_proj(_swiglu_gate_up(x, self.gate_up_proj.weight.to(x.dtype)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def rms_norm(x: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """RMSNorm without a weight, computed in fp32."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + variance_epsilon)
    return x.to(dtype)
