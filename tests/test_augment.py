"""augment_online: every training example under a fresh random symmetry (Sudoku, Maze), the same one for the
puzzle and its solution, seeded by (seed, pass, batch) so world sizes and resumes see the same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
from dataset.puzzles.dihedral import dihedral_transform
from dataset.puzzles.sudoku import agrees, is_solution
from tests.conftest import SHORT_RUN, build_tiny_arc, pretrain_args, read_metrics, run_py
from utils.errors import UserError


def dataset(data: Path, augment: bool, **overrides) -> PuzzleDataset:
    cfg = (
        dict(seed=5, dataset_path=str(data), global_batch_size=32, test_set_mode=False, epochs_per_iter=2, rank=0)
        | dict(num_replicas=1, augment_online=augment)
        | overrides
    )
    return PuzzleDataset(PuzzleDatasetConfig(**cfg), "train")


def batches(data: Path, augment: bool, n: int = 4, **overrides) -> list[dict[str, np.ndarray]]:
    it = iter(dataset(data, augment, **overrides))
    return [{k: v.numpy() for k, v in next(it)[1].items()} for _ in range(n)]


def test_sudoku_rows_stay_valid_puzzles_under_their_own_symmetry(tiny_sudoku: Path) -> None:
    plain, aug = batches(tiny_sudoku, False), batches(tiny_sudoku, True)
    for p, a in zip(plain, aug):
        assert np.array_equal(p["puzzle_identifiers"], a["puzzle_identifiers"])  # same examples drawn
        assert (p["inputs"] != a["inputs"]).any(axis=1).mean() > 0.9  # nearly every row transformed
        solution, givens = a["labels"].astype(np.int64) - 1, a["inputs"].astype(np.int64) - 1
        assert is_solution(solution).all() and agrees(givens, solution).all()  # puzzle and solution moved together
        assert np.array_equal((p["inputs"] > 1).sum(1), (a["inputs"] > 1).sum(1))  # the givens, relocated
        for row in range(len(a["inputs"])):  # a relabelling of the digits: each row's digit counts, permuted
            counts = lambda g: sorted(np.bincount(g, minlength=11)[2:])  # noqa: E731
            assert counts(p["inputs"][row]) == counts(a["inputs"][row])
    assert not np.array_equal(aug[0]["inputs"], batches(tiny_sudoku, True, seed=6)[0]["inputs"])


def test_the_same_batches_at_any_world_size_and_after_a_resume(tiny_sudoku: Path) -> None:
    whole = batches(tiny_sudoku, True)
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(whole, batches(tiny_sudoku, True)))
    for rank in (0, 1):
        half = batches(tiny_sudoku, True, rank=rank, num_replicas=2)
        for w, h in zip(whole, half):
            assert np.array_equal(w["inputs"][rank * 16 : (rank + 1) * 16], h["inputs"])
            assert np.array_equal(w["labels"][rank * 16 : (rank + 1) * 16], h["labels"])
    resumed = dataset(tiny_sudoku, True)
    resumed.set_position(0, 2)  # mid-pass: the first two batches of pass 1 are drawn and dropped
    first = next(iter(resumed))[1]
    assert np.array_equal(first["inputs"].numpy(), whole[2]["inputs"])
    # each batch of a pass draws symmetries of its own: the same rows come out differently in batches 1 and 2
    rows, labels = whole[0]["inputs"], whole[0]["labels"]
    again = [resumed._augmented(rows, labels, b, slice(0, 32))[0] for b in (1, 2)]
    assert (again[0] != again[1]).any(axis=1).mean() > 0.9


def test_maze_rows_move_by_one_symmetry_of_the_square(tmp_path: Path) -> None:
    maze = tmp_path / "maze"
    built = run_py(["dataset/build_maze_dataset.py", "--generate", "8", "--test-size", "2", "--output-dir", str(maze)])
    assert built.returncode == 0, built.stderr
    plain, aug = batches(maze, False, n=1, global_batch_size=8)[0], batches(maze, True, n=1, global_batch_size=8)[0]
    moved = 0
    for p_in, p_lab, a_in, a_lab in zip(plain["inputs"], plain["labels"], aug["inputs"], aug["labels"]):
        grid = lambda x: x.reshape(30, 30)  # noqa: E731
        found = [t for t in range(8) if np.array_equal(dihedral_transform(grid(p_in), t), grid(a_in))]
        assert found and any(np.array_equal(dihedral_transform(grid(p_lab), t), grid(a_lab)) for t in found)
        moved += not np.array_equal(p_in, a_in)
    assert moved >= 4  # 7 of 8 symmetries move a maze


def test_other_datasets_are_refused_before_training(tiny_sudoku: Path, tmp_path: Path) -> None:
    arc = build_tiny_arc(tmp_path)
    with pytest.raises(UserError, match="augment_online=true needs a Sudoku"):
        batches(arc, True, n=1, global_batch_size=4)
    batches(arc, False, n=1, global_batch_size=4)  # the test split and augment=false are untouched
    run = tmp_path / "run"
    r = run_py(pretrain_args(arc, run, SHORT_RUN, "augment_online=true"))
    assert r.returncode == 2 and "Drop augment_online=true" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.slow
def test_a_run_with_online_augmentation_trains_and_says_so(tiny_sudoku: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = run_py(pretrain_args(tiny_sudoku, run, SHORT_RUN, "augment_online=true"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "every train example under a fresh random symmetry (augment_online)" in r.stdout
    assert [m for m in read_metrics(run) if "all/exact_accuracy" in m]
