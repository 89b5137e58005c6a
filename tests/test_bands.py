"""The hard band (dataset/bands.py): its rule on hand-built folders (Sudoku's guess threshold, Maze's longest-path
third with ties), its exact accuracy in evaluate() against a hand-built case on one and two ranks, and a tiny run
whose logged band accuracy is recomputed from its saved predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrain
import train.steps
from dataset.bands import HARD_GUESSES, MAZE_PATH_TOKEN, RULE, hard_band, maze_hard
from dataset.format import save_grid_split
from dataset.loader import load_arrays, load_metadata
from dataset.puzzles import maze
from models.losses import IGNORE_LABEL_ID
from tests.conftest import CPU, SHORT_RUN, D, build, pretrain_args, read_metrics, run_py
from train.runtime import Dist
from utils.errors import UserError


def grid_folder(root: Path, split: str, inputs: np.ndarray, labels: np.ndarray, per_group: int, vocab: int) -> None:
    """One split in the builders' layout, `per_group` puzzles (one example each) a group."""
    n = len(inputs)
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.zeros(n, dtype=np.int32),
        "puzzle_indices": np.arange(n + 1, dtype=np.int32),
        "group_indices": np.arange(0, n + 1, per_group, dtype=np.int32),
    }
    save_grid_split(str(root), split, arrays, seq_len=inputs.shape[1], vocab_size=vocab)


def band_of(root: Path, split: str = "test"):
    meta = load_metadata(str(root), split)
    return hard_band(str(root), split, meta, load_arrays(str(root), split, meta))


def test_sudoku_band_is_the_puzzles_of_at_least_100_guesses_through_the_group_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    guesses = [0, HARD_GUESSES - 1, HARD_GUESSES, 2_000, 7, HARD_GUESSES + 1]
    n = 2 * len(guesses)  # two puzzles a group: each example takes its group's count
    tokens = rng.integers(1, 11, size=(n, 81)).astype(np.uint8)
    grid_folder(tmp_path, "test", tokens, tokens, per_group=2, vocab=11)
    (tmp_path / "mix.json").write_text(json.dumps({"test_guesses": guesses}))
    band = band_of(tmp_path)
    assert band is not None
    assert band.hard["all"].tolist() == [g >= 100 for g in guesses for _ in range(2)]
    assert band.note == "test hard band: 6 of 12 puzzles (>= 100 solver guesses)"

    # mix.json of another build (a count per puzzle that is not there): one line naming the fix
    (tmp_path / "mix.json").write_text(json.dumps({"test_guesses": guesses[:-1]}))
    with pytest.raises(UserError, match="5 test_guesses for 6 test puzzles: it belongs to another build"):
        band_of(tmp_path)
    # no counts (a CSV source, generated puzzles): no band
    (tmp_path / "mix.json").unlink()
    assert band_of(tmp_path) is None


def test_maze_band_is_the_longest_path_third_with_ties(tmp_path: Path) -> None:
    assert maze_hard(np.array([10, 9, 9, 9, 3, 2])).tolist() == [True] * 4 + [False] * 2  # ties of the 2nd longest
    assert maze_hard(np.array([5, 4, 3])).tolist() == [True, False, False]
    assert maze_hard(np.array([1, 7, 4, 7, 2, 3, 7])).tolist() == [False, True, False, True, False, False, True]
    assert maze_hard(np.array([4, 4])).tolist() == [True, True]
    # on a folder: the length is the number of path cells in each solution
    lengths = [30, 120, 75, 120, 5, 60, 90]
    labels = np.full((len(lengths), 900), maze.OPEN, dtype=np.uint8)
    for i, n in enumerate(lengths):
        labels[i, :n] = MAZE_PATH_TOKEN
    assert maze.CHARSET[MAZE_PATH_TOKEN - 1] == "o"  # the solution's path cells
    grid_folder(tmp_path, "test", labels, labels, per_group=1, vocab=maze.VOCAB_SIZE)
    band = band_of(tmp_path)
    assert band is not None and band.hard["all"].tolist() == [False, True, False, True, False, False, True]
    assert "3 of 7 puzzles (the longest-path third)" in band.note


