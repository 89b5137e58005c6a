"""Adversarial inputs: bad config, bad data, bad paths, corrupt or crafted files, Ctrl-C during imports, out of
memory. Each must end with one clear line and a non-zero exit (no traceback) and change no file.

Most cases call the checking function in-process (the subprocess adds only start-up time); a few per group run
the real script, where the one line on stderr, the exit code and the untouched files are what is tested.
The counts in README ("Runs that survive") are the cases of this module: BAD_INPUT and CRAFTED markers below.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import REPO, TINY_ARCH, launch_config, run_py
from train.weights import checkpoint_file, load_checkpoint
from utils.errors import UserError

# ----------------------------------------------------------------------------------------------------------
# Helpers


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots with a hash of its bytes: equal snapshots = nothing created, changed, removed."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else []:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def one_line_error(args: list[str], *watch: Path, cwd: Path = REPO, code: int = 2) -> str:
    """Run a script; assert exit `code`, exactly one line on stderr, no traceback, no file under `watch` touched."""
    before = snapshot(*watch)
    script = [str(REPO / args[0])] if args[0].endswith(".py") else args[:1]  # cwd may be elsewhere
    r = run_py(script + args[1:], cwd=cwd, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert snapshot(*watch) == before
    return lines[0]


def hydra_quiet(tmp: Path) -> list[str]:
    """Keep Hydra's job log out of the checkout (it writes outputs/<date>/ under the working directory)."""
    return [f"hydra.run.dir={tmp / 'hydra'}"]


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def save(data: Path, split: str, field: str, arr: np.ndarray) -> None:
    np.save(data / split / f"all__{field}.npy", arr)


def load(data: Path, split: str, field: str) -> np.ndarray:
    return np.load(data / split / f"all__{field}.npy")


def edit_meta(data: Path, split: str, **changes: Any) -> None:
    path = data / split / "dataset.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def empty_split(data: Path, split: str) -> None:
    """A split with no examples, consistent otherwise (indices [0], no identifiers)."""
    for field in ("inputs", "labels"):
        save(data, split, field, np.zeros((0, 81), np.uint8))
    save(data, split, "puzzle_identifiers", np.zeros(0, np.int32))
    for field in ("puzzle_indices", "group_indices"):
        save(data, split, field, np.zeros(1, np.int32))
    edit_meta(data, split, total_groups=0)


def open_split(data: Path, split: str = "train") -> None:
    from dataset.loader import PuzzleDataset, PuzzleDatasetConfig

    cfg = PuzzleDatasetConfig(
        seed=0,
        dataset_path=str(data),
        global_batch_size=8,
        test_set_mode=split == "test",
        epochs_per_iter=1,
        rank=0,
        num_replicas=1,
    )
    PuzzleDataset(cfg, split=split)


def config_error(*overrides: str, arch: str | None = None) -> str:
    """The UserError pretrain.py would print for these overrides of the default config (validate_config);
    `arch`: another config/arch/<arch>.yaml in place of the default's."""
    import pydantic
    from omegaconf import OmegaConf

    import pretrain
    from train import eval_config

    base = OmegaConf.create(eval_config.default_config())
    if arch is not None:
        base.arch = OmegaConf.load(REPO / "config" / "arch" / f"{arch}.yaml")
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    with pytest.raises(UserError) as err:
        try:
            raw = OmegaConf.to_container(cfg, resolve=True)
            pretrain.validate_config(pretrain.PretrainConfig(**raw))  # type: ignore[arg-type]
        except pydantic.ValidationError as e:
            raise pretrain.config_error(e) from None
    msg = str(err.value)
    assert "\n" not in msg
    return msg


