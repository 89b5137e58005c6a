"""Sudoku library (solver, generator, augmentation, readers) and the build_sudoku_dataset.py command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dataset.build_sudoku_dataset import default_output_dir, parse_args
from dataset.puzzles import sudoku, sudoku_mix
from tests.conftest import FIXTURE_DATA
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "dataset" / "build_sudoku_dataset.py"
TDOKU = FIXTURE_DATA / "sudoku" / "tdoku"  # the start of each public list (tests/fixtures/data/README.md)


def first_puzzles(name: str, n: int) -> np.ndarray:
    """The first n puzzles of a tdoku list, parsed directly (independent of the reader under test)."""
    out = []
    with open(TDOKU / name) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(sudoku.parse_puzzle(line))
                if len(out) == n:
                    break
    return np.stack(out)


def kaggle_rows(lists: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    data = sudoku.read_kaggle_csv(str(lists / "kaggle-bryanpark" / "sudoku.csv"))
    return data.inputs[:n], data.labels[:n]


def run_cli(*args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def leftovers(out: Path) -> list[str]:
    """Anything the builder may have left for `out`: the folder itself or its temporary siblings."""
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------------------------------------------------------
# parsing and validation


def test_parse_and_format_round_trip() -> None:
    text = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"
    grid = sudoku.parse_puzzle(text)
    assert grid.dtype == np.uint8 and grid.shape == (81,)
    assert sudoku.format_puzzle(grid) == text
    assert (sudoku.parse_puzzle(text.replace(".", "0")) == grid).all()
    assert sudoku.format_puzzle(grid, blank="0") == text.replace(".", "0")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1" * 80, "expected 81 characters"),
        ("x" + "." * 80, "bad character 'x' at position 1"),
        ("11" + "." * 79, "digit 1 appears twice in row 1"),
        ("5" + "." * 8 + "5" + "." * 71, "digit 5 appears twice in column 1"),
        ("7" + "." * 9 + "7" + "." * 70, "digit 7 appears twice in box 1"),
    ],
)
def test_parse_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        sudoku.parse_puzzle(text)


# ---------------------------------------------------------------------------------------------------------------
# solver


def test_solver_on_top1465() -> None:
    puzzles = first_puzzles("puzzles3_magictour_top1465", 50)
    solutions, counts, guesses = sudoku.solve_many(puzzles)
    assert (counts == 1).all()  # unique
    assert sudoku.is_solution(solutions).all()
    assert sudoku.agrees(puzzles, solutions).all()
    assert (guesses > 0).any()  # these need search, not just singles
    one = sudoku.solve(sudoku.format_puzzle(puzzles[0]))
    assert one.count == 1 and (one.solution == solutions[0]).all() and one.guesses == guesses[0]


def test_solver_on_17_clue_and_kaggle(sudoku_lists: Path) -> None:
    puzzles = first_puzzles("puzzles2_17_clue", 200)
    solutions, counts, _ = sudoku.solve_many(puzzles)
    assert (counts == 1).all() and sudoku.is_solution(solutions).all() and sudoku.agrees(puzzles, solutions).all()
    inputs, labels = kaggle_rows(sudoku_lists, 200)
    solutions, counts, guesses = sudoku.solve_many(inputs)
    assert (counts == 1).all() and (solutions == labels).all()
    assert (guesses == 0).all()  # easy puzzles: singles alone


def test_solver_counts_and_guesses_do_not_depend_on_batch() -> None:
    rng = np.random.default_rng(3)
    inputs, labels, ratings = sudoku.generate(12, rng)
    empty = np.zeros((1, 81), dtype=np.uint8)  # many solutions: stops at the limit
    broken = labels[:1].copy()
    broken[0, 0] = 0
    broken[0, 10] = labels[0, 0]  # the blank's only value now clashes in its box: no solution
    batch = np.concatenate([inputs, empty, broken])
    _, counts, guesses = sudoku.solve_many(batch, limit=2)
    assert list(counts) == [1] * 12 + [2, 0]
    assert (guesses[:12] == ratings).all()
    for i in (0, 5):  # one at a time, in tiny batches: the same tree
        alone = sudoku.solve(inputs[i])
        assert alone.count == 1 and (alone.solution == labels[i]).all() and alone.guesses == ratings[i]
    _, small, _ = sudoku.search_masks(sudoku.givens_to_masks(batch), limit=2, slots=3)
    assert (small == counts).all()


# ---------------------------------------------------------------------------------------------------------------
# generator


def test_generator_unique_minimal_and_reproducible() -> None:
    a_in, a_lab, a_rat = sudoku.generate(25, np.random.default_rng(11))
    b_in, b_lab, b_rat = sudoku.generate(25, np.random.default_rng(11))
    assert (a_in == b_in).all() and (a_lab == b_lab).all() and (a_rat == b_rat).all()
    c_in, _, _ = sudoku.generate(25, np.random.default_rng(12))
    assert not (a_in == c_in).all()

    assert a_in.shape == (25, 81) and a_in.dtype == np.uint8 and a_lab.dtype == np.uint8
    assert len({p.tobytes() for p in a_lab}) == 25  # different grids
    assert sudoku.is_solution(a_lab).all() and sudoku.agrees(a_in, a_lab).all()
    solutions, counts, guesses = sudoku.solve_many(a_in)
    assert (counts == 1).all() and (solutions == a_lab).all() and (guesses == a_rat).all()
    # minimal: blanking any one remaining clue of the first puzzle allows a second solution
    clues = np.flatnonzero(a_in[0])
    trials = np.repeat(a_in[:1], len(clues), axis=0)
    trials[np.arange(len(clues)), clues] = 0
    assert (sudoku.solve_many(trials)[1] == 2).all()


def test_generator_hard_and_easy_options() -> None:
    inputs, labels, ratings = sudoku.generate(4, np.random.default_rng(5), min_guesses=3, batch=64)
    assert len(inputs) == 4 and (ratings >= 3).all()
    assert (sudoku.solve_many(inputs)[1] == 1).all()
    easy, _, _ = sudoku.generate(10, np.random.default_rng(5), min_clues=40)
    assert ((easy != 0).sum(axis=1) == 40).all()
    assert (sudoku.solve_many(easy)[1] == 1).all()


# ---------------------------------------------------------------------------------------------------------------
# augmentation


def test_augment_valid_and_varied() -> None:
    inputs, labels, _ = sudoku.generate(3, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for inp, lab in zip(inputs, labels):
        aug_in, aug_lab = sudoku.augment(inp, lab, rng, 1500)
        assert aug_in.shape == aug_lab.shape == (1500, 81) and aug_in.dtype == aug_lab.dtype == np.uint8
        assert sudoku.is_solution(aug_lab).all()
        assert sudoku.agrees(aug_in, aug_lab).all()
        assert ((aug_in != 0).sum(axis=1) == (inp != 0).sum()).all()  # blanks stay blanks
        assert len({x.tobytes() for x in aug_lab}) > 1490

    # Follow two marked cells in one row to see which transforms happen: a transpose puts them in one column.
    marked = np.zeros(81, dtype=np.uint8)
    marked[[1, 2]] = [1, 2]
    aug_in, aug_lab = sudoku.augment(marked, labels[0], np.random.default_rng(2), 2000)
    pos = np.stack([np.flatnonzero(row) for row in aug_in])  # (2000, 2) cells holding the marks
    same_row = pos[:, 0] // 9 == pos[:, 1] // 9
    same_col = pos[:, 0] % 9 == pos[:, 1] % 9
    assert (same_row ^ same_col).all()
    assert 800 < same_row.sum() < 1200  # transposed about half the time
    assert len(set(pos[:, 0] // 9)) == 9 and len(set(pos[:, 0] % 9)) == 9  # bands, stacks, rows and columns move
    # the marks stay in one stack (band when transposed) and take every pair of places inside it
    within = np.where(same_row[:, None], pos % 9 % 3, pos // 9 % 3)
    assert len({tuple(w) for w in within[same_row]}) == len({tuple(w) for w in within[~same_row]}) == 3
    assert len(set(aug_lab[:, 0])) == 9  # digits relabelled

    again = sudoku.augment(inputs[0], labels[0], np.random.default_rng(9), 50)
    assert all(
        (x == y).all() for x, y in zip(again, sudoku.augment(inputs[0], labels[0], np.random.default_rng(9), 50))
    )


# ---------------------------------------------------------------------------------------------------------------
# readers


def test_readers_on_the_public_formats(sudoku_lists: Path, tmp_path: Path) -> None:
    # the 17-clue list: comment lines, then CRLF lines; keep its bytes as they are
    raw = (TDOKU / "puzzles2_17_clue").read_bytes().split(b"\n")
    small = tmp_path / "17clue"
    small.write_bytes(b"\n".join(raw[:104]) + b"\n")
    lines = sudoku.read_puzzle_lines(str(small))
    assert len(lines.inputs) == 100 and lines.skipped == 0
    assert ((lines.inputs != 0).sum(axis=1) == 17).all()
    assert sudoku.is_solution(lines.labels).all() and sudoku.agrees(lines.inputs, lines.labels).all()

    kag = tmp_path / "kaggle.csv"
    kaggle = sudoku_lists / "kaggle-bryanpark" / "sudoku.csv"
    kag.write_text("\n".join(kaggle.read_text().splitlines()[:51]) + "\n")
    k = sudoku.read_kaggle_csv(str(kag))
    assert len(k.inputs) == 50 and sudoku.is_solution(k.labels).all()

    hf = tmp_path / "hf.csv"
    sudoku.write_hf_csv(str(hf), k.inputs, k.labels, ratings=np.arange(50), source="kaggle")
    back = sudoku.read_hf_csv(str(hf))
    assert (back.inputs == k.inputs).all() and (back.labels == k.labels).all() and (back.ratings == np.arange(50)).all()
    assert len(sudoku.read_hf_csv(str(hf), min_difficulty=30).inputs) == 20
    assert len(sudoku.read_any(str(hf)).inputs) == len(sudoku.read_any(str(kag)).inputs) == 50


def test_reader_bad_rows(tmp_path: Path) -> None:
    inputs, labels, _ = sudoku.generate(6, np.random.default_rng(4))
    path = tmp_path / "train.csv"
    sudoku.write_hf_csv(str(path), inputs, labels)
    rows = path.read_text().splitlines()
    wrong = labels[3].copy()
    wrong[[0, 1]] = wrong[[1, 0]]  # no longer a valid grid
    rows[4] = f",{sudoku.format_puzzle(inputs[3])},{sudoku.format_puzzle(wrong)},0"  # line 5
    rows[6] = rows[6] + ",extra"  # line 7
    path.write_text("\n".join(rows) + "\n")

    with pytest.raises(UserError, match=r"train\.csv, line 5: solution is not a complete valid sudoku"):
        sudoku.read_hf_csv(str(path))
    got = sudoku.read_hf_csv(str(path), on_bad_row="skip")
    assert len(got.inputs) == 4 and got.skipped == 2
    assert "line 5" in got.problems[0] and "line 7: expected 4 fields" in got.problems[1]

    lines = tmp_path / "list.txt"
    lines.write_text(f"# comment\n{'.' * 81}\n{sudoku.format_puzzle(inputs[0])}\r\n{'1' * 81}\n")
    with pytest.raises(UserError, match=r"list\.txt, line 2: puzzle has more than one solution"):
        sudoku.read_puzzle_lines(str(lines))
    got = sudoku.read_puzzle_lines(str(lines), on_bad_row="skip")
    assert got.skipped == 2 and (got.labels == labels[:1]).all()
    assert "line 4: puzzle: conflicting givens" in got.problems[1]

    with pytest.raises(UserError, match="expected the header"):
        sudoku.read_kaggle_csv(str(path))


# ---------------------------------------------------------------------------------------------------------------
# command line


def load_split(root: Path, split: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((root / split / "dataset.json").read_text())
    arrays = {k: np.load(root / split / f"all__{k}.npy") for k in sudoku_fields()}
    return meta, arrays


def sudoku_fields() -> tuple[str, ...]:
    return ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def test_cli_generate_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    res = run_cli("--generate", "20", "--test-size", "10", "--num-aug", "3", "--output-dir", str(out), "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "train: 20 groups, 80 puzzles, 80 examples" in res.stdout and "bytes on disk" in res.stdout
    assert "val: 10 groups, 10 puzzles, 10 examples" in res.stdout  # as many as test, never augmented
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    assert sorted(p.name for p in out.iterdir()) == ["identifiers.json", "test", "train", "val"]

    for split, groups, per in (("train", 20, 4), ("test", 10, 1), ("val", 10, 1)):
        meta, a = load_split(out, split)
        assert meta == {
            "pad_id": 0,
            "ignore_label_id": 0,
            "blank_identifier_id": 0,
            "vocab_size": 11,
            "seq_len": 81,
            "num_puzzle_identifiers": 1,
            "total_groups": groups,
            "mean_puzzle_examples": 1,
            "sets": ["all"],
        }
        puzzles = groups * per
        assert a["inputs"].dtype == a["labels"].dtype == np.uint8
        assert a["inputs"].shape == a["labels"].shape == (puzzles, 81)
        for k in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            assert a[k].dtype == np.int32
        assert (a["puzzle_identifiers"] == 0).all() and len(a["puzzle_identifiers"]) == puzzles
        assert (a["puzzle_indices"] == np.arange(puzzles + 1)).all()
        assert (a["group_indices"] == np.arange(groups + 1) * per).all()
        assert a["inputs"].min() >= 1 and a["inputs"].max() <= 10 and a["labels"].min() >= 2
        inputs, labels = a["inputs"] - 1, a["labels"] - 1
        assert sudoku.is_solution(labels).all() and sudoku.agrees(inputs, labels).all()
        assert (sudoku.solve_many(inputs[::per])[1] == 1).all()  # the originals are proper puzzles
        clues = (inputs != 0).sum(axis=1).reshape(groups, per)
        assert (clues == clues[:, :1]).all()  # augmentations keep their group's clue count

    again = tmp_path / "gen2"
    assert (
        run_cli(
            "--generate", "20", "--test-size", "10", "--num-aug", "3", "--output-dir", str(again), "--seed", "1"
        ).returncode
        == 0
    )
    for split in ("train", "test", "val"):
        for k in sudoku_fields():
            assert (np.load(out / split / f"all__{k}.npy") == np.load(again / split / f"all__{k}.npy")).all()


def test_cli_generated_data_is_not_named_after_the_benchmark(tmp_path: Path) -> None:
    # without --output-dir: data/sudoku-gen-<N>[-aug-<K>], never the real benchmark's data/sudoku-extreme-full
    for extra, name in (([], "sudoku-gen-12"), (["--num-aug", "2"], "sudoku-gen-12-aug-2")):
        res = run_cli("--generate", "12", "--test-size", "4", *extra, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"wrote data/{name}:" in res.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["sudoku-gen-12", "sudoku-gen-12-aug-2"]
    # the real data keeps the original's default; the mix is named like the README's folder
    defaults = {
        (): "data/sudoku-extreme-full",
        ("--source-dir", "x", "--subsample-size", "1000"): "data/sudoku-extreme-full",
        ("--generate", "1000", "--num-aug", "1000"): "data/sudoku-gen-1k-aug-1000",
        ("--mix", "x", "--subsample-size", "1000", "--num-aug", "1000"): "data/sudoku-mix-1k-aug-1000",
        ("--mix", "x", "--subsample-size", "300"): "data/sudoku-mix-300",
    }
    for argv, want in defaults.items():
        assert default_output_dir(parse_args(list(argv))) == want


def test_cli_source_dir(sudoku_lists: Path, tmp_path: Path) -> None:
    inputs, labels = kaggle_rows(sudoku_lists, 40)
    src = tmp_path / "src"
    src.mkdir()
    ratings = np.arange(40) % 3
    sudoku.write_hf_csv(str(src / "train.csv"), inputs[:30], labels[:30], ratings[:30], source="kaggle")
    sudoku.write_hf_csv(str(src / "test.csv"), inputs[30:], labels[30:], ratings[30:], source="kaggle")
    out = tmp_path / "out"
    res = run_cli(
        "--source-dir", str(src), "--output-dir", str(out), "--num-aug", "2", "--subsample-size", "15",
        "--min-difficulty", "1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    meta, train = load_split(out, "train")
    assert meta["total_groups"] == 15 and train["inputs"].shape == (45, 81)
    eligible = {p.tobytes() for p in (inputs[:30] + 1)[ratings[:30] >= 1]}
    originals = train["inputs"][::3]
    assert len({p.tobytes() for p in originals}) == 15 and {p.tobytes() for p in originals} <= eligible
    meta, test = load_split(out, "test")
    keep = 30 + np.flatnonzero(ratings[30:] >= 1)
    assert meta["total_groups"] == len(keep) == 6  # filtered by rating too, but neither subsampled nor augmented
    assert (test["inputs"] == inputs[keep] + 1).all() and (test["labels"] == labels[keep] + 1).all()


def test_cli_bad_row_stops_and_leaves_nothing(tmp_path: Path) -> None:
    inputs, labels, _ = sudoku.generate(8, np.random.default_rng(2))
    src = tmp_path / "src"
    src.mkdir()
    sudoku.write_hf_csv(str(src / "train.csv"), inputs[:6], labels[:6])
    sudoku.write_hf_csv(str(src / "test.csv"), inputs[6:], labels[6:])
    rows = (src / "train.csv").read_text().splitlines()
    assert rows[4].startswith(",")  # empty source
    rows[4] = ",x" + rows[4][2:]  # line 5: a bad character in the question
    (src / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"

    res = run_cli("--source-dir", str(src), "--output-dir", str(out))
    assert res.returncode == 2
    assert "train.csv, line 5" in res.stderr and "bad character 'x'" in res.stderr
    assert "Traceback" not in res.stderr
    assert leftovers(out) == []

    res = run_cli("--source-dir", str(src), "--output-dir", str(out), "--on-bad-row", "skip")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 bad rows" in res.stderr
    assert json.loads((out / "train" / "dataset.json").read_text())["total_groups"] == 5


def test_cli_refuses_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run_cli("--generate", "3", "--test-size", "2", "--output-dir", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert (out / "keep.txt").read_text() == "mine" and leftovers(out) == ["out"]
    res = run_cli("--generate", "3", "--test-size", "2", "--output-dir", str(out), "--overwrite")
    assert res.returncode == 0, res.stderr
    assert not (out / "keep.txt").exists() and (out / "train" / "dataset.json").exists()
    assert leftovers(out) == ["out"]


def test_cli_offline_download_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, str(CLI), "--output-dir", str(out)], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: could not download train.csv")
    assert "--source-dir" in res.stderr and "--generate" in res.stderr and "Traceback" not in res.stderr
    assert leftovers(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_interrupted_build_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(CLI), "--generate", "100000", "--output-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background by a script (`cmd &`) inherits SIGINT ignored, and so would the
        # builder; a user's Ctrl-C reaches a foreground process with the default handler, as here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 30
        while not any(n.startswith(".out.partial") for n in leftovers(out)):  # midway: writing has begun
            assert proc.poll() is None and time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------------------------------
# the validation split


def split_bytes(root: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, bytes]:
    """Every file of the given splits, by path: what a build with val/ must leave exactly as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for s in splits for p in sorted((root / s).iterdir())}


