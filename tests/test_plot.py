"""plot.py: curves of fake runs into a PNG, skipped no-halt train rows, and errors without tracebacks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import plot
from tests.conftest import REPO, run_py


def write_run(folder: Path, steps: int = 60, eval_every: int = 20, scale: float = 1.0) -> Path:
    """A metrics.jsonl shaped like pretrain.py's: start-up row, train rows (some with no halted rows), evals."""
    folder.mkdir(parents=True)
    rows: list[dict] = [{"step": 0, "time": 0.0, "num_params": 132610.0}]
    for s in range(1, steps + 1):
        halted = s % 3 != 0  # every third step: no row halted, so accuracy/steps are logged as 0
        rows.append(
            {
                "step": s,
                "time": 0.1 * s,
                "train/accuracy": (0.1 + 0.8 * s / steps) * scale if halted else 0.0,
                "train/count": 1.0 if halted else 0.0,
                "train/exact_accuracy": (0.5 * s / steps) * scale if halted else 0.0,
                "train/lm_loss": 2.5 * math.exp(-s / 30) * scale,
                "train/q_halt_loss": 0.01,
                "train/steps": 4.0 + (s % 5) if halted else 0.0,
                "train/lr": 1e-3 * min(1.0, s / 10),
            }
        )
        if s % eval_every == 0:
            rows.append(
                {
                    "step": s,
                    "time": 0.1 * s,
                    "all/accuracy": 0.2 + 0.6 * s / steps * scale,
                    "all/exact_accuracy": 0.4 * s / steps,
                    "all/exact_accuracy_at_halt": 0.45 * s / steps,
                    "all/lm_loss": 2.0 * math.exp(-s / 30),
                    "all/steps": 8.0,
                    "all/steps_at_halt": 6.0,
                    "elapsed_s": 0.1 * s,
                }
            )
    rows[5]["train/lm_loss"] = "nan"  # the tracker writes non-finite values as strings
    with open(folder / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.write('{"step": 61, "train/lm')  # a run still writing its last line
    return folder


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    return write_run(tmp_path / "proj" / "run-a"), write_run(tmp_path / "proj" / "run-b", scale=0.8)


def test_reads_metrics_and_skips_steps_without_halted_rows(two_runs: tuple[Path, Path]) -> None:
    run = plot.read_run(str(two_runs[0]), "run-a")
    assert run.bad_lines == 0  # the unfinished last line is dropped quietly
    acc_steps, acc = run.series["train/accuracy"]
    assert acc_steps and all(s % 3 != 0 for s in acc_steps) and min(acc) > 0
    assert len(run.series["train/steps"][0]) == len(acc_steps)
    assert len(run.series["train/lm_loss"][0]) == 60  # losses are per batch: every step counts
    assert math.isnan(run.series["train/lm_loss"][1][4])
    assert run.series["all/exact_accuracy"][0] == [20, 40, 60]
    assert "step" not in run.series and "time" not in run.series


def test_corrupt_lines_are_counted(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('"}\n[1, 2]\n{"step": 62, "train/lm_loss": 0.5}\n')  # completes the last line as garbage
    run = plot.read_run(str(run_dir), "run")
    assert run.bad_lines == 2 and run.series["train/lm_loss"][0][-1] == 62


def test_key_specs() -> None:
    available = {"train/accuracy", "all/accuracy", "train/lm_loss", "all/lm_loss", "train/lr"}
    assert plot.resolve_keys("accuracy", available) == ["train/accuracy", "all/accuracy"]
    assert plot.resolve_keys("train/lm_loss,all/lm_loss", available) == ["train/lm_loss", "all/lm_loss"]
    with pytest.raises(plot.UserError, match="did you mean: train/lm_loss"):
        plot.resolve_keys("train/lm_los", available)


def test_two_runs_make_a_png(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    out = tmp_path / "out" / "curves.png"
    r = run_py(["plot.py", *map(str, two_runs), "-o", str(out)], timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "2 runs, 5 panels" in r.stdout
    assert r.stderr == ""
    assert out.is_file() and out.stat().st_size > 10_000
    img = matplotlib.image.imread(out)
    h, w = img.shape[:2]
    assert 400 <= h <= 2000 and 800 <= w <= 3000 and w > h, img.shape
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_keys_panels(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "keys.png"
    r = run_py(["plot.py", str(two_runs[0]), "-o", str(out), "--keys", "train/lm_loss", "accuracy,steps"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 run, 2 panels" in r.stdout and out.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nowhere"], "does not exist"),
        (["{tmp}/empty"], "has no metrics.jsonl"),
        (["{tmp}/proj"], "runs under it: run-a, run-b"),
        (["{a}", "--keys", "train/acuracy"], "unknown key 'train/acuracy' (did you mean: train/accuracy"),
        (["{a}", "--keys", "lm_los"], "unknown key 'lm_los' (did you mean: lm_loss"),
    ],
)
def test_errors_are_one_line(two_runs: tuple[Path, Path], tmp_path: Path, args: list[str], message: str) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, a=two_runs[0]) for a in args]
    r = run_py(["plot.py", *args, "-o", str(tmp_path / "x.png")])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_prints_install_hint(two_runs: tuple[Path, Path]) -> None:
    # sys.modules[name] = None makes `import matplotlib` fail, as on a machine without it
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['plot.py', {str(two_runs[0])!r}]; runpy.run_path({str(REPO / 'plot.py')!r}, run_name='__main__')"
    )
    r = run_py(["-c", code])
    assert r.returncode == 2
    assert r.stderr.strip() == "error: plot.py needs matplotlib: pip install matplotlib"