class _RunsCode:
    """Unpickling it would create the marker file: proof that nothing ran is the marker's absence."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


BAD_INPUT = pytest.mark.bad_input  # counted in README: bad inputs answered with one clear line, non-zero exit
CRAFTED = pytest.mark.crafted  # counted in README: crafted files refused cleanly


@pytest.fixture(scope="module")
def run_dir(tiny_sudoku: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run (2 steps): step_1, step_2 with .state files and all_config.yaml."""
    tmp = tmp_path_factory.mktemp("bad-inputs-run")
    run = tmp / "run"
    r = run_py(
        [
            "pretrain.py",
            f"data_path={tiny_sudoku}",
            f"checkpoint_path={run}",
            "epochs=2",
            "eval_interval=1",
            "global_batch_size=64",
            *TINY_ARCH,
            *hydra_quiet(tmp),
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "step_2").is_file() and (run / "all_config.yaml").is_file()
    return run


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# ----------------------------------------------------------------------------------------------------------
# Config (issue 15.8): one line naming key, value and accepted range


@BAD_INPUT
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("arch.hidden_size=0", "arch.hidden_size=0: Input should be greater than 0"),
        ("arch.num_heads=3", "num_heads=3 must divide hidden_size=512"),
        ("arch.num_heads=0", "arch.num_heads=0: Input should be greater than 0"),
        ("arch.halt_max_steps=0", "arch.halt_max_steps=0: Input should be greater than or equal to 1"),
        ("arch.hidden_size=abc", "arch.hidden_size='abc': Input should be a valid integer"),
        ("arch.H_cycles=0", "arch.H_cycles=0"),
        ("arch.L_layers=0", "arch.L_layers=0"),
        ("arch.expansion=0", "arch.expansion=0"),
        ("arch.halt_exploration_prob=2", "arch.halt_exploration_prob=2: Input should be less than or equal to 1"),
        ("arch.pos_encodings=alibi", "arch.pos_encodings='alibi': Input should be 'rope' or 'learned'"),
        ("arch.rms_norm_eps=0", "arch.rms_norm_eps=0"),
        ("arch.hidden_size=24 arch.num_heads=8", "rope needs an even head size; hidden_size / num_heads = 3"),
        ("beta1=1.5", "beta1=1.5 is out of range: it must be >= 0 and < 1"),
        ("beta2=1", "beta2=1.0 is out of range"),
        ("lr_min_ratio=-1", "lr_min_ratio=-1.0 is out of range: it must be >= 0 and <= 1"),
        ("lr=nan", "lr=nan is out of range: it must be >= 0 and finite"),
        ("lr=inf", "lr=inf is out of range"),
        ("lr=-1e-4", "lr=-0.0001 is out of range"),
        ("puzzle_emb_lr=nan", "puzzle_emb_lr=nan"),
        ("weight_decay=inf", "weight_decay=inf"),
        ("seed=-1", "seed=-1 is out of range"),
        ("early_stop_exact_accuracy=1.5", "early_stop_exact_accuracy=1.5 is out of range"),
        ("max_nan_skips=0", "max_nan_skips=0 is out of range"),
        ("muon_momentum=1", "muon_momentum=1.0 is out of range: it must be >= 0 and < 1"),
        ("muon_lr=-0.02", "muon_lr=-0.02 is out of range"),
        ("muon_weight_decay=nan", "muon_weight_decay=nan is out of range"),
        ("checkpoint_minutes=nan", "checkpoint_minutes must be positive or null, got nan"),
        # only the project's model classes are nameable: not any attribute of a models/ module
        ("arch.name=fused@os", "model name 'fused@os': os in models.fused is not a model class defined there"),
        ("arch.name=layers@F", "F in models.layers is not a model class defined there"),
        ("arch.loss.name=fused@torch", "model name 'fused@torch': torch in models.fused is not a model class"),
        ("arch.name=../x@Y", "no module 'models.../x'"),
    ],
)
def test_bad_config_value_is_one_line(override: str, expected: str) -> None:
    assert expected in config_error(*override.split())


@BAD_INPUT
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("arch.hidden_size=0 arch.puzzle_emb_len=0", "arch.hidden_size=0: Input should be greater than 0"),
        ("arch.num_heads=3", "num_heads=3 must divide hidden_size=512"),
        ("arch.hidden_size=32 arch.num_heads=3", "num_heads=3 must divide hidden_size=32"),
        ("arch.hidden_size=24 arch.num_heads=8", "rope needs an even head size; hidden_size / num_heads = 3"),
        ("arch.num_heads=0", "arch.num_heads=0: Input should be greater than 0"),
        ("arch.expansion=0", "arch.expansion=0"),
        ("arch.halt_max_steps=0", "arch.halt_max_steps=0: Input should be greater than or equal to 1"),
        ("arch.L_layers=0", "arch.L_layers=0"),
        ("arch.L_cycles=0", "arch.L_cycles=0"),
        ("arch.puzzle_emb_ndim=-5", "arch.puzzle_emb_ndim=-5"),
        ("arch.puzzle_emb_len=-1", "arch.puzzle_emb_len=-1"),
        ("arch.rope_theta=0", "arch.rope_theta=0"),
        ("arch.rms_norm_eps=nan", "arch.rms_norm_eps='nan': Input should be a finite number"),
        ("arch.halt_exploration_prob=2", "arch.halt_exploration_prob=2: Input should be less than or equal to 1"),
        ("arch.pos_encodings=alibi", "arch.pos_encodings='alibi': Input should be 'rope', 'learned' or 'none'"),
        ("arch.mlp_t=true", "pos_encodings=rope has no effect with mlp_t=true"),
        ("arch.H_layers=4", "H_layers=4 is an HRM setting"),
    ],
)
def test_bad_trm_config_value_is_one_line(override: str, expected: str) -> None:
    """TRM's keys have HRM's ranges, and the settings TRM's code would run on silently (rope under mlp_t, a head
    count that does not divide the width) are refused too: before any data or run folder, as for HRM."""
    assert expected in config_error(*override.split(), arch="trm")


def test_good_configs_still_pass() -> None:
    """The ranges do not reject what the recipes and tests use (boundaries included)."""
    import pretrain
    from train import eval_config

    for extra in ({}, {"lr_min_ratio": 0.0, "beta1": 0.0, "lr": 0.0}, {"arch": {"hidden_size": 66, "num_heads": 3}}):
        cfg = eval_config.default_config()
        cfg["arch"].update(extra.pop("arch", {}))
        pretrain.validate_config(pretrain.PretrainConfig(**(cfg | extra)))


@BAD_INPUT
@pytest.mark.parametrize("override", ["lr=nan", "arch.hidden_size=abc", "arch=trm arch.num_heads=3"])
def test_bad_config_end_to_end(tiny_sudoku: Path, tmp_path: Path, override: str) -> None:
    run = tmp_path / "ckpt" / "run"
    line = one_line_error(
        [
            "pretrain.py",
            f"data_path={tiny_sudoku}",
            f"checkpoint_path={run}",
            *override.split(),
            *hydra_quiet(tmp_path),
        ],
        tiny_sudoku,
    )
    assert line.startswith("error: ") and override.split()[-1].split("=")[0].removeprefix("arch.") in line
    assert not (tmp_path / "ckpt").exists()  # validated before the run folder is made


