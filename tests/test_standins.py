"""The stand-ins we give the original code (bench/standins) compute what the packages they replace compute."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch

from adam_atan2 import AdamATan2
from models.attention import attention, select_attention_backend
from tests.conftest import REPO


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"standin_{name}", REPO / "bench" / "standins" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adam_atan2_standin_matches_ours() -> None:
    standin = load("adam_atan2")
    torch.manual_seed(0)
    a = [torch.randn(7, 5, requires_grad=True), torch.randn(11, requires_grad=True)]
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_a = AdamATan2(a, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    opt_b = standin.AdamATan2(b, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(30):
        g = [torch.randn_like(p) * (0.0 if step == 3 else 1.0) for p in a]  # a zero gradient step included
        for params, opt in ((a, opt_a), (b, opt_b)):
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_flash_attn_standin_matches_our_attention() -> None:
    standin = load("flash_attn")
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    q, k, v = torch.randn(3, 2, 9, 4, 8).unbind(0)  # (B, S, H, D)
    for causal in (False, True):
        torch.testing.assert_close(standin.flash_attn_func(q, k, v, causal=causal), attention(q, k, v, causal))
