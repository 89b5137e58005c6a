"""The Python API (hrm/): a tiny trained run solves through hrm.load/solve as evaluate.py and predict.py do, after
its dataset folder is gone (checkpoints carry step_N.json), and through a folder hrm.export wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import hrm
from dataset.verify import sudoku_valid
from hrm.puzzles import to_digits
from tests.conftest import TINY_ARCH, run_py
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
OLD = REPO / "tests" / "fixtures" / "ckpt-before-train-package"


@pytest.fixture(scope="module")
def trained(tiny_sudoku: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run with ema=true (4 steps) on its own copy of the tiny Sudoku set, evaluated by evaluate.py (its
    predictions saved), then the dataset folder renamed away: nothing may need it after training."""
    tmp = tmp_path_factory.mktemp("api")
    data, run = tmp / "data", tmp / "run"
    shutil.copytree(tiny_sudoku, data)
    args = ["epochs=4", "eval_interval=2", "global_batch_size=64", "ema=true", *TINY_ARCH]
    r = run_py(["pretrain.py", f"data_path={data}", f"checkpoint_path={run}", *args])
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp / "preds"
    r = run_py(["evaluate.py", f"checkpoint={run / 'step_4'}", f"output_dir={out}", "device=cpu"])
    assert r.returncode == 0, r.stderr[-3000:]
    gone = tmp / "data-moved-away"
    data.rename(gone)
    return {"run": run, "preds": out / "step_4_all_preds.0", "data": gone}


@pytest.mark.slow
def test_checkpoint_carries_its_metadata(trained: dict[str, Path]) -> None:
    info = json.loads((trained["run"] / "step_4.json").read_text())
    saved = json.loads((trained["data"] / "train" / "dataset.json").read_text())
    assert info["kind"] == "sudoku" and info["grid"] == [9, 9]
    assert (info["vocab_size"], info["seq_len"]) == (saved["vocab_size"], saved["seq_len"]) == (11, 81)
    assert info["num_puzzle_identifiers"] == saved["num_puzzle_identifiers"] and info["dataset"] == saved
    assert info["config"]["arch"]["hidden_size"] == 64 and info["config"]["ema"] is True
    # the weights file keeps the original's keys only: the metadata is beside it, not in it
    weights = torch.load(trained["run"] / "step_4", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and k.startswith("model.inner.") for k, v in weights.items())


def test_loading_a_model_leaves_the_process_ctrl_c_alone(trained: dict[str, Path]) -> None:
    """A library call installs no hook of the scripts' (utils/interrupt.py prints one line on Ctrl-C for evaluate.py
    and the other commands, in their own processes)."""
    code = (
        "import sys; before = sys.excepthook; import hrm; hrm.load(sys.argv[1], device='cpu'); "
        "assert sys.excepthook is before, sys.excepthook; assert 'evaluate' not in sys.modules"
    )
    r = run_py(["-c", code, str(trained["run"] / "step_4")])
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_solve_agrees_with_evaluate(trained: dict[str, Path]) -> None:
    """halt=max runs the paper's protocol, as evaluate.py: the same answers on the same puzzles, without the data."""
    preds = torch.load(trained["preds"], weights_only=True)
    inputs = preds["inputs"].numpy().astype(np.int64)
    expected = preds["logits"].float().argmax(-1).numpy()
    solver = hrm.load(trained["run"], device="cpu")  # a run folder: its newest checkpoint, the weight average
    assert solver.weights.endswith("step_4.ema") and solver.kind == "sudoku"
    r = solver.solve(inputs - 1, halt="max")  # digits, (N, 81)
    assert len(r) == len(inputs) and r.grids.shape == (len(inputs), 9, 9)
    assert (r.grids == to_digits(expected, "sudoku")).all()
    assert (r.puzzles.reshape(-1, 81) == inputs - 1).all()
    assert (r.steps == solver.halt_max_steps).all()
    assert all(len(s) == solver.halt_max_steps and (s[-1] == g).all() for s, g in zip(r.segments, r.grids))
    q = torch.sigmoid(preds["q_halt_logits"].float()).numpy()
    np.testing.assert_allclose(r.confidence, q, rtol=1e-5, atol=1e-6)
    assert r.valid is not None and (r.valid == sudoku_valid(inputs, expected)).all()


