"""Issue 15: bit-exact resume with ACT exploration, no non-finite value ever saved, the last healthy
checkpoint never pruned, a full disk handled at every write, kill -9 leftovers cleaned, checksums."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SHORT_RUN, pretrain_args, read_metrics, run_py, scratch_dir
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
        if not any(w in p.name for w in ("tmp", "preds", "unhealthy")):
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


@pytest.mark.parametrize("lr", ["1e30", "nan"])
def test_nonfinite_never_saved_and_never_success(tiny_sudoku: Path, tmp_path: Path, lr: str) -> None:
    """lr=1e30: finite but huge weights, NaN losses and a NaN ACT carry; lr=nan: NaN weights at once."""
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
        )
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    # lr=nan never reaches the trainer now: the config check refuses it before anything is written
    assert ("non-finite" if lr != "nan" else "lr=nan is out of range") in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not nonfinite_files(run_dir)


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
        assert out.count("could not write metrics.jsonl") == 1
    assert not list(run_dir.glob("*.tmp*"))
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))  # space again: on from step 8
    assert r.returncode == 0 and "from step 8" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle of the file: tensor data
    path.write_bytes(bytes(data))


def test_flipped_byte_is_refused_and_auto_falls_back(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)
    flip_byte(run_dir / "step_10")
    r = run_py(["evaluate.py", f"checkpoint={run_dir / 'step_10'}"])
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = run_py(pretrain_args(tiny_sudoku, run_dir, CKPT, f"resume={run_dir / 'step_10'}"))
    assert r.returncode == 2 and "checksum mismatch" in r.stdout + r.stderr and "Traceback" not in r.stderr
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))
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


def test_old_format_checkpoint_resumes(tiny_sudoku: Path, ref: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rewind(ref, run_dir, 10)
    strip_new_fields(run_dir / "step_10.state")
    out = run_ok(*pretrain_args(tiny_sudoku, run_dir, CKPT, "resume=auto"))
    assert "from step 10" in out
    steps = [m["step"] for m in read_metrics(run_dir) if "train/lm_loss" in m]
    assert steps == list(range(1, 17))  # rows after step 10 dropped by step (no saved length), then relogged


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
