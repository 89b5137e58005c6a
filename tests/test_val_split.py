"""The loader and the optional val/ split: read like test by name, checked like test, and not needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset.build_sudoku_dataset import main as build_sudoku
from dataset.loader import PuzzleDataset, PuzzleDatasetConfig, has_split, load_arrays, load_metadata
from utils.errors import UserError


@pytest.fixture(scope="module")
def with_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("val") / "sudoku-val"
    assert build_sudoku(["--generate", "24", "--test-size", "10", "--num-aug", "1", "--output-dir", str(out)]) == 0
    return out


def config(path: Path, test_set_mode: bool, batch: int = 4) -> PuzzleDatasetConfig:
    return PuzzleDatasetConfig(
        seed=0,
        dataset_path=str(path),
        global_batch_size=batch,
        test_set_mode=test_set_mode,
        epochs_per_iter=1,
        rank=0,
        num_replicas=1,
    )


def test_val_reads_like_test(with_val: Path) -> None:
    assert has_split(str(with_val), "val") and has_split(str(with_val), "test")
    ds = PuzzleDataset(config(with_val, test_set_mode=True), split="val")
    batches = list(ds)
    want = np.load(with_val / "val" / "all__inputs.npy").astype(np.int32)
    got = np.concatenate([b["inputs"].numpy()[:n] for _, b, n in batches])
    assert [n for *_, n in batches] == [4, 4, 2] and np.array_equal(got, want)  # in order, last batch padded
    assert batches[-1][1]["inputs"].shape == (4, 81)
    # the same checks as test at load: the model's shape fields must be train's
    meta = load_metadata(str(with_val), "val")
    load_arrays(str(with_val), "val", meta)


def test_folder_without_val_still_loads(with_val: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(with_val, old)
    shutil.rmtree(old / "val")  # as built before val/ existed, or with --val-size 0
    assert not has_split(str(old), "val")
    for split, test_mode in (("train", False), ("test", True)):
        assert next(iter(PuzzleDataset(config(old, test_mode), split=split)))[1]["inputs"].shape == (4, 81)
    with pytest.raises(UserError, match="has no val/ split"):
        PuzzleDataset(config(old, test_set_mode=True), split="val")


def test_val_split_checked_against_train(with_val: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(with_val, bad)
    meta = (bad / "val" / "dataset.json").read_text()
    (bad / "val" / "dataset.json").write_text(
        meta.replace('"num_puzzle_identifiers": 1', '"num_puzzle_identifiers": 2')
    )
    with pytest.raises(UserError, match="num_puzzle_identifiers=2 but the train split's is 1"):
        PuzzleDataset(config(bad, test_set_mode=True), split="val")
    # a split folder passed as the dataset is named as such, val/ as train/ and test/ are
    with pytest.raises(UserError, match="one split of a dataset"):
        load_metadata(str(with_val / "val"), "val")


# ---------------------------------------------------------------------------------------------- the trainer on val/
def train_tiny(data: Path, run: Path) -> tuple[list[dict], str]:
    from tests.conftest import SHORT_RUN, pretrain_args, run_py

    r = run_py(pretrain_args(data, run, SHORT_RUN))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "all/exact_accuracy" in row], r.stdout


@pytest.mark.slow
def test_the_trainer_scores_val_and_chooses_the_best_step_on_it(tiny_sudoku: Path, tmp_path: Path) -> None:
    import torch

    assert (tiny_sudoku / "val" / "dataset.json").is_file()  # the builder's default
    evals, out = train_tiny(tiny_sudoku, tmp_path / "run")
    assert len(evals) == 2 and all("val/all/exact_accuracy" in e and "val/all/accuracy" in e for e in evals)
    assert "time to val exact accuracy" in out and "time to test exact accuracy" not in out
    # The best step kept in the checkpoint is the one with the best val accuracy (the first of equals)
    vals = [e["val/all/exact_accuracy"] for e in evals]
    best = evals[vals.index(max(vals))]["step"]
    progress = torch.load(tmp_path / "run" / f"step_{evals[-1]['step']}.state", weights_only=False)["progress"]
    assert progress["best_step"] == best and progress["timing"]["on"] == "val"
    # records_table reads test's keys only for the test columns: val's never enter them
    from tests.conftest import REPO, load_script

    read_evals = load_script(REPO / "bench" / "records_table.py").read_evals
    assert [e.exact for e in read_evals(tmp_path / "run")] == [e["all/exact_accuracy"] for e in evals]


@pytest.mark.slow
def test_a_folder_without_val_trains_as_before(tiny_sudoku: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_sudoku, data)
    shutil.rmtree(data / "val")
    evals, out = train_tiny(data, tmp_path / "run")
    assert len(evals) == 2 and not any(k.startswith("val/") for e in evals for k in e)
    assert "time to test exact accuracy" in out


def test_generated_val_is_drawn_like_test(tmp_path: Path) -> None:
    # --min-givens shapes every split: a val of minimal puzzles beside an easy test chose the demo's "best" step on
    # puzzles it was never meant to solve (val 0.4% where test had 84.6%)
    out = tmp_path / "easy"
    args = ["--generate", "30", "--test-size", "12", "--min-givens", "45", "--num-aug", "0", "--output-dir", str(out)]
    assert build_sudoku(args) == 0
    for split in ("train", "test", "val"):
        givens = (np.load(out / split / "all__inputs.npy") > 1).sum(axis=1)  # token 1 = blank
        assert len(givens) and givens.min() >= 45, (split, givens.min())
