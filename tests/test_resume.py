"""Long runs survive: resume equals an uninterrupted run (bit-identical on CPU), signals save and exit,
kill -9 at random moments never leaves a broken checkpoint, corrupt files fall back, NaNs never land."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    args,
    assert_identical,
    final_weights,
    read_metrics,
    run_py,
    scratch_dir,
    start,
    tiny_config,
    wait_for_step,
)


@pytest.fixture(scope="module")
def reference(tiny_sudoku: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    r = run_py(args(tiny_sudoku, run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def test_sigterm_saves_and_resume_is_bit_identical(tiny_sudoku: Path, reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(args(tiny_sudoku, run_dir))
    wait_for_step(proc, run_dir, 6)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "SIGTERM received: finishing this step" in out and "resume=auto" in out and "Traceback" not in out
    stopped = max(r["step"] for r in read_metrics(run_dir))
    assert (run_dir / f"step_{stopped}.state").is_file()

    r = run_py(args(tiny_sudoku, run_dir, "resume=auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"from step {stopped}" in r.stdout
    assert_identical(final_weights(run_dir), final_weights(reference))
    # the metrics file reads as one run: each step once, same values as the uninterrupted run
    got = {(m["step"], k): v for m in read_metrics(run_dir) for k, v in m.items() if k.startswith(("train/", "all/"))}
    want = {
        (m["step"], k): v for m in read_metrics(reference) for k, v in m.items() if k.startswith(("train/", "all/"))
    }
    assert got == want


def test_timeout_signalling_twice_still_saves(tiny_sudoku: Path, tmp_path: Path) -> None:
    """`timeout` sends SIGTERM to the process and then to its process group: that is one request, not two."""
    run_dir = tmp_path / "run"
    proc = start(args(tiny_sudoku, run_dir))
    wait_for_step(proc, run_dir, 4)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the handler has run once; back-to-back signals would merge into one delivery
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "exiting now without saving" not in out and "Traceback" not in out
    stopped = max(r["step"] for r in read_metrics(run_dir))
    assert (run_dir / f"step_{stopped}.state").is_file()


def test_loader_workers_ignore_group_signals(tiny_sudoku: Path) -> None:
    """Ctrl-C / timeout / a closed tmux pane signal the whole group; a killed worker would break the step."""
    import pretrain
    from train.runtime import Dist

    config = tiny_config(tiny_sudoku, eval_interval=2)
    loader, _ = pretrain.create_dataloader(
        config, "train", Dist(), torch.device("cuda"), test_set_mode=False, epochs_per_iter=2, global_batch_size=8
    )
    it = iter(loader)
    next(it)
    worker = it._workers[0]  # type: ignore[attr-defined]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(worker.pid, sig)
    time.sleep(0.5)
    assert worker.is_alive()
    assert next(it)[1]["inputs"].shape[0] == 8
    del it, loader


# A process that exits while its loader's workers live: sys.exit with the loader still referenced (a stop by
# signal exits 130 and a user error 2 that way, their tracebacks keeping the run's frames).
EXIT_WITH_LIVE_WORKERS = """
import sys, torch, pretrain
from tests.conftest import tiny_config
from train.runtime import Dist
loader, _ = pretrain.create_dataloader(tiny_config(sys.argv[1]), "train", Dist(), torch.device("cuda"),
                                       test_set_mode=False, epochs_per_iter=2, global_batch_size=8)
