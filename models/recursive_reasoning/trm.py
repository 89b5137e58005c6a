"""Tiny Recursive Model with ACT (Jolicoeur-Martineau 2025, arXiv 2510.04871), as TRM's code computes it
(SamsungSAILMontreal/TinyRecursiveModels @e7b6871; tested against fixtures it produced, tests/test_trm.py).

One small network f (L_layers post-norm blocks) does every update. In the paper's symbols x is the embedded
input, y = z_H the current answer and z = z_L the latent reasoning state. One ACT segment (a "supervision
step") runs T = H_cycles recursions, each

    z <- f(z + y + x)     n = L_cycles times     (latent recursion)
    y <- f(y + z)         once                   (answer update)

The first T-1 recursions run under no_grad; the last one is backpropagated through all of its n + 1 calls
of f (HRM keeps only the final f_L and f_H call). The LM head reads y, the Q head y's first position.
Segments repeat with detached state (deep supervision) up to N_sup = halt_max_steps; in training a row halts
when Q_halt > 0 (no_ACT_continue, TRM's default) or Q_halt > Q_continue (HRM's rule).

Differences from HRM besides the single network: `puzzle_emb_len` fixes how many positions the puzzle
embedding takes (default 16, zero-padded); `pos_encodings` may be `none`; `mlp_t` replaces attention by a
SwiGLU across the sequence positions (token mixing, MLP-Mixer style).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from models.act import ACTWrapper
from models.common import InputEmbedding, trunc_normal_init_
from models.layers import (
    Attention,
    CastedEmbedding,
    CastedLinear,
    CosSin,
    RotaryEmbedding,
    SwiGLU,
    fused_token_mix,
    rms_norm,
)
from models.sparse_embedding import CastedSparseEmbedding


@dataclass
class TinyRecursiveReasoningModel_ACTV1InnerCarry:
    z_H: torch.Tensor  # y: the current answer
    z_L: torch.Tensor  # z: the latent state


@dataclass
class TinyRecursiveReasoningModel_ACTV1Carry:
    inner_carry: Any  # the inner carry dataclass of the model (this one's, or a variant's)
    steps: torch.Tensor  # segments run so far, per row
    halted: torch.Tensor  # row finished: the next call replaces it with the next batch's row
    current_data: dict[str, torch.Tensor]  # the batch row each carry row is working on


class TinyRecursiveReasoningModel_ACTV1Config(BaseModel):
    """TRM's arch keys with their ranges. Everything TRM's code would accept and then fail on, or silently
    ignore, is refused here as one line (the trainer validates this before any data or run folder is touched)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    puzzle_emb_ndim: int = Field(0, ge=0)
    num_puzzle_identifiers: int = Field(gt=0)
    vocab_size: int = Field(gt=0)

    H_cycles: int = Field(ge=1)  # T: recursions per segment (T-1 without gradient)
    L_cycles: int = Field(ge=1)  # n: latent updates per recursion

    H_layers: int = 0  # HRM's key, kept (as TRM does) so TRM's configs load; must be 0: there is no H network
    L_layers: int = Field(ge=1)  # blocks of the one network f

    hidden_size: int = Field(gt=0)
    expansion: float = Field(gt=0, allow_inf_nan=False)
    num_heads: int = Field(gt=0)
    pos_encodings: Literal["rope", "learned", "none"]

    rms_norm_eps: float = Field(1e-5, gt=0, allow_inf_nan=False)
    rope_theta: float = Field(10000.0, gt=0, allow_inf_nan=False)

    halt_max_steps: int = Field(ge=1)
    halt_exploration_prob: float = Field(ge=0, le=1)

    forward_dtype: str = "bfloat16"
    causal: bool = False  # filled in by the trainer; TRM's attention is never causal

    mlp_t: bool = False  # token-mixing SwiGLU across positions instead of self-attention
    puzzle_emb_len: int = Field(16, ge=0)  # positions of the puzzle embedding; 0: ceil(puzzle_emb_ndim / hidden_size)
    no_ACT_continue: bool = True  # halt on Q_halt > 0 and learn no Q_continue (TRM's default)

    @model_validator(mode="after")
    def _consistent(self) -> TinyRecursiveReasoningModel_ACTV1Config:
        check_config(self)
        return self


