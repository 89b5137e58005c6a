"""Draw training curves of one or more runs from their metrics.jsonl into one PNG.

    python plot.py RUN_DIR [RUN_DIR ...] [-o curves.png] [--keys KEY ...] [--smooth N] [--max-step S]

RUN_DIR is a run folder (`checkpoints/<project>/<run>`, the one holding metrics.jsonl) or the metrics.jsonl
itself (also gzipped); `LABEL=RUN_DIR` names its line. `--smooth N` draws train curves as means over N logged
steps (per-step values are noisy); `--max-step` cuts every run there (to compare runs of different lengths).
Default panels: train lm_loss; token accuracy, exact accuracy and average ACT steps (train and every eval set;
for eval sets also where the Q-head halts, `*_at_halt`); learning rate. `--keys` replaces them: one panel per argument; a full key (`train/lm_loss`,
`all/exact_accuracy`), a bare metric (`accuracy`: train and every eval set), or several joined by commas
(`train/lm_loss,all/lm_loss`) to share a panel. Runs are told apart by colour, train/eval sets by line style.

Train rows count accuracy and steps only over the rows that halted in that step; a step where none halted
(`train/count` 0) logs 0 for them, so those rows are left out of such curves (same as the progress bar).
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import argparse
import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any

from train.tracking import metrics_file, read_metrics
from utils.errors import UserError, close_matches, exit_with

DEFAULT_PANELS: list[tuple[str, list[str]]] = [
    ("lm loss (train)", ["train/lm_loss"]),
    ("token accuracy", ["accuracy"]),
    # the paper's protocol (all halt_max_steps segments) beside the segment where the Q-head halts (eval sets)
    ("exact accuracy", ["exact_accuracy", "exact_accuracy_at_halt", "hard_exact_accuracy"]),  # and its hard band
    ("average ACT steps", ["steps", "steps_at_halt"]),
    ("learning rate", ["train/lr"]),
]
# Train metrics that are averages over the halted rows of a step (pretrain.train_batch divides them by count).
_PER_HALTED_ROW = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
_NOT_METRICS = ("step", "time")
_LINESTYLES = ["-", "--", ":", "-."]
INSTALL_HINT = "plot.py needs matplotlib: pip install matplotlib"


@dataclass
class Run:
    label: str
    path: str
    # key -> (steps, values), in file order
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    bad_lines: int = 0


def _float(v: Any) -> float | None:
    """Numbers and the strings the tracker writes for non-finite values ('nan', 'inf'); None otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def read_run(path: str, label: str, max_step: int | None = None) -> Run:
    fname = metrics_file(path)
    run = Run(label=label, path=fname)
    rows, run.bad_lines = read_metrics(fname)
    for _, row in rows:
        step = row["step"]
        if max_step is not None and step > max_step:
            continue
        halted = _float(row.get("train/count"))
        for key, raw in row.items():
            value = _float(raw)
            if key in _NOT_METRICS or value is None:
                continue
            set_name, metric = split_key(key)
            if set_name == "train" and metric in _PER_HALTED_ROW and halted == 0:
                continue
            steps, values = run.series.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    return run


def smooth(run: Run, n: int) -> None:
    """Train series -> means over consecutive windows of n logged points (eval series stay as they are)."""
    for key, (steps, values) in run.series.items():
        if key.startswith("train/") and n > 1 and len(values) >= n:
            k = len(values) // n * n
            windows = [[v for v in values[i : i + n] if math.isfinite(v)] for i in range(0, k, n)]
            run.series[key] = (
                [sum(steps[i : i + n]) / n for i in range(0, k, n)],
                [sum(w) / len(w) if w else math.nan for w in windows],  # a NaN step does not blank its window
            )


def run_labels(paths: list[str]) -> list[str]:
    """Run folder names; parent/name where two runs share a name (same run name in two projects)."""
    dirs = [os.path.dirname(os.path.abspath(p)) if os.path.isfile(p) else os.path.abspath(p) for p in paths]
    names = [os.path.basename(d) for d in dirs]
    out = []
    for d, n in zip(dirs, names):
        out.append(os.path.join(os.path.basename(os.path.dirname(d)), n) if names.count(n) > 1 else n)
    return out