it = iter(loader)
next(it)
print("worker", it._workers[0].pid, flush=True)
sys.exit(3)
"""


def test_exit_with_live_workers_is_prompt(tiny_sudoku: Path) -> None:
    """Workers ignore SIGTERM, which Python's own exit handler sends them before waiting: that wait never ended
    (every GPU run stopped by `timeout` hung after saving until killed). Now the workers end with the process."""
    t0 = time.monotonic()
    try:
        r = run_py(["-c", EXIT_WITH_LIVE_WORKERS, str(tiny_sudoku)], timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit within 60 s: its loader workers kept it waiting")
    assert r.returncode == 3, r.stderr[-3000:]
    assert time.monotonic() - t0 < 30
    pid = int(r.stdout.split("worker ")[1].split()[0])
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the worker is gone too, not orphaned
        os.kill(pid, 0)


def test_kill_9_at_random_moments_then_resume(tiny_sudoku: Path, reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(6):
        proc = start(args(tiny_sudoku, run_dir, "resume=auto", "checkpoint_interval=1"))
        time.sleep(rng.uniform(2.0, 5.0))  # start-up is ~2 s; then a step every ~0.1 s, saving after each
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        kills += 1
    r = run_py(args(tiny_sudoku, run_dir, "resume=auto", "checkpoint_interval=1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert kills >= 3
    assert (
        not list(run_dir.glob("*.tmp-*")) or True
    )  # temporary files of killed saves may remain; they are never loaded
    assert_identical(final_weights(run_dir), final_weights(reference))


def test_corrupt_newest_checkpoint_falls_back(tiny_sudoku: Path, reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(args(tiny_sudoku, run_dir, "checkpoint_interval=2", "keep_last=3"))
    wait_for_step(proc, run_dir, 7)
    proc.kill()
    proc.wait()
    steps = sorted(int(p.name.split("_")[1].split(".")[0]) for p in run_dir.glob("step_*.state"))
    newest = run_dir / f"step_{steps[-1]}.state"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated file
    r = run_py(args(tiny_sudoku, run_dir, "resume=auto"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"step_{steps[-1]}" in r.stdout and "unreadable" in r.stdout
    assert_identical(final_weights(run_dir), final_weights(reference))


def test_new_run_refuses_to_overwrite_and_bad_resume_path(reference: Path, tiny_sudoku: Path) -> None:
    r = run_py(args(tiny_sudoku, reference))
    assert r.returncode == 2 and "already holds checkpoints" in r.stderr and "resume=auto" in r.stderr
    r = run_py(args(tiny_sudoku, reference / "elsewhere", f"resume={reference / 'nope'}"))
    assert r.returncode == 2 and "expected a run folder's step_<N>" in r.stderr


def test_unwritable_checkpoint_folder(tiny_sudoku: Path, tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the run folder should be")
    r = run_py(args(tiny_sudoku, tmp_path / "blocked" / "run"))
    assert r.returncode == 2 and "cannot write to checkpoint_path" in r.stderr and "Traceback" not in r.stderr


def _disk_full(limit: int):
    """Child-process set-up: writes past `limit` bytes fail with EFBIG, as on a full disk."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_disk_full_during_save_keeps_previous_checkpoint(
    tiny_sudoku: Path, reference: Path, tmp_path: Path, policy: str
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for p in run_dir.glob("step_16*"):  # back to the first eval's checkpoint, then continue with a "full disk"
        p.unlink()
    before = {p.name: p.read_bytes() for p in run_dir.glob("step_8*")}
    weights = (run_dir / "step_8").stat().st_size
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, *args(tiny_sudoku, run_dir, "resume=auto", f"save_error={policy}")],
        cwd=scratch_dir(),
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_disk_full(weights + 1000),
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert "could not write checkpoint step_16" in out and "previous checkpoint is intact" in out, out[-2000:]
    assert "Traceback" not in out
    assert r.returncode == (2 if policy == "stop" else 0)
    assert {p.name: p.read_bytes() for p in run_dir.glob("step_8*")} == before
    assert not (run_dir / "step_16.state").exists()
    r = run_py(args(tiny_sudoku, run_dir, "resume=auto"))  # with space again, it continues from step 8
    assert r.returncode == 0 and "from step 8" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert_identical(final_weights(run_dir), final_weights(reference))


def test_nan_steps_are_skipped_and_never_saved(tiny_sudoku: Path, tmp_path: Path) -> None:
    """lr=1e30 with an lr_min_ratio: the weights blow up to inf/NaN within a few steps."""
    run_dir = tmp_path / "run"
    r = run_py(
        args(
            tiny_sudoku,
            run_dir,
            "lr=1e30",
            "puzzle_emb_lr=1e30",
            "lr_warmup_steps=0",
            "nan_policy=stop",
            "checkpoint_interval=1",
        )
    )
    assert r.returncode == 2, r.stdout[-2000:]
    assert "non-finite" in r.stdout and "non-finite" in r.stderr and "Traceback" not in r.stderr
    for p in run_dir.glob("step_*"):
        if p.name.split("_")[1].isdigit():
            w = torch.load(p, weights_only=True)
            assert all(torch.isfinite(t.float()).all() for t in w.values()), p.name


def test_malicious_checkpoint_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    bad = tmp_path / "step_1"
    torch.save({"model.inner.H_init": Evil()}, bad)
    r = run_py(["evaluate.py", f"checkpoint={bad}", f"data_path={tmp_path}"])
    assert r.returncode == 2 and not (tmp_path / "pwned").exists()
    r = run_py(["pretrain.py", f"data_path={tmp_path}", f"resume={bad}"])
    assert r.returncode == 2 and not (tmp_path / "pwned").exists()


def test_predict_one_sudoku(reference: Path, tiny_sudoku: Path, tmp_path: Path) -> None:
    import numpy as np

    grid = np.load(tiny_sudoku / "test" / "all__inputs.npy")[0].astype(int) - 1
    puzzle = "".join("." if v == 0 else str(v) for v in grid)
    r = run_py(["predict.py", f"checkpoint={reference / 'step_16'}", f"puzzle={puzzle}", "max_steps=5"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prediction after 5 ACT step(s) (training used 2)" in r.stdout
    assert "halting confidence" in r.stdout and "valid solution:" in r.stdout
    out = r.stdout
    r = run_py(["predict.py", f"checkpoint={reference / 'step_16'}", f"puzzle={puzzle}", "halt=q"])
    assert r.returncode == 0 and "ACT step(s)" in r.stdout
    # a data folder holding only a test split shapes the model as well: the same answer
    held = tmp_path / "test-only"
    shutil.copytree(tiny_sudoku / "test", held / "test")
    r = run_py(
        ["predict.py", f"checkpoint={reference / 'step_16'}", f"puzzle={puzzle}", "max_steps=5", f"data_path={held}"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("prediction after")[1] == out.split("prediction after")[1]
    r = run_py(["predict.py", f"checkpoint={reference / 'step_16'}", "puzzle=12345"])
    assert r.returncode == 2 and "expected 81 characters" in r.stderr and "Traceback" not in r.stderr
