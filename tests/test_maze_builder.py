"""Maze library (generator, search, CSV) and the build_maze_dataset.py command line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from dataset.build_maze_dataset import check_args, parse_args
from dataset.build_maze_dataset import main as build_main
from dataset.puzzles import maze

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "dataset" / "build_maze_dataset.py"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def to_text(tokens: np.ndarray) -> list[str]:
    """Tokens -> the 30 rows of a maze, written out independently of the library's decoder."""
    chars = np.array(list("?# SGo"))[np.asarray(tokens).reshape(30, 30)]
    return ["".join(row) for row in chars]


def bfs(rows: list[str], start: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Plain breadth-first search over the non-wall cells (reference for the checks below)."""
    dist = {start: 0}
    todo = deque([start])
    while todo:
        r, c = todo.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < 30 and 0 <= nc < 30 and rows[nr][nc] != "#" and (nr, nc) not in dist:
                dist[(nr, nc)] = dist[(r, c)] + 1
                todo.append((nr, nc))
    return dist


def find(rows: list[str], ch: str) -> list[tuple[int, int]]:
    return [(r, c) for r in range(30) for c in range(30) if rows[r][c] == ch]


def check_maze(question: np.ndarray, answer: np.ndarray) -> int:
    """Assert the answer draws one shortest S-G path over the unchanged maze; return its length in moves."""
    q, a = to_text(question), to_text(answer)
    assert set("".join(q)) <= set("# SG") and len(find(q, "S")) == len(find(q, "G")) == 1
    (s,), (g,) = find(q, "S"), find(q, "G")
    # walls, S and G unchanged; only open cells turn into o
    for r in range(30):
        for c in range(30):
            assert a[r][c] == q[r][c] or (q[r][c] == " " and a[r][c] == "o"), (r, c)
    shortest = bfs(q, s)[g]
    path = set(find(a, "o")) | {s, g}
    assert len(path) == shortest + 1  # a path of k moves visits k + 1 cells
    # the o cells form a chain from S to G: walking only on path cells reaches G in `shortest` moves
    on_path = ["".join(ch if (r, c) in path else "#" for c, ch in enumerate(row)) for r, row in enumerate(q)]
    assert bfs(on_path, s).get(g) == shortest
    return shortest


def load(root: Path, split: str) -> dict:
    d = {
        f: np.load(root / split / f"all__{f}.npy")
        for f in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
    }
    d["meta"] = json.loads((root / split / "dataset.json").read_text())
    return d


# ---------------------------------------------------------------------------------------------------------------
# Generator


def test_generated_mazes_are_hard_and_solved_by_one_shortest_path() -> None:
    inputs, labels = maze.generate(24, np.random.default_rng(3))
    assert inputs.shape == labels.shape == (24, 900) and inputs.dtype == np.uint8
    lengths = [check_maze(q, a) for q, a in zip(inputs, labels)]
    assert min(lengths) > 110 and maze.HARD_MIN_MOVES == 111
    assert len({q.tobytes() for q in inputs}) == 24
    assert all(maze.check_solution(q, a) == [] for q, a in zip(inputs, labels))
    again, _ = maze.generate(24, np.random.default_rng(3))
    assert np.array_equal(again, inputs)  # same seed, same mazes


def test_check_solution_catches_a_broken_path() -> None:
    inputs, labels = maze.generate(1, np.random.default_rng(0))
    broken = labels[0].copy()
    broken[np.flatnonzero(broken == maze.PATH)[5]] = maze.OPEN  # a gap in the path
    assert maze.check_solution(inputs[0], broken)
    moved_wall = labels[0].copy()
    moved_wall[np.flatnonzero(moved_wall == maze.WALL)[0]] = maze.OPEN
    assert maze.check_solution(inputs[0], moved_wall)


def test_generate_cli_writes_the_original_format(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    r = run_cli("--generate", "6", "--test-size", "4", "--output-dir", str(out), "--seed", "5")
    assert r.returncode == 0, r.stderr
    assert "train: 6 groups, 6 puzzles, 6 examples; test: 4 groups, 4 puzzles, 4 examples" in r.stdout
    assert "val: 4 groups, 4 puzzles, 4 examples" in r.stdout  # as many as test (at most 1000)
    for split, n in (("train", 6), ("test", 4), ("val", 4)):
        d = load(out, split)
        assert d["meta"] == {
            "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 6, "seq_len": 900,
            "num_puzzle_identifiers": 1, "total_groups": n, "mean_puzzle_examples": 1.0, "sets": ["all"],
        }  # fmt: skip
        assert d["inputs"].dtype == np.uint8 and d["inputs"].shape == (n, 900)
        assert set(np.unique(d["inputs"])) <= {1, 2, 3, 4} and set(np.unique(d["labels"])) <= {1, 2, 3, 4, 5}
        assert (d["puzzle_identifiers"] == 0).all()
        assert (d["puzzle_indices"] == np.arange(n + 1)).all() and (d["group_indices"] == np.arange(n + 1)).all()
        for q, a in zip(d["inputs"], d["labels"]):
            assert check_maze(q, a) > 110
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face layout


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "question", "answer", "rating"])
        for q, a in rows:
            w.writerow(["x", q, a, a.count("o")])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv (5 mazes) and test.csv (3) in the HF layout, written with the csv module from generated mazes."""
    d = tmp_path_factory.mktemp("maze-hf")
    inputs, labels = maze.generate(8, np.random.default_rng(11))
    rows = [("".join(to_text(q)), "".join(to_text(a))) for q, a in zip(inputs, labels)]
    write_csv(d / "train.csv", rows[:5])
    write_csv(d / "test.csv", rows[5:])
    return d


def test_generated_mazes_are_not_named_after_the_benchmark(tmp_path: Path) -> None:
    # without --output-dir: data/maze-gen-<N>[-aug], not data/maze-30x30-hard-1k (the folder the Maze recipe trains on)
    for extra, name in (([], "maze-gen-3"), (["--aug"], "maze-gen-3-aug")):
        r = run_cli("--generate", "3", "--test-size", "1", *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"wrote data/{name}:" in r.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["maze-gen-3", "maze-gen-3-aug"]
    for argv, want in ((["--generate", "1000"], "data/maze-gen-1k"), ([], "data/maze-30x30-hard-1k")):
        args = parse_args(argv)
        check_args(args)
        assert args.output_dir == want


def test_source_dir_reads_the_hf_layout(hf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert build_main(["--source-dir", str(hf_dir), "--output-dir", str(out)]) == 0
    for split, n in (("train", 5), ("test", 3)):
        d = load(out, split)
        with open(hf_dir / f"{split}.csv") as f:
            rows = list(csv.reader(f))[1:]
        want_q = np.array([["# SGo".index(ch) + 1 for ch in r[1]] for r in rows], dtype=np.uint8)
        want_a = np.array([["# SGo".index(ch) + 1 for ch in r[2]] for r in rows], dtype=np.uint8)
        assert np.array_equal(d["inputs"], want_q) and np.array_equal(d["labels"], want_a)
        assert d["meta"]["total_groups"] == n


def test_aug_gives_the_8_dihedral_transforms(hf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "aug"
    assert build_main(["--source-dir", str(hf_dir), "--output-dir", str(out), "--aug"]) == 0
    train, test = load(out, "train"), load(out, "test")
    assert train["meta"]["total_groups"] == 5 and len(train["inputs"]) == 40
    assert (train["group_indices"] == np.arange(6) * 8).all() and (train["puzzle_indices"] == np.arange(41)).all()
    assert len(test["inputs"]) == 3  # the test split is never augmented
    with open(hf_dir / "train.csv") as f:
        first = np.array(["# SGo".index(ch) + 1 for ch in list(csv.reader(f))[1][1]]).reshape(30, 30)
    # written out here so the test does not lean on the builder's own transform table
    expected = [
        first,
        np.rot90(first),
        np.rot90(first, 2),
        np.rot90(first, 3),
        first[:, ::-1],
        first[::-1],
        first.T,
        np.rot90(first)[:, ::-1],
    ]
    group = train["inputs"][:8].reshape(8, 30, 30)
    for k in range(8):
        assert np.array_equal(group[k], expected[k]), k
    assert len({g.tobytes() for g in group}) == 8
    for q, a in zip(train["inputs"], train["labels"]):
        check_maze(q, a)  # a transformed answer is still a shortest path of the transformed maze


def test_subsample_and_bad_rows(hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub"
    assert build_main(["--source-dir", str(hf_dir), "--output-dir", str(out), "--subsample-size", "2"]) == 0
    assert load(out, "train")["meta"]["total_groups"] == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    with open(hf_dir / "train.csv") as f:
        rows = list(csv.reader(f))[1:]
    rows[2][1] = rows[2][1][:-1] + "x"
    write_csv(bad / "train.csv", [(r[1], r[2]) for r in rows])
    (bad / "test.csv").write_text((hf_dir / "test.csv").read_text())
    with pytest.raises(SystemExit) as stop:
        build_main(["--source-dir", str(bad), "--output-dir", str(tmp_path / "b1")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad / 'train.csv'}, line 4: character 'x'")
    assert build_main(["--source-dir", str(bad), "--output-dir", str(tmp_path / "b2"), "--on-bad-row", "skip"]) == 0
    assert "skipped 1 bad rows" in capsys.readouterr().err
    assert load(tmp_path / "b2", "train")["meta"]["total_groups"] == 4


def test_unreachable_hub_names_the_offline_options(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""}
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[v] = ""
    t = time.perf_counter()
    r = run_cli("--output-dir", str(tmp_path / "out"), env=env, timeout=90)
    assert time.perf_counter() - t < 60
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not download train.csv") and "--source-dir" in last and "--generate" in last
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# the validation split


def split_bytes(root: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for s in splits for p in sorted((root / s).iterdir())}


def test_dihedral_keys_see_through_rotations_and_reflections() -> None:
    inputs, _ = maze.generate(6, np.random.default_rng(4))
    keys = maze.dihedral_keys(inputs)
    assert len(set(keys)) == 6
    g = inputs[0].reshape(30, 30)
    forms = [np.rot90(g, k) for k in range(4)] + [np.rot90(g, k).T for k in range(4)]
    assert len({f.tobytes() for f in forms}) == 8
    assert set(maze.dihedral_keys(np.stack([f.ravel() for f in forms]))) == {keys[0]}


def assert_val_disjoint(root: Path) -> None:
    """val/: one unaugmented puzzle per maze, each a proper maze and answer, none a rotation or reflection of a
    train or test maze (or of another val maze)."""
    val, train, test = load(root, "val"), load(root, "train"), load(root, "test")
    n = val["meta"]["total_groups"]
    assert len(val["inputs"]) == n and (val["group_indices"] == np.arange(n + 1)).all()
    assert {k: v for k, v in val["meta"].items() if k != "total_groups"} == {
        k: v for k, v in test["meta"].items() if k != "total_groups"
    }
    for q, a in zip(val["inputs"], val["labels"]):
        check_maze(q, a)
    keys = maze.dihedral_keys(val["inputs"])
    assert len(set(keys)) == n
    assert not set(keys) & set(maze.dihedral_keys(train["inputs"])) and not set(keys) & set(
        maze.dihedral_keys(test["inputs"])
    )


def test_val_split_leaves_train_and_test_byte_identical(tmp_path: Path) -> None:
    args = ("--generate", "5", "--test-size", "3", "--aug", "--seed", "2")
    for name, extra in (("default", ()), ("none", ("--val-size", "0")), ("more", ("--val-size", "6"))):
        r = run_cli(*args, *extra, "--output-dir", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert "val/" not in r.stderr
    assert not (tmp_path / "none" / "val").exists()
    base = split_bytes(tmp_path / "none")
    assert len(base) == 12
    for name, n in (("default", 3), ("more", 6)):
        assert split_bytes(tmp_path / name) == base, name
        assert load(tmp_path / name, "val")["meta"]["total_groups"] == n  # never augmented (train is, x8)
        assert_val_disjoint(tmp_path / name)


def test_val_split_from_the_hf_layout(hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open(hf_dir / "train.csv") as f:
        train_rows = {"".join(r[1]) for r in list(csv.reader(f))[1:]}

    def rows(root: Path, split: str) -> set[str]:
        return {"".join(r) for r in to_rows(load(root, split)["inputs"])}

    # Maze-Hard's layout puts every train.csv maze in train/: no val/, one line saying why
    assert build_main(["--source-dir", str(hf_dir), "--output-dir", str(tmp_path / "all"), "--val-size", "0"]) == 0
    capsys.readouterr()
    assert build_main(["--source-dir", str(hf_dir), "--output-dir", str(tmp_path / "whole")]) == 0
    note = [x for x in capsys.readouterr().err.splitlines() if "val/" in x]
    assert len(note) == 1 and note[0].startswith("note: val/ not written: every train.csv maze goes to train/")
    assert not (tmp_path / "whole" / "val").exists()
    assert split_bytes(tmp_path / "whole") == split_bytes(tmp_path / "all")
    # --subsample-size leaves 2 of the 5 over: val/ takes them (3 asked, as many as test; one line says so)
    for name, extra in (("sub0", ["--val-size", "0"]), ("sub", [])):
        argv = ["--source-dir", str(hf_dir), "--output-dir", str(tmp_path / name), "--subsample-size", "3", *extra]
        assert build_main(argv) == 0
    assert "val/ holds 2 of the 3 mazes asked" in capsys.readouterr().err
    assert split_bytes(tmp_path / "sub") == split_bytes(tmp_path / "sub0")
    assert_val_disjoint(tmp_path / "sub")
    assert rows(tmp_path / "sub", "val") | rows(tmp_path / "sub", "train") == train_rows
    # --val-from-train: val/ out of train/ (which changes), test/ as it was
    argv = ["--source-dir", str(hf_dir), "--output-dir", str(tmp_path / "from"), "--val-from-train", "--val-size", "2"]
    assert build_main(argv) == 0
    assert load(tmp_path / "from", "train")["meta"]["total_groups"] == 3
    assert split_bytes(tmp_path / "from", ("test",)) == split_bytes(tmp_path / "all", ("test",))
    assert_val_disjoint(tmp_path / "from")
    held, kept = rows(tmp_path / "from", "val"), rows(tmp_path / "from", "train")
    assert held | kept == train_rows and not held & kept


def to_rows(tokens: np.ndarray) -> list[list[str]]:
    return [to_text(t) for t in tokens]


def test_val_options_fail_cleanly(tmp_path: Path) -> None:
    r = run_cli("--generate", "3", "--val-from-train", "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "--val-from-train is for a CSV source" in r.stderr
    r = run_cli("--generate", "3", "--val-size", "-2", "--output-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "--val-size must be >= 0" in r.stderr
    assert not (tmp_path / "out").exists()
