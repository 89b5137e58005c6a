"""The loader and the optional val/ split: read like test by name, checked like test, and not needed."""

from __future__ import annotations

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
