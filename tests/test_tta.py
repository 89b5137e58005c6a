"""Test-time augmentation (train/tta.py, evaluate.py tta=K): the builders' transforms (dataset/transforms.py), undone; whole-grid votes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import transforms
from dataset.puzzles.sudoku import is_solution, solve
from tests.conftest import launch_config
from train import tta
from train.runtime import Dist

PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"


def sudoku_tokens() -> tuple[np.ndarray, np.ndarray]:
    grid = np.array([0 if c == "." else int(c) for c in PUZZLE])
    solution = solve(PUZZLE).solution.reshape(81)
    return grid[None] + 1, solution[None] + 1  # tokens are digit + 1


def test_sudoku_transforms_are_the_builders_and_undo_exactly() -> None:
    x, y = sudoku_tokens()
    tf = transforms.make_transforms("sudoku", 16, vocab_size=11, seed=3)
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
    tf = transforms.make_transforms("maze", 8, vocab_size=6, seed=1)
    xs = tf.apply(x)
    assert np.array_equal(xs[:, 0], x) and len({r.tobytes() for r in xs[0]}) == 8
    from dataset.puzzles.dihedral import dihedral_transform

    want = {dihedral_transform(x[0].reshape(30, 30), t).tobytes() for t in range(8)}
    assert {r.reshape(30, 30).tobytes() for r in xs[0]} == want
    assert np.array_equal(tf.undo(xs), np.repeat(x[:, None], 8, axis=1))
    with pytest.raises(ValueError, match="8 symmetries"):
        transforms.make_transforms("maze", 9, vocab_size=6)
    with pytest.raises(ValueError, match="not arc"):
        transforms.make_transforms("arc", 2, vocab_size=12)


def test_vote_counts_then_confidence_then_validity_first() -> None:
    a, b, c = np.zeros(4, int), np.ones(4, int), np.full(4, 2)
    grids = np.array([[a, b, b, c], [a, b, a, b], [a, b, b, b]])
    conf = np.array([[0.9, 0.1, 0.2, 0.9], [0.2, 0.9, 0.2, 0.8], [0.9, 0.1, 0.1, 0.1]])
    chosen = tta.vote(grids, conf)
    assert np.array_equal(chosen[0], b)  # two votes beat one confident vote
    assert np.array_equal(chosen[1], b)  # 2:2, the higher mean confidence wins
    valid = np.array([[False] * 4, [False] * 4, [True, False, False, False]])
    assert np.array_equal(tta.vote(grids, conf, valid)[2], a)  # a valid grid beats three invalid votes


@pytest.mark.slow
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
    tf = transforms.make_transforms("sudoku", 4, vocab_size=11)
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
    vote = "python dataset/score_arc.py --preds run --data data/arc-aug-1000"
    with pytest.raises(UserError, match=r"tta is for Sudoku and Maze, drop tta=4; .*score_arc\.py --preds run"):
        tta.check_tta_kind("arc", 4, "tta", vote)
    with pytest.raises(UserError, match="8 symmetries: tta must be <= 8"):
        tta.check_tta_kind("maze", 16, "tta", vote)
    tta.check_tta_kind("arc", 1, "tta", vote)  # tta=1 is the plain evaluation: always fine


def test_evaluate_tta_rows_are_the_puzzles_eval_batches_scores(tiny_sudoku: Path) -> None:
    import pretrain
    from tests.conftest import CPU, D, build

    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)  # 32 test puzzles, batches of 16
    full = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    first = pretrain.evaluate(config.model_copy(update={"eval_batches": 1}), state, loader, meta, D, CPU)["all"]
    m = tta.evaluate_tta(state.model, state.model.eager, str(tiny_sudoku), meta, 1, 16, 2, CPU, rows=16)["all"]
    assert m["accuracy"] == pytest.approx(first["accuracy"], abs=1e-6)
    assert m["accuracy"] != pytest.approx(full["accuracy"], abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# In training: eval_tta=K (train/loop.py)


def _train(data: Path, run_dir: Path, *extra: str):
    from tests.conftest import SHORT_RUN, pretrain_args, run_py

    r = run_py(pretrain_args(data, run_dir, [*SHORT_RUN, "seed=2"], *extra))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def eval_rows(rows: list[dict]) -> list[dict]:
    """Each eval's metrics row with its vote merged in: the vote runs after the eval's checkpoint and is logged in
    a row of its own at the same step (its time is not the eval's)."""
    out: list[dict] = []
    for m in rows:
        if "all/accuracy" in m:
            out.append(dict(m))
        elif out and m["step"] == out[-1]["step"] and any("tta" in k for k in m):
            out[-1] |= {k: v for k, v in m.items() if "tta" in k}
    return out


def _tta_keys(row: dict) -> set[str]:
    return {k for k in row if "tta" in k}


@pytest.mark.slow
def test_training_votes_at_the_last_eval_with_the_weights_of_the_headline(tiny_sudoku: Path, tmp_path: Path) -> None:
    from tests.conftest import read_metrics, run_py

    run = tmp_path / "run"
    r = _train(tiny_sudoku, run, "eval_tta=3", "ema=true", "ema_rate=0.9")
    evals = eval_rows(read_metrics(run))
    assert [m["step"] for m in evals] == [8, 16]
    assert _tta_keys(evals[0]) == set()  # eval_tta_every=false: the last eval only
    rules = ("votes", "valid_first", "any_copy")
    want = {"all/tta_exact_accuracy", "all/tta_accuracy"} | {f"all/tta/k{j}/{k}" for j in (1, 2, 3) for k in rules}
    last = evals[-1]
    assert _tta_keys(last) == want  # the average's only: none for raw/
    assert last["all/tta/k1/votes"] == pytest.approx(last["all/exact_accuracy"])  # copy 0 is the eval itself
    assert last["all/tta/k1/any_copy"] == pytest.approx(last["all/exact_accuracy"])
    shown = next(line for line in r.stdout.splitlines() if line.startswith("eval all/") and "tta" in line)
    assert "all/tta_exact_accuracy=" in shown and "/tta/k" not in shown  # the k<j> table is logged, not printed
    line = next(line for line in r.stdout.splitlines() if "TTA all" in line)
    assert line.startswith("  EMA TTA all (3 copies, most votes, valid solutions first): exact ")
    assert "; by copies 1/2/3: " in line and "; took " in line
    assert " ACT steps each; 3 voted copies of each at the last eval (eval_tta)" in r.stdout  # the start-up plan

    # evaluate.py tta=3 on the checkpoint: the same copies of the same weights (the average) give the same vote;
    # the raw weights another. Token accuracy: this tiny model solves no puzzle whole.
    def voted(*extra: str) -> tuple[float, float]:
        out = run_py(["evaluate.py", f"checkpoint={run / 'step_16'}", "tta=3", "save_outputs=[]", *extra])
        assert out.returncode == 0, out.stderr
        scores = out.stdout.split("all: tta_exact_accuracy=")[1]
        return float(scores.split(",")[0]), float(scores.split("tta_accuracy=")[1].split()[0])

    exact, token = voted()
    assert (exact, token) == (
        pytest.approx(last["all/tta_exact_accuracy"], abs=1e-4),
        pytest.approx(last["all/tta_accuracy"], abs=1e-4),
    )
    assert voted("ema=false")[1] != pytest.approx(last["all/tta_accuracy"], abs=1e-4)


@pytest.mark.slow
def test_training_votes_at_every_eval_when_asked(tiny_sudoku: Path, tmp_path: Path) -> None:
    from tests.conftest import read_metrics

    run = tmp_path / "run"
    _train(tiny_sudoku, run, "eval_tta=2", "eval_tta_every=true")
    evals = eval_rows(read_metrics(run))
    assert len(evals) == 2
    for m in evals:
        assert {"all/tta_exact_accuracy", "all/tta/k2/valid_first"} <= _tta_keys(m)
        assert m["all/tta/k1/votes"] == pytest.approx(m["all/exact_accuracy"])


@pytest.mark.slow
def test_training_with_several_processes_skips_it_and_says_how_to_vote(tiny_sudoku: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO, SHORT_RUN, pretrain_args, py_env, read_metrics, scratch_dir

    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541"]
    args = pretrain_args(tiny_sudoku, run, [*SHORT_RUN, "seed=2"], "epochs=4", "eval_interval=4", "eval_tta=2")
    r = subprocess.run(torchrun + args, cwd=scratch_dir(), env=py_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "note: eval_tta=2 is skipped with 2 processes" in r.stdout
    assert f"after training: python {REPO / 'evaluate.py'} checkpoint={run / 'step_8'} tta=2" in r.stdout
    evals = eval_rows(read_metrics(run))
    assert len(evals) == 1 and _tta_keys(evals[0]) == set()


@pytest.mark.slow
def test_bad_eval_tta_is_refused_before_training(tiny_sudoku: Path, tmp_path: Path) -> None:
    from tests.conftest import SHORT_RUN, build_tiny_arc, pretrain_args, run_py

    arc, maze = build_tiny_arc(tmp_path), tmp_path / "maze"  # a few real ARC tasks
    built = run_py(["dataset/build_maze_dataset.py", "--generate", "4", "--test-size", "2", "--output-dir", str(maze)])
    assert built.returncode == 0, built.stderr

    cases = [
        (tiny_sudoku, "eval_tta=0", "eval_tta=0: give a whole number >= 1 of transformed copies per test puzzle"),
        (tiny_sudoku, "eval_tta=true", "eval_tta=True: give a whole number >= 1"),
        (arc, "eval_tta=4", "eval_tta is for Sudoku and Maze, drop eval_tta=4; ARC votes over the augmentations"),
        (maze, "eval_tta=9", "a maze has 8 symmetries: eval_tta must be <= 8, got 9"),
        # a vote that cannot fit in memory: refused now, not after the run at its last eval (it lost the run)
        (tiny_sudoku, "eval_tta=1000000000", "eval_tta=1000000000 needs ~"),
    ]
    for i, (data, arg, message) in enumerate(cases):
        run = tmp_path / f"run{i}"
        r = run_py(pretrain_args(data, run, SHORT_RUN, arg))
        assert r.returncode == 2, (arg, r.stdout[-2000:], r.stderr[-2000:])
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (arg, r.stderr)
        assert "[Rank 0" not in r.stdout and not run.exists(), arg  # no step trained, no run folder left
        if data == arc:
            assert r.stderr.strip().endswith(f"python dataset/score_arc.py --preds {run} --data {arc}"), r.stderr


def test_a_vote_that_does_not_fit_is_refused_with_a_size_that_does() -> None:
    from train.tta import check_tta_memory
    from utils.errors import UserError

    gib = 2**30
    check_tta_memory(5000, 16, 81, "tta", available=8 * gib)  # the records' vote: ~0.16 GiB
    with pytest.raises(UserError) as e:
        check_tta_memory(5000, 1_000_000, 81, "eval_tta", available=8 * gib)
    msg = str(e.value)
    assert "needs ~9806.8 GiB" in msg and "8.0 GiB is available: lower it to eval_tta=" in msg
    k = int(msg.rsplit("eval_tta=", 1)[1].split()[0])
    check_tta_memory(5000, k, 81, "eval_tta", available=8 * gib)  # the advice itself fits


@pytest.mark.slow
def test_training_tta_leaves_the_clock_the_best_checkpoint_and_time_to_accuracy_alone(
    tiny_sudoku: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import time

    import pretrain
    from tests.conftest import read_metrics
    from train import loop, records

    real, pause, calls = tta.evaluate_tta, 1.5, []

    def slow_and_perfect(*args, **kwargs):  # a slow vote that solves everything: the plain score must still rule
        out = real(*args, **kwargs)
        time.sleep(pause)
        calls.append(time.time())
        return {s: m | {"tta_exact_accuracy": 1.0} for s, m in out.items()}

    monkeypatch.setattr(loop, "evaluate_tta", slow_and_perfect)
    cfg = launch_config(tiny_sudoku, tmp_path / "run", checkpoint_minutes=None, eval_tta=2, eval_tta_every=True)
    pretrain.launch(cfg)
    out = capsys.readouterr().out
    evals = eval_rows(read_metrics(tmp_path / "run"))
    assert len(evals) == len(calls) == 2 and all(m["all/tta_exact_accuracy"] == 1.0 for m in evals)
    for m, done in zip(evals, calls):  # logged just after the vote, without the vote's time
        assert m["elapsed_s"] <= done - records.PROCESS_START - pause + 0.5
    # ...but the clock stays wall time: the second eval came after the first vote, its time included
    assert evals[1]["elapsed_s"] >= calls[0] - records.PROCESS_START
    state = torch.load(tmp_path / "run" / f"step_{evals[-1]['step']}.state", weights_only=True)
    plain = [m["all/exact_accuracy"] for m in evals]
    assert state["progress"]["best_value"] == max(plain) < 1.0
    assert "test exact accuracy >= 10% first reached" not in out and f"best {max(plain):.1%}" in out


def test_the_vote_runs_after_the_checkpoint_so_its_failure_loses_nothing(
    tiny_sudoku: Path, tmp_path: Path, monkeypatch
) -> None:
    """eval_tta=1000000 ran out of memory in the vote at the last eval, before that eval's checkpoint was written:
    the run's end was lost. The vote is optional: it now runs after the checkpoint."""
    import pretrain
    from tests.conftest import read_metrics
    from train import loop
    from utils.errors import UserError

    def out_of_memory(*args, **kwargs):
        raise UserError("out of memory in the vote")

    monkeypatch.setattr(loop, "evaluate_tta", out_of_memory)
    cfg = launch_config(tiny_sudoku, tmp_path / "run", checkpoint_minutes=None, eval_tta=2)
    with pytest.raises(UserError, match="out of memory in the vote"):
        pretrain.launch(cfg)
    steps = sorted(int(p.name.removeprefix("step_").removesuffix(".state")) for p in (tmp_path / "run").glob("*.state"))
    evals = [m["step"] for m in read_metrics(tmp_path / "run") if "all/accuracy" in m]
    assert steps and steps[-1] == evals[-1]  # the last eval's checkpoint is there


@pytest.mark.slow
def test_tta_reuses_the_compiled_evaluation(tiny_sudoku: Path) -> None:
    """With compile on, the vote's forwards hit the graph the evaluation compiled: torch.compile guards on the
    `return_keys` list and on inference-mode tensors, and a second graph costs a compile (~a minute on a GPU)."""
    import torch._dynamo
    import torch._dynamo.utils as dynamo_utils

    import pretrain
    from dataset.loader import load_arrays
    from tests.conftest import CPU, D, build
    from train.runtime import CompileGuard

    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)
    torch._dynamo.reset()
    state.model = CompileGuard(state.model.eager, enabled=True)

    def graphs() -> int:
        return dynamo_utils.counters["stats"]["unique_graphs"]

    before = graphs()
    plain = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    compiled = graphs()
    assert compiled > before and state.model.is_compiled  # it did compile (no eager fallback)
    a = load_arrays(str(tiny_sudoku), "test", meta)["all"]
    inputs = np.asarray(a["inputs"])
    preds, _ = tta.predict(state.model, state.model.eager, inputs, np.zeros(len(inputs), np.int64), 16, 2, CPU)
    assert graphs() == compiled  # no second graph for the vote's forwards
    labels = np.asarray(a["labels"])
    assert np.mean((preds == labels).all(1)) == pytest.approx(plain["exact_accuracy"])  # and the same answers
