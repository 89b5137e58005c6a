"""Long runs survive: resume equals an uninterrupted run (bit-identical on CPU, ACT exploration too), signals
save and exit, kill -9 at random moments never leaves a broken checkpoint and its leftovers are cleaned, no
non-finite value is ever saved, the last healthy checkpoint is never pruned, a full disk is handled at every
write, corrupt files (checksums) fall back. (test_reliability.py, issue 15, is merged here: both trained the
same reference run and tested NaNs, a full disk and corrupt checkpoints twice.)"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    REPO,
    SHORT_RUN,
    args,
    assert_identical,
    final_weights,
    pretrain_args,
    read_metrics,
    run_py,
    scratch_dir,
    start,
    tiny_config,
    wait_for_step,
)
from train import checkpoint as ckpt
from train import run_checkpoint

# 24 steps (passes of 8, evals at 8, 16, 24) with the recipes' kind of exploration: halt_max_steps 8.
EXPLORE = [*SHORT_RUN, "epochs=12", "lr=1e-2", "seed=1", "arch.halt_max_steps=8", "eval_batches=1"]


def run_ok(*a: str) -> str:
    r = run_py(list(a))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def rewind(src: Path, dst: Path, step: int) -> None:
    """A copy of a finished run as it was when stopped right after checkpoint `step` (later files gone)."""
    shutil.copytree(src, dst)
    for p in dst.glob("step_*"):
        if int(p.name.split("_")[1].split(".")[0]) > step:
            p.unlink()


def logged(run_dir: Path) -> list[tuple]:
    return [
        (m["step"], k, v)
        for m in read_metrics(run_dir)
        for k, v in sorted(m.items())
        if k.startswith(("train/", "all/"))
    ]


def assert_same_run(a: Path, b: Path, step: int) -> None:
    wa, wb = torch.load(a / f"step_{step}", weights_only=True), torch.load(b / f"step_{step}", weights_only=True)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ"
    assert logged(a) == logged(b)


@pytest.mark.slow
def test_resume_mid_pass_with_exploration_is_bit_identical(tiny_sudoku: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_ok(*pretrain_args(tiny_sudoku, ref, EXPLORE, "checkpoint_interval=5", "keep_last=0"))
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)  # step 10: two batches into the second pass
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, EXPLORE, "checkpoint_interval=5", "keep_last=0", "resume=auto"))
    assert "from step 10" in out
    assert_same_run(ref, run_dir, 24)


# ----------------------------------------------------------------------------------------------------------
# A reference run with a checkpoint every 2 steps, kept: copies of it, rewound, are the interrupted runs.

CKPT = [*SHORT_RUN, "seed=1", "checkpoint_interval=2", "keep_last=0"]


@pytest.fixture(scope="module")
def ref(tiny_sudoku: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT))
    return run_dir


def nonfinite_files(run_dir: Path) -> list[str]:
    bad = []
    for p in run_dir.glob("step_*"):
        if not any(w in p.name for w in ("tmp", "preds", "unhealthy", ".json")):
            obj = torch.load(p, weights_only=True)
            if any(not torch.isfinite(t.float()).all() for t in leaves(obj)):
                bad.append(p.name)
    return bad


def leaves(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from leaves(v)


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["1e30", "nan"])
def test_nonfinite_never_saved_and_never_success(tiny_sudoku: Path, tmp_path: Path, lr: str) -> None:
    """lr=1e30: finite but huge weights, NaN losses and a NaN ACT carry, stopped at the first (nan_policy=stop;
    the default, skip, is test_spike_keeps_last_healthy_checkpoint's); lr=nan: NaN weights at once."""
    run_dir = tmp_path / "run"
    r = run_py(
        pretrain_args(
            tiny_sudoku,
            run_dir,
            SHORT_RUN,
            f"lr={lr}",
            f"puzzle_emb_lr={lr}",
            "lr_warmup_steps=0",
            "checkpoint_interval=1",
            "nan_policy=stop",
        )
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    # lr=nan never reaches the trainer now: the config check refuses it before anything is written
    assert ("non-finite" if lr != "nan" else "lr=nan is out of range") in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not nonfinite_files(run_dir)


@pytest.mark.slow
def test_spike_keeps_last_healthy_checkpoint(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)
    spike = ["lr=1e30", "puzzle_emb_lr=1e30", "keep_last=1", "checkpoint_interval=1", "resume=auto"]
    r = run_py(pretrain_args(tiny_sudoku, run_dir, SHORT_RUN, "seed=1", *spike))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    # step 11's loss (with step_10's weights) was finite: step_10 is healthy and survives keep_last=1
    assert (run_dir / "step_10.state").is_file() and (run_dir / "step_10").is_file()
    assert "last healthy checkpoint is step_10" in r.stderr and f"resume={run_dir / 'step_10'}" in r.stderr
    assert not nonfinite_files(run_dir)
    # resume=auto meets the unhealthy newest one: refused, naming the healthy one
    r = run_py(pretrain_args(tiny_sudoku, run_dir, SHORT_RUN, "seed=1", "resume=auto"))
    assert r.returncode == 2 and "not healthy" in r.stderr and "step_10" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    # going back to it with a sane lr gives the uninterrupted run's result
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, f"resume={run_dir / 'step_10'}"))
    assert "no longer resumable" in out
    assert_same_run(ref, run_dir, 16)


