"""Faithfulness to the original code, against fixtures it produced (tests/fixtures/original/README.md):
same weights and inputs give the same logits, Q values, halting, loss, metrics and gradients; its
checkpoints (with or without `_orig_mod.`) and dataset folders load; our loader yields its batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
from models.attention import select_attention_backend
from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
from models.losses import ACTLossHead
from tests.conftest import run_py
from train.weights import load_checkpoint

FIX = Path(__file__).parent / "fixtures" / "original"
VARIANTS = {"rope": "stablemax_cross_entropy", "learned": "softmax_cross_entropy"}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def build(variant: str, ckpt: str = "step_10") -> tuple[ACTLossHead, dict]:
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    ref = torch.load(FIX / f"model_{variant}.pt", weights_only=True)
    model = ACTLossHead(HierarchicalReasoningModel_ACTV1(ref["model_config"]), VARIANTS[variant])
    load_checkpoint(str(FIX / f"ckpt_{variant}" / ckpt), model, "fixture")
    return model, ref


def check_segment(ours: dict, theirs: dict, where: str) -> None:
    for k in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue"):
        if k in theirs:
            assert rel_err(ours[k], theirs[k]) < 1e-5, (where, k, rel_err(ours[k], theirs[k]))
    for k in ("halted", "steps"):
        assert torch.equal(ours[k], theirs[k]), (where, k)
    assert rel_err(ours["loss"], theirs["loss"]) < 1e-5, where
    for k, v in theirs["metrics"].items():
        assert abs(float(ours["metrics"][k]) - float(v)) <= 1e-5 * max(1.0, abs(float(v))), (where, k)


def run_segment(model: ACTLossHead, carry, batch: dict) -> tuple:
    carry, loss, metrics, preds, _ = model(
        carry=carry, batch=batch, return_keys=["logits", "q_halt_logits", "q_continue_logits", "target_q_continue"]
    )
    return carry, {**preds, "halted": carry.halted, "steps": carry.steps, "loss": loss, "metrics": metrics}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eval_segments_match_original(variant: str) -> None:
    model, ref = build(variant)
    model.eval()
    with torch.no_grad():
        carry = model.initial_carry(ref["batch"])
        for i, theirs in enumerate(ref["eval_segments"]):
            carry, ours = run_segment(model, carry, ref["batch"])
            check_segment(ours, theirs, f"eval segment {i}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_segments_and_gradients_match_original(variant: str) -> None:
    model, ref = build(variant)
    model.train()
    carry = model.initial_carry(ref["train_batches"][0])
    torch.manual_seed(123)  # exploration draws in the same order as the original
    for i, (batch, theirs) in enumerate(zip(ref["train_batches"], ref["train_segments"])):
        carry, ours = run_segment(model, carry, batch)
        check_segment(ours, theirs, f"train segment {i}")
        if i == 0:
            ours["loss"].backward()
            grads = {n: p.grad for n, p in model.named_parameters()}
            for name, g in ref["grads"].items():
                assert rel_err(grads[name], g) < 1e-5, (name, rel_err(grads[name], g))
            local = model.model.puzzle_emb.local_weights.grad  # type: ignore[union-attr]
            assert rel_err(local, ref["puzzle_emb_local_weights_grad"]) < 1e-5
            model.zero_grad(set_to_none=True)


def test_compiled_checkpoint_keys_load_identically() -> None:
    a, _ = build("rope", "step_10")
    b, _ = build("rope", "step_10_compiled")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    raw = torch.load(FIX / "ckpt_rope" / "step_10_compiled", weights_only=True)
    assert all(k.startswith("_orig_mod.") for k in raw)


def _batches(records) -> list[tuple]:
    return [
        (r["set_name"], {k: r[k] for k in ("inputs", "labels", "puzzle_identifiers")}, r["effective_batch_size"])
        for r in records
    ]


def test_loader_reads_original_dataset_folder_and_matches_its_batches() -> None:
    ref = torch.load(FIX / "loader_sudoku_tiny.pt", weights_only=True)
    data = FIX / "sudoku-tiny"
    assert np.load(data / "train" / "all__inputs.npy").dtype == np.int64  # the original's format

    def cfg(test: bool) -> PuzzleDatasetConfig:
        return PuzzleDatasetConfig(
            seed=0,
            dataset_path=str(data),
            global_batch_size=8,
            test_set_mode=test,
            epochs_per_iter=1 if test else 2,
            rank=0,
            num_replicas=1,
        )

    train = PuzzleDataset(cfg(False), "train")
    assert train.metadata.model_dump() == ref["train_metadata"]
    for passes, key in ((0, "train_first"), (1, "train_second_iter")):
        got = list(train)
        want = _batches(ref[key])
        assert len(got) >= len(want), passes
        for (gs, gb, ge), (ws, wb, we) in zip(got, want):
            assert gs == ws and ge == we
            for k in wb:
                assert torch.equal(gb[k], wb[k]), (key, k)

    test = list(PuzzleDataset(cfg(True), "test"))
    for (gs, gb, ge), (ws, wb, we) in zip(test, _batches(ref["test"]), strict=True):
        assert gs == ws and ge == we
        for k in wb:
            assert torch.equal(gb[k], wb[k]), k


def test_seeded_sampler_gives_same_batches() -> None:
    def first_batches(seed: int) -> list[torch.Tensor]:
        cfg = PuzzleDatasetConfig(
            seed=seed,
            dataset_path=str(FIX / "sudoku-tiny"),
            global_batch_size=8,
            test_set_mode=False,
            epochs_per_iter=3,
            rank=0,
            num_replicas=1,
        )
        return [b["inputs"] for _, b, _ in PuzzleDataset(cfg, "train")]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_evaluate_original_checkpoint_on_mismatched_dataset_says_why(tmp_path: Path) -> None:
    r = run_py(
        ["evaluate.py", f"checkpoint={FIX / 'ckpt_rope' / 'step_10'}", f"data_path={FIX / 'sudoku-tiny'}", "device=cpu"]
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "3 puzzle identifiers" in r.stderr and "has 1" in r.stderr
