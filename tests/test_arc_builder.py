"""ARC library (reading, augmentation, placement, decoding) and the build_arc_dataset.py command line."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset.build_arc_dataset import DEFAULT_DIRS, parse_args
from dataset.build_arc_dataset import main as build_main
from dataset.puzzles import arc
from tests.conftest import FIXTURE_DATA

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "dataset" / "build_arc_dataset.py"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def load_split(root: Path, split: str) -> dict:
    out = {f: np.load(root / split / f"all__{f}.npy") for f in arc_fields()}
    out["meta"] = json.loads((root / split / "dataset.json").read_text())
    return out


def arc_fields() -> tuple[str, ...]:
    return ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.fixture
def small_raw(tmp_path: Path) -> Path:
    """A few real tasks in the submodule layout: 6 training and 4 evaluation tasks of ARC-AGI-1 (the committed
    sample, tests/fixtures/data)."""
    root = tmp_path / "raw" / "ARC"
    shutil.copytree(FIXTURE_DATA / "raw-data" / "ARC-AGI" / "data", root)
    assert [len(list((root / sub).glob("*.json"))) for sub in ("training", "evaluation")] == [6, 4]
    return root


# ---------------------------------------------------------------------------------------------------------------
# Against the original builder


# Measured by running the original orig/dataset/build_arc_dataset.py (commit 42410da) on shared/data/raw-data
# (ARC-AGI/data + ConceptARC/corpus) with num_aug=8, seed 42, its directory listings sorted by name and
# PYTHONHASHSEED=2 (which makes it number and place the train split first, as this builder always does): every
# array, dataset.json and identifiers.json below is the original's output, byte for byte.
ORIGINAL_NUM_AUG_8 = {
    "train": {
        "groups": 960,
        "puzzles": 8640,
        "examples": 35892,
        "sha": {
            "inputs": "5db6c7b354dba089",
            "labels": "44cdd510eae7ba2d",
            "puzzle_identifiers": "4f6a94f559f3b397",
            "puzzle_indices": "9a8a18e39d19c899",
            "group_indices": "a0eb3b8a31f7e35a",
        },
    },
    "test": {
        "groups": 400,
        "puzzles": 3600,
        "examples": 3771,
        "sha": {
            "inputs": "080647549f1ae796",
            "labels": "c335f87bc05713f7",
            "puzzle_identifiers": "7928648ba48a6f61",
            "puzzle_indices": "b880f20bf108e9c1",
            "group_indices": "7e60cea37544983f",
        },
    },
    "identifiers": 8641,
    "identifiers_sha": "bde6627ebece3caf",
}


def test_real_data_matches_original_builder(full_data: Path, tmp_path: Path) -> None:
    raw = full_data / "raw-data"
    out = tmp_path / "arc8"
    r = run_cli(
        "--dataset-dirs", str(raw / "ARC-AGI" / "data"), str(raw / "ConceptARC" / "corpus"),
        "--num-aug", "8", "--output-dir", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "train: 960 groups, 8640 puzzles, 35892 examples" in r.stdout
    for split in ("train", "test"):
        want = ORIGINAL_NUM_AUG_8[split]
        got = load_split(out, split)
        meta = got["meta"]
        assert meta["total_groups"] == want["groups"] == len(got["group_indices"]) - 1
        assert len(got["puzzle_identifiers"]) == want["puzzles"] and len(got["inputs"]) == want["examples"]
        assert meta["num_puzzle_identifiers"] == ORIGINAL_NUM_AUG_8["identifiers"]
        assert (meta["vocab_size"], meta["seq_len"], meta["pad_id"], meta["ignore_label_id"]) == (12, 900, 0, 0)
        assert meta["mean_puzzle_examples"] == pytest.approx(want["examples"] / want["puzzles"])
        assert got["inputs"].dtype == np.uint8
        for field in arc_fields():
            assert sha(got[field]) == want["sha"][field], (split, field)
    ids = (out / "identifiers.json").read_bytes()
    assert hashlib.sha256(ids).hexdigest()[:16] == ORIGINAL_NUM_AUG_8["identifiers_sha"]
    names = json.loads(ids)
    assert names[0] == "<blank>" and len(names) == len(set(names)) == 8641
    assert all(arc.parse_aug_name(n)[2] is not None for n in names[2:10])


def test_dataset_dirs_replace_the_default() -> None:
    assert parse_args([]).dataset_dirs == DEFAULT_DIRS
    assert parse_args(["--dataset-dirs", "a/b"]).dataset_dirs == ["a/b"]


# ---------------------------------------------------------------------------------------------------------------
# Splits, placement and round trips


def expected_examples(path: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """A task's examples in `split`, straight from its JSON: in the file's key order; an `evaluation` task sends
    its demo pairs to train and its test pairs to test, any other task all its pairs to train."""
    out = []
    for key, pairs in json.loads(path.read_text()).items():
        if key in ("train", "test"):
            goes = key if path.parent.name == "evaluation" else "train"
            if goes == split:
                out += [(np.array(p["input"]), np.array(p["output"])) for p in pairs]
    return out


def find_grid(canvas: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The grid on a canvas and its offset, checking the frame: colours in a rectangle, eos right below it and right
    of it where those fit, pad everywhere else."""
    c = canvas.reshape(30, 30)
    rows, cols = np.nonzero(c >= 2)
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    assert (c[r0:r1, c0:c1] >= 2).all()
    expect = np.zeros((30, 30), dtype=np.int64)
    expect[r0:r1, c0:c1] = c[r0:r1, c0:c1]
    if r1 < 30:
        expect[r1, c0:c1] = 1
    if c1 < 30:
        expect[r0:r1, c1] = 1
    assert (c == expect).all(), "eos frame or padding wrong"
    return c[r0:r1, c0:c1] - 2, int(r0), int(c0)