@pytest.mark.slow
def test_kill_between_eval_log_and_its_checkpoint(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    """The eval row of step 8 was logged, then the process died before the eval checkpoint replaced the
    interval checkpoint of step 8: after resume the row must appear once, not twice."""
    run_dir = tmp_path / "run"
    script = (
        "import os, runpy, sys\n"
        "from train import checkpoint\n"
        "real, seen = checkpoint.atomic_save, []\n"
        "def save(obj, path):\n"
        "    if path.endswith('step_8'):\n"
        "        seen.append(path)\n"
        "        if len(seen) == 2:  # the interval checkpoint wrote it once; the eval's comes second\n"
        "            os._exit(9)\n"
        "    real(obj, path)\n"
        "checkpoint.atomic_save = save\n"
        "sys.argv = sys.argv[1:]\n"
        f"runpy.run_path({str(REPO / 'pretrain.py')!r}, run_name='__main__')\n"
    )
    hook = tmp_path / "die_before_eval_checkpoint.py"
    hook.write_text(script)
    r = run_py([str(hook), *pretrain_args(tiny_sudoku, run_dir, CKPT)], env={"PYTHONPATH": str(REPO)})
    assert r.returncode == 9
    assert sum(1 for m in read_metrics(run_dir) if "all/accuracy" in m) == 1
    run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))
    assert_same_run(ref, run_dir, 16)


def test_stale_temporaries_and_orphans_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    files = {
        f"step_4.state.tmp-{dead_pid}": True,  # a killed save's temporary
        f"step_4.tmp-{dead_pid}": True,
        f"step_6.state.tmp-{os.getpid()}": False,  # a live process's: spared
        "step_2": False,
        "step_2.state": False,  # complete
        "step_8": False,  # eval weights kept without their state
        "step_6.state": True,  # a kill while deleting: state without weights
        "step_6.state.rank1": True,
        "step_10.state.rank1": True,  # a kill while writing: rank file without state
    }
    for name in files:
        (tmp_path / name).write_bytes(b"x" * 10)
    logs: list[str] = []
    run_checkpoint.clean_stale(str(tmp_path), logs.append)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, gone in files.items() if not gone}
    assert len(logs) == 1 and "removed 5 file(s)" in logs[0]


def test_kill_during_pruning_leaves_only_clearly_incomplete(tmp_path: Path, monkeypatch) -> None:
    for name in ("step_2", "step_2.state", "step_2.state.rank1", "step_4", "step_4.state"):
        (tmp_path / name).write_bytes(b"x")
    real = os.remove
    calls: list[str] = []

    def remove(p: str) -> None:
        if calls:
            raise SystemExit("killed")  # the process dies after the first deletion
        calls.append(os.path.basename(p))
        real(p)

    monkeypatch.setattr(os, "remove", remove)
    with pytest.raises(SystemExit):
        run_checkpoint.prune(str(tmp_path), keep_last=1, protect_full=set(), keep_weights=set())
    monkeypatch.setattr(os, "remove", real)
    assert calls == ["step_2"]  # the weights went first: what is left is a .state without weights
    assert ckpt.list_complete(str(tmp_path)) == [4]
    run_checkpoint.clean_stale(str(tmp_path), lambda _: None)
    assert {p.name for p in tmp_path.iterdir()} == {"step_4", "step_4.state"}