def originals(root: Path, split: str) -> np.ndarray:
    """Digits (0 blank) of the first puzzle of every group: the puzzles themselves, not their augmentations."""
    meta, a = load_split(root, split)
    return a["inputs"][a["group_indices"][:-1]].astype(np.int64) - 1


def assert_val_disjoint_and_valid(root: Path) -> None:
    """val/ holds real puzzles with their solutions, none possibly equivalent to a train or test puzzle or to
    another val puzzle (the mix's symmetry-invariant key), one example per puzzle, the metadata of test/."""
    meta, val = load_split(root, "val")
    test_meta, _ = load_split(root, "test")
    assert {k: v for k, v in meta.items() if k != "total_groups"} == {
        k: v for k, v in test_meta.items() if k != "total_groups"
    }
    n = meta["total_groups"]
    assert (val["group_indices"] == np.arange(n + 1)).all() and len(val["inputs"]) == n
    inputs, labels = val["inputs"].astype(np.int64) - 1, val["labels"].astype(np.int64) - 1
    assert sudoku.is_solution(labels).all() and sudoku.agrees(inputs, labels).all()
    assert (sudoku.solve_many(inputs)[1] == 1).all()
    keys = sudoku_mix.invariant(inputs)
    assert len(set(keys)) == n
    assert not set(keys) & set(sudoku_mix.invariant(originals(root, "train")))
    assert not set(keys) & set(sudoku_mix.invariant(originals(root, "test")))


