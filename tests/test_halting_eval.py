"""Halting-aware evaluation: besides the paper's score after all halt_max_steps segments, each row is scored at
the first segment where its Q-head says halt (what training would have stopped at)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pretrain
from models.losses import IGNORE_LABEL_ID
from tests.conftest import CPU, D, build


def reference(state, loader, halt_max_steps: int, rule) -> dict[str, float]:
    """Segment by segment in plain Python: each row's first halt, and its prediction there."""
    eager = state.model.eager
    sums = dict(count=0.0, exact_accuracy_at_halt=0.0, accuracy_at_halt=0.0, steps_at_halt=0.0)
    with torch.inference_mode():
        for _set, batch, _gbs in loader:
            carry = eager.initial_carry(batch)
            decided: dict[int, tuple[bool, float, int]] = {}
            for i in range(halt_max_steps):
                carry, _, _, out, _ = eager(
                    carry=carry, batch=batch, return_keys=["logits", "q_halt_logits", "q_continue_logits"]
                )
                for r in range(len(batch["labels"])):
                    if r in decided:
                        continue
                    if i == halt_max_steps - 1 or rule(out["q_halt_logits"][r], out["q_continue_logits"][r]):
                        labels = batch["labels"][r]
                        mask = labels != IGNORE_LABEL_ID
                        correct = int((mask & (out["logits"][r].argmax(-1) == labels)).sum())
                        n = int(mask.sum())
                        decided[r] = (correct == n, correct / max(n, 1), i + 1)
            for r, (exact, token, steps) in decided.items():
                if int((batch["labels"][r] != IGNORE_LABEL_ID).sum()) == 0:
                    continue  # padding rows of the last batch
                sums["count"] += 1
                sums["exact_accuracy_at_halt"] += exact
                sums["accuracy_at_halt"] += token
                sums["steps_at_halt"] += steps
    count = sums.pop("count")
    return {k: v / count for k, v in sums.items()}


@pytest.mark.parametrize("no_act_continue", [False, True])
def test_accuracy_at_halt_matches_a_segment_by_segment_reference(tiny_sudoku: Path, no_act_continue: bool) -> None:
    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=4, no_act_continue=no_act_continue)
    got = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    rule = (lambda qh, qc: bool(qh > 0)) if no_act_continue else (lambda qh, qc: bool(qh > qc))
    want = reference(state, loader, 4, rule)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert 1 < got["steps_at_halt"] < 4  # some rows halted early, some ran to the end: the test means something


def test_without_early_halts_the_two_protocols_agree(tiny_sudoku: Path, monkeypatch) -> None:
    """A Q-head that never says halt: at-halt scores are the paper's scores, after all segments."""
    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=3)
    monkeypatch.setattr(state.model.eager.model, "says_halt", lambda qh, qc: torch.zeros_like(qh, dtype=torch.bool))
    m = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    assert m["exact_accuracy_at_halt"] == pytest.approx(m["exact_accuracy"])
    assert m["accuracy_at_halt"] == pytest.approx(m["accuracy"])
    assert m["steps_at_halt"] == pytest.approx(3.0)


def test_halting_at_once_scores_the_first_segment(tiny_sudoku: Path, monkeypatch) -> None:
    """A Q-head that always says halt: at-halt scores equal the same weights evaluated with one segment."""
    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=3)
    monkeypatch.setattr(state.model.eager.model, "says_halt", lambda qh, qc: torch.ones_like(qh, dtype=torch.bool))
    m3 = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    state.model.eager.model.config.halt_max_steps = 1  # only the ACT loop reads it: same weights
    m1 = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    assert m3["steps_at_halt"] == pytest.approx(1.0)
    assert m3["exact_accuracy_at_halt"] == pytest.approx(m1["exact_accuracy"])
    assert m3["accuracy_at_halt"] == pytest.approx(m1["accuracy"])
    assert m3["accuracy"] != pytest.approx(m1["accuracy"])  # more segments changed the paper's score


def test_per_step_scores_equal_shorter_evaluations(tiny_sudoku: Path) -> None:
    """per_step's row i is what the same weights score when evaluation stops after i segments."""
    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=3, no_act_continue=True)
    m = pretrain.evaluate(config, state, loader, meta, D, CPU, per_step=True)["all"]
    assert m["step_3/exact_accuracy"] == pytest.approx(m["exact_accuracy"])
    assert m["step_3/accuracy"] == pytest.approx(m["accuracy"])
    assert m["step_3/halted_by"] == pytest.approx(1.0)  # the last segment stops every row
    halted = [m[f"step_{i}/halted_by"] for i in (1, 2, 3)]
    assert halted == sorted(halted) and halted[0] >= m["step_1/says_halt"] - 1e-9
    # the mean first-halt step follows from the halted-by shares: sum over i of P(not halted before i)
    assert m["steps_at_halt"] == pytest.approx(1 + (1 - halted[0]) + (1 - halted[1]))
    for i in (1, 2):
        state.model.eager.model.config.halt_max_steps = i
        short = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
        assert m[f"step_{i}/exact_accuracy"] == pytest.approx(short["exact_accuracy"])
        assert m[f"step_{i}/accuracy"] == pytest.approx(short["accuracy"])
    assert not any(k.startswith("step_") for k in short)  # off by default: metrics.jsonl keeps its keys
