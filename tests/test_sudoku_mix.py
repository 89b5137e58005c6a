"""The Sudoku-Extreme-like mix (--mix): symmetry-invariant keys, the split rules on the real lists, the scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset import sudoku, sudoku_mix
from dataset.score_sudoku import score
from tests.conftest import FULL_DATA, FULL_DATA_SKIP, REPO


def build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "dataset/build_sudoku_dataset.py", *args], cwd=REPO, capture_output=True, text=True
    )


def test_invariant_ignores_symmetry_and_tells_puzzles_apart() -> None:
    rng = np.random.default_rng(0)
    inputs, labels, _ = sudoku.generate(40, rng)
    keys = sudoku_mix.invariant(inputs)
    assert len(set(keys)) >= 38  # distinct random puzzles almost never share a key
    for i in range(5):
        aug, _ = sudoku.augment(inputs[i], labels[i], rng, 60)  # relabel, transpose, band/row/stack/col swaps
        assert set(sudoku_mix.invariant(aug)) == {keys[i]}
    # one clue more is a different puzzle
    more = inputs[0].copy()
    blank = np.flatnonzero(more == 0)[0]
    more[blank] = labels[0][blank]
    assert sudoku_mix.invariant(more[None])[0] != keys[0]


# (folder of lists, --subsample-size): the committed samples with a Kaggle-format CSV made here, and (opt-in) the
# full public lists with the README's 1000 train puzzles
MIXES = {"sample": 200, "full": 1000}


@pytest.fixture(scope="module", params=list(MIXES))
def mix(request, tmp_path_factory) -> tuple[Path, Path, int]:
    """(lists folder, built dataset, train size)."""
    if request.param == "full":
        if FULL_DATA is None or not (FULL_DATA / "sudoku" / "tdoku").is_dir():
            pytest.skip(FULL_DATA_SKIP)
        lists = FULL_DATA / "sudoku"
    else:
        lists = request.getfixturevalue("sudoku_lists")
    size = MIXES[request.param]
    out = tmp_path_factory.mktemp("mix") / "sudoku-mix"
    r = build("--mix", str(lists), "--subsample-size", str(size), "--num-aug", "2", "--output-dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return lists, out, size


def count_puzzles(lists: Path, source: str) -> int:
    return len(sudoku.read_any(str(lists / sudoku_mix.SOURCES[source][0])).inputs)


def test_mix_splits_follow_the_recipe(mix: tuple[Path, Path, int]) -> None:
    lists, mix_dir, size = mix
    info = json.loads((mix_dir / "mix.json").read_text())
    train_in = np.load(mix_dir / "train" / "all__inputs.npy")[::3].astype(np.int64) - 1  # originals, not augments
    test_in = np.load(mix_dir / "test" / "all__inputs.npy").astype(np.int64) - 1
    test_lab = np.load(mix_dir / "test" / "all__labels.npy").astype(np.int64) - 1
    assert len(train_in) == info["train"]["puzzles"] == size
    assert len(test_in) == info["test"]["puzzles"] == len(info["test_sources"]) > size / 2
    for split in ("train", "test"):  # Sudoku-Extreme's easy share, 1.1M of 4.2M
        assert abs(info[split]["easy_share"] - 1.1 / 4.2) < 0.01
    # all of the lists' hard puzzles are used: train's, the rest in test unless possibly equivalent
    hard_sources = [s for s, (_, group, _) in sudoku_mix.SOURCES.items() if group == "hard"]
    train_hard = sum(info["train"]["by_source"].get(s, 0) for s in hard_sources)
    assert train_hard == size - round(size * sudoku_mix.EASY_SHARE)
    test_hard = sum(info["test"]["by_source"].get(s, 0) for s in hard_sources)
    lists_hard = sum(count_puzzles(lists, s) for s in hard_sources)
    assert test_hard + train_hard + info["test_dropped_as_possibly_equivalent_to_train"] >= lists_hard
    # real puzzles, unique solutions, labels that solve them
    _, counts, guesses = sudoku.solve_many(test_in, limit=2)
    assert (counts == 1).all() and sudoku.is_solution(test_lab).all() and sudoku.agrees(test_in, test_lab).all()
    assert guesses.tolist() == info["test_guesses"]  # the rating of each stored puzzle, in test order
    # no test puzzle can be equivalent to a train puzzle
    assert not set(sudoku_mix.invariant(test_in)) & set(sudoku_mix.invariant(train_in))
    for split in ("train", "test"):  # the hard lists are harder than the easy ones, in both splits
        by = info[split]["guesses_mean_by_source"]
        assert min(by[s] for s in hard_sources) > max(by["puzzles2_17_clue"], by["kaggle"])


def test_scorer_reports_exact_accuracy_per_source(mix: tuple[Path, Path, int], tmp_path: Path) -> None:
    mix_dir = mix[1]
    info = json.loads((mix_dir / "mix.json").read_text())
    inputs = torch.from_numpy(np.load(mix_dir / "test" / "all__inputs.npy").astype(np.int32))
    labels = torch.from_numpy(np.load(mix_dir / "test" / "all__labels.npy").astype(np.int32))
    logits = torch.nn.functional.one_hot(labels.long(), 11).float()
    wrong = torch.tensor([s == "puzzles6_forum_hardest_1106" for s in info["test_sources"]])
    logits[wrong, 0] = logits[wrong, 0].roll(1)  # one wrong cell in every forum_hardest puzzle
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))  # any order
    path = tmp_path / "step_1_all_preds.0"
    torch.save({"inputs": inputs[order], "labels": labels[order], "logits": logits[order]}, path)
    out = score(str(mix_dir), str(path))
    assert out["puzzles"] == len(inputs)
    assert out["exact_accuracy"] == round(1 - float(wrong.float().mean()), 4)
    assert out["by_source"]["puzzles6_forum_hardest_1106"]["exact_accuracy"] == 0.0
    assert out["by_source"]["puzzles3_magictour_top1465"]["exact_accuracy"] == 1.0
    assert sum(v["puzzles"] for v in out["by_guesses"].values()) == len(inputs)


def test_mix_bad_options_fail_cleanly(tmp_path: Path) -> None:
    r = build("--mix", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "--mix folder" in r.stderr and "Traceback" not in r.stderr
    r = build("--mix", str(tmp_path), "--min-guesses", "3", "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "do not apply to --mix" in r.stderr
    r = build("--mix", str(tmp_path), "--output-dir", str(tmp_path / "out"))  # a folder without the lists
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_mix_too_many_train_puzzles_is_explained(sudoku_lists: Path, tmp_path: Path) -> None:
    r = build("--mix", str(sudoku_lists), "--subsample-size", "3000", "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "hard puzzles" in r.stderr and "Traceback" not in r.stderr
