"""Test-time augmentation (utils/tta.py, evaluate.py tta=K): the builders' transforms, undone; whole-grid votes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.puzzles.sudoku import is_solution, solve
from utils import tta
from utils.runtime import Dist

PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"


def sudoku_tokens() -> tuple[np.ndarray, np.ndarray]:
    grid = np.array([0 if c == "." else int(c) for c in PUZZLE])
    solution = solve(PUZZLE).solution.reshape(81)
    return grid[None] + 1, solution[None] + 1  # tokens are digit + 1


def test_sudoku_transforms_are_the_builders_and_undo_exactly() -> None:
    x, y = sudoku_tokens()
    tf = tta.make_transforms("sudoku", 16, vocab_size=11, seed=3)
    xs, ys = tf.apply(x), tf.apply(y)
    assert xs.shape == (1, 16, 81)
    assert np.array_equal(xs[0, 0], x[0]) and np.array_equal(ys[0, 0], y[0])  # copy 0 is the puzzle itself
    assert len({r.tobytes() for r in xs[0]}) == 16
    assert is_solution(ys[0] - 1).all()  # every copy's label is still a valid Sudoku...
    assert tta.sudoku_valid(xs[0], ys[0][:, None]).all()  # ...that agrees with that copy's givens
    assert np.array_equal(tf.undo(ys), np.repeat(y[:, None], 16, axis=1))


def test_maze_transforms_are_the_eight_symmetries() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, size=(3, 900))
    tf = tta.make_transforms("maze", 8, vocab_size=6, seed=1)
    xs = tf.apply(x)
    assert np.array_equal(xs[:, 0], x) and len({r.tobytes() for r in xs[0]}) == 8
    from dataset.puzzles.dihedral import dihedral_transform

    want = {dihedral_transform(x[0].reshape(30, 30), t).tobytes() for t in range(8)}
    assert {r.reshape(30, 30).tobytes() for r in xs[0]} == want
    assert np.array_equal(tf.undo(xs), np.repeat(x[:, None], 8, axis=1))
    with pytest.raises(ValueError, match="8 symmetries"):
        tta.make_transforms("maze", 9, vocab_size=6)
    with pytest.raises(ValueError, match="not arc"):
        tta.make_transforms("arc", 2, vocab_size=12)


def test_vote_counts_then_confidence_then_validity_first() -> None:
    a, b, c = np.zeros(4, int), np.ones(4, int), np.full(4, 2)
    grids = np.array([[a, b, b, c], [a, b, a, b], [a, b, b, b]])
    conf = np.array([[0.9, 0.1, 0.2, 0.9], [0.2, 0.9, 0.2, 0.8], [0.9, 0.1, 0.1, 0.1]])
    chosen = tta.vote(grids, conf)
    assert np.array_equal(chosen[0], b)  # two votes beat one confident vote
    assert np.array_equal(chosen[1], b)  # 2:2, the higher mean confidence wins
    valid = np.array([[False] * 4, [False] * 4, [True, False, False, False]])
    assert np.array_equal(tta.vote(grids, conf, valid)[2], a)  # a valid grid beats three invalid votes


def test_evaluate_tta_one_copy_is_the_plain_evaluation_and_voting_fixes_copies(tiny_sudoku: Path, monkeypatch) -> None:
    import pretrain
    from tests.conftest import build

    d, cpu = Dist(rank=0, world_size=1, local_rank=0), torch.device("cpu")
    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)
    plain = pretrain.evaluate(config, state, loader, meta, d, cpu)["all"]
    m = tta.evaluate_tta(state.model, state.model.eager, str(tiny_sudoku), meta, 1, 16, 2, cpu)["all"]
    assert m["exact_accuracy"] == pytest.approx(plain["exact_accuracy"])
    assert m["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-6)
    assert m["tta_exact_accuracy"] == m["exact_accuracy"]

    # A model right on copies 1-3 of every puzzle but wrong on copy 0: the vote recovers every answer.
    from dataset.loader import load_arrays

    arrays = load_arrays(str(tiny_sudoku), "test", meta)["all"]
    tf = tta.make_transforms("sudoku", 4, vocab_size=11)
    answers = tf.apply(np.asarray(arrays["labels"], dtype=np.int64)).reshape(-1, 81)

    def oracle(model, eager, inputs, pids, batch, steps, device):
        out = answers.copy()
        out[::4] = 1  # copy 0: an all-blank grid
        return out, np.full(len(out), 0.5)

    monkeypatch.setattr(tta, "predict", oracle)
    m = tta.evaluate_tta(state.model, state.model.eager, str(tiny_sudoku), meta, 4, 16, 2, cpu)["all"]
    assert m["exact_accuracy"] == 0.0 and m["tta_exact_accuracy"] == 1.0 and m["tta_accuracy"] == 1.0
    # the table from the same predictions: the first j copies. With two, the wrong copy 0 and a right copy 1
    # tie on votes and confidence (the first grid wins) unless valid solutions come first
    assert tta.prefix_sizes(4) == [1, 2, 4] and tta.prefix_sizes(6) == [1, 2, 4, 6] and tta.prefix_sizes(1) == [1]
    assert (m["k1/votes"], m["k1/valid_first"], m["k1/any_copy"]) == (0.0, 0.0, 0.0)
    assert (m["k2/votes"], m["k2/valid_first"], m["k2/any_copy"]) == (0.0, 1.0, 1.0)
    assert (m["k4/votes"], m["k4/valid_first"], m["k4/any_copy"]) == (1.0, 1.0, 1.0)


def test_tta_options_and_arc_are_refused_with_the_fix() -> None:
    import evaluate
    from utils.errors import UserError

    assert evaluate.tta_options({"tta": 8}) == (8, True, 0)
    for bad in ({"tta": 0}, {"tta": "many"}, {"tta": 2, "tta_prefer_valid": "yes"}, {"tta": True}):
        with pytest.raises(UserError, match="tta"):
            evaluate.tta_options(dict(bad))
    config = type("C", (), {"data_path": "data/arc-aug-1000"})()
    with pytest.raises(UserError, match=r"python dataset/score_arc\.py --preds run --data data/arc-aug-1000"):
        evaluate.check_tta_kind("arc", 4, config, "run/step_10")
    with pytest.raises(UserError, match="8 symmetries"):
        evaluate.check_tta_kind("maze", 16, config, "run/step_10")
    evaluate.check_tta_kind("arc", 1, config, "run/step_10")  # tta=1 is the plain evaluation: always fine