def _disk_full(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_metrics_writer_on_a_full_disk(tmp_path: Path, policy: str) -> None:
    script = (
        "import json, sys\n"
        "from train.tracking import Tracker\n"
        "from train.writes import WriteGuard\n"
        "from utils.errors import UserError\n"
        f"w = WriteGuard({policy!r}, hint=lambda: 'python pretrain.py ... resume=auto')\n"
        f"t = Tracker({str(tmp_path)!r}, enabled=True)\n"
        "t.on_error = lambda e: w.failed('metrics.jsonl', e)\n"
        "try:\n"
        "    for i in range(100):\n"
        "        t.log({'train/lm_loss': 1.0 / (i + 1), 'train/pad': 'x' * 50}, step=i)\n"
        "except UserError as e:\n"
        "    print('error:', e, file=sys.stderr); sys.exit(2)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, preexec_fn=_disk_full(1000)
    )
    assert "Traceback" not in r.stderr, r.stderr
    out = r.stdout + r.stderr
    assert "could not write metrics.jsonl (File too large)" in out
    assert r.returncode == (2 if policy == "stop" else 0)
    assert out.count("could not write") == 1  # continue: warned once
    rows = read_metrics(tmp_path)  # every line whole: a cut-short append was taken back
    assert rows and [m["step"] for m in rows] == list(range(len(rows)))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_every_write_on_a_full_disk(tiny_sudoku: Path, ref: Path, tmp_path: Path, policy: str) -> None:
    """A limit below the code copy, the metrics file and the checkpoints: every write of the run fails."""
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 8)
    before = {p.name: p.read_bytes() for p in run_dir.glob("step_8*")}
    extra = ["resume=auto", f"save_error={policy}", "eval_save_outputs=[inputs,logits]"]
    r = subprocess.run(
        [sys.executable, *pretrain_args(tiny_sudoku, run_dir, CKPT, *extra)],
        cwd=scratch_dir(),  # Hydra's outputs/ goes there, not into the checkout
        env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        preexec_fn=_disk_full(torch.load(run_dir / "step_8.state", weights_only=True)["metrics_bytes"] + 300),
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert {p.name: p.read_bytes() for p in run_dir.glob("step_8*")} == before
    if policy == "stop":
        assert r.returncode == 2 and "could not write" in r.stderr and "resume=auto" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    else:
        assert r.returncode == 0, out[-3000:]
        for what in ("model code copy", "metrics.jsonl", "checkpoint step_10", "eval predictions"):
            assert what in out, what
        assert "the previous checkpoint is intact" in out
        assert out.count("could not write metrics.jsonl") == 1
    assert not list(run_dir.glob("*.tmp*"))
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))  # space again: on from step 8
    assert r.returncode == 0 and "from step 8" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle of the file: tensor data
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_flipped_byte_is_refused_and_auto_falls_back(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    """A flipped byte in the weights (their checksum refuses them) and a truncated newest `.state`: resume=auto
    names each and falls back to the one before, which continues as the uninterrupted run."""
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 12)
    newest = run_dir / "step_12.state"
    newest.write_bytes(newest.read_bytes()[:100])
    flip_byte(run_dir / "step_10")
    r = run_py(["evaluate.py", f"checkpoint={run_dir / 'step_10'}"])
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, f"resume={run_dir / 'step_10'}"))
    assert r.returncode == 2 and "checksum mismatch" in r.stdout + r.stderr and "Traceback" not in r.stderr
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))
    assert "step_12" in out and "unreadable" in out
    assert "step_10" in out and "checksum mismatch" in out and "from step 8" in out
    assert_same_run(ref, run_dir, 16)


def strip_new_fields(state_path: Path) -> None:
    """A .state as written before this change: no checksums, health, metrics length, exploration stream."""
    s = torch.load(state_path, weights_only=True)
    for k in ("checksums", "health", "metrics_bytes"):
        s.pop(k)
    s["rng"].pop("explore")
    for k in ("healthy_step", "pending_check"):
        s["progress"].pop(k)
    torch.save(s, state_path)


@pytest.mark.slow
def test_old_format_checkpoint_resumes(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)
    strip_new_fields(run_dir / "step_10.state")
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))
    assert "from step 10" in out
    steps = [m["step"] for m in read_metrics(run_dir) if "train/lm_loss" in m]
    assert steps == list(range(1, 17))  # rows after step 10 dropped by step (no saved length), then relogged