def resolve_keys(spec: str, available: set[str]) -> list[str]:
    """'train/lm_loss' -> itself; 'accuracy' -> train/accuracy, all/accuracy, ... (whichever exist)."""
    keys: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "/" in part:
            if part not in available:
                bare = sorted({split_key(k)[1] for k in available})
                raise UserError(f"unknown key {part!r}{close_matches(part, sorted(available) + bare)}")
            keys.append(part)
            continue
        found = sorted((k for k in available if split_key(k)[1] == part), key=lambda k: (k != "train/" + part, k))
        if not found:
            bare = sorted({split_key(k)[1] for k in available if "/" in k})
            raise UserError(f"unknown key {part!r}{close_matches(part, bare + sorted(available))}")
        keys.extend(found)
    if not keys:
        raise UserError(f"empty --keys entry {spec!r}")
    return keys


def panels_for(args_keys: list[str] | None, runs: list[Run]) -> list[tuple[str, list[str]]]:
    available = {k for r in runs for k in r.series if "/" in k}  # 'num_params' and such are not curves
    if args_keys:
        return [(spec.replace(",", ", "), resolve_keys(spec, available)) for spec in args_keys]
    panels = []
    for title, specs in DEFAULT_PANELS:
        keys = []
        for spec in specs:  # a default panel whose metric no run has (yet) stays, empty, with a note
            try:
                keys += resolve_keys(spec, available)
            except UserError:
                pass
        panels.append((title, keys))
    return panels


# y-axis label per metric; panels holding several metrics list theirs
_YLABELS = {
    "lm_loss": "loss (cross-entropy)",
    "q_halt_loss": "loss",
    "q_continue_loss": "loss",
    "accuracy": "token accuracy",
    "exact_accuracy": "exact accuracy",
    "q_halt_accuracy": "Q-halt accuracy",
    "steps": "ACT steps",
    "exact_accuracy_at_halt": "exact accuracy",
    "hard_exact_accuracy": "exact accuracy",
    "accuracy_at_halt": "token accuracy",
    "steps_at_halt": "ACT steps",
    "lr": "learning rate",
}
_FRACTIONS = (
    "accuracy",
    "exact_accuracy",
    "q_halt_accuracy",
    "accuracy_at_halt",
    "exact_accuracy_at_halt",
    "hard_exact_accuracy",
)  # metrics that live in 0..1


def split_key(key: str) -> tuple[str, str]:
    """'all/exact_accuracy' -> ('all', 'exact_accuracy'). An ema=true run also logs its raw weights' evals as
    'raw/<set>/<metric>': their set is 'raw/<set>', so that they share panels and metrics with the average's."""
    first, _, rest = key.partition("/")
    if first == "raw" and "/" in rest:
        inner, _, metric = rest.partition("/")
        return f"raw/{inner}", metric
    return first, rest


def set_label(name: str, ema: bool = False) -> str:
    """The test split's set is called "all" in the data; the plot says "test" (other sets keep their name).
    ema: the plot holds an ema=true run's raw weights ('raw/<set>'), so its plain eval sets are the average's."""
    if name.startswith("raw/"):
        return f"{set_label(name[4:])} (raw weights)"
    label = "test" if name == "all" else name
    return f"{label} (EMA weights)" if ema and name != "train" else label


def key_label(key: str, ema: bool = False) -> str:
    set_name, metric = split_key(key)
    return f"{set_label(set_name, ema)}/{metric}"


def ylabel(keys: list[str]) -> str:
    metrics = dict.fromkeys(split_key(k)[1] for k in keys)
    return ", ".join(dict.fromkeys(_YLABELS.get(m, m) for m in metrics))


