"""torchrun on CPU (gloo): a simulated 2-node launch equals 1 process; checkpoints move between world sizes;
a dying rank stops the job instead of hanging it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import SHORT_RUN, WALL_CLOCK_KEYS, final_weights, pretrain_args, read_metrics, run_py, scratch_dir

# exploration draws are per rank: off to compare runs
BASE = [*SHORT_RUN, "seed=2", "arch.halt_exploration_prob=0"]


def train_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return pretrain_args(data, run_dir, BASE, *extra)


def env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["default", "muon"])
def test_two_node_launch_on_one_machine_equals_one_process(tiny_sudoku: Path, tmp_path: Path, optimizer: str) -> None:
    extra = ["muon=true"] if optimizer == "muon" else []  # Muon steps on the all-reduced gradients, as AdamATan2
    r = run_py(train_args(tiny_sudoku, tmp_path / "one", *extra))
    assert r.returncode == 0, r.stderr[-2000:]
    port = "29531"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                *train_args(tiny_sudoku, tmp_path / "two", *extra),
            ],
            cwd=scratch_dir(),
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    # each node's tail, long enough to hold a C++ backtrace whole (a rare SIGABRT at exit once cut it off)
    failed = [
        f"node {r}, exit {n.returncode}:\n{o[-6000:]}" for r, (n, o) in enumerate(zip(nodes, outs)) if n.returncode
    ]
    assert not failed, "\n".join(failed)
    assert "world size     2 (gloo)" in outs[0]
    # Muon's normalized update carries the all-reduce's rounding further than AdamATan2's (~1e-3 after 16 steps)
    rel, atol = (1e-2, 1e-3) if optimizer == "muon" else (1e-4, 1e-5)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["step"] for m in one] == [m["step"] for m in two]
    for a, b in zip(one, two):
        for k, v in a.items():
            if k not in WALL_CLOCK_KEYS and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=rel, abs=atol), (a["step"], k)
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=rel, atol=atol)


@pytest.mark.slow
def test_checkpoint_from_two_processes_resumes_on_one(tiny_sudoku: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    r = subprocess.run(
        torchrun + train_args(tiny_sudoku, run_dir, "epochs=4", "eval_interval=4"),
        cwd=scratch_dir(),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run_dir / "step_8.state.rank1").is_file()
    assert "Warning" not in r.stderr, r.stderr[-2000:]  # e.g. torch 2.13+'s on all_gather_into_tensor, per rank
    # same global batch, one process: continues from step 8 with a notice about the ACT carries
    r = run_py(train_args(tiny_sudoku, run_dir, "epochs=8", "resume=auto"))
    assert r.returncode == 2 and "epochs=8" in r.stderr  # the schedule must match the checkpoint's...
    r = run_py(
        train_args(tiny_sudoku, run_dir, "epochs=4", "eval_interval=4", "resume=auto", "checkpoint_interval=100")
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # the checkpoint is the run's last: it loads on one process (carries restart), then the run says it is done
    assert "ACT carries restart" in r.stdout and "is already finished (step 8" in r.stdout


@pytest.mark.slow
def test_killed_rank_stops_all_ranks(tiny_sudoku: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29535"]
    proc = subprocess.Popen(
        torchrun + train_args(tiny_sudoku, run_dir, "epochs=400", "eval_interval=400"),
        cwd=scratch_dir(),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    t = time.time()
    while not ((run_dir / "metrics.jsonl").exists() and len(read_metrics(run_dir)) > 3):
        assert time.time() - t < 120 and proc.poll() is None
        time.sleep(0.1)
    workers = subprocess.run(
        ["pgrep", "-f", f"checkpoint_path={run_dir}"], capture_output=True, text=True
    ).stdout.split()
    workers = [int(p) for p in workers if int(p) != proc.pid]
    assert len(workers) >= 2
    os.kill(max(workers), signal.SIGKILL)  # one worker dies hard
    t = time.time()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job hung after a rank died")
    assert proc.returncode != 0 and time.time() - t < 60
