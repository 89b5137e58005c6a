"""The speedrun's figures of several runs, ours and the peers' (bench/peers.py), as markdown table rows: time from the
command's start to the first evaluation at or above each test exact accuracy threshold, the best accuracy within
the time limit (25 min) and the accuracy of the last evaluation inside it.

    python bench/records_table.py checkpoints/<project>/<run> results/peers/hrm-original [label=path ...]

A path is a run folder (metrics.jsonl inside; all_config.yaml or the peers' run.json name its recipe) or a
metrics.jsonl file (.gz too). The accuracy of an evaluation: the mean over its test sets of `<set>/exact_accuracy`
(the paper's protocol; the EMA weights when the run had ema=true), as in the run's own summary (train/records.py);
`--raw` reads the raw weights' `raw/<set>/exact_accuracy` of an EMA run instead (runs without EMA: the same keys). Times: `elapsed_s` of the row.
Runs on data with a val/ split also log `val/<set>/exact_accuracy`: then the times and the best are chosen on val
and report test's accuracy at that eval, saying so ("on val", "val x%"); without one they are chosen on test.
A last column gives the best test-time-augmentation score inside the limit (`<set>/tta_exact_accuracy`, logged by
runs with `eval_tta=K`): voting over transformed copies is not the paper's protocol, so it never sets the times.
A column gives the hard band's test exact accuracy (`<set>/hard_exact_accuracy`, dataset/bands.py) at the eval
chosen as best within the limit, "n/a (no band)" for data without one. Below the table, runs of one recipe (the
same config but for seed and names, on the same data: `recipe_key`) are one row each, with the mean and min-max
over their runs of that best, its hard band and each time to a threshold (SPEEDRUN.md's spread rule); printed
when some recipe has two runs or more.
`--speed` adds the training steps per second between evaluations (the slowest and fastest stretch; each stretch
from 10 steps after an eval, the first from step 100, past the compile, to the last step logged before the next).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.records import clock  # noqa: E402
from train.tracking import metrics_file, read_metrics  # noqa: E402
from utils.errors import UserError, exit_with  # noqa: E402

THRESHOLDS = (0.2, 0.4, 0.55, 0.87)  # the marks: 55% (HRM paper), 87% (TRM's published figure)


@dataclass
class Eval:
    seconds: float
    step: int
    exact: float
    voted: float | None = None  # eval_tta's whole-grid vote over K transformed copies (mean over the test sets)
    copies: int = 0
    val: float | None = None  # val/'s exact accuracy (runs on data with a val/ split): what evals are chosen on
    hard: float | None = None  # test's exact accuracy on the hard band (dataset/bands.py); None: the data has none

    @property
    def chosen_on(self) -> float:
        """The accuracy that picks this eval (the best, the first above a threshold): val's where the run had
        one, else test's, the paper's protocol, which picks on the figure it reports."""
        return self.val if self.val is not None else self.exact


def read_evals(path: Path, raw: bool = False) -> list[Eval]:
    """The evaluations of one metrics file, in order, with their wall time."""
    f = metrics_file(str(path))
    out = []
    rows, _ = read_metrics(f)  # a line cut short when the run was killed is left out
    for n, row in rows:
        where = f"{f}:{n}"
        exact = set_accuracies(row, "raw/", where) if raw else []
        exact = exact or set_accuracies(row, "", where)  # without EMA the main keys are the raw weights'
        if not exact:
            vote = voted_of(row, where)
            if vote is not None and out and out[-1].step == row["step"]:  # the vote's own row, after its eval's
                out[-1].voted, out[-1].copies = vote
            continue
        if "elapsed_s" not in row:
            raise UserError(
                f"{where}: an evaluation without elapsed_s (wall time from the command's start); "
                "older runs lack it: rerun with this version, the peers through bench/peers.py"
            )
        if not all(math.isfinite(x) for x in exact):
            continue  # a diverged evaluation (NaN/inf) solved nothing: it neither sets a time nor a best
        mean_voted, copies = voted_of(row, where) or (None, 0)  # runs before 2026-12-07 logged it in the eval's row
        seconds = number(row["elapsed_s"], "elapsed_s", where)
        val = set_accuracies(row, "val/", where)
        mean_val = sum(val) / len(val) if val and all(math.isfinite(v) for v in val) else None
        hard = (set_accuracies(row, "raw/", where, HARD) if raw else []) or set_accuracies(row, "", where, HARD)
        mean_hard = sum(hard) / len(hard) if hard and all(math.isfinite(h) for h in hard) else None
        out.append(Eval(seconds, row["step"], sum(exact) / len(exact), mean_voted, copies, mean_val, mean_hard))
    return out


def voted_of(row: dict, where: str) -> tuple[float | None, int] | None:
    """eval_tta's vote in one metrics row: (mean over the test sets, copies), None if the row has none."""
    voted = [number(v, k, where) for k, v in row.items() if k.endswith("/tta_exact_accuracy") and k.count("/") == 1]
    if not voted:
        return None
    copies = max((int(k.split("/k")[1].split("/")[0]) for k in row if "/tta/k" in k), default=0)
    return (sum(voted) / len(voted) if all(math.isfinite(v) for v in voted) else None), copies


