"""AdamATan2 in pure PyTorch: a drop-in for the `adam-atan2` package, which needs a CUDA build that
`pip install` usually fails to produce.

Adam with atan2 in place of division by (sqrt(v) + eps) (Everett et al. 2024, arXiv 2407.05872), as the
HRM original uses it. Per parameter p with gradient g, at step t = 1, 2, ...:

    p   <- p * (1 - lr * wd)                          decoupled weight decay
    m   <- lerp(m, g, 1 - b1)                         first moment
    v   <- lerp(v, g*g, 1 - b2)                       second moment
    p   <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))

`step(skip=flag)` takes a 0-dim bool tensor on the parameters' device: where it is True the step leaves p, m
and v exactly as they were, decided on the device, so the trainer needs no host sync to guard against NaN
(it calls `uncount_step()` once it has read the flag). Where it is False the arithmetic is the same as
without it, bit for bit.

The multi-tensor path does this with a fixed handful of `torch._foreach_*` calls per (device, dtype) group
instead of a Python loop per tensor. PyTorch has no `_foreach_atan2`; since the denominator d is never
negative, atan2(m, d) == atan(m / max(d, tiny)) for d >= 0 (d == 0 gives +-pi/2 or 0, as atan2 does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer


class SkippableOptimizer(Optimizer):
    """The trainer's NaN-guard contract, shared by AdamATan2 and Muon (muon.py): `step(skip=flag)` leaves everything
    as it was where the on-device flag is True, and `uncount_step()` takes back the step counts it raised once the
    trainer has read the flag."""

    def __init__(self, params: Any, defaults: dict[str, Any]):
        super().__init__(params, defaults)
        self._last_stepped: list[dict] = []  # states whose step count the last step() raised

    def _begin_step(self, closure) -> Any:
        self._last_stepped = []
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _count(self, state: dict) -> None:
        state["step"] += 1
        self._last_stepped.append(state)

    def uncount_step(self) -> None:
        """Take back the step count of the last `step(skip=...)`, whose flag turned out True (nothing was applied)."""
        for state in self._last_stepped:
            state["step"] -= 1
        self._last_stepped = []


class AdamATan2(SkippableOptimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-2,
        foreach: bool | None = None,
    ):
        # lr 0 is valid: HRM's schedule sets the real value before every step.
        if not (0.0 <= float(lr)):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None, skip: torch.Tensor | None = None):  # type: ignore[override]
        loss = self._begin_step(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._count(state)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(int(state["step"].item()))  # a CPU tensor: no device sync

            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type != "cpu" for p in params)
            fn = _foreach_update if foreach else _single_update
            fn(params, grads, exp_avgs, exp_avg_sqs, steps, group["lr"], group["betas"], group["weight_decay"], skip)
        return loss


def _factors(lr, weight_decay, b1, t, skip):
    """(decay, step size): the scalars of the update, or on-device tensors that become (1, 0) under `skip`."""
    decay, step_size = 1 - lr * weight_decay, lr / (1 - b1**t)
    if skip is None:
        return decay, step_size
    return torch.where(skip, 1.0, decay), torch.where(skip, 0.0, step_size)


def _single_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, betas, weight_decay, skip=None) -> None:
    b1, b2 = betas
    factors: dict[int, tuple] = {}  # per step count (all tensors share one, usually): not one pair per tensor
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if t not in factors:
            factors[t] = _factors(lr, weight_decay, b1, t, skip)
        decay, step_size = factors[t]
        sq = g * g
        if skip is not None:  # lerp(m, m, w) == m exactly, and g may hold the NaN that caused the skip
            g, sq = torch.where(skip, m, g), torch.where(skip, v, sq)
        p.mul_(decay)
        m.lerp_(g, 1 - b1)
        v.lerp_(sq, 1 - b2)
        denom = v.sqrt() / ((1 - b2**t) ** 0.5)
        p.sub_(torch.atan2(m, denom) * step_size)


def _foreach_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, betas, weight_decay, skip=None) -> None:
    # Tensors that share device, dtype and step count share one set of foreach launches.
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype, steps[i])].append(i)

    b1, b2 = betas
    for (_, dtype, t), idx in buckets.items():
        ps = [params[i] for i in idx]
        gs = [grads[i] for i in idx]
        ms = [exp_avgs[i] for i in idx]
        vs = [exp_avg_sqs[i] for i in idx]

        decay, step_size = _factors(lr, weight_decay, b1, t, skip)
        sq = torch._foreach_mul(gs, gs)
        if skip is not None:  # lerp(m, m, w) == m exactly, and g may hold the NaN that caused the skip
            gs = [torch.where(skip, m, g) for m, g in zip(ms, gs)]
            sq = [torch.where(skip, v, g2) for v, g2 in zip(vs, sq)]
        if weight_decay != 0:
            torch._foreach_mul_(ps, decay)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_lerp_(vs, sq, 1 - b2)

        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, (1 - b2**t) ** 0.5)
        torch._foreach_clamp_min_(denom, torch.finfo(dtype).tiny)
        upd = torch._foreach_div(ms, denom)
        torch._foreach_atan_(upd)
        torch._foreach_mul_(upd, -step_size)
        torch._foreach_add_(ps, upd)