def test_smooth_cut_gzip_and_labels(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    import gzip

    src = two_runs[0] / "metrics.jsonl"
    gz = tmp_path / "a.metrics.jsonl.gz"
    with open(src, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    raw = plot.read_run(str(src), "a", max_step=30)
    assert max(raw.series["train/lm_loss"][0]) == 30 and max(raw.series["all/accuracy"][0]) == 20
    assert repr(plot.read_run(str(gz), "a", max_step=30).series) == repr(raw.series)  # gzip reads the same
    loss = raw.series["train/lm_loss"][1]
    plot.smooth(raw, 10)
    steps, values = raw.series["train/lm_loss"]
    finite = [v for v in loss[:10] if math.isfinite(v)]  # step 5 logged NaN: left out of its window's mean
    assert len(values) == len(loss) // 10 and values[0] == pytest.approx(sum(finite) / len(finite))
    assert raw.series["all/accuracy"][1] == [pytest.approx(0.2 + 0.6 * 20 / 60)]  # eval points are kept as they are
    out = tmp_path / "c.png"
    r = run_py(["plot.py", f"mine={gz}", str(two_runs[1]), "--smooth", "5", "--max-step", "40", "-o", str(out)])
    assert r.returncode == 0 and out.stat().st_size > 10_000, r.stderr
    r = run_py(["plot.py", str(src), "--smooth", "0"])
    assert r.returncode == 2 and "--smooth" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------------------
# The figure itself (issue 14.11): axis labels, the test set's name, markers, flat curves


def figure_of(runs: list[plot.Run], keys: list[str] | None = None):
    pytest.importorskip("matplotlib")
    return plot.make_figure(runs, plot.panels_for(keys, runs))


def close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_panels_have_y_axis_labels(two_runs: tuple[Path, Path]) -> None:
    fig = figure_of([plot.read_run(str(p), p.name) for p in two_runs])
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert labels == ["loss (cross-entropy)", "token accuracy", "exact accuracy", "ACT steps", "learning rate"]
    close(fig)


def test_eval_set_all_is_called_test(two_runs: tuple[Path, Path]) -> None:
    run = plot.read_run(str(two_runs[0]), "run-a")
    fig = figure_of([run])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "test" in legend and "all" not in legend and "train" in legend
    close(fig)
    fig = figure_of([run], ["accuracy,steps"])  # several metrics in a panel: the per-line legend names the set too
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "test/accuracy" in texts and not any(t.startswith("all/") for t in texts)
    close(fig)


@pytest.mark.parametrize("n", [1, 5])
def test_markers_only_on_eval_points(two_runs: tuple[Path, Path], n: int) -> None:
    run = plot.read_run(str(two_runs[0]), "run-a")
    plot.smooth(run, n)  # smoothed train lines have few points: they used to get the eval points' markers
    fig = figure_of([run])
    acc = fig.axes[1]
    by_style = {line.get_linestyle(): line.get_marker() for line in acc.get_lines()}
    assert by_style == {"-": "None", "--": "o"}, by_style  # train solid without markers, test dashed with
    close(fig)


def test_flat_curves_get_sensible_limits(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    rows = [
        {"step": s, "train/lm_loss": 0.0, "train/accuracy": 0.0, "train/count": 1.0, "train/lr": 1e-4}
        for s in range(1, 9)
    ]
    rows.append({"step": 8, "all/accuracy": 0.0, "all/exact_accuracy": 0.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = figure_of([plot.read_run(str(folder), "flat")])
    loss, token, exact, _, lr = fig.axes[:5]
    assert token.get_ylim() == (0.0, 1.0) and exact.get_ylim() == (0.0, 1.0)  # fractions: 0..1
    assert loss.get_ylim() == (0.0, 1.0)  # a flat zero: not -0.04..0.04
    lo, hi = lr.get_ylim()
    assert lo == pytest.approx(0.9e-4) and hi == pytest.approx(1.1e-4)  # a flat non-zero value: +-10%
    close(fig)
    assert plot.flat_limits(["train/lm_loss"], [1.0, 2.0]) is None  # curves that move keep matplotlib's limits


def test_halting_aware_eval_curves_share_the_paper_protocol_panels(two_runs: tuple[Path, Path]) -> None:
    runs = [plot.read_run(str(p), p.name) for p in two_runs]
    panels = dict(plot.panels_for(None, runs))
    assert panels["exact accuracy"] == ["train/exact_accuracy", "all/exact_accuracy", "all/exact_accuracy_at_halt"]
    assert panels["average ACT steps"] == ["train/steps", "all/steps", "all/steps_at_halt"]
    assert "elapsed_s" not in runs[0].series or all("elapsed_s" not in k for v in panels.values() for k in v)
    fig = figure_of(runs[:1])
    exact = next(ax for ax in fig.axes if ax.get_ylabel() == "exact accuracy")
    texts = [t.get_text() for t in exact.get_legend().get_texts()] if exact.get_legend() else []
    assert "test/exact_accuracy_at_halt" in texts and "test/exact_accuracy" in texts
    close(fig)


def test_an_ema_runs_raw_weights_share_the_averages_panels(tmp_path: Path) -> None:
    """ema=true logs the raw weights' evals as raw/<set>/<metric>: same panels, own line style, labelled."""
    folder = write_run(tmp_path / "ema")
    lines = (folder / "metrics.jsonl").read_text().splitlines(keepends=True)
    extra = [
        json.dumps({"step": s, "raw/all/exact_accuracy": 0.3 * s / 60, "raw/all/steps_at_halt": 7.0}) + "\n"
        for s in (20, 40, 60)
    ]
    (folder / "metrics.jsonl").write_text("".join(lines[:-1] + extra + lines[-1:]))
    run = plot.read_run(str(folder), "ema")
    panels = dict(plot.panels_for(None, [run]))
    assert "raw/all/exact_accuracy" in panels["exact accuracy"]
    assert "raw/all/steps_at_halt" in panels["average ACT steps"]
    assert plot.split_key("raw/all/exact_accuracy") == ("raw/all", "exact_accuracy")
    fig = figure_of([run])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ema", "train", "test (EMA weights)", "test (raw weights)"]
    exact = next(ax for ax in fig.axes if ax.get_ylabel() == "exact accuracy")
    styles = {line.get_label(): line.get_linestyle() for line in exact.get_lines()}
    assert styles["test (raw weights)/exact_accuracy"] != styles["test (EMA weights)/exact_accuracy"]
    close(fig)
    fig = figure_of([plot.read_run(str(write_run(tmp_path / "plain")), "plain")])  # no raw/ keys: plain "test"
    assert "test" in [t.get_text() for t in fig.legends[0].get_texts()]
    close(fig)
