"""The Sudoku-Extreme-like mix (--mix): symmetry-invariant keys, the split rules on the real lists, the scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.puzzles import sudoku, sudoku_mix
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
    r = build(
        "--mix",
        str(lists),
        "--mix-version",
        "1",
        "--subsample-size",
        str(size),
        "--num-aug",
        "2",
        "--output-dir",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return lists, out, size


def count_puzzles(lists: Path, source: str) -> int:
    return len(sudoku.read_any(str(lists / sudoku_mix.SOURCES[source][0])).inputs)


@pytest.mark.slow
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
    # v1 is v1 although the folder also holds the 11+ list: its four sources only, and mix.json's v1 keys
    assert set(info["train"]["by_source"]) | set(info["test"]["by_source"]) == set(sudoku_mix.SOURCES)
    assert "mix_version" not in info


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
    r = build(
        "--mix",
        str(sudoku_lists),
        "--mix-version",
        "1",
        "--subsample-size",
        "3000",
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2 and "hard puzzles" in r.stderr and "Traceback" not in r.stderr


# --- version 2: the 11+ part of forum_hardest_1905 added, a 5,000-puzzle test split


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> bool:
    """Exit 2 with one error line (beside the builder's "solving the lists" notice) holding every word."""
    lines = [x for x in r.stderr.splitlines() if not x.startswith("solving the lists")]
    return (
        r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words)
    )


@pytest.fixture(scope="module")
def mix_v2_dir(tmp_path_factory) -> Path:
    """v2 from the full public lists (opt-in: the split rules need the real sizes)."""
    if FULL_DATA is None or not (FULL_DATA / "sudoku" / "tdoku").is_dir():
        pytest.skip(FULL_DATA_SKIP)
    out = tmp_path_factory.mktemp("mix2") / "sudoku-mix-v2"
    r = build("--mix", str(FULL_DATA / "sudoku"), "--num-aug", "1", "--output-dir", str(out))  # v2 is the default
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def hard_counts(by_source: dict) -> tuple[int, int]:
    """(11+ puzzles, other hard puzzles) of a split's by_source."""
    p5 = by_source.get(sudoku_mix.P5, 0)
    return p5, sum(n for s, n in by_source.items() if sudoku_mix.SOURCES_V2[s][1] == "hard") - p5


def test_mix_v2_splits_follow_the_recipe(mix_v2_dir: Path) -> None:
    info = json.loads((mix_v2_dir / "mix.json").read_text())
    train_in = np.load(mix_v2_dir / "train" / "all__inputs.npy")[::2].astype(np.int64) - 1
    train_lab = np.load(mix_v2_dir / "train" / "all__labels.npy")[::2].astype(np.int64) - 1
    test_in = np.load(mix_v2_dir / "test" / "all__inputs.npy").astype(np.int64) - 1
    test_lab = np.load(mix_v2_dir / "test" / "all__labels.npy").astype(np.int64) - 1
    assert info["mix_version"] == 2
    assert len(train_in) == info["train"]["puzzles"] == 1000  # the paper's 1k (x1+1 here, x1001 with --num-aug 1000)
    assert len(test_in) == info["test"]["puzzles"] == len(info["test_sources"]) == sudoku_mix.TEST_SIZE_V2
    for split in ("train", "test"):
        assert abs(info[split]["easy_share"] - 1.1 / 4.2) < 0.001  # Sudoku-Extreme's easy share
    # the 11+ list is read, in both splits, at the recipe's share of one common hard pool
    (t5, t_other), (s5, s_other) = hard_counts(info["train"]["by_source"]), hard_counts(info["test"]["by_source"])
    assert t5 / (t5 + t_other) >= sudoku_mix.P5_MIN_SHARE and s5 / (s5 + s_other) >= sudoku_mix.P5_MIN_SHARE
    assert abs(t5 / (t5 + t_other) - s5 / (s5 + s_other)) < 0.08  # same pool: a 738-puzzle draw is within ~2 sd
    # every other hard puzzle is used (5,000 test puzzles need more hard ones than those lists hold)
    # (the 1106 list shares puzzles with the 11+ part: they count as 1106, the list read first)
    assert t_other + s_other + info["test_dropped_as_possibly_equivalent_to_train"] >= 1465 + 375
    assert info["test"]["guesses_mean_by_source"][sudoku_mix.P5] > info["test"]["guesses"]["mean"]
    # no test puzzle can be equivalent to a train puzzle
    assert not set(sudoku_mix.invariant(test_in)) & set(sudoku_mix.invariant(train_in))
    # labels solve the stored puzzles (a sample: the full solve is the build's), and guesses are those of the stored
    pick = np.random.default_rng(0).choice(len(test_in), 300, replace=False)
    _, counts, guesses = sudoku.solve_many(test_in[pick], limit=2)
    assert (counts == 1).all() and guesses.tolist() == np.array(info["test_guesses"])[pick].tolist()
    for inputs, labels in ((train_in, train_lab), (test_in, test_lab)):
        assert sudoku.is_solution(labels).all() and sudoku.agrees(inputs, labels).all()
    # val/: the default 1,000, its hard part from the 11+ puzzles neither split holds (every other hard one is used)
    assert_mix_val(mix_v2_dir)
    val_info = json.loads((mix_v2_dir / "mix.json").read_text())["val"]
    assert val_info["puzzles"] == 1000 and hard_counts(val_info["by_source"])[1] == 0


