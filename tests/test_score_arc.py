"""ARC scoring (dataset/score_arc.py): decoding, undoing augmentations, voting and pass@k on fabricated predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import score_arc
from dataset.build_arc_dataset import main as build_main
from dataset.puzzles import arc

# Task -> what the fabricated model answers for its 4 puzzles (the task and 3 augmentations), per test input:
# "ok" the true output, "bad" one fixed wrong output (the same grid once the augmentation is undone, so wrong
# answers pool), with the q_halt logit given.
PLAN = {
    "aaa": [[("ok", 0.0)] * 4],  # solved at k=1
    "bbb": [[("ok", 0.0)] + [("bad", 0.0)] * 3],  # the wrong answer wins the vote 3:1 -> solved only from k=2
    "ccc": [[("ok", 0.0)] * 4, [("bad", 0.0)] * 4],  # two test inputs, the second always wrong -> never solved
    "ddd": [[("ok", 3.0)] * 2 + [("bad", -3.0)] * 2],  # 2:2, q_halt breaks the tie for the right one -> k=1
    "eee": [[("ok", -3.0)] * 2 + [("bad", 3.0)] * 2],  # 2:2, q_halt favours the wrong one -> only from k=2
}
EXPECTED = {1: ["aaa", "ddd"], 2: ["aaa", "bbb", "ddd", "eee"], 10: ["aaa", "bbb", "ddd", "eee"]}
# The submission's two attempts per test input, from the same ranking: "none" = no second answer, [[0]].
EXPECTED_ATTEMPTS = {
    "aaa": [("ok", "none")],
    "bbb": [("bad", "ok")],
    "ccc": [("ok", "none"), ("bad", "none")],
    "ddd": [("ok", "bad")],
    "eee": [("bad", "ok")],
}


def canvas(grid: np.ndarray) -> np.ndarray:
    """A grid at the top left of a 30x30 canvas with its eos frame, written out here independently of the builder."""
    c = np.zeros((30, 30), dtype=np.int64)
    h, w = grid.shape
    c[:h, :w] = grid + 2
    if h < 30:
        c[h, :w] = 1
    if w < 30:
        c[:h, w] = 1
    return c.ravel()


@pytest.fixture(scope="module")
def tiny_arc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(0)

    def grid(h: int, w: int) -> list[list[int]]:
        return rng.integers(0, 10, size=(h, w)).tolist()

    raw = root / "raw"
    for name, tests in PLAN.items():
        task = {
            "train": [{"input": grid(3, 4), "output": grid(4, 3)} for _ in range(2)],
            "test": [{"input": grid(3, 3), "output": grid(2, 5)} for _ in tests],
        }
        (raw / "evaluation").mkdir(parents=True, exist_ok=True)
        (raw / "evaluation" / f"{name}.json").write_text(json.dumps(task))
    (raw / "training").mkdir()
    (raw / "training" / "zzz.json").write_text(
        json.dumps({"train": [{"input": grid(2, 2), "output": grid(2, 2)}], "test": []})
    )
    data = root / "arc"
    assert build_main(["--dataset-dirs", str(raw), "--num-aug", "3", "--output-dir", str(data)]) == 0
    return raw, data


def fabricate(raw: Path, data: Path, run: Path, step: int, all_wrong: bool = False) -> int:
    """Prediction files as evaluate.py writes them (two ranks, padding rows in the last), answering per PLAN."""
    names = json.loads((data / "identifiers.json").read_text())
    fields = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
    t = {f: np.load(data / "test" / f"all__{f}.npy") for f in fields}
    group_of = np.repeat(np.arange(len(t["group_indices"]) - 1), np.diff(t["group_indices"]))
    answers, q_halt, ids = [], [], []
    for p, pid in enumerate(t["puzzle_identifiers"]):
        base, tid, mapping = arc.parse_aug_name(names[pid])
        puzzle_no = p - t["group_indices"][group_of[p]]  # 0 = the task itself, then its augmentations
        task = json.loads((raw / "evaluation" / f"{base}.json").read_text())
        for i, e in enumerate(range(t["puzzle_indices"][p], t["puzzle_indices"][p + 1])):
            kind, q = PLAN[base][i][puzzle_no]
            if kind == "ok" and not all_wrong:
                answers.append(t["labels"][e].astype(np.int64))
            else:
                wrong = (np.array(task["test"][i]["output"]) + 1) % 10
                answers.append(canvas(arc.augment_grid(wrong.astype(np.uint8), tid, mapping).astype(np.int64)))
            q_halt.append(q)
            ids.append(pid)
    n = len(answers)
    logits = torch.zeros(n + 2, 900, 12, dtype=torch.bfloat16)
    target = torch.from_numpy(np.stack(answers + [np.full(900, 5), np.full(900, 5)]))
    logits.scatter_(2, target[..., None], 1.0)
    labels = torch.from_numpy(np.concatenate([t["labels"], t["labels"][:2]]).astype(np.int32))
    preds = {
        "inputs": torch.from_numpy(np.concatenate([t["inputs"], t["inputs"][:2]]).astype(np.int32)),
        "labels": torch.where(labels == 0, -100, labels),
        "puzzle_identifiers": torch.tensor(ids + [0, 0], dtype=torch.int32),
        "logits": logits,
        "q_halt_logits": torch.tensor(q_halt + [9.0, 9.0]),
        "q_continue_logits": torch.zeros(n + 2),
    }
    run.mkdir(parents=True, exist_ok=True)
    half = n // 2
    for rank, rows in enumerate((slice(0, half), slice(half, None))):
        torch.save({k: v[rows].clone() for k, v in preds.items()}, run / f"step_{step}_all_preds.{rank}")
    return n


def test_pass_at_k_votes_over_augmentations(
    tiny_arc: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw, data = tiny_arc
    run = tmp_path / "run"
    n = fabricate(raw, data, run, step=7)
    fabricate(raw, data, run, step=3, all_wrong=True)  # an older evaluation beside it
    assert score_arc.main(["--preds", str(run), "--data", str(data), "--k", "1", "2", "10"]) == 0
    out = capsys.readouterr().out
    assert "scoring step 7" in out and "5 tasks (6 test inputs)" in out
    report = json.loads((run / "step_7_arc_scores.json").read_text())
    assert report["rows_used"] == n and report["rows_unmatched"] == 0 and report["tasks_with_predictions"] == 5
    for k, solved in EXPECTED.items():
        assert sorted(t for t, s in report["per_task"].items() if s[str(k)]) == solved, k
        assert report["pass_at_k"][str(k)] == pytest.approx(len(solved) / 5)
    assert "  40.00%" in out and "  80.00%  (the paper's metric)" in out

    # explicit files and --step: the all-wrong evaluation solves nothing
    files = [str(p) for p in sorted(run.glob("step_3_all_preds.*"))]
    assert score_arc.main(["--preds", *files, "--data", str(data), "--out", str(tmp_path / "s3.json")]) == 0
    assert all(v == 0 for v in json.loads((tmp_path / "s3.json").read_text())["solved"].values())
    assert (run / "step_3_submission.json").is_file()


def test_submission_holds_the_top_two_answers(
    tiny_arc: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw, data = tiny_arc
    run = tmp_path / "run"
    fabricate(raw, data, run, step=7)
    assert score_arc.main(["--preds", str(run), "--data", str(data), "--k", "2"]) == 0
    assert "wrote " + str(run / "step_7_submission.json") in capsys.readouterr().out
    sub = json.loads((run / "step_7_submission.json").read_text())
    assert json.loads((run / "step_7_arc_scores.json").read_text())["submission"] == str(run / "step_7_submission.json")
    assert sorted(sub) == sorted(PLAN)  # every task of the test split, under its task id
    for name, attempts in EXPECTED_ATTEMPTS.items():
        task = json.loads((raw / "evaluation" / f"{name}.json").read_text())
        assert len(sub[name]) == len(task["test"]) == len(attempts)
        for entry, pair, want in zip(sub[name], task["test"], attempts):
            assert sorted(entry) == ["attempt_1", "attempt_2"]
            grids = {"ok": pair["output"], "bad": ((np.array(pair["output"]) + 1) % 10).tolist(), "none": [[0]]}
            assert [entry["attempt_1"], entry["attempt_2"]] == [grids[w] for w in want], name

    # --submission names the file; with explicit files of two steps, votes need --pool
    out = tmp_path / "elsewhere" / "sub.json"
    out.parent.mkdir()
    fabricate(raw, data, run, step=3, all_wrong=True)
    files = [str(p) for p in sorted(run.glob("step_*_all_preds.*"))]
    with pytest.raises(SystemExit) as stop:
        score_arc.main(["--preds", *files, "--data", str(data), "--submission", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "2 evaluations" in err and "--pool" in err and not out.exists()
    assert score_arc.main(["--preds", *files, "--pool", "--data", str(data), "--submission", str(out)]) == 0
    assert (run / "arc_scores.json").is_file()  # pooled steps: no single step in the report's name
    pooled = json.loads(out.read_text())
    # step 7 alone answered aaa right 4 times (second attempt [[0]]); with step 3's 4 wrong votes both answers appear
    ok = json.loads((raw / "evaluation" / "aaa.json").read_text())["test"][0]["output"]
    bad = ((np.array(ok) + 1) % 10).tolist()
    assert sorted([pooled["aaa"][0]["attempt_1"], pooled["aaa"][0]["attempt_2"]]) == sorted([ok, bad])


def test_submission_passes_over_answers_without_a_grid() -> None:
    grid_in, grid_out = np.array([[1, 2]], dtype=np.uint8), np.array([[3], [4]], dtype=np.uint8)
    k_in, k_out = score_arc.grid_key(grid_in), score_arc.grid_key(grid_out)
    truth = score_arc.Truth(tests={"t": {k_in: [k_out]}, "u": {k_in: [k_out]}}, order={"t": [k_in], "u": [k_in]})
    # the most voted answer of t is an empty crop (a malformed canvas): no grid to submit; u has no votes at all
    votes = {"t": {k_in: {score_arc.grid_key(np.zeros((0, 0), np.uint8)): [5, 4.0], k_out: [1, 0.5]}}}
    sub, filled = score_arc.submission(truth, votes)
    assert sub == {
        "t": [{"attempt_1": [[3], [4]], "attempt_2": [[0]]}],
        "u": [{"attempt_1": [[0]], "attempt_2": [[0]]}],
    }
    assert filled == 3


def test_missing_predictions_and_bad_inputs(
    tiny_arc: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw, data = tiny_arc
    run = tmp_path / "run"
    fabricate(raw, data, run, step=1)
    (run / "step_1_all_preds.1").unlink()  # one rank's file missing: its tasks count as unsolved
    assert score_arc.main(["--preds", str(run), "--data", str(data), "--k", "2"]) == 0
    captured = capsys.readouterr()
    report = json.loads((run / "step_1_arc_scores.json").read_text())
    assert report["tasks"] == 5 and report["tasks_with_predictions"] < 5 and "no predictions" in captured.err
    with pytest.raises(SystemExit) as stop:
        score_arc.main(["--preds", str(tmp_path / "nothing"), "--data", str(data)])
    assert stop.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_arc.main(["--preds", str(run), "--data", str(tmp_path)])
    assert "identifiers.json not found" in capsys.readouterr().err


def notebook_crop(grid: np.ndarray) -> np.ndarray:
    """The original notebook's crop, as a plain loop: the largest top-left rectangle without a non-colour token."""
    grid = grid.reshape(30, 30)
    best, size, num_c = 0, (0, 0), 30
    for num_r in range(1, 31):
        for c in range(1, num_c + 1):
            if not 2 <= grid[num_r - 1, c - 1] <= 11:
                num_c = c - 1
                break
        if num_r * num_c > best:
            best, size = num_r * num_c, (num_r, num_c)
    return grid[: size[0], : size[1]] - 2


def test_crop_matches_the_notebook_rule() -> None:
    rng = np.random.default_rng(1)
    canvases = []
    for _ in range(300):
        h, w = rng.integers(1, 31, size=2)
        c = canvas(rng.integers(0, 10, size=(h, w)))
        noise = rng.random(900) < rng.choice([0.0, 0.01, 0.1])  # model output is not always well formed
        c[noise] = rng.integers(0, 12, size=noise.sum())
        canvases.append(c)
    canvases.append(np.full(900, 7))
    canvases.append(np.zeros(900, dtype=np.int64))
    canvases = np.stack(canvases)
    batch = list(score_arc.cropped(canvases))
    for c, got in zip(canvases, batch):
        want = notebook_crop(c)
        assert got.shape == want.shape and np.array_equal(got, want)
        assert np.array_equal(arc.crop(c), want)
