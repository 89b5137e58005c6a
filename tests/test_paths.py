"""Paths and commands the trainer and the demo print paste into bash as printed (odd paths included), run
folders get space-free names, resume keeps the run's name and says where it is, Ctrl-C stops after the
current step, and the plan's step count is the last checkpoint's."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import (
    BASE,
    REPO,
    SHORT_RUN,
    args,
    assert_identical,
    final_weights,
    read_metrics,
    run_py,
    scratch_dir,
)
from utils import shell

ENV = {
    **os.environ,
    "WANDB_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` is ours
}


@pytest.fixture(scope="module")
def reference(tiny_sudoku: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of test_resume's schedule."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    r = run_py(args(tiny_sudoku, run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def bash(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """Paste `line` into bash, as printed."""
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def start_bash(line: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", "exec " + line], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def only_run_dir(root: Path) -> Path:
    runs = [p.parent for p in root.glob("checkpoints/*/*/all_config.yaml")]
    assert len(runs) == 1, runs
    return runs[0]


def wait_for(proc: subprocess.Popen, root: Path, step: int, timeout: float = 300) -> int:
    """Wait until the run under `root` (a run folder, or a folder with checkpoints/) has logged `step`."""
    t = time.time()
    while time.time() - t < timeout:
        runs = list(root.glob("metrics.jsonl")) + list(root.glob("checkpoints/*/*/metrics.jsonl"))
        if runs:
            seen = max((r.get("step", 0) for r in read_metrics(runs[0].parent)), default=0)
            if seen >= step:
                return seen
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.02)
    raise TimeoutError(step)


def printed_command(out: str, after: str) -> str:
    return out.split(after, 1)[1].lstrip("\n").splitlines()[0].strip()


@pytest.mark.slow
def test_odd_data_path_stop_resume_and_evaluate_paste_back(tiny_sudoku: Path, reference: Path, tmp_path: Path) -> None:
    data = tmp_path / "my data é=1" / "sudoku tiny"  # spaces, non-ASCII, `=`: each breaks an unquoted override
    shutil.copytree(tiny_sudoku, data)
    first = shell.command(str(REPO / "pretrain.py"), *BASE, data_path=str(data))
    proc = start_bash(first, tmp_path)
    wait_for(proc, tmp_path, 5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "SIGINT received: finishing this step" in out and "Ctrl-C again to quit at once without saving" in out
    run_dir = only_run_dir(tmp_path)
    rel = run_dir.relative_to(tmp_path)
    assert re.fullmatch(r"checkpoints/Sudoku-tiny-ACT-torch/HierarchicalReasoningModel_ACTV1-[\w-]+", str(rel)), rel
    name = yaml.safe_load((run_dir / "all_config.yaml").read_text())["run_name"]
    assert name == rel.name
    stopped = max(r["step"] for r in read_metrics(run_dir))

    resume = printed_command(out, "To continue:")
    r = bash(resume, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"Epoch 0 (resumed at step {stopped} of 16" not in r.stdout  # the true epoch, not the pass's first
    assert re.search(rf"Epoch \d \(resumed at step {stopped} of 16: {stopped} of 8 batches done", r.stdout), r.stdout
    assert_identical(final_weights(run_dir), final_weights(reference))  # the stop kept exactness
    assert yaml.safe_load((run_dir / "all_config.yaml").read_text())["run_name"] == name  # not renamed
    assert only_run_dir(tmp_path) == run_dir

    r = bash(resume, tmp_path)  # once more: the run is done
    assert r.returncode == 0 and "is already finished (step 16" in r.stdout and "Traceback" not in r.stderr
    assert f"last checkpoint: {shell.quote(str(rel / 'step_16'))}" in r.stdout
    evaluate = printed_command(r.stdout, "evaluate it:")
    e = bash(evaluate, tmp_path)
    assert e.returncode == 0 and "all: accuracy=" in e.stdout, e.stderr[-2000:]


@pytest.mark.slow
def test_legacy_run_folder_with_spaces_resumes_under_its_name(
    reference: Path, tiny_sudoku: Path, tmp_path: Path
) -> None:
    """Runs named the original's way (`Sudoku-tiny ACT-torch/<Model> <slug>`) are still found and kept."""
    legacy = tmp_path / "checkpoints" / "Sudoku-tiny ACT-torch" / "HierarchicalReasoningModel_ACTV1 old-run"
    shutil.copytree(reference, legacy)
    for p in legacy.glob("step_16*"):
        p.unlink()
    saved = yaml.safe_load((legacy / "all_config.yaml").read_text())
    r = run_py([str(REPO / "pretrain.py"), f"data_path={tiny_sudoku}", *BASE, "resume=auto"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "from step 8" in r.stdout and "Epoch 4 (resumed at step 8 of 16)" in r.stdout
    assert only_run_dir(tmp_path) == legacy
    assert yaml.safe_load((legacy / "all_config.yaml").read_text())["run_name"] == saved["run_name"]
    assert_identical(final_weights(legacy), final_weights(reference))
    evaluate = printed_command(r.stdout, "evaluate it:")
    assert "'checkpoints/Sudoku-tiny ACT-torch/HierarchicalReasoningModel_ACTV1 old-run/step_16'" in evaluate
    e = bash(evaluate, tmp_path)
    assert e.returncode == 0 and "all: accuracy=" in e.stdout, e.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_step(tiny_sudoku: Path, tmp_path: Path) -> None:
    """A step of ~1 s: the metrics file shows step s (read one late, so s+1 is done); Ctrl-C within that
    next step stops at s+2 at the latest (before: the step after the next, s+3 or s+4)."""
    run_dir = tmp_path / "run"
    slow = ["arch.hidden_size=256", "arch.num_heads=4", "arch.H_cycles=3", "arch.L_cycles=3"]
    one_pass = ["eval_interval=8", "global_batch_size=32"]  # 16 steps in one pass: no pass end to stop at
    args = [f"data_path={tiny_sudoku}", f"checkpoint_path={run_dir}", *SHORT_RUN, *one_pass, *slow]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "pretrain.py"), *args],
        cwd=scratch_dir(),  # Hydra's outputs/ goes there, not into the checkout
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = wait_for(proc, run_dir, 2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    stopped = int(re.search(r"stopped at step (\d+)", out).group(1))  # type: ignore[union-attr]
    assert seen + 1 <= stopped <= seen + 2, (seen, stopped)
    assert (run_dir / f"step_{stopped}.state").is_file()
    assert max(r["step"] for r in read_metrics(run_dir)) == stopped  # every step in the checkpoint was read
    assert re.search(r"SIGINT received: finishing this step \(at most ~[\d.]+s: a step takes [\d.]+s\)", out), out


@pytest.mark.slow
def test_plan_counts_the_steps_the_run_ends_at(tiny_sudoku: Path, tmp_path: Path) -> None:
    """64 groups, batch 24, 2 passes of 4 epochs: 10 whole batches a pass, 20 steps (the original's
    formula, which sets the lr schedule, says int(8 * 64 / 24) = 21)."""
    run_dir = tmp_path / "run"
    r = run_py(
        ["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={run_dir}", *SHORT_RUN, "global_batch_size=24"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"steps\s+20 \(batch 24; 2 pass\(es\) of 10 whole batches\); the lr schedule spans 21", r.stdout)
    assert "step 20/20 (100.0%)" in r.stdout and "finished (step 20, 2 evaluation(s))" in r.stdout
    assert (run_dir / "step_20").is_file() and not (run_dir / "step_21").exists()
    assert max(m["step"] for m in read_metrics(run_dir)) == 20


def test_demo_next_commands_paste_and_run(reference: Path, tiny_sudoku: Path, tmp_path: Path) -> None:
    import demo

    run_dir = tmp_path / "run dir"  # a space, as in runs made before the names changed
    shutil.copytree(reference, run_dir)
    commands = dict((what.split()[0], cmd) for what, cmd in demo.next_commands(str(run_dir), str(tiny_sudoku)))
    assert set(commands) == {"test", "solve", "watch", "training", "the"}
    argv = {k: shlex.split(c) for k, c in commands.items()}
    assert argv["test"] == ["python", "evaluate.py", f"checkpoint='{run_dir / 'step_16'}'"]
    assert argv["solve"][:3] == ["python", "predict.py", f"checkpoint='{run_dir / 'step_16'}'"]
    assert argv["training"] == ["python", "plot.py", str(run_dir), "-o", str(run_dir / "curves.png")]
    assert argv["the"][1:3] == ["dataset/view.py", str(tiny_sudoku)]
    for key in ("test", "solve", "watch", "training", "the"):  # in this order: view shows evaluate's predictions
        r = bash(commands[key], REPO)
        assert r.returncode == 0, (commands[key], r.stdout[-1500:], r.stderr[-1500:])
    assert (run_dir / "step_16_all_preds.0").is_file() and (run_dir / "curves.png").is_file()
    assert (run_dir / "view.html").is_file() and (run_dir / "think.html").is_file()
    preds = torch.load(run_dir / "step_16_all_preds.0", weights_only=True)
    assert preds["logits"].shape[0] == 32
