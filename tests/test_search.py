"""Search beyond symmetric copies (train/search.py, evaluate.py search=K): the verifiers as a ranking, selection
(verifier, then votes, then Q-halt), the passes and their noise, the table, and the verifier as a metric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import verify
from dataset.puzzles import maze, sudoku
from train import search, tta
from utils.errors import UserError

INF = float("inf")


def latin(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (r * 3 + r // 3 + c) % 9 + 1  # a valid grid: the usual shifted-rows pattern


def maze_grid(*rows: str) -> np.ndarray:
    """A square maze row by row, `.` for an open cell: (1, side*side) tokens."""
    return maze.encode(["".join(rows).replace(".", " ")]).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# The verifiers as scores


def test_sudoku_verifier_score_valid_and_crafted_invalid() -> None:
    inputs, labels, _ = sudoku.generate(2, np.random.default_rng(3))
    inputs, labels = inputs.astype(np.int64) + 1, labels.astype(np.int64) + 1
    twice = labels.copy()
    twice[:, 1] = twice[:, 0]  # a digit twice in a row
    relabelled = labels.copy()  # a valid grid, but another puzzle's: a given changed
    d1, d2 = labels[0, 0], labels[0, 1]
    relabelled[0] = np.where(labels[0] == d1, d2, np.where(labels[0] == d2, d1, labels[0]))
    blank = labels.copy()
    blank[:, np.flatnonzero(inputs[0] == 1)[0]] = 1  # a cell left blank
    grids = np.stack([labels, twice, relabelled, blank], axis=1)  # (2, 4, 81)
    score = verify.verifier_score("sudoku", inputs, grids)
    assert score.tolist() == [[0.0, -INF, -INF, -INF], [0.0, -INF, 0.0, -INF]]  # row 1: its own label
    assert tta.sudoku_valid(inputs, grids).tolist() == [[True, False, False, False], [True, False, True, False]]


def test_maze_verifier_score_ranks_shorter_valid_paths_first() -> None:
    q = maze_grid("S....", ".....", "..G..", ".....", ".....")
    shortest = maze_grid("Soo..", "..o..", "..G..", ".....", ".....")  # 4 moves
    other = maze_grid("S....", "o....", "ooG..", ".....", ".....")  # another 4-move path
    longer = maze_grid("S....", "o....", "o.G..", "ooo..", ".....")  # 6 moves
    gap = maze_grid("Soo..", ".....", "..G..", ".....", ".....")  # does not reach G
    spur = maze_grid("Soo..", "..o..", "..Go.", ".....", ".....")  # a stray cell off the path
    grids = np.stack([shortest, other, longer, gap, spur], axis=1)
    assert verify.verifier_score("maze", q, grids).tolist() == [[-4.0, -4.0, -6.0, -INF, -INF]]
    valid, moves, best = verify.maze_paths(np.repeat(q, 3, 0), np.concatenate([shortest, longer, gap]))
    assert valid.tolist() == [True, True, False] and moves[:2].tolist() == [4, 6] and best.tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="sudoku' or 'maze'"):
        verify.verifier_score("arc", q, grids)


# ---------------------------------------------------------------------------------------------------------------
# Selection: verifier first, then votes, then confidence


def sudoku_candidates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A puzzle with no givens (many solutions): two valid grids a and b, and two invalid ones."""
    r, c = np.divmod(np.arange(81), 9)
    a, b = latin(r, c) + 1, latin(c, r) + 1
    bad1, bad2 = a.copy(), b.copy()
    bad1[0], bad2[5] = bad1[1], bad2[6]
    return np.ones(81, dtype=np.int64), np.stack([a, b]), np.stack([bad1, bad2])


def test_selection_never_picks_an_invalid_grid_when_a_valid_one_exists() -> None:
    puzzle, (a, _), (bad1, bad2) = sudoku_candidates()
    # five confident votes for an invalid grid, one unsure vote for the valid one
    grids = np.stack([bad1] * 5 + [a])[None]
    q = np.array([[5.0] * 5 + [-5.0]])
    score = verify.verifier_score("sudoku", puzzle[None], grids)
    chosen, verified = search.select(grids, q, score)
    assert np.array_equal(chosen[0], a) and verified.tolist() == [True]
    chosen, verified = search.select(grids, q, None)  # without the verifier the votes win
    assert np.array_equal(chosen[0], bad1) and verified.tolist() == [False]
    # no valid candidate: votes among the invalid ones, nothing verified
    grids = np.stack([bad1, bad2, bad2])[None]
    chosen, verified = search.select(grids, np.zeros((1, 3)), verify.verifier_score("sudoku", puzzle[None], grids))
    assert np.array_equal(chosen[0], bad2) and verified.tolist() == [False]


