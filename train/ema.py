"""An exponential moving average of the model's weights (TRM's `ema=true ema_rate=0.999`).

    theta_ema <- mu * theta_ema + (1 - mu) * theta        after every optimizer step, mu = ema_rate

As in TRM, only trainable parameters are averaged: buffers, among them the sparse puzzle-embedding table
(updated by its own sign-SGD), are the live ones. The update is one multi-tensor lerp on the device with
the step's skip flag folded into its weight, so a step skipped for NaNs leaves the average alone and the
host never waits. Evaluation swaps the averaged values into the live parameters in place (no second model;
a compiled model sees the same tensors, so nothing recompiles) and swaps them back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"ema_rate must be in (0, 1), got {rate}")
        self.rate = rate
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, skip: torch.Tensor | None = None) -> None:
        """Move the average towards the live weights; `skip` (a 0-dim bool on the device) makes it a no-op."""
        weight: float | torch.Tensor = 1.0 - self.rate
        if skip is not None:
            weight = torch.where(skip, 0.0, 1.0 - self.rate).to(self.shadow[0].dtype)
        torch._foreach_lerp_(self.shadow, self.params, weight)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the model's parameters hold the averaged weights."""
        live = [p.detach().clone() for p in self.params]
        torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_(self.params, live)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A full state_dict of `model` with the averaged parameters (what evaluate.py loads as weights)."""
        out = dict(model.state_dict())
        for name, t in zip(self.names, self.shadow):
            out[name] = t
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu() for name, t in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.names) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:3]}")
        with torch.no_grad():
            for name, t in zip(self.names, self.shadow):
                t.copy_(state[name])
