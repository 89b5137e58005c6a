"""The quick-start demo end to end at a tiny size: its build (easy generated puzzles), a shortened training, the
held-out puzzle it solves with predict.py, and the next commands it prints (including the GPU recipe)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, scratch_dir

README = (REPO / "README.md").read_text()

# 4 steps of 16 puzzles, one evaluation, a narrower and shallower TRM: seconds on 2 CPU cores
SHORT = [
    "epochs=2",
    "eval_interval=2",
    "global_batch_size=16",
    "lr_warmup_steps=1",
    "checkpoint_minutes=null",
    "arch.hidden_size=16",
    "arch.L_layers=1",
    "arch.H_cycles=1",
    "arch.L_cycles=1",
]


def test_demo_builds_trains_solves_and_prints_next_commands(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import demo

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data, run_dir = tmp_path / "data", tmp_path / "run"
    extra = [*SHORT, f"checkpoint_path={run_dir}", f"hydra.run.dir={scratch_dir()}"]
    demo.main(extra, data=str(data), train=32, test=4)
    out = capfd.readouterr().out

    # the build: easy puzzles with the demo's number of givens, in both splits
    assert f"$ python dataset/build_sudoku_dataset.py --generate 32 --test-size 4 --min-givens {demo.GIVENS}" in out
    for split in ("train", "test"):
        inputs = np.load(data / split / "all__inputs.npy")
        assert ((inputs > 1).sum(axis=1) == demo.GIVENS).all()
    # the training: the demo's config, then the test's shortening (later keys win)
    train_line = next(line for line in out.splitlines() if line.startswith("$ python pretrain.py"))
    assert shlex.split(train_line[2:])[2:] == [f"data_path={data}", *demo.TRAIN, *extra]
    assert (run_dir / "step_4").is_file()

    # one held-out puzzle, the model's answer and whether it is right (the tiny model's answer may be wrong)
    puzzle, solution = demo.test_puzzle(str(data))
    assert f"$ python predict.py checkpoint={run_dir / 'step_4'} puzzle={puzzle}" in out
    assert "One held-out test puzzle (never trained on), solved by the model:" in out
    assert "prediction after 2 ACT step(s)" in out
    predict_out = out.split("$ python predict.py", 1)[1]
    answer = demo.answer_of(predict_out)
    assert len(answer) == 81 and set(answer) <= set(".123456789")  # "." where it predicts no digit
    right = re.search(r"answer right \(equal to the puzzle's one solution\): (yes|no)\n", out)
    assert right and right.group(1) == ("yes" if answer == solution else "no")

    # the next commands: the run's own (as in test_paths) then the full GPU recipe, copied from the README
    nxt = out.split("\nNext, from ", 1)[1]
    assert f"python evaluate.py checkpoint={run_dir / 'step_4'}" in nxt
    for _, cmd in demo.GPU_RECIPE:
        assert f"\n  {cmd}\n" in nxt + "\n"
        assert cmd in README.replace(" \\\n  ", " "), cmd


def test_answer_of_reads_the_predicted_grid() -> None:
    import demo

    grid = "\n".join(
        ["1 2 3 | 4 5 6 | 7 8 9"] * 3
        + ["------+-------+------"]
        + ["1 2 3 | 4 5 6 | 7 8 9"] * 3
        + ["------+-------+------"]
        + ["1 2 3 | 4 5 6 | 7 8 9"] * 3
    )
    text = (
        f"sudoku from x:\n{grid}\n\nprediction after 2 ACT step(s) (training used 2):\n{grid}\nhalting confidence 0.5\n"
    )
    assert demo.answer_of(text) == "123456789" * 9
    assert demo.answer_of("no prediction here") == ""


def test_make_demo_runs_demo_py() -> None:
    make = (REPO / "Makefile").read_text()
    recipe = make.split("\ndemo:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.strip() for line in recipe.splitlines()] == ["python demo.py"]


def test_min_givens_option_is_checked_and_keeps_that_many_givens(tmp_path: Path) -> None:
    from dataset import build_sudoku_dataset as b
    from utils.errors import UserError

    def checked(*argv: str):
        args = b.parse_args(list(argv))
        b.check_args(args)
        return args

    assert checked("--generate", "5").min_givens == 0  # minimal puzzles, as before
    assert checked("--generate", "5", "--min-givens", "45").min_givens == 45
    for argv, words in (
        (["--min-givens", "45"], "only applies with --generate"),
        (["--generate", "5", "--min-givens", "16"], "0 (minimal puzzles) or 17-81"),
        (["--generate", "5", "--min-givens", "82"], "0 (minimal puzzles) or 17-81"),
        (["--generate", "5", "--min-givens", "45", "--min-guesses", "1"], "leave --min-givens at 0"),
        (["--mix", str(tmp_path), "--min-givens", "45"], "do not apply to --mix"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            checked(*argv)
    assert (
        b.main(["--generate", "6", "--test-size", "3", "--min-givens", "50", "--output-dir", str(tmp_path / "d")]) == 0
    )
    for split, n in (("train", 6), ("test", 3)):
        inputs = np.load(tmp_path / "d" / split / "all__inputs.npy")
        assert inputs.shape == (n, 81) and ((inputs > 1).sum(axis=1) == 50).all()
