"""TRM ablation with six latent states (TRM's `trm_hier6`): z is split into z_1..z_6, one per latent step.

Latent step l (l = 1..n, n = L_cycles <= 6) sets z_l <- f(z_1 + ... + z_6 + y + x); the answer update reads
the sum: y <- f(y + z_1 + ... + z_6). Each z_l has its own fixed initial state. Everything else is TRM's
(models/recursive_reasoning/trm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning import trm

TinyRecursiveReasoningModel_ACTV1Config = trm.TinyRecursiveReasoningModel_ACTV1Config
TinyRecursiveReasoningModel_ACTV1Carry = trm.TinyRecursiveReasoningModel_ACTV1Carry
NUM_Z = 6


@dataclass
class TinyRecursiveReasoningModel_ACTV1InnerCarry:
    z_H: torch.Tensor  # y
    z_L1: torch.Tensor  # z_1 .. z_6
    z_L2: torch.Tensor
    z_L3: torch.Tensor
    z_L4: torch.Tensor
    z_L5: torch.Tensor
    z_L6: torch.Tensor


class TinyRecursiveReasoningModel_ACTV1_Inner(trm.TinyRecursiveReasoningModel_ACTV1_Inner):
    carry_class = TinyRecursiveReasoningModel_ACTV1InnerCarry

    @classmethod
    def check_depth(cls, H_cycles: int, L_cycles: int) -> None:
        super().check_depth(H_cycles, L_cycles)
        if L_cycles > NUM_Z:
            raise ValueError(f"trm_hier6 has {NUM_Z} latent states, one per latent step: L_cycles must be <= {NUM_Z}")

    def _init_states(self) -> None:
        self.check_depth(self.config.H_cycles, self.config.L_cycles)
        self.H_init = self._init_state()
        for i in range(1, NUM_Z + 1):
            setattr(self, f"L{i}_init", self._init_state())

    def recursion(
        self, carry: TinyRecursiveReasoningModel_ACTV1InnerCarry, x: torch.Tensor, cos_sin: CosSin | None
    ) -> TinyRecursiveReasoningModel_ACTV1InnerCarry:
        y = carry.z_H
        z = [getattr(carry, f"z_L{i}") for i in range(1, NUM_Z + 1)]
        for step in range(self.L_cycles):
            z[step] = self.L_level(sum(z[1:], z[0]), y + x, cos_sin)  # summed left to right, as TRM
        y = self.L_level(y, sum(z[1:], z[0]), cos_sin)
        return TinyRecursiveReasoningModel_ACTV1InnerCarry(y, *z)


class TinyRecursiveReasoningModel_ACTV1(trm.TinyRecursiveReasoningModel_ACTV1):
    inner_class = TinyRecursiveReasoningModel_ACTV1_Inner
