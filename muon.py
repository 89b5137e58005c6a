"""Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"): SGD with momentum whose update for a weight
matrix is orthogonalized, for the 2-D weights inside the reasoning blocks (`muon=true`, a recipe change; off as in
the paper). Everything else (embeddings, the output and Q heads, biases, the puzzle embedding) keeps its optimizer.

Per matrix W (rows x cols) with gradient G, momentum mu, at each step:

    B   <- lerp(B, G, 1 - mu)                       momentum buffer
    M   <- lerp(G, B, mu)                           Nesterov look-ahead (M = B without nesterov)
    O   <- NS5(M)                                   ~ U V^T of M = U S V^T: every singular value pushed to ~1
    W   <- W * (1 - lr * wd) - lr * sqrt(max(1, rows / cols)) * O

NS5 is five steps of a quintic Newton-Schulz iteration, X <- a X + (b A + c A^2) X with A = X X^T, on X = M / |M|_F
(so every singular value starts at most 1), in bfloat16 on CUDA (float32 elsewhere). Its coefficients
(3.4445, -4.7750, 2.0315) take small singular values up fast and leave all of them in roughly [0.7, 1.2], which
is all the update needs. Matrices of one shape are orthogonalized together, as one batched matmul per product.

`step(skip=flag)` and `uncount_step()` are adam_atan2.SkippableOptimizer's: a True flag, decided on the device,
leaves every weight and buffer exactly as it was, so the trainer's NaN guard needs no host sync.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from adam_atan2 import SkippableOptimizer

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the weights Muon updates, the rest): the 2-D weights of the transformer blocks (HRM's H/L levels, TRM's
    net: attention, MLP and token-mixing projections), by name `...layers.<i>...`. Token embeddings and the heads
    are matrices too, but map to and from a vocabulary rather than between hidden states, and stay with Adam,
    as in Muon's own recipe."""
    inner, rest = [], []
    for name, p in model.named_parameters():
        (inner if p.ndim == 2 and ".layers." in f".{name}" else rest).append(p)
    return inner, rest


@torch.no_grad()
def orthogonalize(m: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """NS5 of a batch of matrices (..., rows, cols): each with its singular values pushed to ~1, same shape."""
    x = m.to(torch.bfloat16 if m.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: A = X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.mT if tall else x).to(m.dtype)


class Muon(SkippableOptimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,  # no default here: the project's one is config's muon_lr (nanoGPT's 0.02 does not train HRM)
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
    ):
        if not 0.0 <= lr:  # lr 0 is valid: the trainer's schedule sets the real value before every step
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon updates matrices only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None, skip: torch.Tensor | None = None):  # type: ignore[override]
        loss = self._begin_step(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[tuple, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)  # steps applied, as AdamATan2 counts; never read by the update
                    state["momentum_buffer"] = torch.zeros_like(p)
                self._count(state)
                by_shape[(p.device, p.dtype, *p.shape)].append(p)

            for (_, _, rows, cols), ps in by_shape.items():
                bufs = [self.state[p]["momentum_buffer"] for p in ps]
                grads = [p.grad for p in ps]
                if skip is not None:  # lerp(B, B, w) == B exactly, and G may hold the NaN that caused the skip
                    grads = [torch.where(skip, b, g) for b, g in zip(bufs, grads)]
                torch._foreach_lerp_(bufs, grads, 1 - mu)
                looks = [g.lerp(b, mu) for g, b in zip(grads, bufs)] if group["nesterov"] else bufs
                update = orthogonalize(torch.stack(looks), group["ns_steps"])
                decay, step_size = 1 - lr * wd, lr * max(1.0, rows / cols) ** 0.5
                if skip is not None:
                    decay, step_size = torch.where(skip, 1.0, decay), torch.where(skip, 0.0, step_size)
                for p, u in zip(ps, update.unbind(0)):
                    p.mul_(decay).sub_(u * step_size)
        return loss