def check_config(config: TinyRecursiveReasoningModel_ACTV1Config) -> None:
    """Settings that each pass their own range but not together, as one-line errors."""
    if config.H_layers != 0:
        raise ValueError(
            f"H_layers={config.H_layers} is an HRM setting: TRM has one network of L_layers blocks; "
            "drop arch.H_layers (or set it to 0)"
        )
    if config.mlp_t and config.pos_encodings == "rope":
        raise ValueError(
            "pos_encodings=rope has no effect with mlp_t=true (there is no attention to rotate); "
            "set arch.pos_encodings=none (the same model)"
        )
    if not config.mlp_t:
        head_dim, rest = divmod(config.hidden_size, config.num_heads)
        if rest:
            raise ValueError(f"num_heads={config.num_heads} must divide hidden_size={config.hidden_size}")
        if config.pos_encodings == "rope" and head_dim % 2:
            raise ValueError(f"rope needs an even head size; hidden_size / num_heads = {head_dim}")
    if config.puzzle_emb_ndim == 0 and config.puzzle_emb_len != 0:
        raise ValueError(
            f"puzzle_emb_len={config.puzzle_emb_len} needs a puzzle embedding (puzzle_emb_ndim is 0); set puzzle_emb_len=0"
        )
    if puzzle_emb_positions(config) * config.hidden_size < config.puzzle_emb_ndim:
        raise ValueError(
            f"puzzle_emb_len={config.puzzle_emb_len} positions of {config.hidden_size} cannot hold puzzle_emb_ndim="
            f"{config.puzzle_emb_ndim}; raise puzzle_emb_len or set it to 0 (automatic)"
        )


def puzzle_emb_positions(config: TinyRecursiveReasoningModel_ACTV1Config) -> int:
    return config.puzzle_emb_len or -(config.puzzle_emb_ndim // -config.hidden_size)


class TinyRecursiveReasoningModel_ACTV1Block(nn.Module):
    """Post-norm block: x = rms(x + mix(x)); x = rms(x + swiglu(x)), mix = self-attention or mlp_t."""

    def __init__(self, config: TinyRecursiveReasoningModel_ACTV1Config) -> None:
        super().__init__()
        self.mlp_t_mixing = config.mlp_t
        if config.mlp_t:
            # A SwiGLU whose "hidden size" is the sequence length: it mixes positions, per channel.
            self.mlp_t = SwiGLU(config.seq_len + puzzle_emb_positions(config), config.expansion)
        else:
            head_dim = config.hidden_size // config.num_heads
            self.self_attn = Attention(config.hidden_size, head_dim, config.num_heads, config.num_heads, causal=False)
        self.mlp = SwiGLU(config.hidden_size, config.expansion)
        self.norm_eps = config.rms_norm_eps

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        mix = fused_token_mix()
        if self.mlp_t_mixing and mix is not None and not torch.is_grad_enabled():
            # The same math as below in one kernel, in the (B, L, D) layout (models/token_mix.py).
            dtype = hidden_states.dtype
            w_gu, w_d = self.mlp_t.gate_up_proj.weight.to(dtype), self.mlp_t.down_proj.weight.to(dtype)
            hidden_states = mix(hidden_states, w_gu, w_d, self.norm_eps)
        elif self.mlp_t_mixing:
            # (B, L, D) -> (B, D, L). TRM also takes this RMSNorm in the transposed layout, i.e. over the
            # positions of each channel, not over the channels of each position.
            h = hidden_states.transpose(1, 2)
            hidden_states = rms_norm(h + self.mlp_t(h), self.norm_eps).transpose(1, 2)
        else:
            hidden_states = rms_norm(
                hidden_states + self.self_attn(cos_sin=cos_sin, hidden_states=hidden_states), self.norm_eps
            )
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class TinyRecursiveReasoningModel_ACTV1ReasoningModule(nn.Module):
    """f: add the inputs, then run the blocks."""

    def __init__(self, layers: list[TinyRecursiveReasoningModel_ACTV1Block]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, hidden_states: torch.Tensor, input_injection: torch.Tensor | None, cos_sin: CosSin | None
    ) -> torch.Tensor:
        if input_injection is not None:
            hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin=cos_sin, hidden_states=hidden_states)
        return hidden_states


