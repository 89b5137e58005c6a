"""Attention backends: SDPA path vs an explicit softmax(QK^T/sqrt(d))V, layouts, and backend selection."""

from __future__ import annotations

import math

import pytest
import torch

from models import attention as attn
from models import layers
from models.attention import attention, select_attention_backend
from models.layers import Attention, apply_rotary_pos_emb


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, S, H, D) reference in float64, no fused kernels."""
    q, k, v = (t.double().permute(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        S = q.shape[-2]
        scores = scores.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).permute(0, 2, 1, 3)


@pytest.fixture(autouse=True)
def sdpa_backend():
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    yield


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 82, 4, 16), (3, 17, 2, 64)])
def test_sdpa_equals_explicit_reference(shape, causal) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    out = attention(q, k, v, causal)
    assert out.shape == shape
    ref = explicit_attention(q, k, v, causal)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-5, rel


def test_non_contiguous_inputs_and_module_output() -> None:
    """q/k/v sliced out of one fused projection (non-contiguous) must give the same result as copies."""
    torch.manual_seed(0)
    attn = Attention(hidden_size=64, head_dim=16, num_heads=4, num_key_value_heads=4)
    x = torch.randn(2, 10, 64)
    out = attn(cos_sin=None, hidden_states=x)
    assert out.shape == (2, 10, 64)

    qkv = attn.qkv_proj(x).view(2, 10, 12, 16)
    q, k, v = qkv[:, :, :4], qkv[:, :, 4:8], qkv[:, :, 8:]
    assert not q.is_contiguous()
    ref = explicit_attention(q.contiguous(), k.contiguous(), v.contiguous(), False).float().reshape(2, 10, 64)
    torch.testing.assert_close(out, attn.o_proj(ref), rtol=1e-5, atol=1e-5)


def test_rope_is_a_rotation_of_pairs() -> None:
    torch.manual_seed(0)
    rope = layers.RotaryEmbedding(dim=8, max_position_embeddings=5, base=10000.0)
    cos, sin = rope()
    q = torch.randn(1, 5, 2, 8)
    q_rot, _ = apply_rotary_pos_emb(q, q, cos, sin)
    # rotation preserves the norm of each (i, i + D/2) pair, and position 0 is unchanged
    pair_norm = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(q_rot), pair_norm(q))
    torch.testing.assert_close(q_rot[:, 0], q[:, 0])


def test_backend_selection_on_cpu() -> None:
    name, why = select_attention_backend("auto", torch.device("cpu"), torch.float32)
    assert name == "sdpa" and "fa3" in why and "fa2" in why
    assert attn.attention_backend() == "sdpa"
    for missing in ("fa3", "fa2"):
        with pytest.raises(ValueError, match=f"attn_backend={missing}"):
            select_attention_backend(missing, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="must be one of"):
        select_attention_backend("flash", torch.device("cpu"), torch.float32)


def test_broken_flash_import_counts_as_absent(monkeypatch) -> None:
    """An import that raises something other than ImportError (e.g. an undefined CUDA symbol) is absent."""

    def broken():
        raise OSError("libflash.so: undefined symbol: _ZN3c10")

    monkeypatch.setitem(attn.LOADERS, "fa2", broken)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (9, 0))
    impl, why = attn.probe("fa2", torch.device("cuda"), torch.bfloat16)
    assert impl is None and "undefined symbol" in why


def test_compile_guard_falls_back_to_eager_once() -> None:
    from train.runtime import CompileGuard

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("BackendCompilerFailed: inductor exploded\nlong trace")

    model = torch.nn.Linear(3, 2)
    logs: list[str] = []
    guard = CompileGuard(model, enabled=False, log=logs.append)
    guard.compiled = Broken()  # stands in for a torch.compile'd module that fails at its first call
    x = torch.randn(4, 3)
    out = guard.run("train", lambda m: m(x))
    torch.testing.assert_close(out, model(x))
    assert (
        len(logs) == 1
        and "torch.compile failed" in logs[0]
        and "inductor exploded" in logs[0]
        and "long trace" not in logs[0]
    )
    assert not guard.is_compiled and guard.active is model
