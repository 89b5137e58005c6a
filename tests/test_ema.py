"""train/ema.py: the weight average TRM evaluates with (ema=true, ema_rate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train.ema import EMA


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("table", torch.zeros(5))  # like the puzzle-embedding table: not averaged


def perturb(net: Net, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (net.lin.weight, net.lin.bias):
            p.add_(torch.randn(p.shape, generator=g))
        net.table.add_(1.0)


def test_update_is_trms_formula_and_skips_bitwise() -> None:
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, rate=0.9)
    want = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    for step in range(5):
        perturb(net, step)
        ema.update()
        for n, p in net.named_parameters():
            if p.requires_grad:
                want[n] = (1.0 - 0.9) * p.detach() + 0.9 * want[n]  # TRM's EMAHelper.update
    got = ema.state_dict()
    assert set(got) == {"lin.weight", "lin.bias"}  # frozen parameters and buffers are not averaged
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)

    before = [t.clone() for t in ema.shadow]
    perturb(net, 99)
    ema.update(skip=torch.tensor(True))
    assert all(torch.equal(a, b) for a, b in zip(before, ema.shadow))
    ema.update(skip=torch.tensor(False))
    assert not torch.equal(before[0], ema.shadow[0])


def test_swapped_in_evaluates_the_average_and_restores_the_live_weights() -> None:
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, rate=0.5)
    perturb(net, 1)
    ema.update()
    live = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 4)
    with ema.swapped_in():
        assert torch.equal(net.lin.weight, ema.shadow[0])
        assert torch.equal(net.table, live["table"])  # buffers stay live
        y_avg = net.lin(x)
    assert all(torch.equal(v, live[k]) for k, v in net.state_dict().items())
    assert not torch.allclose(net.lin(x), y_avg)
    w = ema.weights(net)
    assert torch.equal(w["lin.weight"], ema.shadow[0]) and torch.equal(w["table"], live["table"])
    fresh = Net()
    fresh.load_state_dict(w)
    torch.testing.assert_close(fresh.lin(x), y_avg)


def test_state_round_trip_and_bad_rate() -> None:
    net = Net()
    ema = EMA(net, rate=0.99)
    perturb(net, 3)
    ema.update()
    other = EMA(Net(), rate=0.99)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, other.shadow))
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"lin.weight": torch.zeros(3, 4)})
    for rate in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema_rate must be in"):
            EMA(net, rate=rate)


# ---------------------------------------------------------------------------------------------------------
# In the trainer (ema=true): evaluation, checkpoints, resume, evaluate.py


def _run(data, run_dir, *extra):
    from tests.conftest import SHORT_RUN, pretrain_args, run_py

    r = run_py(pretrain_args(data, run_dir, [*SHORT_RUN, "seed=2", "arch.halt_max_steps=4"], *extra))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_ema_run_evaluates_the_average_and_resumes_bit_exactly(tiny_sudoku, tmp_path) -> None:
    from tests.conftest import read_metrics, run_py

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = _run(tiny_sudoku, ref, "ema=true", "ema_rate=0.9", "eval_per_step=true")
    assert "4 ACT steps each; every segment scored (eval_per_step)" in r.stdout  # the start-up plan says so
    assert (
        "  all exact accuracy after segment 1..4: " in r.stdout and "raw/all exact accuracy after segment" in r.stdout
    )
    last = max(r["step"] for r in read_metrics(ref))
    raw = torch.load(ref / f"step_{last}", weights_only=True)
    avg = torch.load(ref / f"step_{last}.ema", weights_only=True)
    assert raw.keys() == avg.keys()
    assert not torch.equal(raw["model.inner.lm_head.weight"], avg["model.inner.lm_head.weight"])
    assert torch.equal(raw["model.inner.puzzle_emb.weights"], avg["model.inner.puzzle_emb.weights"])  # a buffer

    # a run that died after its step-10 checkpoint (later files gone) resumes to the same weights and average
    _run(tiny_sudoku, cut, "ema=true", "ema_rate=0.9", "checkpoint_interval=5", "keep_last=0")
    for p in cut.iterdir():
        if p.name.startswith("step_") and int(p.name.split("_")[1].split(".")[0]) > 10:
            p.unlink()
    r = _run(tiny_sudoku, cut, "ema=true", "ema_rate=0.9", "checkpoint_interval=5", "keep_last=0", "resume=auto")
    assert "from step 10" in r.stdout
    for name in (f"step_{last}", f"step_{last}.ema"):
        a, b = torch.load(ref / name, weights_only=True), torch.load(cut / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name

    # the run's evals used the average: evaluate.py picks it by default, ema=false gives the raw weights' score
    evals = [m for m in read_metrics(ref) if "all/accuracy" in m]
    out = run_py(["evaluate.py", f"checkpoint={ref / f'step_{last}'}"])
    assert out.returncode == 0, out.stderr
    assert "(the weight average, ema=false for the raw weights)" in out.stdout
    assert float(out.stdout.split("accuracy=")[1].split(",")[0]) == pytest.approx(evals[-1]["all/accuracy"], abs=1e-5)
    out = run_py(["evaluate.py", f"checkpoint={ref / f'step_{last}'}", "ema=false"])
    assert out.returncode == 0 and "(its weights)" in out.stdout
    raw_acc = float(out.stdout.split("accuracy=")[1].split(",")[0])
    # eval_per_step=true: each segment's scores for both weight sets, the last segment's being the headline
    for prefix in ("all", "raw/all"):
        assert evals[-1][f"{prefix}/step_4/accuracy"] == pytest.approx(evals[-1][f"{prefix}/accuracy"])
        assert evals[-1][f"{prefix}/step_4/halted_by"] == pytest.approx(1.0)
        assert {f"{prefix}/step_{i}/exact_accuracy" for i in (1, 2, 3)} <= evals[-1].keys()
    assert raw_acc == pytest.approx(evals[-1]["raw/all/accuracy"], abs=1e-5)  # ema_eval_raw: both are logged
    assert raw_acc != pytest.approx(evals[-1]["all/accuracy"], abs=1e-5)


@pytest.mark.slow
def test_ema_requested_on_a_checkpoint_without_one_says_so(tiny_sudoku, tmp_path) -> None:
    from tests.conftest import read_metrics, run_py

    _run(tiny_sudoku, tmp_path / "run")
    last = max(r["step"] for r in read_metrics(tmp_path / "run"))
    ckpt = tmp_path / "run" / f"step_{last}"
    assert not (tmp_path / "run" / f"step_{last}.ema").exists()
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "ema=true"])
    assert r.returncode == 2 and "has no weight average" in r.stderr and "ema=false" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_py(["predict.py", f"checkpoint={ckpt}", "ema=true", "puzzle=" + "." * 81])
    assert r.returncode == 2 and "has no weight average" in r.stderr
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "ema=maybe"])
    assert r.returncode == 2 and "ema must be auto, true or false" in r.stderr

    # the same run, per segment: one table row per ACT step, the last one the headline's score
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "per_step=true", "save_outputs=[]"])
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("halted by\n")[1].splitlines()[:4]
    assert [int(row.split()[0]) for row in table] == [1, 2, 3, 4]
    exact = float(r.stdout.split("all: ")[1].split("exact_accuracy=")[1].split(",")[0])
    assert float(table[-1].split()[1]) == pytest.approx(exact, abs=1e-4) and float(table[-1].split()[4]) == 1.0
    # deeper than trained (arch.halt_max_steps on the command line): 8 segments, the first 4 scored as before
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "per_step=true", "save_outputs=[]", "arch.halt_max_steps=8"])
    assert r.returncode == 0, r.stderr
    deep = r.stdout.split("halted by\n")[1].splitlines()[:8]
    assert [int(row.split()[0]) for row in deep] == list(range(1, 9)) and "after all 8 ACT steps" in r.stdout
    assert [row.split()[1:4] for row in deep[:4]] == [row.split()[1:4] for row in table]  # exact, token, says halt
    assert float(deep[3].split()[4]) < 1.0 and float(deep[-1].split()[4]) == 1.0  # the cap moved from 4 to 8
    r = run_py(["evaluate.py", f"checkpoint={ckpt}", "per_step=yes please"])
    assert r.returncode == 2 and "per_step must be true or false" in r.stderr


@pytest.mark.slow
def test_resuming_an_ema_run_without_it_or_from_a_broken_average_is_refused(tiny_sudoku, tmp_path) -> None:
    """Resuming with ema=false would drop the average silently and leave a stale step_N.ema that evaluate.py then
    scores; a truncated or crafted step_N.ema is one line, and resume=auto falls back to the previous checkpoint."""
    from tests.conftest import SHORT_RUN, pretrain_args, run_py

    run = tmp_path / "run"
    base = [*SHORT_RUN, "seed=2", "ema=true", "checkpoint_interval=4", "keep_last=0"]
    r = run_py(pretrain_args(tiny_sudoku, run, base))
    assert r.returncode == 0, r.stderr[-2000:]
    steps = sorted(int(p.name.split("_")[1].removesuffix(".state")) for p in run.glob("step_*.state"))
    last, before = steps[-1], steps[-2]
    files = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}

    r = run_py(pretrain_args(tiny_sudoku, run, [*base, "ema=false", f"resume={run / f'step_{before}'}"]))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "was trained with ema=true" in r.stderr and "resume with ema=true" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == files  # nothing written or removed

    for content in (b"", (run / f"step_{last}.ema").read_bytes()[:100], b"not a tensor file"):
        (run / f"step_{last}.ema").write_bytes(content)
        r = run_py(pretrain_args(tiny_sudoku, run, [*base, f"resume={run / f'step_{last}'}"]))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and "no loadable checkpoint" in r.stderr
        assert f"step_{last}.ema is unreadable" in r.stdout
    r = run_py(pretrain_args(tiny_sudoku, run, [*base, "resume=auto"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"from step {before}" in r.stdout and "trying the previous one" in r.stdout
