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


def test_group_ids_is_unique_in_fixed_size_tensors() -> None:
    from models.sparse_embedding import group_ids

    g = torch.Generator().manual_seed(0)
    for n, hi in ((1, 5), (7, 3), (50, 1000), (64, 1)):
        ids = torch.randint(0, hi, (n,), generator=g, dtype=torch.int32)
        uniq, inverse, valid = group_ids(ids)
        ref_uniq, ref_inv = ids.unique(return_inverse=True)
        k = len(ref_uniq)
        assert torch.equal(uniq[:k], ref_uniq) and torch.equal(inverse, ref_inv)
        assert valid[:k].all() and not valid[k:].any() and (uniq[k:] == ref_uniq[0]).all()


def test_signsgd_skip_leaves_table_unchanged_and_no_skip_is_bitwise_the_plain_step() -> None:
    ids = torch.tensor([5, 1, 5, 2, 1, 1], dtype=torch.int32)
    results = {}
    for skip in (None, torch.tensor(False), torch.tensor(True)):
        torch.manual_seed(0)
        emb = CastedSparseEmbedding(8, 3, batch_size=6, init_std=1.0, cast_to=torch.float32)
        before = emb.weights.clone()
        opt = CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1, weight_decay=0.5)
        (emb(ids) * torch.randn(6, 3, generator=torch.Generator().manual_seed(1))).sum().backward()
        if skip is not None and skip:
            emb.local_weights.grad[0, 0] = float("nan")  # what a skipped step looks like
        opt.step(skip=skip)
        results[None if skip is None else bool(skip)] = (before, emb.weights.clone())
    assert torch.equal(results[None][1], results[False][1])
    assert not torch.equal(results[None][1], results[None][0])
    assert torch.equal(results[True][1], results[True][0])