def test_placement_eos_frame_and_inverse_round_trip(small_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "arc"
    r = run_cli("--dataset-dirs", str(small_raw), "--num-aug", "8", "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    names = json.loads((out / "identifiers.json").read_text())
    files = {p.stem: p for p in small_raw.glob("*/*.json")}
    shifted = 0
    for split in ("train", "test"):
        d = load_split(out, split)
        pidx, gidx = d["puzzle_indices"], d["group_indices"]
        for g in range(len(gidx) - 1):
            for p in range(gidx[g], gidx[g + 1]):
                base, tid, mapping = arc.parse_aug_name(names[d["puzzle_identifiers"][p]])
                assert (p == gidx[g]) == (mapping is None)  # the group starts with the task itself
                expected = expected_examples(files[base], split)
                examples = range(pidx[p], pidx[p + 1])
                assert len(examples) == len(expected)
                at_origin = 0
                for e, (inp, lab) in zip(examples, expected):
                    gi, ri, ci = find_grid(d["inputs"][e])
                    gl, rl, cl = find_grid(d["labels"][e])
                    assert (ri, ci) == (rl, cl)  # input and output share the offset
                    at_origin += (ri, ci) == (0, 0)
                    shifted += (ri, ci) != (0, 0)
                    assert np.array_equal(arc.inverse_augment_grid(gi, tid, mapping), inp)
                    assert np.array_equal(arc.inverse_augment_grid(gl, tid, mapping), lab)
                    # the decoder used for scoring cuts out the same grid at the origin
                    if (ri, ci) == (0, 0):
                        assert np.array_equal(arc.crop(d["labels"][e]), gl)
                if split == "test":
                    assert at_origin == len(expected)  # test examples are never shifted
                else:
                    assert at_origin >= 1  # one example per train puzzle stays in place
    assert shifted > 100


def test_strict_split_keeps_evaluation_demos_out_of_train(small_raw: Path, tmp_path: Path) -> None:
    plain, strict = tmp_path / "plain", tmp_path / "strict"
    for out, extra in ((plain, []), (strict, ["--strict-split"])):
        r = run_cli("--dataset-dirs", str(small_raw), "--num-aug", "3", "--output-dir", str(out), *extra)
        assert r.returncode == 0, r.stderr
    names = json.loads((strict / "identifiers.json").read_text())
    assert names == json.loads((plain / "identifiers.json").read_text())
    evaluation = {p.stem for p in (small_raw / "evaluation").glob("*.json")}
    p_train, s_train = load_split(plain, "train"), load_split(strict, "train")
    in_strict = {arc.parse_aug_name(names[i])[0] for i in s_train["puzzle_identifiers"]}
    assert in_strict.isdisjoint(evaluation) and len(in_strict) == 6
    # the test split is unchanged; train = the plain train split without the evaluation groups
    for field in arc_fields():
        assert np.array_equal(load_split(plain, "test")[field], load_split(strict, "test")[field])
    keep_puzzles = np.array([arc.parse_aug_name(names[i])[0] not in evaluation for i in p_train["puzzle_identifiers"]])
    rows = np.concatenate(
        [
            np.arange(p_train["puzzle_indices"][p], p_train["puzzle_indices"][p + 1])
            for p in np.flatnonzero(keep_puzzles)
        ]
    )
    assert np.array_equal(s_train["inputs"], p_train["inputs"][rows])
    assert np.array_equal(s_train["labels"], p_train["labels"][rows])
    # no demo grid of an evaluation task appears in the strict train split, once augmentations are undone
    demo_inputs = {
        inp.tobytes()
        for stem in evaluation
        for inp, _ in expected_examples(small_raw / "evaluation" / f"{stem}.json", "train")
    }
    pidx = s_train["puzzle_indices"]
    for p, pid in enumerate(s_train["puzzle_identifiers"]):
        _, tid, mapping = arc.parse_aug_name(names[pid])
        for e in range(pidx[p], pidx[p + 1]):
            grid = arc.inverse_augment_grid(find_grid(s_train["inputs"][e])[0], tid, mapping)
            assert grid.astype(np.int64).tobytes() not in demo_inputs
    assert s_train["meta"]["total_groups"] == 6 and p_train["meta"]["total_groups"] == 10


# ---------------------------------------------------------------------------------------------------------------
# The validation split


def split_bytes(root: Path, splits: tuple[str, ...]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for s in splits for p in sorted((root / s).iterdir())}


def test_val_split_is_opt_in_and_holds_out_test_pairs_of_training_tasks(small_raw: Path, tmp_path: Path) -> None:
    common = ("--dataset-dirs", str(small_raw), "--num-aug", "3")
    runs = {"none": ("--val-size", "0"), "default": (), "val": ("--val-from-train",)}
    res = {name: run_cli(*common, "--output-dir", str(tmp_path / name), *extra) for name, extra in runs.items()}
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    # default: every pair of a training task is a train example, so no val/, one line saying why
    note = [x for x in res["default"].stderr.splitlines() if "val/" in x]
    assert len(note) == 1 and note[0].startswith("note: val/ not written: every pair of a training task")
    assert "--val-from-train" in note[0] and "val/" not in res["none"].stderr
    assert not (tmp_path / "default" / "val").exists()
    everything = ("train", "test")
    assert split_bytes(tmp_path / "default", everything) == split_bytes(tmp_path / "none", everything)
    # --val-from-train: as many tasks as test has (4 of the 6 training tasks); test/ and identifiers unchanged
    val_dir = tmp_path / "val"
    assert "val: 4 groups, 16 puzzles" in res["val"].stdout
    assert split_bytes(val_dir, ("test",)) == split_bytes(tmp_path / "none", ("test",))
    ids = (val_dir / "identifiers.json").read_bytes()
    assert ids == (tmp_path / "none" / "identifiers.json").read_bytes()
    names = json.loads(ids)
    files = {p.stem: p for p in small_raw.glob("*/*.json")}
    val, train, test = load_split(val_dir, "val"), load_split(val_dir, "train"), load_split(val_dir, "test")
    assert {k: v for k, v in val["meta"].items() if k not in ("total_groups", "mean_puzzle_examples")} == {
        k: v for k, v in test["meta"].items() if k not in ("total_groups", "mean_puzzle_examples")
    }
    held = set()
    pidx, gidx = val["puzzle_indices"], val["group_indices"]
    for g in range(len(gidx) - 1):  # like test: the task and its augmentations, its test pairs at the origin
        for p in range(gidx[g], gidx[g + 1]):
            base, tid, mapping = arc.parse_aug_name(names[val["puzzle_identifiers"][p]])
            assert files[base].parent.name == "training" and (p == gidx[g]) == (mapping is None)
            held.add(base)
            pairs = json.loads(files[base].read_text())["test"]
            assert pidx[p + 1] - pidx[p] == len(pairs)
            for e, pair in zip(range(pidx[p], pidx[p + 1]), pairs):
                gi, ri, ci = find_grid(val["inputs"][e])
                gl, *_ = find_grid(val["labels"][e])
                assert (ri, ci) == (0, 0)
                assert np.array_equal(arc.inverse_augment_grid(gi, tid, mapping), np.array(pair["input"]))
                assert np.array_equal(arc.inverse_augment_grid(gl, tid, mapping), np.array(pair["output"]))
    assert len(held) == 4
    # train keeps every task and identifier, but a held-out task's puzzles lose its test pairs
    assert set(train["puzzle_identifiers"]) == set(load_split(tmp_path / "none", "train")["puzzle_identifiers"])
    assert set(val["puzzle_identifiers"]) <= set(train["puzzle_identifiers"])
    tpidx = train["puzzle_indices"]
    for p, pid in enumerate(train["puzzle_identifiers"]):
        base = arc.parse_aug_name(names[pid])[0]
        pairs = json.loads(files[base].read_text())
        want = len(pairs["train"]) + (
            0 if base in held or files[base].parent.name == "evaluation" else len(pairs["test"])
        )
        assert tpidx[p + 1] - tpidx[p] == want, base
    # more tasks asked than there are: every training task, and one line saying so
    r = run_cli(*common, "--val-from-train", "--val-size", "10", "--output-dir", str(tmp_path / "all"))
    assert r.returncode == 0 and "val/ holds 6 of the 10 tasks asked" in r.stderr
    assert load_split(tmp_path / "all", "val")["meta"]["total_groups"] == 6


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def write_task(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


GOOD = json.dumps(
    {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3]]}], "test": [{"input": [[5]], "output": [[6]]}]}
)


