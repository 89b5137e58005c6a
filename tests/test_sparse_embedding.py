"""Puzzle embedding: stays an optimizable leaf after moving devices/dtypes; sign-SGD touches only batch rows."""

from __future__ import annotations

import torch

from models.sparse_embedding import CastedSparseEmbedding, CastedSparseEmbeddingSignSGD_Distributed


def test_moved_embedding_is_still_optimizable() -> None:
    emb = CastedSparseEmbedding(10, 4, batch_size=3, init_std=0.0, cast_to=torch.float32).double()
    assert emb.local_weights.is_leaf and emb.local_weights.requires_grad and emb.local_weights.dtype == torch.float64
    CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.0)  # raised "non-leaf" before


def test_signsgd_updates_only_used_rows_with_summed_gradient() -> None:
    emb = CastedSparseEmbedding(6, 2, batch_size=4, init_std=1.0, cast_to=torch.float32)
    before = emb.weights.clone()
    opt = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1, weight_decay=0.5)
    ids = torch.tensor([1, 3, 1, 4], dtype=torch.int32)
    out = emb(ids)
    # row 1 appears twice with opposite gradients of unequal size: the sum decides the sign
    (out * torch.tensor([[1.0, -1.0], [2.0, 2.0], [-3.0, 0.5], [0.0, -1.0]])).sum().backward()
    opt.step()
    after = emb.weights
    untouched = [0, 2, 5]
    assert torch.equal(after[untouched], before[untouched])
    decayed = before * (1 - 0.1 * 0.5)
    torch.testing.assert_close(after[1], decayed[1] - 0.1 * torch.sign(torch.tensor([-2.0, -0.5])))
    torch.testing.assert_close(after[3], decayed[3] - 0.1 * torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(after[4], decayed[4] - 0.1 * torch.tensor([0.0, -1.0]))