@pytest.mark.slow
def test_val_split_leaves_train_and_test_byte_identical(tmp_path: Path) -> None:
    args = ("--generate", "30", "--test-size", "12", "--num-aug", "2", "--seed", "5")
    for name, extra in (("default", ()), ("none", ("--val-size", "0")), ("more", ("--val-size", "25"))):
        res = run_cli(*args, *extra, "--output-dir", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        assert "val/ not written" not in res.stderr  # generated: never short of puzzles
    assert not (tmp_path / "none" / "val").exists()
    base = split_bytes(tmp_path / "none")
    assert len(base) == 12  # 5 arrays and dataset.json, two splits
    for name, n in (("default", 12), ("more", 25)):  # default: as many as test (at most 1000)
        assert split_bytes(tmp_path / name) == base, name
        assert load_split(tmp_path / name, "val")[0]["total_groups"] == n
        assert_val_disjoint_and_valid(tmp_path / name)
    # val's own stream: the same options give the same bytes
    again = tmp_path / "again"
    assert run_cli(*args, "--output-dir", str(again)).returncode == 0
    assert split_bytes(again, ("val",)) == split_bytes(tmp_path / "default", ("val",))


def test_val_split_from_a_csv_source(sudoku_lists: Path, tmp_path: Path) -> None:
    inputs, labels = kaggle_rows(sudoku_lists, 60)
    src = tmp_path / "src"
    src.mkdir()
    sudoku.write_hf_csv(str(src / "train.csv"), inputs[:45], labels[:45], source="kaggle")
    sudoku.write_hf_csv(str(src / "test.csv"), inputs[45:], labels[45:], source="kaggle")
    train_rows = {p.tobytes() for p in inputs[:45]}

    def build(name: str, *extra: str) -> subprocess.CompletedProcess:
        return run_cli("--source-dir", str(src), "--output-dir", str(tmp_path / name), *extra)

    # --subsample-size leaves train.csv rows over: val/ (as many as test's 15) from them, train/test untouched
    assert build("sub0", "--subsample-size", "20", "--num-aug", "1", "--val-size", "0").returncode == 0
    res = build("sub", "--subsample-size", "20", "--num-aug", "1")
    assert res.returncode == 0, res.stderr
    assert split_bytes(tmp_path / "sub") == split_bytes(tmp_path / "sub0")
    assert_val_disjoint_and_valid(tmp_path / "sub")
    val = originals(tmp_path / "sub", "val").astype(np.uint8)
    assert len(val) == 15 and {p.tobytes() for p in val} <= train_rows
    # 25 rows left over, 40 asked: all that is there, and one line saying so
    res = build("short", "--subsample-size", "20", "--val-size", "40")
    assert res.returncode == 0 and "val/ holds 25 of the 40 puzzles asked" in res.stderr
    # every row goes to train: no val/, one line saying why and what to do
    assert build("full0", "--val-size", "0").returncode == 0
    res = build("full")
    assert res.returncode == 0, res.stderr
    note = [x for x in res.stderr.splitlines() if "val/" in x]
    assert len(note) == 1 and note[0].startswith("note: val/ not written: every train.csv puzzle goes to train/")
    assert "--val-from-train" in note[0] and not (tmp_path / "full" / "val").exists()
    assert split_bytes(tmp_path / "full") == split_bytes(tmp_path / "full0")
    # --val-from-train: val/ comes out of train/, which changes; test/ does not
    res = build("from", "--val-from-train", "--val-size", "10")
    assert res.returncode == 0, res.stderr
    assert load_split(tmp_path / "from", "train")[0]["total_groups"] == 35
    assert split_bytes(tmp_path / "from", ("test",)) == split_bytes(tmp_path / "full0", ("test",))
    assert_val_disjoint_and_valid(tmp_path / "from")
    kept = {p.tobytes() for p in originals(tmp_path / "from", "train").astype(np.uint8)}
    held = {p.tobytes() for p in originals(tmp_path / "from", "val").astype(np.uint8)}
    assert kept | held == train_rows and not kept & held


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generate", "5", "--val-size", "-1"], "--val-size must be >= 0"),
        (["--generate", "5", "--val-from-train"], "--val-from-train is for a CSV source"),
        (["--source-dir", ".", "--val-from-train", "--val-size", "0"], "takes nothing"),
    ],
)
def test_val_options_fail_cleanly(tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli(*args, "--output-dir", str(tmp_path / "out"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
