"""TRM ablation with a single state (TRM's `trm_singlez`, paper Table 1 "single z"): no separate answer y.

Each recursion updates the one state z: n times z <- f(z + x), then z <- f(z) (no input); the heads read z.
Everything else (ACT, gradients through the last recursion, heads, embeddings) is TRM's (models/recursive_reasoning/trm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning import trm

TinyRecursiveReasoningModel_ACTV1Config = trm.TinyRecursiveReasoningModel_ACTV1Config
TinyRecursiveReasoningModel_ACTV1Carry = trm.TinyRecursiveReasoningModel_ACTV1Carry


@dataclass
class TinyRecursiveReasoningModel_ACTV1InnerCarry:
    z_L: torch.Tensor  # z: the only state


class TinyRecursiveReasoningModel_ACTV1_Inner(trm.TinyRecursiveReasoningModel_ACTV1_Inner):
    carry_class = TinyRecursiveReasoningModel_ACTV1InnerCarry

    def _init_states(self) -> None:
        self.L_init = self._init_state()

    def recursion(
        self, carry: TinyRecursiveReasoningModel_ACTV1InnerCarry, x: torch.Tensor, cos_sin: CosSin | None
    ) -> TinyRecursiveReasoningModel_ACTV1InnerCarry:
        z = carry.z_L
        for _ in range(self.L_cycles):
            z = self.L_level(z + x, None, cos_sin)
        return TinyRecursiveReasoningModel_ACTV1InnerCarry(z_L=self.L_level(z, None, cos_sin))

    def answer(self, carry: TinyRecursiveReasoningModel_ACTV1InnerCarry) -> torch.Tensor:
        return carry.z_L


class TinyRecursiveReasoningModel_ACTV1(trm.TinyRecursiveReasoningModel_ACTV1):
    inner_class = TinyRecursiveReasoningModel_ACTV1_Inner