BAD_TASKS = {
    "malformed-json": ('{"train": [', "malformed JSON (line 1"),
    "31x30": (
        json.dumps({"train": [{"input": [[1] * 30] * 31, "output": [[1]]}], "test": []}),
        "grid is 31x30, over 30x30",
    ),
    "value-12": (json.dumps({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []}), "value 12 outside 0-9"),
    "value-neg": (json.dumps({"train": [{"input": [[1, -1]], "output": [[1]]}], "test": []}), "value -1 outside 0-9"),
    "no-test": (json.dumps({"train": [{"input": [[1]], "output": [[1]]}]}), "missing key 'test'"),
    "no-train": (json.dumps({"test": []}), "missing key 'train'"),
    "ragged": (
        json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}),
        "rows of different lengths",
    ),
    "no-output": (
        json.dumps({"train": [{"input": [[1]]}], "test": []}),
        "expected an object with 'input' and 'output'",
    ),
}


def bad_raw(tmp_path: Path, text: str) -> Path:
    raw = tmp_path / "raw"
    write_task(raw / "training" / "good.json", GOOD)
    write_task(raw / "training" / "bad.json", text)
    write_task(raw / "evaluation" / "ev.json", GOOD)
    return raw


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_bad_task_files_stop_or_skip(tmp_path: Path, case: str, capsys: pytest.CaptureFixture) -> None:
    text, reason = BAD_TASKS[case]
    raw, out = bad_raw(tmp_path, text), tmp_path / "out"
    with pytest.raises(SystemExit) as stop:  # in-process: the same main() as the command line, minus start-up time
        build_main(["--dataset-dirs", str(raw), "--num-aug", "2", "--output-dir", str(out)])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(raw / "training" / "bad.json") in last and reason in last
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert (
        build_main(["--dataset-dirs", str(raw), "--num-aug", "2", "--output-dir", str(out), "--on-bad-row", "skip"])
        == 0
    )
    captured = capsys.readouterr()
    assert "skipped 1 bad task files" in captured.err and reason in captured.err
    assert "2 tasks" in captured.out


