"""Adaptive computation time (ACT), the part HRM and TRM share: one segment per call, rows that halt are
replaced by the batch's next rows, and a Q-head learns when to halt.

Per call: rows that halted last time take their new batch row and a fresh inner state; the inner model runs
one segment; the step counter rises. A row halts at M_max = `halt_max_steps` segments (TRM: N_sup), and in
training also when its Q-head says so (`says_halt`), unless exploration (probability epsilon =
`halt_exploration_prob`) demands at least U{2..M_max} segments. Without `no_ACT_continue`, Q_continue learns
the next segment's value from one extra no-grad forward (no replay buffer or target network: the large batch
plays that role, as in PQN). Evaluation always runs M_max segments, so a batch halts together.

A subclass sets `carry_class` (its carry dataclass, fields inner_carry, steps, halted, current_data) and
builds `self.config` (halt_max_steps, halt_exploration_prob, no_ACT_continue) and `self.inner` (empty_carry,
reset_carry, and a forward returning (inner carry, logits, (q_halt_logits, q_continue_logits))), and names in
`compile_region_names` the inner model's repeated reasoning modules (compile_scope=block compiles only those).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from models.losses import correctness
from models.sparse_embedding import CastedSparseEmbedding


class ACTWrapper(nn.Module):
    carry_class: type
    config: Any
    inner: nn.Module
    # Attributes of `inner` that are the reasoning modules the recursion calls over and over (TRM: L_level, 21
    # calls a segment; HRM: H_level and L_level): compile_scope=block compiles only these (train/runtime.py
    # CompileGuard), a small graph each where the whole model's unrolls every call; a class attribute, so the
    # start-up report names them before the model is built
    compile_region_names: tuple[str, ...] = ()
    # The segment limit M_max that training runs under: the config's halt_max_steps, except inside
    # `at_halt_max_steps` (the trainer's segments curriculum, train/curriculum.py). A plain int on the module, so
    # torch.compile guards on it: a new limit is a recompile of the graph that holds the halting, never a stale one.
    segment_limit: int | None = None
    # Training rows also halt as soon as their answer is exact (the trainer's `halt_on_exact`, a recipe change, off
    # as in the paper): the halting a perfect Q-head would do, from the first step, where the Q-head (which learns
    # exactly this target) starts at "continue" and halts nothing until it has learned. Evaluation never uses it.
    halt_when_exact: bool = False

    @property
    def max_segments(self) -> int:
        return self.segment_limit if self.segment_limit is not None else self.config.halt_max_steps

    @contextlib.contextmanager
    def at_halt_max_steps(self, halt_max_steps: int) -> Iterator[None]:
        """Train with rows halting by `halt_max_steps` segments (their Q-head may halt them sooner); the config's
        limit again after it. Evaluation always runs the config's."""
        if halt_max_steps < 1:
            raise ValueError(f"halt_max_steps must be >= 1, got {halt_max_steps}")
        saved, self.segment_limit = self.segment_limit, halt_max_steps
        try:
            yield
        finally:
            self.segment_limit = saved

    def compile_regions(self) -> list[nn.Module]:
        """The modules compile_scope=block compiles in place (see compile_region_names)."""
        return [getattr(self.inner, name) for name in self.compile_region_names]

    @property
    def puzzle_emb(self) -> CastedSparseEmbedding:
        return self.inner.puzzle_emb  # type: ignore[return-value]

    def says_halt(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        """The Q-head's halting decision per row (training halts on it; evaluation reports accuracy there)."""
        if self.config.no_ACT_continue:  # TRM's rule: one logit, halt when it says "probably right"
            return q_halt_logits > 0
        return q_halt_logits > q_continue_logits

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Any:
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        # Every row starts halted, so the first call resets its state and takes the batch's row.
        return self.carry_class(
            inner_carry=self.inner.empty_carry(batch_size, device=device),  # type: ignore[operator]
            steps=torch.zeros(batch_size, dtype=torch.int32, device=device),
            halted=torch.ones(batch_size, dtype=torch.bool, device=device),
            current_data={k: torch.empty_like(v) for k, v in batch.items()},
        )

    def start_segment(self, carry: Any, batch: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor, dict]:
        """(inner carry, steps, current data) as the next segment starts: rows that halted take their new batch row
        and a fresh state."""
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)  # type: ignore[operator]
        steps = torch.where(carry.halted, 0, carry.steps)
        current_data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }
        return inner_carry, steps, current_data

    def perturb(self, carry: Any, batch: dict[str, torch.Tensor], noise: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        """The carry the next segment starts from, with noise(state) added to every latent field of the inner carry
        (HRM: z_H, z_L; TRM: y = z_H, z = z_L): the noisy recursions of evaluate.py's search (train/search.py). Its
        rows are marked running, so the segment keeps the perturbed state instead of resetting it."""
        inner, steps, data = self.start_segment(carry, batch)
        fields = {f.name: getattr(inner, f.name) for f in dataclasses.fields(inner)}
        inner = type(inner)(**{name: (x + noise(x)).to(x.dtype) for name, x in fields.items()})
        return self.carry_class(inner, steps, torch.zeros_like(carry.halted), data)

    def forward(self, carry: Any, batch: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
        inner_carry, steps, current_data = self.start_segment(carry, batch)

        inner_carry, logits, (q_halt_logits, q_continue_logits) = self.inner(inner_carry, current_data)
        outputs = {"logits": logits, "q_halt_logits": q_halt_logits, "q_continue_logits": q_continue_logits}

        with torch.no_grad():
            steps = steps + 1
            limit = self.max_segments
            is_last_step = steps >= limit
            halted = is_last_step

            if self.training and limit > 1:
                halted = halted | self.says_halt(q_halt_logits, q_continue_logits)
                if self.halt_when_exact:
                    halted = halted | answer_is_exact(logits, current_data["labels"])

                # Exploration: with prob. epsilon a row must run at least U{2..M_max} segments.
                explore = torch.rand_like(q_halt_logits) < self.config.halt_exploration_prob
                min_halt_steps = explore * torch.randint_like(steps, low=2, high=limit + 1)
                halted = halted & (steps >= min_halt_steps)

                # Q-learning target for "continue": the next segment's value.
                if not self.config.no_ACT_continue:
                    next_q_halt, next_q_continue = self.inner(inner_carry, current_data)[-1]
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue))
                    )

        return self.carry_class(inner_carry, steps, halted, current_data), outputs


def answer_is_exact(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows whose every labelled token is predicted right (rows with no label: False, nothing to be right about)."""
    _, labelled, exact = correctness(logits, labels)
    return exact & (labelled > 0)