def number(value: object, key: str, where: str) -> float:
    """A metric's value as a float, or one line naming the file, line and key (a hand-edited or foreign file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{where}: {key} is {json.dumps(value)[:40]}, not a number; fix or remove that line")
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{where}: {key} is {value[:40]!r}, not a number; fix or remove that line") from None


def speeds(path: Path) -> list[float]:
    """Training steps per second of each stretch between evaluations of one metrics file (wall clock: `time`,
    or `elapsed_s` where a row has no `time`)."""
    rows, _ = read_metrics(metrics_file(str(path)))
    train: list[tuple[int, float]] = []
    stretches: list[list[tuple[int, float]]] = [train]
    for _, row in rows:
        if any(is_eval_key(k, "") or is_eval_key(k, "raw/") for k in row):
            train = []
            stretches.append(train)
        elif any(k.startswith("train/") for k in row) and ("time" in row or "elapsed_s" in row):
            key = "time" if "time" in row else "elapsed_s"
            train.append((row["step"], number(row[key], key, f"{path} (step {row['step']})")))
    out = []
    for i, stretch in enumerate(stretches):
        start = 100 if i == 0 else stretch[0][0] + 10 if stretch else 0
        kept = [(n, t) for n, t in stretch if n >= start]
        if len(kept) >= 2 and kept[-1][0] - kept[0][0] >= 100 and kept[-1][1] > kept[0][1]:
            out.append((kept[-1][0] - kept[0][0]) / (kept[-1][1] - kept[0][1]))
    return out


def speed_cell(rates: list[float]) -> str:
    if not rates:
        return "-"
    lo, hi = min(rates), max(rates)
    return f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}"


EXACT, HARD = "exact_accuracy", "hard_exact_accuracy"  # the metric of the whole set, and of its hard band


def is_eval_key(k: str, prefix: str, metric: str = EXACT) -> bool:
    """`<prefix><set>/<metric>` of a test set (train/ and the other prefix left out)."""
    rest = k[len(prefix) :]
    return (
        k.startswith(prefix)
        and k.endswith("/" + metric)
        and rest.count("/") == 1
        and not rest.startswith(("train/", "raw/", "val/"))
    )


def set_accuracies(row: dict, prefix: str, where: str = "a metrics row", metric: str = EXACT) -> list[float]:
    """`<prefix><set>/<metric>` of each test set in one metrics row, as numbers."""
    return [number(v, k, where) for k, v in row.items() if is_eval_key(k, prefix, metric)]


def run_info(path: Path) -> tuple[str, dict]:
    """What the run's side file says: ("peer", run.json) for bench/peers.py's runs, ("ours", all_config.yaml), or
    ("", {}) if there is none. A metrics file kept apart from its run (results/: `<run>.metrics.jsonl.gz`) has its
    `<run>.all_config.yaml`."""
    folder = path if path.is_dir() else path.parent
    if (folder / "run.json").is_file():
        try:
            info = json.loads((folder / "run.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            info = None
        if not isinstance(info, dict):
            raise UserError(f"{folder / 'run.json'} is not a JSON object (bench/peers.py writes one); fix or remove it")
        return "peer", info
    run, sep, _ = path.name.partition(".metrics.jsonl")
    for config in ([folder / f"{run}.all_config.yaml"] if sep and not path.is_dir() else []) + [
        folder / "all_config.yaml"
    ]:
        if config.is_file():
            import yaml

            try:
                cfg = yaml.safe_load(config.read_text()) or {}
            except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
                raise UserError(f"{config} is not a plain YAML config ({type(e).__name__}); fix or remove it") from None
            return "ours", cfg if isinstance(cfg, dict) else {}
    return "", {}


def recipe_of(path: Path) -> str:
    """The recipe the run started from: all_config.yaml (ours) or run.json (bench/peers.py); '' if unknown."""
    return str(run_info(path)[1].get("recipe") or "")


# Keys that name, file or seed a run, not what it computes: runs that differ only in these are one recipe's runs
BOOKKEEPING = (
    "seed", "run_name", "project_name", "checkpoint_path", "resume", "wandb_mode", "eval_save_outputs",
    "checkpoint_interval", "checkpoint_minutes", "keep_last", "save_error",
)  # fmt: skip


# Settings read only when their switch is on (a default that changed since an old run does not split its group)
SWITCHED = {"muon": ("muon_lr", "muon_momentum", "muon_weight_decay"), "ema": ("ema_rate", "ema_eval_raw")}


def recipe_key(label: str, path: Path) -> tuple[str, str, dict, object]:
    """(group key, recipe name, the config that makes the group, seed) of one run. Ours: every config key but
    BOOKKEEPING, the defaults filled in (a config written before a key existed has that key's default), so the
    same recipe name with another key changed (a lever) is another group. A peer: its name, recipe and command
    less its seed. A run without a side file is a group of its own."""
    kind, info = run_info(path)
    if kind == "ours":
        from train.config import defaults

        full = defaults() | info
        arch = full.pop("arch", None)
        cfg = {k: v for k, v in full.items() if k not in BOOKKEEPING}
        cfg |= {f"arch.{k}": v for k, v in arch.items()} if isinstance(arch, dict) else {"arch": arch}
        for switch, keys in SWITCHED.items():  # an option that is off: its settings change nothing
            if not cfg.get(switch):
                cfg = {k: v for k, v in cfg.items() if k not in keys}
        return json.dumps(cfg, sort_keys=True, default=str), str(info.get("recipe") or ""), cfg, info.get("seed")
    if kind == "peer":
        command = [a for a in info.get("command") or [] if not str(a).startswith(("seed=", "+seed="))]
        cfg = {"peer": info.get("peer"), "recipe": info.get("recipe"), "command": command}
        return json.dumps(cfg, sort_keys=True, default=str), str(info.get("recipe") or ""), cfg, None
    return json.dumps({"run": str(path.resolve())}), "", {}, None


def first_at(evals: list[Eval], threshold: float, limit_s: float | None) -> Eval | None:
    return next((e for e in evals if e.chosen_on >= threshold and (limit_s is None or e.seconds <= limit_s)), None)


def cell(e: Eval | None, with_accuracy: bool = False) -> str:
    """An eval's time and step; with_accuracy: test's exact accuracy first. Chosen on val, val's is named."""
    if e is None:
        return "-"
    acc = f"{e.exact:.1%} at " if with_accuracy else ""
    val = "" if e.val is None else f"; val {e.val:.1%}" if with_accuracy else ", on val"
    return f"{acc}{clock(e.seconds)} (step {e.step:,}{val})"


def hard_cell(e: Eval | None) -> str:
    """The hard band's test exact accuracy at an eval (the one chosen as best: never chosen on the band itself)."""
    if e is None:
        return "-"
    return "n/a (no band)" if e.hard is None else f"{e.hard:.1%}"


def row(label: str, recipe: str, evals: list[Eval], minutes: float, thresholds: tuple[float, ...]) -> list[str]:
    limit = minutes * 60
    inside = [e for e in evals if e.seconds <= limit]
    best = max(inside, key=lambda e: e.chosen_on, default=None)  # the earliest of equal bests
    last = inside[-1] if inside else None
    # no evaluation after the limit: the run may have ended (or been stopped) before it
    note = "" if len(inside) < len(evals) else ", the run's last eval"
    voted = max((e for e in inside if e.voted is not None), key=lambda e: e.voted or 0.0, default=None)
    return [
        label,
        recipe or "-",
        *(cell(first_at(evals, t, limit)) for t in thresholds),
        cell(best, with_accuracy=True),
        hard_cell(best),
        (cell(last, with_accuracy=True) + note) if last else "-",
        f"{voted.voted:.1%} with {voted.copies} copies at {clock(voted.seconds)} (step {voted.step:,})"
        if voted
        else "-",
    ]


def table(
    runs: list[tuple[str, Path]], minutes: float, thresholds: tuple[float, ...], raw: bool, speed: bool = False
) -> str:
    head = [
        "run",
        "recipe",
        *(f"time to {t:.0%}" for t in thresholds),
        f"best within {minutes:g} min",
        f"hard band within {minutes:g} min (at the best)",
        f"at {minutes:g} min (last eval inside)",
        f"voted (tta) within {minutes:g} min",
    ] + (["steps/s between evals"] if speed else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, path in runs:
        cells = row(label, recipe_of(path), read_evals(path, raw), minutes, thresholds)
        lines.append("| " + " | ".join(cells + ([speed_cell(speeds(path))] if speed else [])) + " |")
    return "\n".join(lines)


def spread(values: list[float], fmt) -> str:
    """mean (min-max) of one figure over a group's runs."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ({fmt(min(values))}-{fmt(max(values))})"


def pct(x: float) -> str:
    return f"{x:.1%}"


def groups_table(runs: list[tuple[str, Path]], minutes: float, thresholds: tuple[float, ...], raw: bool) -> str | None:
    """Runs of one recipe (the same config but for BOOKKEEPING, seed included, so the same data too; one --minutes
    for all) as one row: the mean and the min-max over its runs of the best within the limit, the hard band
    there, and each time to a threshold (over the runs that reached it). None when no recipe has two runs."""
    grouped: dict[str, list[tuple[str, Path, object]]] = {}
    info: dict[str, tuple[str, dict]] = {}
    for label, path in runs:
        key, recipe, cfg, seed = recipe_key(label, path)
        grouped.setdefault(key, []).append((label, path, seed))
        info[key] = (recipe, cfg)
    if all(len(members) < 2 for members in grouped.values()):
        return None
    head = [
        "recipe",
        "data",
        "runs (seeds)",
        f"best within {minutes:g} min: mean (min-max)",
        "hard band there: mean (min-max)",
        *(f"time to {t:.0%}: mean (min-max), reached" for t in thresholds),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    limit = minutes * 60
    for key, members in grouped.items():
        recipe, cfg = info[key]
        # keys where this group differs from another group of the same recipe name: what tells them apart
        others = [info[k][1] for k in grouped if k != key and info[k][0] == recipe]
        differ = sorted({k for o in others for k in cfg if cfg.get(k) != o.get(k)})
        name = (recipe or "-") + "".join(f", {k}={json.dumps(cfg.get(k), default=str)}" for k in differ)
        bests, hards, times = [], [], {t: [] for t in thresholds}
        for _, path, _ in members:
            evals = read_evals(path, raw)
            best = max((e for e in evals if e.seconds <= limit), key=lambda e: e.chosen_on, default=None)
            if best is not None:
                bests.append(best.exact)
                if best.hard is not None:
                    hards.append(best.hard)
            for t in thresholds:
                if (e := first_at(evals, t, limit)) is not None:
                    times[t].append(e.seconds)
        seeds = ", ".join("?" if seed is None else str(seed) for _, _, seed in members)
        n = len(members)
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(cfg.get("data_path") or "-"),
                    f"{n} ({seeds})",
                    spread(bests, pct),
                    spread(hards, pct) if hards else "n/a (no band)",
                    *(f"{spread(times[t], clock)}, {len(times[t])} of {n}" for t in thresholds),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def parse_run(arg: str) -> tuple[str, Path]:
    """`label=path` or `path` (label: the run folder's name; for a file, its name less .metrics.jsonl(.gz), or its
    folder's name for a plain metrics.jsonl)."""
    label, sep, rest = arg.partition("=")
    if sep and not Path(arg).exists():
        return label, Path(rest)
    p = Path(arg)
    if p.is_dir():
        return p.resolve().name, p
    stem = p.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix("metrics").rstrip(".")
    return stem or p.resolve().parent.name, p


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="[LABEL=]PATH")
    p.add_argument("--minutes", type=float, default=25.0, help="the time limit (default 25)")
    p.add_argument("--thresholds", default=",".join(f"{t:g}" for t in THRESHOLDS), help="e.g. 0.2,0.4,0.55,0.87")
    p.add_argument("--raw", action="store_true", help="an EMA run's raw weights (raw/<set>/exact_accuracy)")
    p.add_argument("--speed", action="store_true", help="also the training steps per second between evals")
    a = p.parse_args(argv)
    try:
        try:
            thresholds = tuple(float(t) for t in a.thresholds.split(","))
            if not all(0 < t <= 1 for t in thresholds):  # also false for NaN
                raise ValueError
        except ValueError:
            raise UserError(
                f"--thresholds {a.thresholds!r}: give fractions in (0, 1] separated by commas, e.g. 0.2,0.55"
            ) from None
        if not (math.isfinite(a.minutes) and a.minutes > 0):
            raise UserError(f"--minutes must be a positive number of minutes, got {a.minutes:g}")
        runs = [parse_run(r) for r in a.runs]
        print(table(runs, a.minutes, thresholds, a.raw, a.speed))
        over_seeds = groups_table(runs, a.minutes, thresholds, a.raw)
        if over_seeds is not None:
            print(
                f"\nOver seeds: runs of one recipe (the same config but for its seed and names) as one row\n\n{over_seeds}"
            )
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
