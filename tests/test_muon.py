"""Muon (muon.py, `muon=true`): its orthogonalized update, the NaN guard's skip, which weights it takes, and a real
run that trains, reports it, resumes bit-identically and refuses a resume with the other optimizer setting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from muon import Muon, muon_parameters, orthogonalize
from tests.conftest import args, assert_identical, final_weights, read_metrics, run_py


@pytest.mark.parametrize("shape", [(192, 64), (64, 256), (3, 32, 96)])
def test_orthogonalize_pushes_every_singular_value_near_one(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    # rectangular (a square Gaussian matrix has singular values near 0, which five Newton-Schulz steps only lift
    # from ~1/500 of the Frobenius norm up, as Muon intends), columns scaled over a factor of 3, tall and wide
    m = torch.randn(shape, generator=g) * torch.logspace(-0.5, 0, shape[-1])
    o = orthogonalize(m)
    assert o.shape == m.shape and o.dtype == m.dtype
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3, (s.min(), s.max())
    # the directions are M's: O ~ U V^T, so <O, M> is M's nuclear norm up to the singular values' spread
    assert torch.allclose((o * m).sum((-2, -1)), torch.linalg.svdvals(m).sum(-1), rtol=0.35)


def _toy(seed: int = 0) -> tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.zeros(16, 32))
    x, target = torch.randn(256, 32, generator=g), torch.randn(32, 16, generator=g)
    return w, x, x @ target


def test_muon_fits_a_linear_map() -> None:
    w, x, y = _toy()
    opt = Muon([w], lr=0.3, momentum=0.9)  # each step moves W by lr in spectral norm; the target's is ~10
    first = last = None
    for _ in range(60):
        loss = ((x @ w.T - y) ** 2).mean()
        first = loss.item() if first is None else first
        last = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert last < 0.01 * first, (first, last)


def test_skipped_step_changes_nothing_even_with_nan_gradients() -> None:
    w, x, y = _toy()
    opt = Muon([w], lr=0.05, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((x @ w.T - y) ** 2).mean().backward()
        opt.step(skip=torch.tensor(False))
    before_w, before_buf = w.detach().clone(), opt.state[w]["momentum_buffer"].clone()
    w.grad = torch.full_like(w, float("nan"))
    opt.step(skip=torch.tensor(True))
    assert torch.equal(w, before_w) and torch.equal(opt.state[w]["momentum_buffer"], before_buf)
    assert opt.state[w]["step"].item() == 4
    opt.uncount_step()
    assert opt.state[w]["step"].item() == 3

    # and a False flag is the plain step, bit for bit
    w2, _, _ = _toy()
    w2.data.copy_(before_w)
    plain = Muon([w2], lr=0.05, weight_decay=0.1)
    plain.state[w2]["momentum_buffer"] = before_buf.clone()
    plain.state[w2]["step"] = torch.tensor(3.0)
    grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    w.grad, w2.grad = grad.clone(), grad.clone()
    opt.step(skip=torch.tensor(False))
    plain.step()
    assert torch.equal(w, w2)


def test_muon_takes_the_blocks_matrices_only() -> None:
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1

    cfg = dict(batch_size=2, seq_len=81, num_puzzle_identifiers=3, vocab_size=11, causal=False, puzzle_emb_ndim=64)
    cfg |= dict(H_cycles=1, L_cycles=1, H_layers=1, L_layers=2, hidden_size=64, expansion=4, num_heads=2)
    cfg |= dict(pos_encodings="rope", halt_max_steps=2, halt_exploration_prob=0.1, forward_dtype="float32")
    model = HierarchicalReasoningModel_ACTV1(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    matrices, rest = muon_parameters(model)
    taken = sorted(names[id(p)] for p in matrices)
    assert len(taken) == 4 * 3  # 3 blocks, each with qkv, o, gate_up and down
    assert all(".layers." in n and n.endswith("_proj.weight") for n in taken)
    kept = {names[id(p)] for p in rest}
    assert {"inner.embed_tokens.embedding_weight", "inner.lm_head.weight", "inner.q_head.weight"} <= kept
    assert len(matrices) + len(rest) == len(list(model.parameters()))


@pytest.mark.slow
def test_run_with_muon_trains_resumes_bit_identically_and_refuses_the_other_setting(
    tiny_sudoku: Path, tmp_path: Path
) -> None:
    ref = tmp_path / "ref"
    r = run_py(args(tiny_sudoku, ref, "muon=true", "muon_lr=0.02"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Muon for the blocks' weight matrices (muon, lr 0.02)" in r.stdout
    rows = read_metrics(ref)
    losses = [m["train/lm_loss"] for m in rows if "train/lm_loss" in m]
    assert losses[-1] < losses[0]
    # each optimizer's rate under its own name, the same schedule: train/lr stays AdamATan2's, as without Muon
    last = [m for m in rows if "train/lr" in m][-1]
    lr = yaml.safe_load((ref / "all_config.yaml").read_text())["lr"]
    assert last["train/lr"] / lr == pytest.approx(last["train/muon_lr"] / 0.02) and last["train/lr"] > 0
    state = torch.load(ref / "step_8.state", weights_only=False)
    assert len(state["optimizers"]) == 3  # puzzle embedding, AdamATan2, Muon
    assert all(
        "momentum_buffer" in s for s in state["optimizers"][2]["state"].values()
    )  # the momentum travels in the checkpoint

    # the same run without Muon ends elsewhere: the option is not silently ignored
    plain = tmp_path / "plain"
    assert run_py(args(tiny_sudoku, plain)).returncode == 0
    key = next(k for k in final_weights(ref) if k.endswith("L_level.layers.0.mlp.down_proj.weight"))
    assert not torch.equal(final_weights(plain)[key], final_weights(ref)[key])

    # resume from the middle (step 8 of 16) of a copy: the same weights as the uninterrupted run
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    r = run_py(args(tiny_sudoku, copy, "muon=true", "muon_lr=0.02", f"resume={copy / 'step_8'}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_identical(final_weights(copy), final_weights(ref))

    # resuming it without muon=true: one line naming the fix, no traceback, nothing written
    other = tmp_path / "other"
    shutil.copytree(ref, other)
    before = sorted(p.name for p in other.iterdir())
    r = run_py(args(tiny_sudoku, other, f"resume={other / 'step_8'}"))
    assert r.returncode != 0
    assert "resume with the muon setting it was trained with" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in other.iterdir()) == before