class TinyRecursiveReasoningModel_ACTV1_Inner(InputEmbedding, nn.Module):
    config_class = TinyRecursiveReasoningModel_ACTV1Config
    carry_class: type = TinyRecursiveReasoningModel_ACTV1InnerCarry

    def __init__(self, config: TinyRecursiveReasoningModel_ACTV1Config) -> None:
        super().__init__()
        self.config = config
        self.forward_dtype = getattr(torch, config.forward_dtype)

        # Modules in TRM's order, so one seed gives TRM's initial weights.
        self.embed_scale = math.sqrt(config.hidden_size)
        embed_init_std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(
            config.vocab_size, config.hidden_size, init_std=embed_init_std, cast_to=self.forward_dtype
        )
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)

        self.puzzle_emb_len = puzzle_emb_positions(config)
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

        self.L_level = TinyRecursiveReasoningModel_ACTV1ReasoningModule(
            [TinyRecursiveReasoningModel_ACTV1Block(config) for _ in range(config.L_layers)]
        )
        # The recursion depth (T, n) the forward runs: the config's, except inside `at_depth` (the trainer's depth
        # curriculum, train/curriculum.py). Plain ints on the module: torch.compile guards on them, so a new depth is a
        # recompile of the graph that holds the loop, never a stale graph.
        self.H_cycles, self.L_cycles = config.H_cycles, config.L_cycles
        self._init_states()

        # Q head starts at "continue" with near-zero gradient noise: weight 0, bias -5.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)  # type: ignore[union-attr]

    @contextlib.contextmanager
    def at_depth(self, H_cycles: int, L_cycles: int) -> Iterator[None]:
        """Run T = H_cycles recursions of n = L_cycles latent updates inside the block (the weights are the same
        at every depth: f is one network); the config's depth again after it."""
        self.check_depth(H_cycles, L_cycles)
        saved = self.H_cycles, self.L_cycles
        self.H_cycles, self.L_cycles = H_cycles, L_cycles
        try:
            yield
        finally:
            self.H_cycles, self.L_cycles = saved

    @classmethod
    def check_depth(cls, H_cycles: int, L_cycles: int) -> None:
        """A depth this model can run, else ValueError (a variant may allow fewer: trm_hier6's n <= 6)."""
        if H_cycles < 1 or L_cycles < 1:
            raise ValueError(
                f"a depth needs H_cycles >= 1 and L_cycles >= 1; got H_cycles={H_cycles} L_cycles={L_cycles}"
            )

    def _init_state(self) -> nn.Buffer:
        """A fixed random initial state (std 1), shared by every row."""
        return nn.Buffer(
            trunc_normal_init_(torch.empty(self.config.hidden_size, dtype=self.forward_dtype), std=1), persistent=True
        )

    def _init_states(self) -> None:
        self.H_init = self._init_state()  # y^0
        self.L_init = self._init_state()  # z^0

    def _initial_state_of(self, field: str) -> torch.Tensor:
        return getattr(self, field.removeprefix("z_") + "_init")

    def empty_carry(self, batch_size: int, device: torch.device | None = None) -> Any:
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        return self.carry_class(
            **{
                f.name: torch.empty(shape, dtype=self.forward_dtype, device=device)
                for f in dataclasses.fields(self.carry_class)
            }
        )

    def reset_carry(self, reset_flag: torch.Tensor, carry: Any) -> Any:
        flag = reset_flag.view(-1, 1, 1)
        # The fields of the instance, not of self.carry_class: this runs inside the compiled step, and Dynamo
        # traces dataclasses.fields() of an object but breaks the graph on that of a class (BENCHMARKS.md).
        return type(carry)(
            **{
                f.name: torch.where(flag, self._initial_state_of(f.name), getattr(carry, f.name))
                for f in dataclasses.fields(carry)
            }
        )

    def recursion(self, carry: Any, x: torch.Tensor, cos_sin: CosSin | None) -> Any:
        """One full recursion: n latent updates z <- f(z + y + x), then the answer update y <- f(y + z)."""
        z_H, z_L = carry.z_H, carry.z_L
        for _ in range(self.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.L_level(z_H, z_L, cos_sin)
        return TinyRecursiveReasoningModel_ACTV1InnerCarry(z_H=z_H, z_L=z_L)

    def answer(self, carry: Any) -> torch.Tensor:
        return carry.z_H

    def forward(
        self, carry: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[Any, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        cos_sin = self.rotary_emb() if hasattr(self, "rotary_emb") else None
        x = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])

        with torch.no_grad():
            for _ in range(self.H_cycles - 1):
                carry = self.recursion(carry, x, cos_sin)
        # The last recursion carries gradient through all of its n + 1 calls of f.
        carry = self.recursion(carry, x, cos_sin)

        y = self.answer(carry)
        new_carry = type(carry)(**{f.name: getattr(carry, f.name).detach() for f in dataclasses.fields(carry)})
        logits = self.lm_head(y)[:, self.puzzle_emb_len :]
        q_logits = self.q_head(y[:, 0]).to(torch.float32)  # first puzzle-embedding position
        return new_carry, logits, (q_logits[..., 0], q_logits[..., 1])


class TinyRecursiveReasoningModel_ACTV1(ACTWrapper):
    """TRM with ACT (models/act.py, shared with HRM): deep supervision over up to N_sup = halt_max_steps
    segments, halting learned by the Q-head (no_ACT_continue by default)."""

    carry_class = TinyRecursiveReasoningModel_ACTV1Carry
    compile_region_names = ("L_level",)  # TRM's one network f, for z and y alike (the variants' too)
    inner_class: type = TinyRecursiveReasoningModel_ACTV1_Inner

    def __init__(self, config_dict: dict):
        super().__init__()
        self.config = self.inner_class.config_class(**config_dict)
        self.inner = self.inner_class(self.config)
