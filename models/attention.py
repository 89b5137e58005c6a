"""Attention with a backend fallback: probed and chosen once per process (select_attention_backend, called by
utils/runtime.setup_runtime), used by every Attention module (models/layers.py).

Backends, tried in order by `attn_backend=auto`:
    fa3   FlashAttention 3 (`flash_attn_interface`, Hopper only)
    fa2   FlashAttention 2 (`flash_attn`, Ampere or newer)
    sdpa  torch.nn.functional.scaled_dot_product_attention (always there; PyTorch picks cuDNN/flash/math)
An import that fails for any reason (missing module, undefined CUDA symbol, wrong GPU) counts as absent.
The model works in (batch, seq, heads, head_dim); FlashAttention takes that layout, SDPA wants
(batch, heads, seq, head_dim): we transpose in and out and always `reshape` (never `view`) the result,
so no path depends on a tensor happening to be contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.common import exception_line

ATTN_BACKENDS = ("auto", "fa3", "fa2", "sdpa")


# ----------------------------------------------------------------------------------------------------------
# Attention backend: chosen once per process (select_attention_backend), used by every Attention module.


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
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


LOADERS: dict[str, Callable[[], Callable]] = {"fa3": _load_fa3, "fa2": _load_fa2}
MIN_CAPABILITY = {"fa3": (9, 0), "fa2": (8, 0)}
_attn_impl: Callable = sdpa
_attn_name = "sdpa"


def probe(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Callable | None, str]:
    """Return (impl, '') if backend `name` works here, else (None, why not)."""
    if device.type != "cuda":
        return None, f"{name} needs a CUDA device (running on {device.type})"
    if dtype not in (torch.float16, torch.bfloat16):
        return None, f"{name} needs fp16/bf16 (forward dtype is {str(dtype).removeprefix('torch.')})"
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY[name]:
        return None, f"{name} needs compute capability >= {MIN_CAPABILITY[name]}, this GPU is {cap}"
    try:
        impl = LOADERS[name]()
        x = torch.randn(1, 8, 2, 64, device=device, dtype=dtype)
        ref = sdpa(x, x, x, False)
        got = impl(x, x, x, False)
        if not torch.allclose(got.float(), ref.float(), atol=2e-2, rtol=2e-2):
            return None, f"{name} imported but gave wrong results on a test call"
    except Exception as e:  # ImportError, OSError (undefined symbol), RuntimeError (no kernel for this GPU)...
        return None, f"{name} unavailable ({exception_line(e, 120)})"
    return impl, ""


def select_attention_backend(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Pick the attention implementation once; return (name, reason) for the start-up report.

    `requested` is auto|fa3|fa2|sdpa. Asking for a backend that does not work here raises ValueError.
    """
    global _attn_impl, _attn_name
    if requested not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend must be one of {', '.join(ATTN_BACKENDS)}, got {requested!r}")

    if requested == "sdpa":
        _attn_impl, _attn_name = sdpa, "sdpa"
        return "sdpa", "requested"
    if requested in LOADERS:
        impl, why = probe(requested, device, dtype)
        if impl is None:
            raise ValueError(f"attn_backend={requested} was requested but {why}; use attn_backend=auto or sdpa")
        _attn_impl, _attn_name = impl, requested
        return requested, "requested"

    reasons = []
    for name in ("fa3", "fa2"):
        impl, why = probe(name, device, dtype)
        if impl is not None:
            _attn_impl, _attn_name = impl, name
            return name, "fastest available" + (f" ({'; '.join(reasons)})" if reasons else "")
        reasons.append(why)
    _attn_impl, _attn_name = sdpa, "sdpa"
    return "sdpa", "; ".join(reasons)


def attention_backend() -> str:
    return _attn_name


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """q, k, v: (B, S, H, D) -> (B, S, H, D) with the selected backend."""
    return _attn_impl(q, k, v, causal)