@pytest.mark.slow
def test_weights_of_another_width_beside_a_state(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)
    w = torch.load(run_dir / "step_10", weights_only=True)
    w = {k: torch.cat([v, v], dim=-1) if v.ndim == 2 else v for k, v in w.items()}  # twice as wide
    torch.save(w, run_dir / "step_10")
    resume = f"resume={run_dir / 'step_10'}"
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, resume))  # the checksum says so first
    assert r.returncode == 2 and "does not match" in r.stdout + r.stderr and "Traceback" not in r.stderr
    strip_new_fields(run_dir / "step_10.state")  # an old checkpoint has no checksum: the shapes say so
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, resume))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "the weights file does not belong to its .state" in r.stderr and "has shape" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_resume_mid_pass_with_exploration_is_bit_identical(tiny_sudoku: Path, tmp_path: Path) -> None:
    """The same on CUDA, eager (compile=false), halt_max_steps=16: exploration on a CUDA stream of its own."""
    base = [*EXPLORE, "arch.halt_max_steps=16", "compile=false", "checkpoint_interval=5", "keep_last=0"]
    ref_dir = tmp_path / "ref"
    run_ok(*pretrain_args(tiny_sudoku, ref_dir, base))
    run_dir = tmp_path / "run"
    rewind(ref_dir, run_dir, 10)
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, base, "resume=auto"))
    assert "from step 10" in out and "cuda" in out.lower()
    assert_same_run(ref_dir, run_dir, 24)


@pytest.mark.slow
def test_sigterm_saves_and_resume_is_bit_identical(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
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
    assert_identical(final_weights(run_dir), final_weights(ref))
    # the metrics file reads as one run: each step once, same values as the uninterrupted run
    got = {(m["step"], k): v for m in read_metrics(run_dir) for k, v in m.items() if k.startswith(("train/", "all/"))}
    want = {(m["step"], k): v for m in read_metrics(ref) for k, v in m.items() if k.startswith(("train/", "all/"))}
    assert got == want


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(6):
        proc = start(args(tiny_sudoku, run_dir, "resume=auto", "checkpoint_interval=1"))
        # start-up is ~2 s; then a step every ~0.1 s, saving after each. At most ~2 s of training a launch: on a fast
        # machine 2.0-5.0 s let the third launch finish the run (kills == 2)
        time.sleep(rng.uniform(1.5, 4.0))
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
    assert_identical(final_weights(run_dir), final_weights(ref))


@pytest.mark.slow
def test_new_run_refuses_to_overwrite_and_bad_resume_path(ref: Path, tiny_sudoku: Path) -> None:
    r = run_py(args(tiny_sudoku, ref))
    assert r.returncode == 2 and "already holds checkpoints" in r.stderr and "resume=auto" in r.stderr
    r = run_py(args(tiny_sudoku, ref / "elsewhere", f"resume={ref / 'nope'}"))
    assert r.returncode == 2 and "expected a run folder's step_<N>" in r.stderr


@pytest.mark.slow
def test_unwritable_checkpoint_folder(tiny_sudoku: Path, tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the run folder should be")
    r = run_py(args(tiny_sudoku, tmp_path / "blocked" / "run"))
    assert r.returncode == 2 and "cannot write to checkpoint_path" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_disk_full_during_save_keeps_previous_checkpoint(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    """save_error=stop when the checkpoint itself cannot be written (save_error=continue, and a disk full before
    any write: test_every_write_on_a_full_disk)."""
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 8)  # back to the first eval's checkpoint, then continue with a "full disk"
    before = {p.name: p.read_bytes() for p in run_dir.glob("step_8*")}
    weights = (run_dir / "step_8").stat().st_size
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, *args(tiny_sudoku, run_dir, "resume=auto", "save_error=stop")],  # no interval: step_16 next
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
    assert r.returncode == 2
    assert {p.name: p.read_bytes() for p in run_dir.glob("step_8*")} == before
    assert not (run_dir / "step_16.state").exists()
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))  # with space again, it continues from step 8
    assert r.returncode == 0 and "from step 8" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert_same_run(ref, run_dir, 16)


@pytest.mark.slow
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


