"""Per-puzzle embedding table trained by sign-SGD on only the rows a batch touches.

The table (`weights`, one row per puzzle identifier; ARC has ~1M) is a buffer, not a Parameter, so the
dense optimizer never sees it. In training, the rows of the batch are copied into `local_weights`, a
leaf that receives the gradient; the optimizer then gathers (ids, grads) from every rank, sums the
gradient per unique id and applies sign-SGD with decoupled weight decay to those rows alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import Optimizer

from models.common import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(
            trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std), persistent=True
        )
        # Rows used by the current training batch and their ids (not saved).
        self.local_weights = nn.Buffer(torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.local_ids = nn.Buffer(torch.zeros(batch_size, dtype=torch.int32), persistent=False)
        # (ids, grad) of earlier micro-batches of this step (gradient accumulation)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def stash_grad(self) -> None:
        """Keep this micro-batch's rows and gradient: the next micro-batch overwrites the row buffer."""
        if self.local_weights.grad is not None:
            self.pending.append((self.local_ids.clone(), self.local_weights.grad.clone()))
            self.local_weights.grad = None

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # .to()/.cuda() of a grad-requiring buffer returns a non-leaf copy; the optimizer needs a leaf.
        super()._apply(fn, recurse)
        self.local_weights = self.local_weights.detach().requires_grad_(True)
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[ids].to(self.cast_to)
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(self.cast_to)


class CastedSparseEmbeddingSignSGD_Distributed(Optimizer):
    """Sign-SGD for CastedSparseEmbedding. Takes the module's buffers (weights, local_weights, local_ids)."""

    def __init__(
        self,
        params,
        world_size: int,
        lr: float | torch.Tensor = 1e-3,
        weight_decay: float = 1e-2,
        module: CastedSparseEmbedding | None = None,
    ):
        if not 0.0 <= float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, world_size=world_size))
        self.module = module  # for micro-batch gradients stashed on the module (not part of the state dict)

    @torch.no_grad()
    def step(self, closure=None, skip: torch.Tensor | None = None):  # type: ignore[override]
        """`skip`: a 0-dim bool tensor; where True the table is left exactly as it was (see AdamATan2)."""
        for group in self.param_groups:
            grad = ids = table = None
            for p in group["params"]:
                if p.requires_grad:
                    grad = p.grad
                elif p.ndim == 1:
                    ids = p
                elif p.ndim == 2:
                    table = p
            module = self.module
            if module is not None and module.pending:  # micro-batches: all rows of the step at once
                ids = torch.cat([i for i, _ in module.pending])
                grad = torch.cat([g for _, g in module.pending])
                module.pending.clear()
            if grad is None or ids is None or table is None:
                continue  # no training forward since the last step
            sparse_signsgd_step(
                grad,
                ids,
                table,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                world_size=group["world_size"],
                skip=skip,
            )

    def uncount_step(self) -> None:
        pass  # stateless: nothing to take back


def group_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`unique(return_inverse=True)` in fixed-size tensors, so the GPU never waits on the host for a size.

    Returns (uniq, inverse, valid), each of len(ids): uniq[:n] are the n distinct ids in ascending order
    (slots past n repeat uniq[0] and have valid False), and ids == uniq[inverse].
    """
    sorted_ids, order = torch.sort(ids)
    starts = torch.ones_like(sorted_ids, dtype=torch.bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group = torch.cumsum(starts, 0) - 1  # group of each sorted position
    inverse = torch.empty_like(group).scatter_(0, order, group)
    uniq = torch.empty_like(sorted_ids).scatter_(0, group, sorted_ids)  # duplicates write equal values
    valid = torch.arange(len(ids), device=ids.device) <= group[-1]
    return torch.where(valid, uniq, sorted_ids[0]), inverse, valid


# torch 2.13 renamed all_gather_into_tensor to all_gather_single (same call, same result) and made the old name warn
# (FutureWarning on every rank); older torch has only the old name.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def sparse_signsgd_step(
    local_grad: torch.Tensor,
    local_ids: torch.Tensor,
    table: torch.Tensor,
    lr: float,
    weight_decay: float,
    world_size: int,
    skip: torch.Tensor | None = None,
) -> None:
    N, D = local_grad.shape
    all_grad, all_ids = local_grad, local_ids
    if world_size > 1:
        all_grad = torch.empty(world_size * N, D, dtype=local_grad.dtype, device=local_grad.device)
        all_ids = torch.empty(world_size * N, dtype=local_ids.dtype, device=local_ids.device)
        _all_gather_single(all_grad, local_grad)
        _all_gather_single(all_ids, local_ids)

    uniq, inv, valid = group_ids(all_ids)
    summed = torch.zeros(len(uniq), D, dtype=all_grad.dtype, device=all_grad.device)
    summed.scatter_add_(0, inv.unsqueeze(-1).expand(-1, D), all_grad)

    rows = table[uniq]
    new = rows * (1.0 - lr * weight_decay) - lr * torch.sign(summed)
    if skip is not None:
        new = torch.where(skip, rows, new)
    table[uniq] = torch.where(valid.unsqueeze(-1), new, new[:1])  # padding slots rewrite slot 0's row, unchanged