def test_selection_on_random_crafted_candidates_picks_valid_whenever_one_is_there() -> None:
    puzzle, valid_grids, invalid_grids = sudoku_candidates()
    pool = np.concatenate([valid_grids, invalid_grids])
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = int(rng.integers(1, 12))
        grids = pool[rng.integers(0, 4, size=(3, c))]  # (3 puzzles, c candidates, 81)
        score = verify.verifier_score("sudoku", np.repeat(puzzle[None], 3, 0), grids)
        chosen, verified = search.select(grids, rng.normal(size=(3, c)), score)
        chosen_ok = verify.sudoku_valid(np.repeat(puzzle[None], 3, 0), chosen)
        assert chosen_ok.tolist() == np.isfinite(score).any(1).tolist() == verified.tolist()


def test_votes_break_ties_among_valid_grids_and_confidence_breaks_vote_ties() -> None:
    puzzle, (a, b), (bad1, _) = sudoku_candidates()
    grids = np.stack([[bad1, a, b, b, bad1, bad1], [bad1, a, b, bad1, bad1, bad1]])
    q = np.array([[9.0, 9.0, -1.0, -1.0, 9, 9], [0.0, -2.0, 2.0, 0, 0, 0]])
    score = verify.verifier_score("sudoku", np.repeat(puzzle[None], 2, 0), grids)
    chosen, _ = search.select(grids, q, score)
    assert np.array_equal(chosen[0], b)  # both valid: two votes for b beat one confident vote for a
    assert np.array_equal(chosen[1], b)  # one vote each: b's higher Q-halt wins
    # Maze: two shortest paths tie on the verifier, a longer valid path ranks below both
    q_maze = maze_grid("S....", ".....", "..G..", ".....", ".....")
    first = maze_grid("Soo..", "..o..", "..G..", ".....", ".....")
    second = maze_grid("S....", "o....", "ooG..", ".....", ".....")
    longer = maze_grid("S....", "o....", "o.G..", "ooo..", ".....")
    grids = np.concatenate([longer, longer, longer, first, second, second])[None]
    score = verify.verifier_score("maze", q_maze, grids)
    chosen, _ = search.select(grids, np.zeros((1, 6)), score)
    assert np.array_equal(chosen[0], second[0])
    chosen, _ = search.select(grids[:, :5], np.array([[0, 0, 0, -1.0, 1.0]]), score[:, :5])
    assert np.array_equal(chosen[0], second[0])  # one vote each: the higher Q-halt
    chosen, _ = search.select(grids[:, :5], np.zeros((1, 5)), score[:, :5])
    assert np.array_equal(chosen[0], first[0])  # a full tie: the earlier candidate


# ---------------------------------------------------------------------------------------------------------------
# The passes, and the options


