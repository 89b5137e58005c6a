"""pretrain.py end to end on CPU: it learns, torchrun with 2 gloo processes equals 1, evaluate.py reads it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_ARCH, WALL_CLOCK_KEYS, launch_config, read_metrics, run_py, tiny_config

TRAIN = [
    "epochs=16",
    "eval_interval=8",
    "global_batch_size=64",
    "lr=1e-3",
    "puzzle_emb_lr=1e-3",
    "lr_warmup_steps=4",
    "seed=3",
]


def train(data: Path, run_dir: Path, *extra: str, launcher: list[str] | None = None) -> str:
    args = (launcher or []) + [
        "pretrain.py",
        f"data_path={data}",
        f"checkpoint_path={run_dir}",
        *TINY_ARCH,
        *TRAIN,
        *extra,
    ]
    r = run_py(args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.mark.slow
def test_tiny_run_learns_and_reports(tiny_sudoku: Path, tmp_path: Path) -> None:
    out = train(tiny_sudoku, tmp_path / "run")
    # start-up report names the choices and why
    for word in ("attention", "sdpa", "compile", "off", "forward dtype", "float32", "W&B", "parameters", "estimate:"):
        assert word in out, word
    # progress in a log (stdout is a pipe here): plain lines, no carriage-return redraws
    assert "step 16/16 (100.0%)" in out and "\r" not in out

    rows = read_metrics(tmp_path / "run")
    train_rows = [r for r in rows if "train/lm_loss" in r]
    evals = [r for r in rows if "all/accuracy" in r]
    assert len(train_rows) == 16 and len(evals) == 2
    # metrics reach the host one step late: still every step once, in order, and each pass's last step is
    # read before its eval is logged
    assert [r["step"] for r in train_rows] == list(range(1, 17))
    order = [
        ("eval" if "all/accuracy" in r else "train", r["step"])
        for r in rows
        if "all/accuracy" in r or "train/lm_loss" in r
    ]
    assert order.index(("eval", 8)) == order.index(("train", 8)) + 1 and order[-1] == ("eval", 16)
    first, last = train_rows[0], train_rows[-1]
    assert last["train/lm_loss"] < 0.85 * first["train/lm_loss"]
    halted = [r for r in train_rows if r["train/count"] > 0]  # steps where some rows finished
    assert halted[-1]["train/accuracy"] > halted[0]["train/accuracy"] + 0.1
    assert evals[-1]["all/accuracy"] > 0.25  # random guessing over 9 digits is ~0.11
    # beside the paper's score, the score where each row's Q-head halts, labelled plainly
    assert all(1 <= r["all/steps_at_halt"] <= 2 and 0 <= r["all/exact_accuracy_at_halt"] <= 1 for r in evals)
    assert "all: exact " in out and "after all 2 ACT steps (paper protocol); where the Q-head halts: exact" in out
    # the speedrun's figure: wall time since the command's start at every eval, and a summary at the end
    # (chosen on val: the tiny set has a val/ split, as every builder writes; test's accuracy is named beside)
    assert 0 < evals[0]["elapsed_s"] < evals[1]["elapsed_s"] and "time to val exact accuracy:" in out

    # checkpoints in the original's format, plus the config evaluate.py needs
    ckpt = tmp_path / "run" / f"step_{last['step']}"
    state = torch.load(ckpt, weights_only=True)
    assert "model.inner.H_init" in state and not any(k.startswith("_orig_mod.") for k in state)
    assert (tmp_path / "run" / "all_config.yaml").is_file()

    # evaluate.py gives the same test metrics as the training run's last eval and writes the preds file
    r = run_py(["evaluate.py", f"checkpoint={ckpt}"])
    assert r.returncode == 0, r.stderr
    preds = torch.load(tmp_path / "run" / f"step_{last['step']}_all_preds.0", weights_only=True)
    assert set(preds) == {"inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"}
    assert preds["logits"].shape == (32, 81, 11)
    acc = float(r.stdout.split("accuracy=")[1].split(",")[0])
    assert abs(acc - evals[-1]["all/accuracy"]) < 1e-4
    assert "steps_at_halt=" in r.stdout and "(paper protocol); where the Q-head halts" in r.stdout
    # test-time augmentation: copy 0 alone is the plain evaluation
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "tta=3"])
    assert r.returncode == 0, r.stderr
    exact = float(r.stdout.split("exact_accuracy=")[1].split(",")[0])
    line = r.stdout.split("all: tta_exact_accuracy=")[1]
    assert float(line.split("(one copy: exact ")[1].split(",")[0]) == pytest.approx(exact, abs=1e-4)
    assert 0 <= float(line.split(",")[0]) <= 1
    table = line.split("any copy right\n")[1].splitlines()[:3]  # copies 1, 2, 3 of this one run
    assert [int(t.split()[0]) for t in table] == [1, 2, 3]
    assert float(table[0].split()[1]) == pytest.approx(exact, abs=1e-4)  # one copy: the plain evaluation

    # eval_batch_size: rows are independent, so another eval batch (with a padded last batch) gives the same
    # metrics and the same predictions for the real rows
    for size in (5, 64):
        r = run_py(["evaluate.py", f"checkpoint={ckpt}", f"eval_batch_size={size}"])
        assert r.returncode == 0, r.stderr
        assert abs(float(r.stdout.split("accuracy=")[1].split(",")[0]) - acc) < 1e-6
        other = torch.load(tmp_path / "run" / f"step_{last['step']}_all_preds.0", weights_only=True)
        assert other["logits"].shape == (32, 81, 11)
        torch.testing.assert_close(other["logits"], preds["logits"], rtol=1e-5, atol=1e-5)
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "eval_batch_size=0"])
    assert r.returncode == 2 and "eval_batch_size must be positive" in r.stderr

    # another held-out set, as a folder with only a test split: the same puzzles score the same, nothing written
    held = tmp_path / "held-out"
    shutil.copytree(tiny_sudoku / "test", held / "test")
    shutil.copy(tiny_sudoku / "identifiers.json", held)
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", f"data_path={held}", "save_outputs=[]"])
    assert r.returncode == 0, r.stderr
    assert "has no train split" not in r.stdout  # the checkpoint's step_N.json shapes the model, not the data
    assert abs(float(r.stdout.split("accuracy=")[1].split(",")[0]) - acc) < 1e-6
    assert "predictions:" not in r.stdout and not list(held.rglob("*_all_preds*"))
    # a checkpoint without that metadata (the original's, the released ones): the test split shapes it, the same score
    for extra in (".json", ".state"):
        (tmp_path / "run" / f"step_{last['step']}{extra}").unlink()
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", f"data_path={held}", "save_outputs=[]"])
    assert r.returncode == 0, r.stderr
    assert "has no train split: the model's shape is read from its test split" in r.stdout
    assert abs(float(r.stdout.split("accuracy=")[1].split(",")[0]) - acc) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe",
    [[], ["segments_curriculum=[[0.5,1]]", "halt_on_exact=true"]],  # and with the halting levers (models/act.py)
    ids=["paper", "segments-halt-exact"],
)
def test_torchrun_two_gloo_processes_equal_one(tiny_sudoku: Path, tmp_path: Path, recipe: list[str]) -> None:
    # Exploration draws are per rank, so turn them off to compare step by step.
    extra = ["arch.halt_exploration_prob=0", "epochs=8", "eval_interval=4", *recipe]
    train(tiny_sudoku, tmp_path / "one", *extra)
    torchrun = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517"]
    out = train(tiny_sudoku, tmp_path / "two", *extra, launcher=torchrun)
    assert "world size     2 (gloo)" in out
    assert ("segments halt_max_steps=1 from step 0" in out) == bool(recipe)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert len(one) == len(two) > 5
    for a, b in zip(one, two):
        assert a["step"] == b["step"]
        for k, v in a.items():
            if k not in WALL_CLOCK_KEYS and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (a["step"], k)
    last = max(r["step"] for r in one)
    w1 = torch.load(tmp_path / "one" / f"step_{last}", weights_only=True)
    w2 = torch.load(tmp_path / "two" / f"step_{last}", weights_only=True)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


def run_fails(args: list[str]) -> str:
    r = run_py(args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


@pytest.mark.slow
def test_bad_inputs_give_one_clear_message(tiny_sudoku: Path, tmp_path: Path) -> None:
    err = run_fails(["pretrain.py", f"data_path={tmp_path / 'data/sudoku-extreme-1k-aug-1000'}"])
    assert "does not exist" in err and "build_sudoku_dataset.py" in err

    err = run_fails(["pretrain.py", f"data_path={tiny_sudoku}", "lrr=1e-4"])
    assert "unknown config key 'lrr'" in err and "lr" in err
    err = run_fails(["pretrain.py", f"data_path={tiny_sudoku}", "arch.H_cycle=3"])
    assert "arch.H_cycles" in err
    err = run_fails(["pretrain.py", f"data_path={tiny_sudoku}", "+arch.hidden=3"])
    assert "arch.hidden" in err and "hidden_size" in err

    err = run_fails(["pretrain.py", f"data_path={tiny_sudoku}", "epochs=10", "eval_interval=3"])
    assert "eval_interval=3 must divide epochs=10" in err

    err = run_fails(
        [
            "pretrain.py",
            f"data_path={tiny_sudoku}",
            "global_batch_size=100000",
            "epochs=1",
            "eval_interval=1",
            *TINY_ARCH,
        ]
    )
    assert "global_batch_size" in err

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sudoku, broken)
    (broken / "train" / "all__labels.npy").unlink()
    err = run_fails(["pretrain.py", f"data_path={broken}", *TINY_ARCH])
    assert "all__labels.npy is missing" in err

    (broken / "test" / "dataset.json").write_text("{not json")
    err = run_fails(["evaluate.py", f"checkpoint={broken / 'nope'}"])
    assert "does not exist" in err

    meta = json.loads((tiny_sudoku / "train" / "dataset.json").read_text())
    del meta["seq_len"]
    shutil.copytree(tiny_sudoku, tmp_path / "badmeta")
    (tmp_path / "badmeta" / "train" / "dataset.json").write_text(json.dumps(meta))
    err = run_fails(["pretrain.py", f"data_path={tmp_path / 'badmeta'}", *TINY_ARCH])
    assert "seq_len" in err and "dataset.json" in err


def test_batch_not_divisible_by_world_size(tiny_sudoku: Path) -> None:
    from dataset.loader import PuzzleDataset, PuzzleDatasetConfig
    from utils.errors import UserError

    cfg = PuzzleDatasetConfig(
        seed=0,
        dataset_path=str(tiny_sudoku),
        global_batch_size=33,
        test_set_mode=False,
        epochs_per_iter=1,
        rank=0,
        num_replicas=2,
    )
    with pytest.raises(UserError, match="divisible by the number of processes 2"):
        PuzzleDataset(cfg, "train")


@pytest.mark.slow
def test_disable_compile_env_is_reported(tiny_sudoku: Path, tmp_path: Path) -> None:
    r = run_py(
        [
            "pretrain.py",
            f"data_path={tiny_sudoku}",
            f"checkpoint_path={tmp_path}",
            "compile=true",
            "epochs=1",
            "eval_interval=1",
            "global_batch_size=32",
            *TINY_ARCH,
        ],
        env={"DISABLE_COMPILE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "off (DISABLE_COMPILE is set)" in r.stdout


@pytest.mark.slow
def test_compile_mode_reaches_torch_compile(tiny_sudoku: Path, tmp_path: Path) -> None:
    """compile_mode=reduce-overhead (CUDA graphs on a GPU; ignored by Inductor on CPU) trains, is reported, and
    marks a new generation of graph replays before each compiled call; a mistyped mode stops before training."""
    out = train(
        tiny_sudoku, tmp_path / "run", "compile=true", "compile_mode=reduce-overhead", "epochs=4", "eval_interval=4"
    )
    assert "compile        on (compile=true; mode reduce-overhead: CUDA graphs)" in out
    assert "torch.compile failed" not in out  # compiled, not the eager fallback
    assert read_metrics(tmp_path / "run")[-1]["all/exact_accuracy"] >= 0  # trained and evaluated to the end

    r = run_py(["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={tmp_path / 'bad'}", "compile_mode=fast"])
    assert r.returncode == 2 and "compile_mode must be null or one of default, " in r.stderr
    assert "reduce-overhead" in r.stderr and "got 'fast'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()


def test_cuda_graph_modes_mark_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from train.runtime import CompileGuard

    marks: list[int] = []
    compiles: list[dict] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiles.append(kw) or m)  # the mode and marks only
    model = torch.nn.Linear(4, 4)
    for mode, want in [(None, 0), ("max-autotune-no-cudagraphs", 0), ("reduce-overhead", 2), ("max-autotune", 2)]:
        marks.clear()
        guard = CompileGuard(model, enabled=True, mode=mode)
        assert compiles[-1] == {"dynamic": False, "mode": mode}
        made: list[torch.Tensor] = []

        def call(m: torch.nn.Module, made: list[torch.Tensor] = made) -> dict:
            made.append(m(torch.ones(1, 4)))
            return {"y": [made[-1]], "n": 3}

        for _ in range(2):
            out = guard.run("train", call)
        assert len(marks) == want, mode
        assert guard.warmup_calls == (2 if want else 1), mode  # the recording is not a steady step either
        # with CUDA graphs what a call returns is copied out of the graphs' memory pool, which the next overwrites
        assert (out["y"][0].data_ptr() != made[-1].data_ptr()) == (want > 0), mode
        assert torch.equal(out["y"][0], made[-1]) and out["n"] == 3
    guard = CompileGuard(model, enabled=False, mode="reduce-overhead")  # compile off: no graphs to mark
    guard.run("train", lambda m: m(torch.ones(1, 4)))
    assert len(marks) == 2 and guard.warmup_calls == 1


def test_cuda_graph_failures_fall_back_until_the_first_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """cudagraph trees warm up at a call, record at the next and replay from the third: a failure at any of them
    continues eager with one line; without CUDA graphs the first success ends the trial (as before)."""
    from train.runtime import CompileGuard

    class FailsAtSecondCall(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("accessing tensor output of CUDAGraphs that has been overwritten")
            return self.inner(x)

    monkeypatch.setattr(torch, "compile", lambda m, **kw: FailsAtSecondCall(m))
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    model, x = torch.nn.Linear(4, 4), torch.ones(1, 4)
    logs: list[str] = []
    guard = CompileGuard(model, enabled=True, log=logs.append, mode="reduce-overhead")
    outs = [guard.run("train", lambda m: m(x)) for _ in range(3)]
    assert all(torch.equal(o, model(x)) for o in outs) and guard.compiled is None
    assert logs == [
        "torch.compile failed (RuntimeError: accessing tensor output of CUDAGraphs that has been overwritten); "
        "continuing eager. Drop compile_mode=reduce-overhead to compile without it, or set DISABLE_COMPILE=1 to skip "
        "compiling."
    ]
    plain = CompileGuard(model, enabled=True, log=logs.append)
    plain.run("train", lambda m: m(x))
    with pytest.raises(RuntimeError, match="overwritten"):
        plain.run("train", lambda m: m(x))


def test_out_of_graph_pool_copies_the_carry() -> None:
    """The ACT carry (nested dataclasses, a dict of tensors) comes back whole, equal, in memory of its own."""
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1Carry, HierarchicalReasoningModel_ACTV1InnerCarry
    from train.runtime import out_of_graph_pool

    inner = HierarchicalReasoningModel_ACTV1InnerCarry(z_H=torch.randn(2, 3), z_L=torch.randn(2, 3))
    carry = HierarchicalReasoningModel_ACTV1Carry(
        inner, torch.tensor([1, 2]), torch.tensor([True, False]), {"x": torch.ones(2)}
    )
    got = out_of_graph_pool([carry, (torch.zeros(1), "s")])
    copy = got[0]
    assert type(copy) is type(carry) and type(copy.inner_carry) is type(inner) and got[1][1] == "s"
    pairs = [
        (copy.inner_carry.z_H, inner.z_H),
        (copy.steps, carry.steps),
        (copy.current_data["x"], carry.current_data["x"]),
    ]
    for a, b in pairs:
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


@pytest.mark.slow
def test_micro_batches_equal_one_big_batch(tiny_sudoku: Path, tmp_path: Path) -> None:
    """Gradient accumulation over 4 micro-batches, each with its own ACT carry, equals one batch of 64."""
    extra = ["arch.halt_exploration_prob=0", "epochs=4", "eval_interval=2", "checkpoint_minutes=null"]
    train(tiny_sudoku, tmp_path / "big", *extra)
    train(tiny_sudoku, tmp_path / "micro", *extra, "micro_batch_size=16")
    big, micro = read_metrics(tmp_path / "big"), read_metrics(tmp_path / "micro")
    assert [r["step"] for r in big] == [r["step"] for r in micro]
    for a, b in zip(big, micro):
        for k, v in a.items():
            if k not in WALL_CLOCK_KEYS and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (a["step"], k)
    last = max(r["step"] for r in big)
    w1 = torch.load(tmp_path / "big" / f"step_{last}", weights_only=True)
    w2 = torch.load(tmp_path / "micro" / f"step_{last}", weights_only=True)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    r = run_py(["pretrain.py", f"data_path={tiny_sudoku}", "micro_batch_size=48", *TINY_ARCH, *TRAIN])
    assert r.returncode == 2 and "must divide the per-process batch 64" in r.stderr


def test_out_of_memory_is_answered_with_figures_and_settings(tiny_sudoku: Path, tmp_path: Path, monkeypatch) -> None:

    import pretrain
    from train import loop
    from utils.errors import UserError

    cfg = launch_config(tiny_sudoku, tmp_path / "run")

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop, "train_batch", out_of_memory)  # the name the loop calls
    with pytest.raises(UserError) as err:
        pretrain.launch(cfg)
    msg = str(err.value)
    assert "out of memory at 64 examples per forward pass" in msg
    assert "micro_batch_size=32" in msg and "Tried to allocate 20.00 GiB" in msg


def test_eval_batch_not_divisible_names_its_key(tiny_sudoku: Path) -> None:
    import pretrain
    from train.runtime import Dist
    from utils.errors import UserError

    config = tiny_config(tiny_sudoku, eval_batch_size=33)
    d = Dist(rank=0, world_size=2, local_rank=0)
    with pytest.raises(UserError, match="eval_batch_size 33 must be divisible by the number of processes 2"):
        pretrain.create_dataloader(
            config, "test", d, torch.device("cpu"), test_set_mode=True, epochs_per_iter=1, global_batch_size=33
        )