def assert_mix_val(out: Path, folder_keys: set[bytes] | None = None) -> None:
    """The mix's val/: solved puzzles of the lists, in mix.json, at the easy share, none possibly equivalent to a
    train or test puzzle or to each other."""
    info = json.loads((out / "mix.json").read_text())
    stored = {s: np.load(out / s / "all__inputs.npy").astype(np.int64) - 1 for s in ("train", "test", "val")}
    labels = np.load(out / "val" / "all__labels.npy").astype(np.int64) - 1
    val = stored["val"]
    assert len(val) == info["val"]["puzzles"] == len(info["val_sources"]) == len(info["val_guesses"]) > 0
    assert abs(info["val"]["easy_share"] - sudoku_mix.EASY_SHARE) < 0.05
    assert sudoku.is_solution(labels).all() and sudoku.agrees(val, labels).all()
    _, counts, guesses = sudoku.solve_many(val, limit=2)
    assert (counts == 1).all() and guesses.tolist() == info["val_guesses"]
    keys = sudoku_mix.invariant(val)
    assert len(set(keys)) == len(val)
    assert not set(keys) & set(sudoku_mix.invariant(stored["train"])) and not set(keys) & set(
        sudoku_mix.invariant(stored["test"])
    )
    if folder_keys is not None:
        assert set(keys) <= folder_keys