def test_bad_task_file_from_the_command_line(tmp_path: Path) -> None:
    raw = bad_raw(tmp_path, BAD_TASKS["31x30"][0])
    r = run_cli("--dataset-dirs", str(raw), "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {raw / 'training' / 'bad.json'}: train[0].input: grid is 31x30")
    )


def test_missing_dataset_dir_is_a_clear_error(tmp_path: Path) -> None:
    r = run_cli("--dataset-dirs", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# Library units


def test_augment_inverse_round_trip_all_transforms() -> None:
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, size=(3, 5)).astype(np.uint8)
    for tid in range(8):
        mapping = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
        name = arc.aug_name("abc", tid, mapping)
        base, t, m = arc.parse_aug_name(name)
        assert (base, t) == ("abc", tid) and np.array_equal(m, mapping)
        aug = arc.augment_grid(grid, tid, mapping)
        assert np.array_equal(arc.inverse_augment_grid(aug, t, m), grid)
    assert arc.parse_aug_name("abc") == ("abc", 0, None)


def test_crop_reads_back_the_grid_under_its_eos_frame() -> None:
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    canvas = np.zeros((30, 30), dtype=np.uint8)
    canvas[:3, :4] = grid + 2
    canvas[3, :4] = 1
    canvas[:3, 4] = 1
    assert np.array_equal(arc.crop(canvas.ravel()), grid)
    full = np.full((30, 30), 5, dtype=np.uint8)
    assert arc.crop(full.ravel()).shape == (30, 30)
    assert arc.crop(np.zeros(900, dtype=np.uint8)).shape == (0, 0)


def test_duplicate_augmentations_are_dropped() -> None:
    # one colour (1) in a symmetric grid: only 9 colourings survive, whatever the transform
    task = arc.Task("sym", "sym.json", False, [(np.ones((2, 2), np.uint8), np.ones((2, 2), np.uint8))], [False])
    plans = arc.augment_task(task, np.random.RandomState(0), 20)
    assert len(plans) == 9
    assert len({(int(m[1])) for _, m in plans}) == 9