@BAD_INPUT
@pytest.mark.parametrize("value", ["0", "2.5", "-3"])
def test_predict_max_steps(value: str) -> None:
    import predict

    with pytest.raises(UserError, match=f"max_steps='{value}' must be a whole number >= 1"):
        predict.positive_int("max_steps", value)
    assert predict.positive_int("max_steps", "32") == 32


@pytest.mark.slow
@BAD_INPUT
def test_predict_max_steps_end_to_end(run_dir: Path) -> None:
    line = one_line_error(
        ["predict.py", f"checkpoint={run_dir / 'step_2'}", "puzzle=" + "." * 81, "max_steps=many"], run_dir
    )
    assert "max_steps='many' must be a whole number >= 1" in line


# ----------------------------------------------------------------------------------------------------------
# Data (issue 15.7): checked once at load, one line naming the file and the fix


def _set_token(field: str, value: int, dtype: Any = None):
    def edit(data: Path) -> None:
        arr = load(data, "train", field).astype(dtype or load(data, "train", field).dtype)
        arr[3, 5] = value
        save(data, "train", field, arr)

    return edit


def _set_index(field: str, i: int, value: int):
    def edit(data: Path) -> None:
        arr = load(data, "train", field)
        arr[i] = value
        save(data, "train", field, arr)

    return edit


DATA_CASES: list[tuple[str, Any, str, str]] = [
    # (id, edit, split, message fragment)
    (
        "token >= vocab_size",
        _set_token("inputs", 11),
        "train",
        "all__inputs.npy: token values 1..11 outside vocab_size 11 (tokens 0..10",
    ),
    ("negative token", _set_token("inputs", -1, np.int32), "train", "token values -1..10 outside vocab_size 11"),
    (
        "label out of range",
        _set_token("labels", 200),
        "train",
        "..200 outside vocab_size 11",
    ),
    ("puzzle id beyond num", _set_index("puzzle_identifiers", 7, 1), "train", "identifiers 0..1 fall outside 0..0"),
    ("negative puzzle id", _set_index("puzzle_identifiers", 7, -3), "train", "identifiers -3..0 fall outside"),
    (
        "group indices not increasing",
        _set_index("group_indices", 5, 2),
        "train",
        "all__group_indices.npy: must increase",
    ),
    (
        "puzzle indices not increasing",
        _set_index("puzzle_indices", 9, 3),
        "train",
        "all__puzzle_indices.npy: must increase",
    ),
    (
        "string labels",
        lambda d: save(d, "train", "labels", load(d, "train", "labels").astype(str)),
        "train",
        "all__labels.npy: dtype <U3 is not an integer type",
    ),
    (
        "float tokens",
        lambda d: save(d, "train", "inputs", load(d, "train", "inputs") + 0.5),
        "train",
        "all__inputs.npy: dtype float64 is not an integer type",
    ),
    (
        "object array (pickle)",
        lambda d: save(d, "train", "labels", np.array([{"a": 1}], dtype=object)),
        "train",
        "all__labels.npy cannot be read",
    ),
    (
        "total_groups too large",
        lambda d: edit_meta(d, "train", total_groups=1000),
        "train",
        "total_groups=1000 but the arrays hold 64 groups",
    ),
    (
        "mean_puzzle_examples wrong",
        lambda d: edit_meta(d, "train", mean_puzzle_examples=4.0),
        "train",
        "mean_puzzle_examples=4.0 but the arrays hold 1 examples per puzzle",
    ),
    (
        "pad_id outside vocab",
        lambda d: edit_meta(d, "train", pad_id=11),
        "train",
        "pad_id=11 is outside the vocabulary 0..10",
    ),
    ("vocab_size 0", lambda d: edit_meta(d, "train", vocab_size=0), "train", "vocab_size=0 must be >= 1"),
    ("empty test split", lambda d: empty_split(d, "test"), "test", "the split has no examples"),
    (
        "test vocab differs from train",
        lambda d: edit_meta(d, "test", vocab_size=12),
        "test",
        "vocab_size=12 but the train split's is 11",
    ),
    (
        "inputs of another width",
        lambda d: save(d, "train", "inputs", load(d, "train", "inputs")[:, :80]),
        "train",
        "shape (512, 80) is not (examples, seq_len=81)",
    ),
]


