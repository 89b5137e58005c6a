"""`seed=` reaches every source of randomness a run has: two tiny CPU runs with one seed log identical metrics and
weights, and another seed gives other ones (initial weights, the puzzle embedding included, batch order, online
augmentation, ACT exploration; the weight average follows them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import (
    SHORT_RUN,
    WALL_CLOCK_KEYS,
    assert_identical,
    final_weights,
    pretrain_args,
    read_metrics,
    run_py,
)

# exploration on and frequent, online augmentation, the weight average: every stream a run draws from
RUN = [*SHORT_RUN, "arch.halt_exploration_prob=0.5", "augment_online=true", "ema=true"]


def metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in WALL_CLOCK_KEYS} for m in read_metrics(run_dir)]


@pytest.mark.slow
def test_one_seed_gives_one_run_and_another_seed_another(tiny_sudoku: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        r = run_py(pretrain_args(tiny_sudoku, tmp_path / name, RUN, f"seed={seed}"))
        assert r.returncode == 0, r.stderr[-3000:]
    a, b, c = (metrics(tmp_path / n) for n in "abc")
    assert a == b  # every metric of every step and eval, exactly
    assert_identical(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    first = [m for m in a if "train/lm_loss" in m][0]
    other = [m for m in c if "train/lm_loss" in m][0]
    assert first["step"] == other["step"] and first["train/lm_loss"] != other["train/lm_loss"]
    assert len(a) == len(c) and a != c