@pytest.fixture(scope="module")
def mix(sudoku_lists: Path, tmp_path_factory) -> Path:
    """A small v2 mix (test 60, val 30) from the committed list samples: its mix.json has the guess counts."""
    out = tmp_path_factory.mktemp("band") / "mix"
    r = run_py(
        ["dataset/build_sudoku_dataset.py", "--mix", str(sudoku_lists), "--mix-version", "2", "--subsample-size", "60",
         "--test-size", "60", "--val-size", "30", "--num-aug", "1", "--output-dir", str(out)]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.slow
def test_band_accuracy_in_evaluate_is_exact_on_one_and_two_ranks(mix: Path, monkeypatch) -> None:
    """Hand-built predictions (right on the rows whose inputs' token sum is not a multiple of 3, wrong elsewhere):
    evaluate()'s hard-band accuracy is the share of right puzzles among those of >= 100 guesses, recomputed here
    from the files, whatever the batches, padding and ranks."""
    config, state, loader, meta = build(mix, halt_max_steps=2)  # eval batch 16 of 60 puzzles: the last one padded
    eager = state.model.eager

    def handmade(carry, batch, return_keys):
        carry, loss, metrics, preds, done = eager(carry=carry, batch=batch, return_keys=return_keys)
        labels = batch["labels"].clamp_min(0).long()
        right = (batch["inputs"].long().sum(-1) % 3 != 0)[:, None]
        token = torch.where(right, labels, labels % 10 + 1)  # wrong: another digit in every cell
        preds["logits"] = torch.nn.functional.one_hot(token, meta.vocab_size).float()
        return carry, loss, metrics, preds, done

    monkeypatch.setattr(state.model, "run", lambda name, fn: fn(handmade))
    inputs = np.load(mix / "test" / "all__inputs.npy").astype(np.int64)
    hard = np.array(json.loads((mix / "mix.json").read_text())["test_guesses"]) >= HARD_GUESSES
    right = inputs.sum(-1) % 3 != 0
    want = right[hard].mean()
    assert 0 < want < 1 and 0 < hard.sum() < len(hard)  # the case tells right from wrong, hard from not

    one = pretrain.evaluate(config, state, loader, meta, D, CPU)["all"]
    assert one["hard_exact_accuracy"] == pytest.approx(want, abs=1e-12)

    # two ranks, each its half of every batch; the sums reduced as the process group would (rank 1's onto rank 0's)
    sent: list[torch.Tensor] = []

    def reduce(t: torch.Tensor, dst: int) -> None:
        if sent:
            with torch.inference_mode():  # the eval's sums are inference tensors
                t += sent.pop()
        else:
            sent.append(t.clone())

    monkeypatch.setattr(train.steps.dist, "reduce", reduce)
    results = []
    for rank in (1, 0):
        d = Dist(rank=rank, world_size=2, local_rank=rank)
        ranked, _ = pretrain.create_dataloader(
            config, "test", d, CPU, test_set_mode=True, epochs_per_iter=1, global_batch_size=16
        )
        results.append(pretrain.evaluate(config, state, ranked, meta, d, CPU))
    assert results[0] is None and results[1] is not None  # only rank 0 reports
    assert results[1]["all"]["hard_exact_accuracy"] == pytest.approx(want, abs=1e-12)


@pytest.mark.slow
def test_tiny_run_logs_the_band_that_its_saved_predictions_give(mix: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = run_py(pretrain_args(mix, run, SHORT_RUN, "global_batch_size=24", "eval_save_outputs=[inputs,labels,logits]"))
    assert r.returncode == 0, r.stderr[-3000:]
    guesses = json.loads((mix / "mix.json").read_text())
    n_test, n_val = (sum(g >= HARD_GUESSES for g in guesses[f"{s}_guesses"]) for s in ("test", "val"))
    assert f"test hard band: {n_test} of 60 puzzles (>= 100 solver guesses)" in r.stdout
    assert f"val hard band: {n_val} of 30 puzzles" in r.stdout and RULE.removeprefix("hard band: ") in r.stdout
    assert r.stdout.count("Rule:") == 1  # said once
    evals = [m for m in read_metrics(run) if "all/exact_accuracy" in m]
    assert evals and all("all/hard_exact_accuracy" in m and "val/all/hard_exact_accuracy" in m for m in evals)
    assert "(hard band " in r.stdout
    # the last eval, recomputed from its saved predictions: rows in test order, hard by mix.json's counts
    last = evals[-1]
    saved = torch.load(run / f"step_{last['step']}_all_preds.0", weights_only=True)
    labels = saved["labels"]
    exact = ((saved["logits"].argmax(-1) == labels) | (labels == IGNORE_LABEL_ID)).all(-1).numpy()
    assert (saved["inputs"].numpy() == np.load(mix / "test" / "all__inputs.npy")).all()
    hard = np.array(guesses["test_guesses"]) >= HARD_GUESSES
    assert last["all/hard_exact_accuracy"] == pytest.approx(exact[hard].mean(), abs=1e-9)
    assert last["all/exact_accuracy"] == pytest.approx(exact.mean(), abs=1e-6)
    # evaluate.py on the same checkpoint: the same band figure, the band said once
    step = last["step"]
    e = run_py(["evaluate.py", f"checkpoint={run / f'step_{step}'}", "save_outputs=[]"])
    assert e.returncode == 0, e.stderr[-3000:]
    assert f"hard_exact_accuracy={last['all/hard_exact_accuracy']:.4f}" in e.stdout
    assert e.stdout.count("Rule:") == 1


@pytest.mark.slow
def test_data_without_counts_has_no_band_and_says_so_once(tiny_sudoku: Path, tmp_path: Path) -> None:
    r = run_py(pretrain_args(tiny_sudoku, tmp_path / "run", SHORT_RUN, "epochs=2", "eval_interval=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("no test hard band") == 1 and "no per-puzzle guess counts" in r.stdout
    assert not any("hard_exact_accuracy" in k for m in read_metrics(tmp_path / "run") for k in m)
    assert "(hard band " not in r.stdout


@pytest.mark.slow
def test_counts_of_another_build_stop_the_run_in_one_line(mix: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(mix, data)
    info = json.loads((data / "mix.json").read_text())
    (data / "mix.json").write_text(json.dumps(info | {"test_guesses": info["test_guesses"][:-1]}))
    r = run_py(pretrain_args(data, tmp_path / "run", SHORT_RUN, "epochs=1", "eval_interval=1"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "59 test_guesses for 60 test puzzles: it belongs to another build" in errors[0]


def test_the_tta_vote_reports_its_hard_band(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train/tta.evaluate_tta on a folder with a band: copy 0 right on the easy puzzles only, copies 1-3 right on
    all, so one copy scores 0 on the band and the vote 1; the training log's TTA line says both."""
    from dataset import transforms
    from train import tta
    from train.loop import tta_line

    rng = np.random.default_rng(0)
    guesses = [0, HARD_GUESSES, 5, 3_000, HARD_GUESSES + 7, 1]
    tokens = rng.integers(1, 11, size=(len(guesses), 81)).astype(np.uint8)
    grid_folder(tmp_path, "test", tokens, tokens, per_group=1, vocab=11)
    (tmp_path / "mix.json").write_text(json.dumps({"test_guesses": guesses}))
    hard = np.array([g >= HARD_GUESSES for g in guesses])
    answers = transforms.make_transforms("sudoku", 4, vocab_size=11).apply(tokens.astype(np.int64))  # (N, 4, 81)

    def oracle(model, eager, inputs, pids, batch, steps, device):
        out = answers.copy()
        out[hard, 0] = 1  # copy 0 of a hard puzzle: an all-blank grid
        return out.reshape(-1, 81), np.full(out.shape[0] * 4, 0.5)

    monkeypatch.setattr(tta, "predict", oracle)
    meta = load_metadata(str(tmp_path), "test")
    m = tta.evaluate_tta(None, None, str(tmp_path), meta, 4, 8, 2, CPU)["all"]
    assert (m["exact_accuracy"], m["tta_exact_accuracy"]) == (0.5, 1.0)
    assert (m["hard_exact_accuracy"], m["hard_tta_exact_accuracy"]) == (0.0, 1.0)
    assert "exact 1.0000 (one copy 0.5000); hard band 1.0000 (one copy 0.0000); by copies" in tta_line("all", m, 4, 1.0)
    (tmp_path / "mix.json").unlink()  # no counts: no band, no band figures
    assert "hard_tta_exact_accuracy" not in tta.evaluate_tta(None, None, str(tmp_path), meta, 4, 8, 2, CPU)["all"]
