"""Losses and the ACT loss head: LM loss per row, Q-halt and Q-continue BCE, and summed metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL_ID = -100
# What an evaluation reads from each segment, sorted: torch.compile guards on the `return_keys` list, so every
# evaluation passing this same list (pretrain.evaluate, utils/tta) reuses one compiled graph
EVAL_KEYS = ["logits", "q_continue_logits", "q_halt_logits"]


def s(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    """Stablemax's positive map: 1/(1-x) for x < 0, x + 1 otherwise (Prieto et al. 2025)."""
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = s(x)
    return torch.log(s_x / torch.sum(s_x, dim=dim, keepdim=True))


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token CE under stablemax, in float64 (as the original); 0 where the label is ignored."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, index=safe_labels.unsqueeze(-1), dim=-1).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token CE under softmax, in float32; 0 where the label is ignored."""
    flat = F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        labels.to(torch.long).reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(labels.shape)  # logits may be a non-contiguous slice: reshape above, never view


LOSS_FUNCTIONS = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def correctness(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens predicted right, labelled tokens per row, rows whose every labelled token is right): the one
    definition of an exact answer, for the metrics and Q-head target here and halt_on_exact (models/act.py). A row
    with no labels counts as right here (0 of 0), as in the original."""
    mask = labels != IGNORE_LABEL_ID
    loss_counts = mask.sum(-1)
    is_correct = mask & (torch.argmax(logits, dim=-1) == labels)
    return is_correct, loss_counts, is_correct.sum(-1) == loss_counts


class ACTLossHead(nn.Module):
    """Wraps an ACT model: runs one segment, returns (carry, loss, metrics, outputs, all_halted).

    loss = sum_rows(CE_row / valid_tokens_row) + 0.5 * (BCE(q_halt, row exactly right) + BCE(q_continue, target)).
    Metrics are sums over halted rows that have labels; the trainer divides them.
    """

    def __init__(self, model: nn.Module, loss_type: str):
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"loss_type must be one of {sorted(LOSS_FUNCTIONS)}, got {loss_type!r}")
        self.model = model
        self.loss_fn = LOSS_FUNCTIONS[loss_type]

    # What the trainer, evaluate.py and predict.py ask of the ACT model (HRM or TRM), so none of them reaches
    # through `.model.inner` attribute chains.
    def initial_carry(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.initial_carry(*args, **kwargs)  # type: ignore[operator]

    def perturb(self, *args: Any, **kwargs: Any) -> Any:
        """The carry with noise on its latent state (models/act.py), for evaluate.py's search."""
        return self.model.perturb(*args, **kwargs)  # type: ignore[operator]

    def compile_regions(self) -> list[nn.Module]:
        """The ACT model's repeated reasoning modules, which compile_scope=block compiles (models/act.py)."""
        return self.model.compile_regions()  # type: ignore[operator]

    @property
    def halt_max_steps(self) -> int:
        """Segments an example runs at most (evaluation runs them all)."""
        return int(self.model.config.halt_max_steps)  # type: ignore[union-attr]

    @property
    def puzzle_emb(self) -> nn.Module | None:
        """The sparse puzzle-embedding table (trained by its own optimizer); None with puzzle_emb_ndim=0."""
        return getattr(self.model, "puzzle_emb", None)

    def says_halt(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        """Where the Q-head says halt, by the model's own rule (looked up per call: tests replace it)."""
        return self.model.says_halt(q_halt_logits, q_continue_logits)  # type: ignore[operator]

    def forward(
        self, return_keys: Sequence[str], **model_kwargs: Any
    ) -> tuple[Any, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        new_carry, outputs = self.model(**model_kwargs)
        labels = new_carry.current_data["labels"]
        logits = outputs["logits"]

        with torch.no_grad():
            is_correct, loss_counts, seq_is_correct = correctness(logits, labels)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)  # rows with no labels: avoid 0/0

            valid = new_carry.halted & (loss_counts > 0)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_is_correct).sum(),
                "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(valid, new_carry.steps, 0).sum(),
            }

        lm_loss = (self.loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID) / loss_divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(
            outputs["q_halt_logits"], seq_is_correct.to(outputs["q_halt_logits"].dtype), reduction="sum"
        )
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()

        q_continue_loss: torch.Tensor | int = 0
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
            )
            metrics["q_continue_loss"] = q_continue_loss.detach()

        detached = {k: outputs[k].detach() for k in return_keys if k in outputs}
        return new_carry, lm_loss + 0.5 * (q_halt_loss + q_continue_loss), metrics, detached, new_carry.halted.all()