def test_search_plan_pairs_clean_and_noisy_passes() -> None:
    assert search.search_plan("sudoku", 4, 0.0) == [(0, False), (1, False), (2, False), (3, False)]
    assert search.search_plan("sudoku", 5, 0.1) == [(0, False), (0, True), (1, False), (1, True), (2, False)]
    plan = search.search_plan("maze", 20, 0.1)
    assert plan[:16] == [(j // 2, j % 2 == 1) for j in range(16)]
    assert plan[16:] == [(0, True), (0, True), (1, True), (1, True)]  # past the 8 symmetries: noisy repeats only


def test_search_options_and_refusals() -> None:
    import evaluate

    assert evaluate.search_options({}) == (0, 0.0, 0)
    assert evaluate.search_options({"search": 8, "search_noise": 0.1, "search_seed": 3}) == (8, 0.1, 3)
    bad = [
        ({"search": 65}, "search must be a whole number from 1 to 64"),
        ({"search": -1}, "search must be"),
        ({"search": "many"}, "search must be"),
        ({"search": True}, "search must be"),
        ({"search": 4, "search_noise": -0.1}, "search_noise must be a number from 0 to 10"),
        ({"search": 4, "search_noise": "big"}, "search_noise must be"),
        ({"search": 4, "search_seed": -2}, "search_seed must be"),
        ({"search_noise": 0.1}, "search_noise=0.1 needs search=K"),
    ]
    for cli, message in bad:
        with pytest.raises(UserError, match=message):
            evaluate.search_options(dict(cli))
    with pytest.raises(UserError, match=r"search is for Sudoku and Maze \(it needs .*score_arc"):
        search.check_search("arc", 4, 0.0, "python dataset/score_arc.py")
    with pytest.raises(UserError, match="a maze has 8 symmetries: search must be <= 8 without noise, got 9"):
        search.check_search("maze", 9, 0.0, "")
    search.check_search("maze", 9, 0.1, "")  # noisy passes go beyond the symmetries
    with pytest.raises(UserError, match="lower it to search="):
        search.check_search_memory(1000, 64, 16, 900, available=2**30)
    search.check_search_memory(1000, 64, 16, 81, available=8 * 2**30)


# ---------------------------------------------------------------------------------------------------------------
# On a tiny model


@pytest.mark.slow
def test_noise_is_reproducible_with_its_seed_and_differs_with_another(tiny_sudoku: Path) -> None:
    from dataset.loader import load_arrays
    from tests.conftest import CPU, build

    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)
    inputs = np.asarray(load_arrays(str(tiny_sudoku), "test", meta)["all"]["inputs"])[:16]  # one batch
    ids = np.zeros(len(inputs), np.int64)

    def run(noise: float, seed: tuple[int, ...]):
        return tta.predict_segments(state.model, state.model.eager, inputs, ids, 16, 2, CPU, noise=noise, seed=seed)

    plain_tokens, plain_q, _ = run(0.0, (0, 0))
    last, conf = tta.predict(state.model, state.model.eager, inputs, ids, 16, 2, CPU)
    assert np.array_equal(plain_tokens[:, -1], last)  # the segments' last is the plain pass
    assert np.allclose(1 / (1 + np.exp(-plain_q[:, -1])), conf)
    a, b, c = run(1.0, (0, 1)), run(1.0, (0, 1)), run(1.0, (0, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed, same candidates
    assert not np.array_equal(a[1], c[1])  # another seed: other Q-halt logits...
    assert not np.array_equal(a[1], plain_q) and not np.array_equal(a[0], plain_tokens)  # ...and other answers


@pytest.mark.slow
def test_search_table_on_a_tiny_model(tiny_sudoku: Path, monkeypatch) -> None:
    import pretrain
    from tests.conftest import CPU, D, build

    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)
    plain = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    res = search.evaluate_search(state.model, state.model.eager, str(tiny_sudoku), meta, 4, 16, 2, CPU, noise=0.1)
    rows = res["all"]["rows"]
    assert [r["passes"] for r in rows] == [1, 2, 4] and [r["candidates"] for r in rows] == [2, 4, 8]
    assert [r["noisy_passes"] for r in rows] == [0, 1, 2] and res["all"]["hard"] == 0
    for r in rows:  # pass 0 is the plain evaluation, whatever else runs
        assert r["paper"] == pytest.approx(plain["exact_accuracy"])
        assert r["at_halt"] == pytest.approx(plain["exact_accuracy_at_halt"])
        assert r["search"] <= r["any_right"] and r["vote"] <= r["any_right"]
    assert rows[0]["vote"] == rows[0]["paper"]  # one pass: its last segment is the vote

    # An oracle model: the right answer on some passes' segments only, a confident wrong one elsewhere
    from dataset.loader import load_arrays

    labels = np.asarray(load_arrays(str(tiny_sudoku), "test", meta)["all"]["labels"], dtype=np.int64)
    n, calls = len(labels), []

    def oracle(model, eager, inputs, ids, batch, steps, device, noise=0.0, seed=(0,)):
        p = len(calls)
        calls.append((noise, seed))
        tokens = np.ones((n, steps, 81), np.uint8)  # wrong: all blanks
        q = np.full((n, steps), 3.0, np.float32)
        right = np.arange(n) % 4 < p  # puzzle i is solved from pass i % 4 + 1 on, at segment 1 only
        truth = tf.apply(labels)[:, plan[p][0]]  # in the copy's own frame
        tokens[right, 0] = truth[right]
        q[right, 0] = -3.0
        return tokens, q, np.zeros((n, steps), bool)

    from dataset.transforms import make_transforms

    plan = search.search_plan("sudoku", 8, 0.0)
    tf = make_transforms("sudoku", 8, meta.vocab_size, 0)
    monkeypatch.setattr(search, "predict_segments", oracle)
    rows = search.evaluate_search(state.model, state.model.eager, str(tiny_sudoku), meta, 8, 16, 2, CPU)["all"]["rows"]
    assert [r["search"] for r in rows] == [0.0, 0.25, 0.75, 1.0]  # non-decreasing: prefixes, verifier first
    assert [r["any_right"] for r in rows] == [r["search"] for r in rows] == [r["verified"] for r in rows]
    assert all(r["vote"] == 0.0 and r["paper"] == 0.0 for r in rows)  # never right at a pass's last segment
    assert calls == [(0.0, (0, p)) for p in range(8)]


# ---------------------------------------------------------------------------------------------------------------
# The verifier as a metric of the plain evaluation


def test_evaluate_reports_valid_predictions(tiny_sudoku: Path, monkeypatch) -> None:
    import pretrain
    from tests.conftest import CPU, D, build

    config, state, loader, meta = build(tiny_sudoku, halt_max_steps=2)
    act = state.model.eager.model
    forward = act.forward

    def half_right(carry, batch):  # the label on even rows of every batch, the model's guess elsewhere
        carry, out = forward(carry, batch)
        labels = carry.current_data["labels"].clamp_min(0).long()
        oracle = torch.nn.functional.one_hot(labels, out["logits"].shape[-1]).float() * 100
        even = (torch.arange(len(labels)) % 2 == 0).view(-1, 1, 1)
        return carry, out | {"logits": torch.where(even, oracle, out["logits"])}

    monkeypatch.setattr(act, "forward", half_right)
    m = pretrain.evaluate(config, state, loader, meta, D, CPU, verify="sudoku")["all"]
    assert m["exact_accuracy"] == pytest.approx(0.5)
    assert m["valid_solution"] == pytest.approx(0.5) and m["valid_not_label"] == 0.0  # one-solution Sudoku
    assert "valid_solution" not in pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]  # training's evals


# ---------------------------------------------------------------------------------------------------------------
# evaluate.py end to end


@pytest.mark.slow
def test_evaluate_search_command(tiny_sudoku: Path, tmp_path: Path) -> None:
    from tests.conftest import SHORT_RUN, pretrain_args, run_py

    run = tmp_path / "run"
    r = run_py(pretrain_args(tiny_sudoku, run, [*SHORT_RUN, "seed=2"], "epochs=4", "eval_interval=4"))
    assert r.returncode == 0, r.stderr[-2000:]
    data = tmp_path / "data"  # the tiny set with a mix.json: half its test puzzles in the hard band
    shutil.copytree(tiny_sudoku, data)
    (data / "mix.json").write_text(json.dumps({"test_guesses": [0, 500] * 16}))
    out = tmp_path / "out"
    args = ["evaluate.py", f"checkpoint={run / 'step_8'}", f"data_path={data}", f"output_dir={out}"]
    r = run_py([*args, "search=4", "search_noise=0.1"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "  verifier all: " in r.stdout and " valid but not the label (0 for a one-solution Sudoku)" in r.stdout
    assert "all: 32 puzzles, 16 in the hard band" in r.stdout
    head = next(line for line in r.stdout.splitlines() if "candidates" in line)
    for title in ("paper protocol", "at halt", "vote", "search", "any right", "puzzles/s", "hard search"):
        assert title in head
    saved = json.loads((out / "step_8_search.json").read_text())
    assert saved["settings"]["search"] == 4 and saved["sets"]["all"]["hard"] == 16
    csv_rows = (out / "step_8_search.csv").read_text().splitlines()
    assert len(csv_rows) == 4 and csv_rows[0].startswith("set,passes,candidates,noisy_passes,paper,at_halt,vote")
    assert (out / "step_8_search.png").read_bytes()[:4] == b"\x89PNG"
    again = run_py([*args, "search=4", "search_noise=0.1", "save_outputs=[]"])
    assert again.returncode == 0

    def scores(table: dict) -> list[dict]:  # the table without its rates (wall clock)
        return [{k: v for k, v in row.items() if k != "puzzles_per_s"} for row in table["sets"]["all"]["rows"]]

    assert scores(json.loads((out / "step_8_search.json").read_text())) == scores(saved)  # the same seed, the same
    for bad, message in (
        ("search=100", "search must be a whole number from 1 to 64"),
        ("search_noise=0.1", "needs search=K"),
    ):
        r = run_py([*args, bad])
        assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("variant", ["att_rope", "singlez", "hier6"])
def test_perturb_adds_noise_to_every_latent_field_of_trm_and_its_variants(variant: str) -> None:
    """TRM's y and z (and its ablations' own carries) get the noise; the segment then keeps it instead of resetting."""
    import dataclasses

    from tests.test_trm import build as build_trm

    model, ref = build_trm(variant)
    model.eval()
    batch = ref["batch"]
    carry = model.initial_carry(batch)
    fresh, _, _ = model.model.start_segment(carry, batch)
    noisy = model.perturb(carry, batch, lambda x: torch.full_like(x, 0.5))
    fields = [f.name for f in dataclasses.fields(fresh)]
    for name in fields:
        assert torch.allclose(getattr(noisy.inner_carry, name), getattr(fresh, name) + 0.5), name
    assert not noisy.halted.any() and (noisy.steps == 0).all()
    with torch.no_grad():
        kept, _ = model.model(noisy, batch)
        plain, _ = model.model(carry, batch)
    assert (kept.steps == 1).all()
    assert any(not torch.allclose(getattr(kept.inner_carry, n), getattr(plain.inner_carry, n)) for n in fields)


@pytest.mark.slow
def test_maze_search_maps_copies_back_and_prefers_a_valid_path(tmp_path: Path, monkeypatch) -> None:
    """On mazes: each pass's answers come back from the copy's frame, and a valid path beats invalid drawings."""
    from dataset.loader import load_arrays
    from dataset.transforms import make_transforms
    from tests.conftest import CPU, build, run_py

    data = tmp_path / "maze"
    built = run_py(["dataset/build_maze_dataset.py", "--generate", "4", "--test-size", "4", "--output-dir", str(data)])
    assert built.returncode == 0, built.stderr
    config, state, loader, meta = build(data, halt_max_steps=2)
    a = load_arrays(str(data), "test", meta)["all"]
    inputs, labels = np.asarray(a["inputs"], np.int64), np.asarray(a["labels"], np.int64)
    gap = labels.copy()  # the label with one path cell erased: not a path from S to G
    for row in gap:
        row[np.flatnonzero(row == maze.PATH)[0]] = maze.OPEN
    plan = search.search_plan("maze", 3, 0.1)
    tf = make_transforms("maze", 2, meta.vocab_size, 0)
    calls = []

    def oracle(model, eager, x, ids, batch, steps, device, noise=0.0, seed=(0,)):
        p = len(calls)
        calls.append(noise)
        copy = plan[p][0]
        assert np.array_equal(x, tf.apply(inputs)[:, copy])  # the pass sees its copy of the puzzle
        answer = labels if p == 2 else gap  # only the third pass draws the path
        tokens = np.stack([tf.apply(inputs)[:, copy], tf.apply(answer)[:, copy]], axis=1).astype(np.uint8)
        return tokens, np.full((len(x), steps), 5.0, np.float32), np.zeros((len(x), steps), bool)

    monkeypatch.setattr(search, "predict_segments", oracle)
    rows = search.evaluate_search(state.model, state.model.eager, str(data), meta, 3, 16, 2, CPU, noise=0.1)["all"]
    assert calls == [0.0, 0.1, 0.0]  # copy 0, copy 0 with noise, copy 1
    assert [(r["passes"], r["search"], r["verified"], r["vote"]) for r in rows["rows"]] == [
        (1, 0.0, 0.0, 0.0),
        (2, 0.0, 0.0, 0.0),
        (3, 1.0, 1.0, 0.0),  # one valid path among 6 candidates wins; the vote (2 gaps to 1) does not find it
    ]