@pytest.mark.slow
def test_predict_one_sudoku(ref: Path, tiny_sudoku: Path, tmp_path: Path) -> None:
    import numpy as np

    grid = np.load(tiny_sudoku / "test" / "all__inputs.npy")[0].astype(int) - 1
    puzzle = "".join("." if v == 0 else str(v) for v in grid)
    r = run_py(["predict.py", f"checkpoint={ref / 'step_16'}", f"puzzle={puzzle}", "max_steps=5"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prediction after 5 ACT step(s) (training used 2)" in r.stdout
    assert "halting confidence" in r.stdout and "valid solution:" in r.stdout
    out = r.stdout
    r = run_py(["predict.py", f"checkpoint={ref / 'step_16'}", f"puzzle={puzzle}", "halt=q"])
    assert r.returncode == 0 and "ACT step(s)" in r.stdout
    # a data folder holding only a test split shapes the model as well: the same answer
    held = tmp_path / "test-only"
    shutil.copytree(tiny_sudoku / "test", held / "test")
    r = run_py(["predict.py", f"checkpoint={ref / 'step_16'}", f"puzzle={puzzle}", "max_steps=5", f"data_path={held}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("prediction after")[1] == out.split("prediction after")[1]
    r = run_py(["predict.py", f"checkpoint={ref / 'step_16'}", "puzzle=12345"])
    assert r.returncode == 2 and "expected 81 characters" in r.stderr and "Traceback" not in r.stderr


def test_the_end_of_run_names_only_checkpoints_that_exist(tmp_path: Path) -> None:
    """muon_lr=1e30 ended at step 16 with no step_16 written (non-finite weights are never saved); the message
    named step_16 and printed an evaluate command for it."""
    from tests.conftest import tiny_config
    from train.report import finished_message
    from train.run_checkpoint import Progress

    run = tmp_path / "run"
    run.mkdir()
    config = tiny_config(tmp_path, checkpoint_path=str(run), run_name="r")
    assert finished_message(config, Progress(passes_done=2), 16, already=False).endswith(
        "no checkpoint was saved (none of its weights were finite at a save)"
    )
    (run / "step_8").write_bytes(b"")
    msg = finished_message(config, Progress(passes_done=2), 16, already=False)
    assert "step_16 was not saved" in msg and f"last checkpoint: {run / 'step_8'}" in msg
    assert f"checkpoint={run / 'step_8'}" in msg and "checkpoint=" + str(run / "step_16") not in msg
    (run / "step_16").write_bytes(b"")
    msg = finished_message(config, Progress(passes_done=2), 16, already=False)
    assert "not saved" not in msg and f"last checkpoint: {run / 'step_16'}" in msg


def test_a_checkpoint_written_before_the_train_package_still_evaluates(tiny_sudoku: Path, tmp_path: Path) -> None:
    """tests/fixtures/ckpt-before-train-package: written by the code before utils/ moved to train/ (its README says
    how), on the data tiny_sudoku rebuilds byte for byte. evaluate.py scores it as that run's own eval did: the
    weight average by default, the raw weights with ema=false."""
    import shutil

    fixture = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "ckpt-before-train-package", fixture)
    for extra, want in (([], 0.11998457461595535), (["ema=false"], 0.12345678359270096)):
        r = run_py(
            ["evaluate.py", f"checkpoint={fixture / 'step_4'}", f"data_path={tiny_sudoku}", "save_outputs=[]", *extra]
        )
        assert r.returncode == 0, r.stderr[-2000:]
        got = float(r.stdout.split("all: ")[1].split("accuracy=")[1].split(",")[0])
        assert got == pytest.approx(want, abs=5e-5), r.stdout[-1000:]  # printed with 4 decimals


def test_step_json_goes_with_its_weights(tmp_path: Path) -> None:
    """step_N.json (the inference metadata) is deleted with the weights, kept with kept eval weights, and one left
    without weights by a kill is cleaned up at the next start."""
    for name in ("step_2", "step_2.json", "step_2.state", "step_4", "step_4.json", "step_4.state", "step_6.json"):
        (tmp_path / name).write_bytes(b"x")
    run_checkpoint.clean_stale(str(tmp_path), lambda _: None)
    assert not (tmp_path / "step_6.json").exists()
    run_checkpoint.remove(str(tmp_path), 4, keep_weights=True)
    assert {"step_4", "step_4.json"} <= {p.name for p in tmp_path.iterdir()}
    run_checkpoint.remove(str(tmp_path), 2, keep_weights=False)
    assert {p.name for p in tmp_path.iterdir()} == {"step_4", "step_4.json"}