@BAD_INPUT
@pytest.mark.parametrize(("edit", "split", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_refused_at_load(tiny_sudoku: Path, tmp_path: Path, edit, split: str, expected: str) -> None:
    data = copy_data(tiny_sudoku, tmp_path / "sudoku-bad")
    edit(data)
    with pytest.raises(UserError) as err:
        open_split(data, split)
    msg = str(err.value)
    assert expected in msg and "\n" not in msg and str(data / split) in msg, msg
    assert "rebuild" in msg or "fix" in msg


def test_good_data_passes_and_ignored_labels_may_lie_outside(tiny_sudoku: Path, tmp_path: Path) -> None:
    open_split(tiny_sudoku, "train")
    open_split(tiny_sudoku, "test")
    data = copy_data(tiny_sudoku, tmp_path / "sudoku-ignore")
    labels = load(data, "train", "labels").astype(np.int32)
    labels[0, :3] = -100  # an ignore_label_id outside the vocabulary is legal
    save(data, "train", "labels", labels)
    edit_meta(data, "train", ignore_label_id=-100)
    open_split(data, "train")


@BAD_INPUT
@pytest.mark.parametrize("case", ["token >= vocab_size", "empty test split"])
def test_bad_data_end_to_end(tiny_sudoku: Path, tmp_path: Path, case: str) -> None:
    _, edit, _, expected = next(c for c in DATA_CASES if c[0] == case)
    data = copy_data(tiny_sudoku, tmp_path / "sudoku-bad")
    edit(data)
    run = tmp_path / "ckpt" / "run"
    line = one_line_error(
        ["pretrain.py", f"data_path={data}", f"checkpoint_path={run}", *TINY_ARCH, *hydra_quiet(tmp_path)], data
    )
    assert expected in line
    assert not (tmp_path / "ckpt").exists()  # the run folder made for the write check is gone again


def test_check_cost_is_small(tiny_sudoku: Path) -> None:
    """The check reads each array once (min/max, diff): on the tiny set it is far below a millisecond per
    thousand examples (README/report: ~30 ms for the 1M-example Sudoku 1k x 1000 set)."""
    import time

    from dataset.loader import check_split, load_arrays, load_metadata

    meta = load_metadata(str(tiny_sudoku), "train")
    data = load_arrays(str(tiny_sudoku), "train", meta, check=False)
    start = time.perf_counter()
    check_split(str(tiny_sudoku / "train"), data, meta)
    assert time.perf_counter() - start < 0.5


# ----------------------------------------------------------------------------------------------------------
# Paths (issue 14.6)


@BAD_INPUT
def test_relative_data_path_names_where_it_looked(tiny_sudoku: Path, tmp_path: Path, monkeypatch) -> None:
    from dataset.loader import load_metadata

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_metadata("data/sudoku-extreme-1k-aug-1000", "train")
    msg = str(err.value)
    assert f"looked for {tmp_path}/data/sudoku-extreme-1k-aug-1000" in msg and f"current directory {tmp_path}" in msg


@BAD_INPUT
def test_typo_suggests_the_close_match(tiny_sudoku: Path, tmp_path: Path, monkeypatch) -> None:
    from dataset.loader import load_metadata

    copy_data(tiny_sudoku, tmp_path / "data" / "sudoku-extreme-1k-aug-1000")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_metadata("data/sudoku-extreme-1k-aug-100", "train")
    msg = str(err.value)
    suggestion = msg.index("did you mean data_path=data/sudoku-extreme-1k-aug-1000?")
    assert suggestion < msg.index("(if not: build it first")  # the match first, building the name second


@BAD_INPUT
@pytest.mark.parametrize("split", ["train", "test"])
def test_split_folder_as_data_path_says_use_the_parent(tiny_sudoku: Path, split: str) -> None:
    from dataset.loader import load_metadata

    with pytest.raises(
        UserError, match=re.escape(f"one split of a dataset; use the parent folder: data_path={tiny_sudoku}")
    ):
        load_metadata(str(tiny_sudoku / split), "train")


@BAD_INPUT
def test_typo_end_to_end_leaves_no_run_folder(tiny_sudoku: Path, tmp_path: Path) -> None:
    run = tmp_path / "checkpoints" / "proj" / "run"
    line = one_line_error(
        ["pretrain.py", f"data_path={tiny_sudoku}x", f"checkpoint_path={run}", *TINY_ARCH, *hydra_quiet(tmp_path)],
        tiny_sudoku,
    )
    assert f"did you mean data_path={tiny_sudoku}?" in line
    assert not (tmp_path / "checkpoints").exists()


def test_start_up_failure_never_removes_a_folder_with_files(tmp_path: Path) -> None:
    import pretrain

    run = tmp_path / "a" / "b"
    pretrain.check_writable(str(run))
    (run / "keep.txt").write_text("mine")
    pretrain.remove_made_dirs()
    assert (run / "keep.txt").read_text() == "mine"
    pretrain.check_writable(str(tmp_path / "c" / "d"))
    pretrain.remove_made_dirs()
    assert not (tmp_path / "c").exists() and (tmp_path / "a").is_dir()


@BAD_INPUT
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("{run}", "is a folder, not a checkpoint file; step files in {run}: {run}/step_2, {run}/step_1"),
        (
            "{run}/step_2.state",
            "is a training state (optimizers, RNG, data position), not weights; its weights are checkpoint={run}/step_2",
        ),
        (
            "{run}/step_7",
            "checkpoint file '{run}/step_7' does not exist; step files in {run}: {run}/step_2, {run}/step_1",
        ),
        ("{run}/nothing/step_1", "does not exist; give checkpoint=<run folder>/step_N"),
    ],
)
def test_checkpoint_argument_lists_step_files(run_dir: Path, target: str, expected: str) -> None:
    with pytest.raises(UserError) as err:
        checkpoint_file(target.format(run=run_dir))
    assert expected.format(run=run_dir) in str(err.value)


@BAD_INPUT
def test_checkpoint_run_folder_end_to_end(run_dir: Path) -> None:
    line = one_line_error(["evaluate.py", f"checkpoint={run_dir}"], run_dir)
    assert f"step files in {run_dir}: {run_dir}/step_2" in line


@BAD_INPUT
@pytest.mark.parametrize("puzzle", ["missing.txt", "puzzles/one", "{tmp}"])
def test_predict_puzzle_file_not_found(tmp_path: Path, puzzle: str) -> None:
    import predict

    with pytest.raises(UserError) as err:
        predict.read_text(puzzle.format(tmp=tmp_path))
    assert ("not found" in str(err.value)) if "{" not in puzzle else "is a folder" in str(err.value)
    assert predict.read_text("." * 81) == "." * 81  # puzzle text stays puzzle text