def flat_limits(keys: list[str], values: list[float]) -> tuple[float, float] | None:
    """Limits for a panel whose curves are one constant (matplotlib would zoom into +-4% of it, e.g. -0.04..0.04
    around a flat zero): 0..1 for fractions, else the value with a margin, not below 0 for a non-negative one."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or max(finite) - min(finite) > 1e-12 * max(1.0, abs(max(finite))):
        return None
    v = finite[0]
    if all(split_key(k)[1] in _FRACTIONS for k in keys) and 0 <= v <= 1:
        return (0.0, 1.0)
    pad = abs(v) * 0.1 or 1.0
    return (max(0.0, v - pad) if v >= 0 else v - pad, v + pad)


def make_figure(runs: list[Run], panels: list[tuple[str, list[str]]]) -> Any:
    """The matplotlib Figure: one panel per (title, keys); runs by colour, sets by line style."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (servers, tmux, CI)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    sets = sorted({split_key(k)[0] for _, keys in panels for k in keys}, key=lambda s: (s != "train", s))
    style = {s: _LINESTYLES[i % len(_LINESTYLES)] for i, s in enumerate(sets)}
    ema = any(s.startswith("raw/") for s in sets)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {r.label: colors[i % len(colors)] for i, r in enumerate(runs)}

    ncols = 1 if len(panels) == 1 else 2 if len(panels) in (2, 4) else 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    flat = axes.ravel()
    for ax, (title, keys) in zip(flat, panels):
        drawn = 0
        plotted: list[float] = []
        # several metrics in one panel (--keys a,b): colour and style no longer say which line is which
        mixed = len({split_key(k)[1] for k in keys}) > 1
        markers = iter("osd^v<>p*hx+") if mixed else None
        metric_marker = {m: next(markers) for m in dict.fromkeys(split_key(k)[1] for k in keys)} if markers else {}
        for run in runs:
            for key in keys:
                if key not in run.series:
                    continue
                steps, values = run.series[key]
                set_name, metric = split_key(key)
                evals = set_name != "train"  # eval points: few, so mark them; train lines (smoothed or not) unmarked
                ax.plot(
                    steps,
                    values,
                    color=color[run.label],
                    linestyle=style.get(set_name, "-"),
                    marker=metric_marker.get(metric, "o") if evals or mixed else None,
                    markersize=3,
                    linewidth=1.2,
                    label=(f"{run.label}: " if len(runs) > 1 else "") + key_label(key, ema) if mixed else None,
                )
                plotted += values
                drawn += 1
        ax.set_title(textwrap.fill(title, 60), fontsize=10)  # --keys a,b,c titles: wrapped, not overlapping
        ax.set_xlabel("step", fontsize=8)
        if keys:
            ax.set_ylabel(ylabel(keys), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if mixed and drawn:
            ax.legend(fontsize=7)
        if keys and all(k.endswith("/lr") for k in keys):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        limits = flat_limits(keys, plotted) if drawn else None
        if limits:
            ax.set_ylim(*limits)
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in flat[len(panels) :]:
        ax.set_visible(False)

    handles = [Line2D([], [], color=color[r.label], linewidth=2, label=r.label) for r in runs]
    if len(sets) > 1:  # line styles only need a key when they differ
        handles += [Line2D([], [], color="gray", linestyle=style[s], label=set_label(s, ema)) for s in sets]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return fig


def draw(runs: list[Run], panels: list[tuple[str, list[str]]], output: str) -> None:
    fig = make_figure(runs, panels)  # first: it picks the Agg backend before pyplot loads
    import matplotlib.pyplot as plt

    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot training curves from runs' metrics.jsonl into one PNG.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders holding metrics.jsonl")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument(
        "--keys",
        nargs="+",
        metavar="KEY",
        help="panels to draw instead of the defaults: train/lm_loss, all/exact_accuracy, accuracy (every set), "
        "or a,b to share a panel",
    )
    parser.add_argument("--smooth", type=int, default=1, metavar="N", help="train curves as means over N steps")
    parser.add_argument("--max-step", type=int, default=None, metavar="S", help="leave out steps after S")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        if args.smooth < 1:
            raise UserError(f"--smooth must be >= 1, got {args.smooth}")
        named = [
            spec.partition("=") if "=" in spec and not os.path.exists(spec) else ("", "", spec) for spec in args.runs
        ]
        paths = [p for _, _, p in named]
        labels = [n or auto for (n, _, _), auto in zip(named, run_labels(paths))]
        runs = [read_run(p, label, args.max_step) for p, label in zip(paths, labels)]
        for r in runs:
            smooth(r, args.smooth)
        for r in runs:
            if r.bad_lines:
                print(f"warning: skipped {r.bad_lines} unreadable lines of {r.path}", file=sys.stderr)
        empty = [r.path for r in runs if not any("/" in k for k in r.series)]
        if len(empty) == len(runs):
            raise UserError(f"no train or eval rows yet in {', '.join(empty)} (only start-up rows)")
        for path in empty:
            print(f"warning: no train or eval rows yet in {path}", file=sys.stderr)
        for spec in args.keys or []:  # `--keys a b RUN_DIR`: argparse hands the folder to --keys
            if os.path.isdir(spec) or spec.endswith(".jsonl"):
                raise UserError(f"{spec!r} was read as a key; put run folders before --keys")
        panels = panels_for(args.keys, runs)
        draw(runs, panels, args.output)
    except UserError as e:
        exit_with(e)
    except OSError as e:  # unreadable metrics file, unwritable output
        exit_with(UserError(f"{e.filename or ''}: {e.strerror or e}"))
    print(f"wrote {args.output} ({len(runs)} run{'s' if len(runs) > 1 else ''}, {len(panels)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
