"""Hierarchical Reasoning Model with Adaptive Computation Time (Wang et al. 2025, arXiv 2506.21734).

Two recurrent transformer stacks: a slow high-level module H (state z_H) and a fast low-level module L
(state z_L). One ACT *segment* runs N = H_cycles high-level updates, each after T = L_cycles low-level ones:

    z_L <- f_L(z_L, z_H + x~)      T times per H step          (x~ = embedded input)
    z_H <- f_H(z_H, z_L)           once per H step

Only the final f_L and f_H calls of a segment carry gradient (the "one-step gradient" approximation of
the fixed point); the rest run under no_grad. Segments repeat with detached state ("deep supervision")
until a Q-head on z_H's first position says halt (Q_halt > Q_continue), or M_max = halt_max_steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from models.act import ACTWrapper
from models.common import InputEmbedding, trunc_normal_init_
from models.layers import Attention, CastedEmbedding, CastedLinear, CosSin, RotaryEmbedding, SwiGLU, rms_norm
from models.sparse_embedding import CastedSparseEmbedding


@dataclass
class HierarchicalReasoningModel_ACTV1InnerCarry:
    z_H: torch.Tensor
    z_L: torch.Tensor


@dataclass
class HierarchicalReasoningModel_ACTV1Carry:
    inner_carry: HierarchicalReasoningModel_ACTV1InnerCarry
    steps: torch.Tensor  # segments run so far, per row
    halted: torch.Tensor  # row finished: the next call replaces it with the next batch's row
    current_data: dict[str, torch.Tensor]  # the batch row each carry row is working on


class HierarchicalReasoningModel_ACTV1Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Ranges: a value outside them fails later as a traceback (a zero-size layer, an eval that never runs a
    # segment) or trains nonsense; pydantic names the key, the value and the range in one line.
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    puzzle_emb_ndim: int = Field(0, ge=0)
    num_puzzle_identifiers: int = Field(gt=0)
    vocab_size: int = Field(gt=0)

    H_cycles: int = Field(ge=1)
    L_cycles: int = Field(ge=1)
    H_layers: int = Field(ge=1)
    L_layers: int = Field(ge=1)

    hidden_size: int = Field(gt=0)
    expansion: float = Field(gt=0, allow_inf_nan=False)
    num_heads: int = Field(gt=0)
    pos_encodings: Literal["rope", "learned"]

    rms_norm_eps: float = Field(1e-5, gt=0, allow_inf_nan=False)
    rope_theta: float = Field(10000.0, gt=0, allow_inf_nan=False)

    halt_max_steps: int = Field(ge=1)
    halt_exploration_prob: float = Field(ge=0, le=1)

    forward_dtype: str = "bfloat16"
    causal: bool = False
    # Recipe change (TRM's option, off by default): halt when Q_halt > 0 and learn no Q_continue, which
    # drops the Q-target forward (24 of a training step's 64 block-forward equivalents).
    no_ACT_continue: bool = False

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> HierarchicalReasoningModel_ACTV1Config:
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest:
            raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")
        if self.pos_encodings == "rope" and head_dim % 2:
            raise ValueError(f"rope needs an even head size; hidden_size / num_heads = {head_dim}")
        return self


class HierarchicalReasoningModel_ACTV1Block(nn.Module):
    """Post-norm transformer block: x = rms(x + attn(x)); x = rms(x + swiglu(x))."""

    def __init__(self, config: HierarchicalReasoningModel_ACTV1Config) -> None:
        super().__init__()
        head_dim = config.hidden_size // config.num_heads
        self.self_attn = Attention(
            config.hidden_size, head_dim, config.num_heads, config.num_heads, causal=config.causal
        )
        self.mlp = SwiGLU(config.hidden_size, config.expansion)
        self.norm_eps = config.rms_norm_eps

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = rms_norm(
            hidden_states + self.self_attn(cos_sin=cos_sin, hidden_states=hidden_states), self.norm_eps
        )
        hidden_states = rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)
        return hidden_states


class HierarchicalReasoningModel_ACTV1ReasoningModule(nn.Module):
    """f_H or f_L: add the injection to the state, then run the stack."""

    def __init__(self, layers: list[HierarchicalReasoningModel_ACTV1Block]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, hidden_states: torch.Tensor, input_injection: torch.Tensor, cos_sin: CosSin | None
    ) -> torch.Tensor:
        hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin=cos_sin, hidden_states=hidden_states)
        return hidden_states


class HierarchicalReasoningModel_ACTV1_Inner(InputEmbedding, nn.Module):
    def __init__(self, config: HierarchicalReasoningModel_ACTV1Config) -> None:
        super().__init__()
        self.config = config
        self.forward_dtype = getattr(torch, config.forward_dtype)

        self.embed_scale = math.sqrt(config.hidden_size)
        embed_init_std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(
            config.vocab_size, config.hidden_size, init_std=embed_init_std, cast_to=self.forward_dtype
        )
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)

        # The puzzle embedding occupies ceil(puzzle_emb_ndim / hidden) positions before the tokens.
        self.puzzle_emb_len = -(config.puzzle_emb_ndim // -config.hidden_size)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers,
                config.puzzle_emb_ndim,
                batch_size=config.batch_size,
                init_std=0,
                cast_to=self.forward_dtype,
            )

        total_len = config.seq_len + self.puzzle_emb_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(config.hidden_size // config.num_heads, total_len, base=config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(
                total_len, config.hidden_size, init_std=embed_init_std, cast_to=self.forward_dtype
            )
        else:
            raise ValueError(f"pos_encodings must be 'rope' or 'learned', got {config.pos_encodings!r}")

        self.H_level = HierarchicalReasoningModel_ACTV1ReasoningModule(
            [HierarchicalReasoningModel_ACTV1Block(config) for _ in range(config.H_layers)]
        )
        self.L_level = HierarchicalReasoningModel_ACTV1ReasoningModule(
            [HierarchicalReasoningModel_ACTV1Block(config) for _ in range(config.L_layers)]
        )

        # z_H^0, z_L^0: fixed random initial states, shared by every row
        self.H_init = nn.Buffer(
            trunc_normal_init_(torch.empty(config.hidden_size, dtype=self.forward_dtype), std=1), persistent=True
        )
        self.L_init = nn.Buffer(
            trunc_normal_init_(torch.empty(config.hidden_size, dtype=self.forward_dtype), std=1), persistent=True
        )

        # Q head starts at "continue" with near-zero gradient noise: weight 0, bias -5.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)  # type: ignore[union-attr]

    def empty_carry(
        self, batch_size: int, device: torch.device | None = None
    ) -> HierarchicalReasoningModel_ACTV1InnerCarry:
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        return HierarchicalReasoningModel_ACTV1InnerCarry(
            z_H=torch.empty(shape, dtype=self.forward_dtype, device=device),
            z_L=torch.empty(shape, dtype=self.forward_dtype, device=device),
        )

    def reset_carry(
        self, reset_flag: torch.Tensor, carry: HierarchicalReasoningModel_ACTV1InnerCarry
    ) -> HierarchicalReasoningModel_ACTV1InnerCarry:
        flag = reset_flag.view(-1, 1, 1)
        return HierarchicalReasoningModel_ACTV1InnerCarry(
            z_H=torch.where(flag, self.H_init, carry.z_H),
            z_L=torch.where(flag, self.L_init, carry.z_L),
        )

    def forward(
        self, carry: HierarchicalReasoningModel_ACTV1InnerCarry, batch: dict[str, torch.Tensor]
    ) -> tuple[HierarchicalReasoningModel_ACTV1InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        cos_sin = self.rotary_emb() if hasattr(self, "rotary_emb") else None
        x = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        H, L = self.config.H_cycles, self.config.L_cycles

        with torch.no_grad():
            z_H, z_L = carry.z_H, carry.z_L
            for h in range(H):
                for l in range(L):
                    if not (h == H - 1 and l == L - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin)
                if h != H - 1:
                    z_H = self.H_level(z_H, z_L, cos_sin)

        # One-step gradient: only the last f_L and f_H see autograd.
        z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin)

        new_carry = HierarchicalReasoningModel_ACTV1InnerCarry(z_H=z_H.detach(), z_L=z_L.detach())
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return new_carry, logits, (q_logits[..., 0], q_logits[..., 1])


class HierarchicalReasoningModel_ACTV1(ACTWrapper):
    """HRM with ACT (models/act.py): keeps a carry of per-row state, swaps in new rows when old ones halt,
    learns when to halt."""

    carry_class = HierarchicalReasoningModel_ACTV1Carry
    compile_region_names = ("H_level", "L_level")  # f_H and f_L, each called every cycle

    def __init__(self, config_dict: dict):
        super().__init__()
        self.config = HierarchicalReasoningModel_ACTV1Config(**config_dict)
        self.inner = HierarchicalReasoningModel_ACTV1_Inner(self.config)