@pytest.mark.slow
def test_puzzle_forms_and_batches_agree(trained: dict[str, Path]) -> None:
    solver = hrm.load(trained["run"] / "step_4", device="cpu")
    digits = np.load(trained["data"] / "test" / "all__inputs.npy")[:7].astype(np.int64) - 1
    texts = ["".join("." if d == 0 else str(d) for d in row) for row in digits]
    ref = solver.solve(texts)
    for form in (
        digits.reshape(-1, 9, 9),
        torch.from_numpy(digits),
        texts[:1] + [t.replace(".", "0") for t in texts[1:]],
    ):
        assert (solver.solve(form).grids == ref.grids).all()
    assert (solver.solve(texts, batch_size=3).grids == ref.grids).all()  # puzzles do not affect one another
    assert (solver.solve(texts[2]).grids[0] == ref.grids[2]).all() and ref.text(2).count("|") == 18


@pytest.mark.slow
def test_halt_q_stops_each_puzzle_where_its_q_head_says(trained: dict[str, Path]) -> None:
    solver = hrm.load(trained["run"], device="cpu", ema="false")
    assert solver.weights.endswith("step_4")
    digits = np.load(trained["data"] / "test" / "all__inputs.npy")[:16].astype(np.int64) - 1
    full = solver.solve(digits, max_steps=4, halt="max")
    early = solver.solve(digits, max_steps=4, halt="q")
    assert ((early.steps >= 1) & (early.steps <= 4)).all()
    for i in range(len(digits)):
        k = early.steps[i]
        assert early.segments[i].shape == (k, 9, 9)
        assert (early.segments[i] == full.segments[i][:k]).all()  # the same thinking, stopped at its halt
        assert (early.grids[i] == full.segments[i][k - 1]).all()