@BAD_INPUT
@pytest.mark.parametrize(
    ("puzzle", "expected"),
    [
        ("." * 79 + ".x", "bad character 'x' at position 81"),  # puzzle text, not a file name with an extension
        ("0" * 81, "prediction after"),  # OmegaConf read 81 zeros as the number 0
        ("01" + "0" * 79, "prediction after"),  # ...and this as an octal
        ("1" * 80, "expected 81 characters, got 80"),
    ],
)
@pytest.mark.slow
def test_predict_reads_the_puzzle_as_given(run_dir: Path, tmp_path: Path, puzzle: str, expected: str) -> None:
    r = run_py(["predict.py", f"checkpoint={run_dir / 'step_2'}", f"puzzle={puzzle}"], cwd=tmp_path)
    out = r.stdout + r.stderr
    assert expected in out, out[-2000:]
    if expected == "prediction after":
        assert r.returncode == 0
    else:
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_predict_maze_lines_keep_their_spaces() -> None:
    import predict

    row = " " + "#" * 28 + " "  # free cells at both ends of every line
    maze = "S" + row[1:] + row * 28 + row[:-1] + "G"
    tokens, kind = predict.encode(maze, 900, 6)  # one line of 900, as our builder writes it
    assert kind == "maze" and len(tokens) == 900 and tokens[0] == predict.MAZE_CHARS.index("S") + 1
    lines = "\n".join(maze[i : i + 30] for i in range(0, 900, 30)) + "\n"
    assert (predict.encode(lines, 900, 6)[0] == tokens).all()  # 30 lines of 30


@BAD_INPUT
def test_predict_missing_file_end_to_end(run_dir: Path, tmp_path: Path) -> None:
    line = one_line_error(
        ["predict.py", f"checkpoint={run_dir / 'step_2'}", "puzzle=missing.txt"], run_dir, cwd=tmp_path
    )
    assert f"puzzle file 'missing.txt' not found (looked for {tmp_path}/missing.txt)" in line


# ----------------------------------------------------------------------------------------------------------
# Checkpoints (issue 15.6)


@CRAFTED
@pytest.mark.slow
def test_zero_byte_checkpoint(run_copy: Path) -> None:
    (run_copy / "step_2").write_bytes(b"")
    line = one_line_error(["evaluate.py", f"checkpoint={run_copy / 'step_2'}"], run_copy)
    assert "cannot read checkpoint" in line and "EOFError: empty or truncated file" in line


@CRAFTED
@pytest.mark.parametrize("kind", ["empty", "truncated zip", "pickle that runs code"])
def test_crafted_weights_for_predict(tmp_path: Path, kind: str) -> None:
    """predict.py reads weights through train/weights.load_checkpoint: the same one line (zero bytes crashed it)."""
    _RunsCode.marker = str(tmp_path / "PWNED")
    path = tmp_path / "step_1"
    content = {"empty": b"", "truncated zip": b"PK\x03\x04 truncated"}
    path.write_bytes(content[kind] if kind in content else pickle.dumps(_RunsCode()))
    with pytest.raises(UserError, match="cannot read checkpoint") as err:
        load_checkpoint(str(path), torch.nn.Linear(1, 1), "data")
    assert "\n" not in str(err.value) and not (tmp_path / "PWNED").exists()


def as_released(run: Path) -> None:
    """The run folder as the released checkpoints come: weights only, no all_config.yaml, no step_N.json (the
    inference metadata) and no step_N.state (which holds the config too)."""
    (run / "all_config.yaml").unlink()
    for p in [*run.glob("step_*.json"), *run.glob("step_*.state")]:
        p.unlink()


@BAD_INPUT
def test_weights_of_another_width_name_the_key(run_copy: Path, tiny_sudoku: Path) -> None:
    # Without all_config.yaml (the released checkpoints): the weights' shapes say what the model was
    as_released(run_copy)
    tiny = [a for a in TINY_ARCH if not a.startswith("arch.hidden_size")]
    args = [f"checkpoint={run_copy / 'step_2'}", f"data_path={tiny_sudoku}", *tiny, "arch.puzzle_emb_ndim=128"]
    line = one_line_error(["evaluate.py", *args, "arch.hidden_size=128"], run_copy)
    assert "is (64,) in" in line and "but (128,) in this model" in line
    assert "it was trained with arch.hidden_size=64 arch.puzzle_emb_ndim=64; add that" in line
    assert "dataset build" not in line  # the old, wrong cause


@BAD_INPUT
@pytest.mark.parametrize("override", ["arch.hidden_size=128", "arch.num_heads=4", "arch.pos_encodings=learned"])
@pytest.mark.slow
def test_an_arch_key_unlike_the_checkpoints_is_refused(run_dir: Path, override: str) -> None:
    # With all_config.yaml: any arch key that builds another model, shapes unchanged or not (more heads,
    # other positions would evaluate a different model around the same weights without a word)
    line = one_line_error(["evaluate.py", f"checkpoint={run_dir / 'step_2'}", override], run_dir)
    key, value = override.split("=")
    assert f"{override} differs from the checkpoint's {key}=" in line and f"drop {key}" in line
    deeper = run_py(["evaluate.py", f"checkpoint={run_dir / 'step_2'}", "arch.halt_max_steps=4", "save_outputs=[]"])
    assert deeper.returncode == 0, deeper.stderr  # thinking longer than trained stays allowed


