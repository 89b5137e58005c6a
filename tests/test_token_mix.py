"""TRM's fused token-mixing kernel (models/token_mix.py) against the unfused PyTorch math, and in the model.

On CPU these need Triton's interpreter, set before import (as tests/test_fused.py):

    PYTHONPATH=/path/to/triton-site TRITON_INTERPRET=1 python -m pytest tests/test_token_mix.py

On the GPU machine: `python -m pytest tests/test_token_mix.py` (the `gpu` tests run there only).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (the fused token-mixing kernel needs it)")

from models import layers, token_mix  # noqa: E402
from models.token_mix import token_mix_direct, token_mix_reference  # noqa: E402

CUDA = torch.cuda.is_available()
needs_kernel = pytest.mark.skipif(
    not (token_mix.INTERPRET or CUDA), reason="needs TRITON_INTERPRET=1 (CPU interpreter) or a CUDA GPU"
)
gpu_only = pytest.mark.skipif(not CUDA or token_mix.INTERPRET, reason="needs a CUDA GPU and TRITON_INTERPRET unset")
DEVICE = "cuda" if CUDA and not token_mix.INTERPRET else "cpu"


def operands(b: int, l: int, d: int, inter: int, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, d, generator=g)
    wgu = torch.randn(2 * inter, l, generator=g) / l**0.5
    wd = torch.randn(l, inter, generator=g) / inter**0.5
    return (t.to(DEVICE, dtype) for t in (x, wgu, wd))


def assert_close_to_reference(out: torch.Tensor, x, wgu, wd) -> None:
    """Within GEMM summation-order noise of the same-dtype reference: never further from the fp32 math than
    the reference itself is, plus one ulp of the largest output."""
    ref = token_mix_reference(x, wgu, wd, 1e-5).float()
    exact = token_mix_reference(x.float(), wgu.float(), wd.float(), 1e-5)
    ulp = torch.finfo(x.dtype).eps * exact.abs().max().item()
    assert (out.float() - exact).abs().max().item() <= (ref - exact).abs().max().item() + 2 * ulp
    assert torch.isfinite(out).all()


@needs_kernel
@pytest.mark.parametrize("b,l,d,inter", [(2, 13, 40, 256), (1, 97, 70, 512), (3, 5, 33, 256), (1, 17, 16, 300)])
def test_matches_reference(b: int, l: int, d: int, inter: int) -> None:
    x, wgu, wd = operands(b, l, d, inter)
    assert_close_to_reference(token_mix_direct(x, wgu, wd, 1e-5), x, wgu, wd)


@needs_kernel
def test_fp16_and_any_strides() -> None:
    x, wgu, wd = operands(2, 13, 48, 256, dtype=torch.float16)
    assert_close_to_reference(token_mix_direct(x, wgu, wd, 1e-5), x, wgu, wd)
    # x as a transposed view, weights as views of larger tensors: the kernel reads strides, copies nothing
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    wgu_v = torch.cat([wgu, wgu], dim=1)[:, : wgu.shape[1]]
    wd_v = torch.cat([wd, wd], dim=0)[: wd.shape[0]]
    assert not (xt.is_contiguous() or wgu_v.is_contiguous())
    out = token_mix_direct(xt, wgu_v, wd_v, 1e-5)
    assert torch.equal(out, token_mix_direct(x, wgu, wd, 1e-5))


@needs_kernel
@pytest.mark.parametrize("b,l,d,inter", [(2, 13, 40, 256), (1, 97, 70, 512), (8, 97, 512, 512)])
def test_each_config(b: int, l: int, d: int, inter: int) -> None:
    # TRM's positions (97) with a ragged and a full channel count: where 32-wide tiles went wrong on an H100
    x, wgu, wd = operands(b, l, d, inter)
    for config in token_mix.CONFIGS:
        assert_close_to_reference(token_mix_direct(x, wgu, wd, 1e-5, config=config), x, wgu, wd)


def test_forward_only_and_bad_shapes() -> None:
    x, wgu, wd = operands(1, 5, 16, 256, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="forward-only"):
        token_mix_direct(x.requires_grad_(), wgu, wd, 1e-5)
    x = x.detach()
    with pytest.raises(ValueError, match="must be"):
        token_mix_direct(x, wgu[:, :4], wd, 1e-5)
    with pytest.raises(ValueError, match="share a dtype"):
        token_mix_direct(x.bfloat16(), wgu, wd, 1e-5)


def test_unavailable_reason_names_the_cause() -> None:
    assert "bf16/fp16" in token_mix.unavailable_reason(torch.device(DEVICE), torch.float32)
    if not token_mix.INTERPRET:
        assert "CUDA" in token_mix.unavailable_reason(torch.device("cpu"), torch.bfloat16)


def tiny_trm(mlp_t: bool = True):
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1

    torch.manual_seed(0)
    cfg = dict(
        batch_size=3, seq_len=9, puzzle_emb_ndim=32, num_puzzle_identifiers=4, vocab_size=11, H_cycles=2,
        L_cycles=2, L_layers=2, hidden_size=32, expansion=4, num_heads=2, pos_encodings="none", mlp_t=mlp_t,
        halt_max_steps=3, halt_exploration_prob=0.1, forward_dtype="bfloat16", puzzle_emb_len=4,
    )  # fmt: skip
    return TinyRecursiveReasoningModel_ACTV1(cfg).to(DEVICE)


def segment(model, grad: bool):
    g = torch.Generator().manual_seed(1)
    batch = dict(
        inputs=torch.randint(1, 11, (3, 9), generator=g).to(DEVICE),
        labels=torch.randint(1, 11, (3, 9), generator=g).to(DEVICE),
        puzzle_identifiers=torch.randint(0, 4, (3,), generator=g).to(DEVICE),
    )
    with torch.set_grad_enabled(grad):
        carry = model.initial_carry(batch)
        _, out = model(carry=carry, batch=batch)
    return out["logits"]


@needs_kernel
def test_trm_model_uses_it_without_grad_and_matches_the_plain_path(monkeypatch) -> None:
    model = tiny_trm()
    calls = []
    name, why = layers.select_mlp_kernel("auto", torch.device(DEVICE), torch.bfloat16)
    assert name == "fused" and layers.fused_token_mix() is None  # opt-in: not under auto
    name, why = layers.select_mlp_kernel("fused", torch.device(DEVICE), torch.bfloat16)
    try:
        assert name == "fused" and "mlp_t one Triton kernel" in why
        real = layers.fused_token_mix()
        monkeypatch.setattr(layers, "_token_mix", lambda *a: calls.append(1) or real(*a))
        fused_logits = segment(model, grad=False)
        n_nograd = len(calls)
        segment(model, grad=True)  # with gradient: the last recursion's calls of f need autograd, not the kernel
        # no-grad segment: every f call's 2 blocks; grad segment: only the first H_cycles-1 recursions (no_grad)
        assert n_nograd == 2 * 2 * 3 and len(calls) - n_nograd == 2 * 3
    finally:
        layers.select_mlp_kernel("plain", torch.device(DEVICE), torch.bfloat16)
    assert layers.fused_token_mix() is None
    plain_logits = segment(model, grad=False)
    assert (fused_logits.float() - plain_logits.float()).abs().max() < 0.1 * plain_logits.float().abs().max()
    assert (fused_logits.argmax(-1) == plain_logits.argmax(-1)).float().mean() > 0.9


@gpu_only
@pytest.mark.gpu
def test_gpu_batch_768_shape_compiled() -> None:
    # recipe=trm-sudoku's shape: L = 81 + 16 positions, D = 512, inter 512; through torch.compile as the model runs it
    x, wgu, wd = operands(768, 97, 512, 512)
    fn = torch.compile(token_mix_direct, fullgraph=True)
    with torch.no_grad():
        assert_close_to_reference(fn(x, wgu, wd, 1e-5), x, wgu, wd)