@pytest.mark.slow
def test_predict_and_evaluate_without_the_training_data(
    trained: dict[str, Path], tiny_sudoku: Path, tmp_path: Path
) -> None:
    """The dataset folder the run trained on is gone: predict.py needs only the checkpoint; evaluate.py scores it
    on another data folder (a test split alone); both agree with the API."""
    grid = np.load(trained["data"] / "test" / "all__inputs.npy")[3].astype(int) - 1
    puzzle = "".join("." if v == 0 else str(v) for v in grid)
    r = run_py(["predict.py", f"checkpoint={trained['run'] / 'step_4'}", f"puzzle={puzzle}", "device=cpu"])
    assert r.returncode == 0, r.stderr[-2000:]
    result = hrm.load(trained["run"] / "step_4", device="cpu").solve(puzzle)
    assert result.text(0) in r.stdout
    assert f"halting confidence sigmoid(q_halt) = {result.confidence[0]:.3f}" in r.stdout
    assert ("valid solution: yes" if result.valid[0] else "valid solution: no") in r.stdout  # type: ignore[index]
    other = tmp_path / "other"
    shutil.copytree(tiny_sudoku / "test", other / "test")
    r = run_py(["evaluate.py", f"checkpoint={trained['run'] / 'step_4'}", f"data_path={other}", "save_outputs=[]"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "exact_accuracy=" in r.stdout and "has no train split" not in r.stdout


@pytest.mark.slow
def test_export_writes_a_model_folder_that_loads(trained: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = Path(hrm.export(trained["run"], tmp_path / "model"))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    averaged = torch.load(trained["run"] / "step_4.ema", weights_only=True)
    exported = load_file(out / "model.safetensors")
    assert exported.keys() == averaged.keys() and all(torch.equal(exported[k], averaged[k]) for k in averaged)
    config = json.loads((out / "config.json").read_text())
    assert config["weights"] == "ema" and config["kind"] == "sudoku" and config["config"]["arch"]["hidden_size"] == 64
    digits = np.load(trained["data"] / "test" / "all__inputs.npy")[:8].astype(np.int64) - 1
    a = hrm.load(out, device="cpu").solve(digits)
    b = hrm.load(trained["run"], device="cpu").solve(digits)
    assert (a.grids == b.grids).all() and np.array_equal(a.confidence, b.confidence)
    # the command: raw weights on request; a folder holding other files is refused
    raw = tmp_path / "raw"
    r = run_py(["-m", "hrm", "export", str(trained["run"] / "step_2"), str(raw), "--ema", "false"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "raw weights" in r.stdout and json.loads((raw / "config.json").read_text())["source"] == "step_2"
    weights = torch.load(trained["run"] / "step_2", weights_only=True)
    assert all(torch.equal(load_file(raw / "model.safetensors")[k], v) for k, v in weights.items())
    (raw / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty"):
        hrm.export(trained["run"], raw)


@pytest.mark.slow
def test_user_errors_name_the_fix(trained: dict[str, Path], tmp_path: Path) -> None:
    solver = hrm.load(trained["run"], device="cpu")
    with pytest.raises(UserError, match=r"not a Sudoku: bad character 'x' at position 5"):
        solver.solve("1234x" + "." * 76)
    with pytest.raises(UserError, match=r"puzzle 1: not a Sudoku: expected 81 characters, got 80"):
        solver.solve(["." * 81, "." * 80])
    with pytest.raises(UserError, match=r"cannot read ndarray of shape \(3, 30, 30\) as sudoku puzzles"):
        solver.solve(np.zeros((3, 30, 30), dtype=int))  # a maze-sized grid for a Sudoku model
    with pytest.raises(UserError, match="digits must be whole numbers 0 \\(blank\\) to 9"):
        solver.solve(np.full((2, 81), 10))
    with pytest.raises(UserError, match="no puzzles given"):
        solver.solve([])
    with pytest.raises(UserError, match="halt must be q"):
        solver.solve("." * 81, halt="never")
    with pytest.raises(UserError, match="max_steps=0 must be a whole number"):
        solver.solve("." * 81, max_steps=0)
    with pytest.raises(
        UserError, match=r"does not exist \(step files beside it: step_4, step_2\): give a checkpoint file"
    ):
        hrm.load(trained["run"] / "step_9")
    with pytest.raises(UserError, match="holds no checkpoint"):
        hrm.load(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="is not this fork's model metadata"):
        hrm.load(tmp_path)
    with pytest.raises(UserError, match="solve\\(\\) reads sudoku and maze"):
        hrm.puzzles.to_tokens("x", "arc", 900, 12)


@pytest.mark.slow
def test_old_checkpoints_still_need_their_data(tiny_sudoku: Path, tmp_path: Path) -> None:
    """A checkpoint written before step_N.json (no metadata, no .state) loads as before: with its data_path."""
    old = Path(shutil.copytree(OLD, tmp_path / "old"))
    cfg = old / "all_config.yaml"
    cfg.write_text(cfg.read_text().replace("data_path: /tmp/oldfix/data", f"data_path: {tmp_path / 'gone'}"))
    with pytest.raises(UserError, match="gone"):  # without metadata the model's shape comes from the dataset
        hrm.load(old / "step_4", device="cpu")
    solver = hrm.load(old / "step_4", device="cpu", overrides={"data_path": str(tiny_sudoku)})
    assert solver.kind == "sudoku" and solver.weights.endswith("step_4.ema")
    assert solver.solve("." * 81).grids.shape == (1, 9, 9)


def test_puzzle_text_and_grids_to_tokens_and_back() -> None:
    """hrm/puzzles.py alone (no model): every form solve() takes gives the same tokens, and digits come back."""
    from hrm.puzzles import MAZE_CHARS, show, to_tokens

    text = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"
    tokens = to_tokens(text, "sudoku", 81, 11)
    assert tokens.shape == (1, 81) and tokens[0, 0] == 5 and tokens[0, 1] == 1  # digit 4 -> token 5, blank -> 1
    digits = to_digits(tokens, "sudoku")
    assert digits.shape == (1, 9, 9) and digits[0, 0, 0] == 4 and digits.dtype == np.uint8
    drawn = show(tokens[0], "sudoku")
    assert drawn.splitlines()[0] == "4 . . | . . . | 8 . 5"
    for form in (digits, digits[0], digits.reshape(1, 81), torch.from_numpy(digits.astype(np.int64)), drawn, [drawn]):
        assert (to_tokens(form, "sudoku", 81, 11) == tokens).all()
    row = " " + "#" * 28 + " "
    maze = "S" + row[1:] + row * 28 + row[:-1] + "G"
    m = to_tokens([maze, maze], "maze", 900, 6)
    assert m.shape == (2, 900) and (to_tokens(to_digits(m, "maze"), "maze", 900, 6) == m).all()
    assert show(m[0], "maze").splitlines()[0] == "S" + row[1:] and MAZE_CHARS[to_digits(m, "maze")[0, 29, 29]] == "G"
    with pytest.raises(UserError, match="not a 30x30 maze"):
        to_tokens("S", "maze", 900, 6)


@pytest.mark.slow
def test_a_checkpoint_copied_alone(trained: dict[str, Path], tmp_path: Path) -> None:
    """step_4 with its step_4.json and nothing else of the run (no all_config.yaml, no .state): predict.py and
    the API still solve, as with the whole run folder. A checkpoint of this fork written before step_N.json reads
    the same metadata from its step_N.state."""
    from train.checkpoint import read_model_info

    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("step_4", "step_4.json"):
        shutil.copy2(trained["run"] / name, alone / name)
    digits = np.load(trained["data"] / "test" / "all__inputs.npy")[:4].astype(np.int64) - 1
    raw = hrm.load(trained["run"] / "step_4", device="cpu", ema="false").solve(digits)
    copy = hrm.load(alone / "step_4", device="cpu").solve(digits)
    assert (copy.grids == raw.grids).all() and np.array_equal(copy.confidence, raw.confidence)
    puzzle = "".join(str(d) for d in digits[0])
    r = run_py(["predict.py", f"checkpoint={alone / 'step_4'}", f"puzzle={puzzle}"], cwd=tmp_path)
    assert r.returncode == 0 and f"config: {alone / 'step_4.json'}" in r.stdout, r.stderr[-2000:]
    assert copy.text(0) in r.stdout
    # before step_N.json: the .state's config and dataset fingerprint give the same metadata
    older = tmp_path / "older"
    shutil.copytree(trained["run"], older)
    (older / "step_4.json").unlink()
    assert read_model_info(str(older / "step_4")) == json.loads((trained["run"] / "step_4.json").read_text())


@pytest.mark.slow
def test_a_maze_model_solves_maze_text(tmp_path: Path, tiny_sudoku: Path) -> None:
    """Maze: text as predict.py reads it (30 lines of `# SGo`), digits back, validity by dataset/verify.py."""
    from dataset.verify import maze_check
    from hrm.puzzles import MAZE_CHARS

    data, run = tmp_path / "maze", tmp_path / "run"
    r = run_py(["dataset/build_maze_dataset.py", "--generate", "8", "--test-size", "4", "--output-dir", str(data)])
    assert r.returncode == 0, r.stderr[-2000:]
    tiny = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.halt_max_steps=2"]
    r = run_py(
        [
            "pretrain.py",
            f"data_path={data}",
            f"checkpoint_path={run}",
            "epochs=2",
            "eval_interval=2",
            "global_batch_size=8",
            *tiny,
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    inputs = np.load(data / "test" / "all__inputs.npy").astype(np.int64)
    texts = [
        "\n".join("".join(MAZE_CHARS[t - 1] for t in row[i : i + 30]) for i in range(0, 900, 30)) for row in inputs
    ]
    shutil.rmtree(data)
    # evaluate.py on a data folder of another kind: refused by the checkpoint's metadata, not a crash inside the model
    r = run_py(["evaluate.py", f"checkpoint={run / 'step_2'}", f"data_path={tiny_sudoku}", "save_outputs=[]"])
    assert r.returncode == 2 and "holds sudoku puzzles" in r.stderr and "trained on maze" in r.stderr, r.stderr[-2000:]
    solver = hrm.load(run, device="cpu")
    assert solver.kind == "maze" and solver.info["grid"] == [30, 30]
    result = solver.solve(texts)
    assert result.grids.shape == (4, 30, 30) and (result.puzzles.reshape(4, 900) == inputs - 1).all()
    assert (solver.solve(inputs - 1).grids == result.grids).all()
    answers = result.grids.reshape(4, 900).astype(np.int64) + 1
    assert result.valid is not None and (result.valid == maze_check(inputs, answers)[0]).all()
    with pytest.raises(UserError, match="not a 30x30 maze"):
        solver.solve("." * 81)  # a Sudoku for a maze model
    (tmp_path / "maze.txt").write_text(texts[0] + "\n")
    r = run_py(["predict.py", f"checkpoint={run / 'step_2'}", "puzzle=maze.txt"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("prediction after")[1].split("\n", 1)[1].startswith(result.text(0))


@pytest.mark.slow
def test_a_foreign_package_of_an_internal_name_is_refused(tmp_path: Path) -> None:
    """`import hrm` puts its training code's folder on sys.path (docs/layout.md, "Packaging"): a different `utils`
    imported before it is named, not mixed with hrm's own."""
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("")
    r = run_py(["-c", "import utils, hrm"], cwd=tmp_path)
    assert r.returncode == 1 and f"a module named 'utils' from {tmp_path} is already imported" in r.stderr
    r = run_py(["-c", "import hrm, utils.errors; print(utils.errors.UserError is hrm.UserError)"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]