def test_weights_of_another_depth_name_the_key(run_copy: Path, tiny_sudoku: Path) -> None:
    import pretrain
    from dataset.loader import load_metadata
    from train import eval_config
    from train.runtime import Dist

    as_released(run_copy)  # the weights alone say what the model was
    arch = {a.split("=")[0].removeprefix("arch."): int(a.split("=")[1]) for a in TINY_ARCH} | {"L_layers": 2}
    arch |= {"puzzle_emb_ndim": 64}
    cli = {"checkpoint": str(run_copy / "step_2"), "data_path": str(tiny_sudoku), "arch": arch}
    config, ckpt, _ = eval_config.load_eval_config(cli)
    model, _, _ = pretrain.create_model(
        config, load_metadata(str(tiny_sudoku), "train"), Dist(), torch.device("cpu"), "float32", False
    )
    with pytest.raises(UserError, match="unexpected|missing") as err:
        load_checkpoint(ckpt, model.eager, config.data_path)
    assert "it was trained with arch.L_layers=1" in str(err.value)


@BAD_INPUT
def test_read_only_output_folder(run_dir: Path, monkeypatch) -> None:
    """As root a chmod'ed folder stays writable, so the refused write is simulated at the probe."""
    import errno

    from train import eval_config

    real_open = os.open

    def refuse(path, *args, **kwargs):
        if ".write-test-" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    before = snapshot(run_dir)
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(UserError) as err:
        eval_config.load_eval_config({"checkpoint": str(run_dir / "step_2")})
    monkeypatch.undo()
    msg = str(err.value)
    assert f"cannot write predictions (step_N_all_preds.*) to {run_dir} (Permission denied)" in msg
    assert "output_dir=<writable folder>" in msg and "save_outputs=[]" in msg
    assert snapshot(run_dir) == before