@pytest.mark.slow
def test_mix_v1_val_needs_hard_puzzles_left(sudoku_lists: Path, tmp_path: Path) -> None:
    """v1 sends every hard puzzle left after train to test: no val/ and one line saying why; --test-size leaves
    some, and then val/ comes without changing train/ or test/."""
    common = ("--mix", str(sudoku_lists), "--mix-version", "1", "--subsample-size", "100", "--num-aug", "1")
    r = build(*common, "--output-dir", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr[-3000:]
    note = [x for x in r.stderr.splitlines() if "val/" in x]
    assert len(note) == 1 and note[0].startswith("note: val/ not written: mix v1 sends every hard puzzle")
    assert not (tmp_path / "all" / "val").exists() and "val" not in json.loads(
        (tmp_path / "all" / "mix.json").read_text()
    )
    for name, extra in (("val", ()), ("noval", ("--val-size", "0"))):
        r = build(*common, "--test-size", "60", "--output-dir", str(tmp_path / name), *extra)
        assert r.returncode == 0, r.stderr[-3000:]
    for split in ("train", "test"):
        for f in sorted((tmp_path / "noval" / split).iterdir()):
            assert f.read_bytes() == (tmp_path / "val" / split / f.name).read_bytes(), f
    assert json.loads((tmp_path / "val" / "mix.json").read_text())["val"]["puzzles"] == 60  # as many as test
    assert_mix_val(tmp_path / "val")


def test_mix_val_refuses_val_from_train(tmp_path: Path) -> None:
    r = build("--mix", str(tmp_path), "--val-from-train", "--output-dir", str(tmp_path / "out"))
    assert one_line_error(r, "--val-from-train is for a CSV source")


def write_list(path: Path, puzzles: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# a part of a list\n" + "".join(p + "\n" for p in puzzles))


def test_mix_v2_builds_from_another_part_of_the_lists(sudoku_lists: Path, tmp_path: Path) -> None:
    """A held-out folder of the same layout: other puzzles, other lengths, the 11+ list under another part name."""
    src = sudoku_lists

    def lines(rel: str) -> list[str]:
        return [x.strip() for x in (src / rel).read_text().splitlines() if x.strip() and not x.startswith("#")]

    folder = tmp_path / "lists"
    write_list(folder / "tdoku" / "puzzles3_magictour_top1465", lines("tdoku/puzzles3_magictour_top1465")[-250:])
    write_list(folder / "tdoku" / "puzzles6_forum_hardest_1106", lines("tdoku/puzzles6_forum_hardest_1106")[:20])
    write_list(folder / "tdoku" / "puzzles2_17_clue", lines("tdoku/puzzles2_17_clue")[-250:])
    part = lines("tdoku/puzzles5_forum_hardest_1905_11+_part1")[-90:]
    write_list(folder / "tdoku" / "puzzles5_forum_hardest_1905_11+_part2", part)
    kaggle = (src / "kaggle-bryanpark" / "sudoku.csv").read_text().splitlines()
    (folder / "kaggle-bryanpark").mkdir()
    (folder / "kaggle-bryanpark" / "sudoku.csv").write_text("\n".join(kaggle[:1] + kaggle[-150:]) + "\n")
    out = tmp_path / "out"
    train_n, test_n = 40, 160
    args = (
        "--mix",
        str(folder),
        "--subsample-size",
        str(train_n),
        "--test-size",
        str(test_n),
        "--output-dir",
        str(out),
    )
    r = build(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((out / "mix.json").read_text())
    assert (info["train"]["puzzles"], info["test"]["puzzles"]) == (train_n, test_n)
    for split, n in (("train", train_n), ("test", test_n)):
        assert info[split]["easy_share"] == round(sudoku_mix._split_counts(n, sudoku_mix.EASY_SHARE)[1] / n, 3)
    # more other hard puzzles than needed here: a random subset of them, the 11+ part at its floor share
    (t5, t_other), (s5, s_other) = hard_counts(info["train"]["by_source"]), hard_counts(info["test"]["by_source"])
    assert (t5 + s5) / (t5 + t_other + s5 + s_other) >= sudoku_mix.P5_MIN_SHARE and t_other + s_other < 250 + 20
    # every stored puzzle is one of the folder's puzzles, transformed
    folder_keys = set(sudoku_mix.invariant(sudoku_mix.read_givens_pool(str(folder))[0].inputs))
    for split in ("train", "test"):
        stored = np.load(out / split / "all__inputs.npy").astype(np.int64) - 1
        assert set(sudoku_mix.invariant(stored)) <= folder_keys
    # the same folder and seed give the same bytes
    r = build(*args[:-1], str(tmp_path / "again"))
    assert r.returncode == 0
    for f in ("train/all__inputs.npy", "test/all__inputs.npy", "test/all__labels.npy", "mix.json"):
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes()
    # val/ (as many as test, where the folder has them): puzzles neither split holds, train and test as without it
    r = build(*args[:-1], str(tmp_path / "noval"), "--val-size", "0")
    assert r.returncode == 0 and not (tmp_path / "noval" / "val").exists()
    for split in ("train", "test"):
        for f in sorted((out / split).iterdir()):
            assert f.read_bytes() == (tmp_path / "noval" / split / f.name).read_bytes(), f
    assert_mix_val(out, folder_keys)
    # more than the folder holds: one line, nothing written
    r = build(*args[:-3], "5000", "--output-dir", str(tmp_path / "big"))
    assert one_line_error(r, "--test-size", "lower") and not (tmp_path / "big").exists()


def test_mix_v2_bad_options_fail_cleanly(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    r = build("--mix", str(tmp_path), "--mix-version", "3", "--output-dir", out)
    assert one_line_error(r, "--mix-version must be 1 or 2")
    r = build("--generate", "5", "--mix-version", "2", "--output-dir", out)
    assert one_line_error(r, "--mix-version only applies with --mix")
    (tmp_path / "tdoku").mkdir()  # a v1-only folder (no 11+ list) under v2, the default
    r = build("--mix", str(tmp_path), "--output-dir", out)
    assert one_line_error(r, "puzzles5_forum_hardest_1905_11+", "--mix-version 1")
    assert not (tmp_path / "out").exists()