@BAD_INPUT
def test_unwritable_output_dir_end_to_end(run_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_line_error(
        ["evaluate.py", f"checkpoint={run_dir / 'step_2'}", f"output_dir={blocker}/preds"], run_dir, tmp_path
    )
    assert f"cannot write predictions (step_N_all_preds.*) to {blocker}/preds" in line


@pytest.mark.slow
def test_output_dir_is_used(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    before = snapshot(run_dir)
    r = run_py(["evaluate.py", f"checkpoint={run_dir / 'step_2'}", f"output_dir={out}", "eval_batches=1"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "step_2_all_preds.0").is_file() and snapshot(run_dir) == before


# ----------------------------------------------------------------------------------------------------------
# Crafted files (issue 15.10)


def crafted(tmp: Path, kind: str) -> Path:
    path = tmp / f"step_1_all_preds.{kind}"
    if kind == "garbage":
        path.write_bytes(b"\x00\xffnot a checkpoint" * 200)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        _RunsCode.marker = str(tmp / "PWNED")
        with open(path, "wb") as f:
            pickle.dump({"inputs": _RunsCode()}, f)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no-logits":
        torch.save({"inputs": torch.zeros(2, 81), "labels": torch.zeros(2, 81)}, path)
    elif kind == "list-logits":
        torch.save({"inputs": torch.zeros(2, 81), "labels": torch.zeros(2, 81), "logits": [1, 2]}, path)
    elif kind == "shapes":
        torch.save({"inputs": torch.zeros(2, 81), "labels": torch.zeros(3, 81), "logits": torch.zeros(2, 81, 11)}, path)
    return path


@CRAFTED
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("garbage", "is not a prediction file (UnpicklingError"),
        ("empty", "is not a prediction file"),
        ("pickle", "is not a prediction file (UnpicklingError: it holds Python objects, not only tensors; refused"),
        ("tensor", "holds a Tensor, not the dict of tensors evaluate.py writes"),
        ("no-logits", "has no 'logits'"),
        ("list-logits", "'logits' is a list, not a tensor"),
        ("shapes", "do not fit"),
    ],
)
def test_score_sudoku_refuses_crafted_predictions(tmp_path: Path, kind: str, expected: str) -> None:
    from dataset import score_sudoku

    path = crafted(tmp_path, kind)
    with pytest.raises(UserError) as err:
        score_sudoku.load_preds(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "PWNED").exists()


@CRAFTED
def test_score_sudoku_crafted_end_to_end(tiny_sudoku: Path, tmp_path: Path) -> None:
    path = crafted(tmp_path, "pickle")
    line = one_line_error(["dataset/score_sudoku.py", "--data", str(tiny_sudoku), "--preds", str(path)], tmp_path)
    assert "is not a prediction file" in line and not (tmp_path / "PWNED").exists()


PYTHON_TAG = "!!python/object/apply:os.system ['touch {marker}']\n"


@CRAFTED
@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_config_with_python_tag_is_refused(run_copy: Path, script: str) -> None:
    marker = run_copy.parent / "PWNED"
    (run_copy / "all_config.yaml").write_text(PYTHON_TAG.format(marker=marker))
    extra = ["puzzle=" + "." * 81] if script == "predict.py" else []
    line = one_line_error([script, f"checkpoint={run_copy / 'step_2'}", *extra], run_copy)
    assert "all_config.yaml is not a plain YAML config" in line and "could not determine a constructor" in line
    assert not marker.exists()


@CRAFTED
@pytest.mark.parametrize("recipe", ["../../../outside", "/etc/hostname", "nope"])
def test_config_whose_recipe_is_a_path_is_refused(run_copy: Path, recipe: str, monkeypatch) -> None:
    import builtins

    from train import eval_config

    cfg = (run_copy / "all_config.yaml").read_text()
    assert "recipe: null" in cfg
    (run_copy / "all_config.yaml").write_text(cfg.replace("recipe: null", f"recipe: {recipe}"))
    opened: list[str] = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises(UserError, match=r"is not one of config/recipe/") as err:
        eval_config.load_eval_config({"checkpoint": str(run_copy / "step_2")})
    assert "\n" not in str(err.value) and not any("outside" in f or "hostname" in f for f in opened)


@CRAFTED
@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", "a: [1,\n"])
def test_config_that_is_not_a_mapping(run_copy: Path, content: str) -> None:
    from train import eval_config

    (run_copy / "all_config.yaml").write_text(content)
    with pytest.raises(UserError, match="all_config.yaml (holds a|is not a plain YAML)"):
        eval_config.load_eval_config({"checkpoint": str(run_copy / "step_2")})


@CRAFTED
@pytest.mark.parametrize("kind", ["binary", "bad-gzip"])
def test_plot_refuses_binary_metrics(tmp_path: Path, kind: str) -> None:
    name = "metrics.jsonl" if kind == "binary" else "metrics.jsonl.gz"
    bad = tmp_path / name
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" + os.urandom(512))
    if kind == "bad-gzip":
        import plot

        with pytest.raises(UserError, match="is not a metrics.jsonl text file"):
            plot.read_run(str(bad), "x")
        return
    line = one_line_error(["plot.py", str(bad), "-o", str(tmp_path / "x.png")], tmp_path)
    assert f"{bad} is not a metrics.jsonl text file (UnicodeDecodeError)" in line


@CRAFTED
@pytest.mark.parametrize("kind", ["empty", "garbage"])
def test_resume_from_crafted_state_is_refused(run_copy: Path, tiny_sudoku: Path, kind: str) -> None:
    """Crafted `.state` (zero bytes, junk): resume=<path> names it in one line (train/checkpoint.py)."""
    import pretrain
    from tests.conftest import tiny_config

    (run_copy / "step_2.state").write_bytes(b"" if kind == "empty" else os.urandom(1000))
    config = tiny_config(tiny_sudoku, checkpoint_path=str(run_copy), resume=str(run_copy / "step_2"))
    with pytest.raises(UserError, match="no loadable checkpoint found"):
        pretrain.resolve_resume(config)


# ----------------------------------------------------------------------------------------------------------
# Ctrl-C while the heavy imports run (issue 15.10)

_INTERRUPT_IMPORT = """
import os, runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = {argv!r}
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@BAD_INPUT
@pytest.mark.parametrize(
    ("script", "module", "args"),
    [
        ("pretrain.py", "torch", ["data_path=x"]),
        ("evaluate.py", "torch", ["checkpoint=x"]),
        ("predict.py", "torch", ["checkpoint=x", "puzzle=x"]),
        ("plot.py", "matplotlib", ["some-run"]),
    ],
)
def test_ctrl_c_during_imports_is_one_line(tmp_path: Path, script: str, module: str, args: list[str]) -> None:
    code = _INTERRUPT_IMPORT.format(module=module, argv=[str(REPO / script), *args])
    r = run_py(["-c", code], timeout=120)
    assert r.returncode in (130, -signal.SIGINT), (r.returncode, r.stderr)  # killed by SIGINT: 130 in a shell
    assert r.stderr.strip() == "interrupted (Ctrl-C)", r.stderr


# ----------------------------------------------------------------------------------------------------------
# Out of memory on the CPU (issue 14.5): simulated, the real allocator message

CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "15728640000 bytes. Error code 12 (Cannot allocate memory)"
)


def _launch_with(monkeypatch, tiny_sudoku: Path, tmp_path: Path, target: str, error: BaseException) -> str:

    import pretrain
    from train import loop

    cfg = launch_config(tiny_sudoku, tmp_path / "run", epochs=1)

    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(loop, target, fail)  # the name the loop calls
    with pytest.raises(UserError) as err:
        pretrain.launch(cfg)
    return str(err.value)


@pytest.mark.slow
@BAD_INPUT
@pytest.mark.parametrize(
    ("target", "error", "expected"),
    [
        ("train_batch", RuntimeError(CPU_OOM), "out of memory at 64 examples per forward pass (CPU memory:"),
        (
            "train_batch",
            MemoryError(),
            "Set micro_batch_size=32 (same results, less memory) or lower global_batch_size",
        ),
        ("evaluate", RuntimeError(CPU_OOM), "out of memory while evaluating batches of 64"),
    ],
    ids=["cpu-allocator", "MemoryError", "eval"],
)
def test_cpu_out_of_memory_is_one_line(monkeypatch, tiny_sudoku: Path, tmp_path: Path, target, error, expected) -> None:
    msg = _launch_with(monkeypatch, tiny_sudoku, tmp_path, target, error)
    assert expected in msg and "\n" not in msg, msg
    if isinstance(error, RuntimeError):
        assert "DefaultCPUAllocator: can't allocate memory" in msg


def test_other_runtime_errors_are_not_called_oom(monkeypatch, tiny_sudoku: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="a real bug"):
        _launch_with(monkeypatch, tiny_sudoku, tmp_path, "train_batch", RuntimeError("a real bug"))


@BAD_INPUT
@pytest.mark.parametrize("argv", [["recipe=paper-sudoku", "recipe=trm-sudoku"], ["arch=trm", "arch=hrm_v1"]])
def test_a_config_group_given_twice_is_refused(argv: list[str]) -> None:
    from train.config import check_cli_overrides

    with pytest.raises(UserError, match=f"{argv[0].split('=')[0]} is given twice .*; keep one"):
        check_cli_overrides(argv)


@BAD_INPUT
@pytest.mark.slow
def test_resuming_under_another_recipe_is_refused_first(tiny_sudoku: Path, tmp_path: Path) -> None:
    """A recipe run resumed without its recipe: the error named epochs first, and restoring epochs resumed with
    the base defaults instead of the recipe's; another recipe continued silently."""
    from tests.conftest import SHORT_RUN, pretrain_args

    run = tmp_path / "run"
    base = [*SHORT_RUN, *hydra_quiet(tmp_path)]
    r = run_py(pretrain_args(tiny_sudoku, run, ["recipe=paper-sudoku", *base]))
    assert r.returncode == 0, r.stderr[-2000:]
    for recipe, expect in (([], "add recipe=paper-sudoku"), (["recipe=speedrun-hrm"], "add recipe=paper-sudoku")):
        r = run_py(pretrain_args(tiny_sudoku, run, [*recipe, *base, "resume=auto"]))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "trained with recipe=paper-sudoku" in r.stderr and expect in r.stderr
    r = run_py(pretrain_args(tiny_sudoku, run, ["recipe=paper-sudoku", *base, "resume=auto"]))
    assert r.returncode == 0, r.stderr[-2000:]  # its own recipe resumes


@pytest.mark.slow
def test_a_start_leaves_no_hydra_log_in_the_users_folder(tiny_sudoku: Path, tmp_path: Path) -> None:
    """Every start, failed ones included, left outputs/<date>/<time>/pretrain.log in the current folder."""
    r = run_py(["pretrain.py", f"data_path={tmp_path / 'missing'}"], cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_py(["pretrain.py", "data_path=sudoku-tiny", f"checkpoint_path={tmp_path / 'run'}", "epochs=1",
                "eval_interval=1", "global_batch_size=64", *TINY_ARCH], cwd=tiny_sudoku.parent)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "eval " in r.stdout  # the log is on the terminal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not (tiny_sudoku.parent / "outputs").exists()


@pytest.mark.slow
def test_readme_arch_keys_work_without_a_plus(tiny_sudoku: Path, tmp_path: Path) -> None:
    """arch.forward_dtype=float32, in the README's key table, needed a `+` (Hydra: no such key in the arch yaml)."""
    from train.config import check_cli_overrides

    assert check_cli_overrides(["arch.forward_dtype=float32", "arch.loss.loss_type=x", "+arch.rope_theta=5"]) == [
        "+arch.forward_dtype=float32",
        "arch.loss.loss_type=x",
        "+arch.rope_theta=5",
    ]
    run = tmp_path / "run"
    r = run_py(["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={run}", "epochs=1", "eval_interval=1",
                "global_batch_size=64", *TINY_ARCH, "arch.forward_dtype=float32", *hydra_quiet(tmp_path)])  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "forward_dtype: float32" in (run / "all_config.yaml").read_text()


@CRAFTED
def test_state_whose_moments_belong_to_another_model_is_refused(run_copy: Path, tiny_sudoku: Path) -> None:
    """A `.state` with optimizer moments of another width and a recomputed checksum failed with a size-mismatch
    traceback at the first step."""
    from train import checkpoint as ckpt

    path = run_copy / "step_1.state"
    state = torch.load(path, weights_only=False)
    adam = next(o for o in state["optimizers"] if any("exp_avg" in s for s in o["state"].values()))
    moments = next(s for s in adam["state"].values() if "exp_avg" in s and s["exp_avg"].dim() == 2)
    moments["exp_avg"] = torch.zeros(moments["exp_avg"].shape[0], moments["exp_avg"].shape[1] + 8)
    state["checksums"]["state"] = ckpt.digest({k: v for k, v in state.items() if k != "checksums"})
    torch.save(state, path)
    line = one_line_error(
        ["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={run_copy}", "epochs=2", "eval_interval=1",
         "global_batch_size=64", *TINY_ARCH, f"resume={run_copy / 'step_1'}", *hydra_quiet(run_copy.parent)],
        run_copy,
    )  # fmt: skip
    assert "AdamATan2 state 'exp_avg' has shape" in line and "belongs to another model" in line


@pytest.mark.parametrize("name", ["sudoku-ü", "a=b"])
@pytest.mark.slow
def test_paths_with_non_ascii_letters_or_equals_signs_train(tiny_sudoku: Path, tmp_path: Path, name: str) -> None:
    """Such a path ended in Hydra's multi-line grammar error; the user quoted nothing wrong."""
    data = tmp_path / name
    data.symlink_to(tiny_sudoku, target_is_directory=True)
    run = tmp_path / f"run-{name}"
    r = run_py(["pretrain.py", f"data_path={data}", f"checkpoint_path={run}", "epochs=1", "eval_interval=1",
                "global_batch_size=64", *TINY_ARCH, *hydra_quiet(tmp_path)])  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    import yaml

    assert (run / "step_1").is_file() and yaml.safe_load((run / "all_config.yaml").read_text())["data_path"] == str(
        data
    )
