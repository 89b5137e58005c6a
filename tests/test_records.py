"""train/records.py: time to each test exact accuracy threshold, across a resume too."""

from __future__ import annotations

import pytest

from train import records


def test_first_crossings_best_and_resume(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    t = records.TimeToAccuracy(start=1000.0)
    now[0] = 1060.0
    assert t.update(0.05, step=100) == []
    now[0] = 1130.0
    lines = t.update(0.56, step=200)  # crosses 10% .. 55% at once
    assert lines[0] == "test exact accuracy >= 10% first reached at 2m10s (step 200)"
    assert lines[-1].startswith("test exact accuracy >= 55% first reached at 2m10s") and len(lines) == 6
    now[0] = 1200.0
    assert t.update(0.50, step=300) == []  # a drop changes nothing already reached
    assert t.best == (0.56, 130.0, 200)

    saved = t.state_dict()  # a checkpoint at 3m20s; the next job starts at a fresh clock
    now[0] = 5000.0
    monkeypatch.setattr(records, "PROCESS_START", 5000.0)
    r = records.TimeToAccuracy.resumed(saved)
    r.start = 5000.0
    now[0] = 5100.0
    assert r.update(0.61, step=400) == ["test exact accuracy >= 60% first reached at 5m00s (step 400)"]
    s = r.summary()
    assert s.startswith("time to test exact accuracy: 10% 2m10s (step 200)") and "60% 5m00s (step 400)" in s
    assert s.endswith("best 61.0% at 5m00s (step 400)")
    assert records.clock(3725) == "1h02m05s"


@pytest.mark.parametrize("saved", [None, {}])
def test_fresh_run_has_no_offset(saved) -> None:
    t = records.TimeToAccuracy.resumed(saved)
    assert t.offset == 0 and t.reached == {} and t.summary() == "time to test exact accuracy: no threshold reached"


# ---------------------------------------------------------------------------------------------- bench/records_table.py
def table_maker():
    from tests.conftest import REPO, load_script

    return load_script(REPO / "bench" / "records_table.py")


def write_rows(path, rows: list[dict], gz: bool = False) -> None:
    import gzip
    import json

    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text + '{"step": 9, "cut sh')  # a last line cut short by a kill


def our_eval(step: int, seconds: float, exact: float, raw: float) -> dict:
    """An eval row of an EMA run of ours: the EMA's accuracy, the halting-aware one, the raw weights' one."""
    return {"step": step, "time": 1.0, "all/exact_accuracy": exact, "all/exact_accuracy_at_halt": 0.99,
            "raw/all/exact_accuracy": raw, "elapsed_s": seconds}  # fmt: skip


def test_table_rows_of_ours_and_a_peer(tmp_path, capsys) -> None:
    rt = table_maker()
    ours = tmp_path / "ours"
    rows = [{"step": 0, "time": 0.0, "num_params": 5.0}, {"step": 1, "time": 60.0, "train/exact_accuracy": 0.99}]
    rows += [our_eval(1000, 330.0, 0.0, 0.0), our_eval(2000, 480.0, 0.56, 0.60), our_eval(3000, 700.0, 0.50, 0.62)]
    rows += [our_eval(4000, 1490.0, 0.70, 0.70), our_eval(5000, 1600.0, 0.95, 0.95)]  # the last one after 25 min
    rows[-2] |= {"all/tta_exact_accuracy": 0.9, "all/tta/k1/votes": 0.7, "all/tta/k16/votes": 0.88}  # eval_tta=16
    rows[-1] |= {"all/tta_exact_accuracy": 0.99, "all/tta/k16/votes": 0.99}  # after the limit: not counted
    for r, hard in zip(rows[2:], (0.0, 0.3, 0.2, 0.4, 0.9)):  # the hard band's, EMA and raw weights
        r |= {"all/hard_exact_accuracy": hard, "raw/all/hard_exact_accuracy": hard + 0.05}
    write_rows(ours / "metrics.jsonl", rows)
    (ours / "all_config.yaml").write_text("recipe: trm-sudoku\nlr: 0.0001\n")
    peer = tmp_path / "peers" / "hrm-original"
    peer.mkdir(parents=True)
    (peer / "run.json").write_text('{"peer": "hrm-original", "recipe": "paper-sudoku"}')
    rows = [{"step": 5, "elapsed_s": 50.0, "train/exact_accuracy": 1.0}]
    rows += [{"step": 10, "elapsed_s": 100.0, "a/exact_accuracy": 0.15, "b/exact_accuracy": 0.35}]
    rows += [{"step": 20, "elapsed_s": 900.0, "a/exact_accuracy": 0.4, "b/exact_accuracy": 0.6}]
    write_rows(peer / "metrics.jsonl.gz", rows, gz=True)

    rt.main([str(ours), f"orig={peer}"])
    head, _, a, b = capsys.readouterr().out.strip().splitlines()
    assert head == (
        "| run | recipe | time to 20% | time to 40% | time to 55% | time to 87% | best within 25 min "
        "| hard band within 25 min (at the best) | at 25 min (last eval inside) | voted (tta) within 25 min |"
    )
    # train rows never count; the eval after 25 min counts for nothing (not even 87%)
    assert a == (
        "| ours | trm-sudoku | 8m00s (step 2,000) | 8m00s (step 2,000) | 8m00s (step 2,000) | - "
        "| 70.0% at 24m50s (step 4,000) | 40.0% | 70.0% at 24m50s (step 4,000) | 90.0% with 16 copies at 24m50s (step 4,000) |"
    )
    # the mean over the test sets; no eval after the limit, so the last one may not be the accuracy at 25 min
    assert b == (
        "| orig | paper-sudoku | 1m40s (step 10) | 15m00s (step 20) | - | - | 50.0% at 15m00s (step 20) | n/a (no band) "
        "| 50.0% at 15m00s (step 20), the run's last eval | - |"
    )
    rt.main(["--raw", "--minutes", "12", "--thresholds", "0.6", str(ours / "metrics.jsonl")])
    row = capsys.readouterr().out.strip().splitlines()[2]
    assert (
        row
        == "| ours | trm-sudoku | 8m00s (step 2,000) | 62.0% at 11m40s (step 3,000) | 25.0% | 62.0% at 11m40s (step 3,000) | - |"
    )


def test_a_kept_metrics_file_takes_its_recipe_from_the_config_beside_it(tmp_path, capsys) -> None:
    # results/<dir>/<run>.metrics.jsonl.gz with <run>.all_config.yaml: runs kept side by side in one folder
    rt = table_maker()
    for run, recipe in (("a", "speedrun-hrm"), ("b", "paper-sudoku")):
        write_rows(tmp_path / f"{run}.metrics.jsonl.gz", [our_eval(100, 60.0, 0.3, 0.3)], gz=True)
        (tmp_path / f"{run}.all_config.yaml").write_text(f"recipe: {recipe}\n")
    write_rows(tmp_path / "c.metrics.jsonl", [our_eval(100, 60.0, 0.3, 0.3)])  # no config kept with it
    rt.main([str(tmp_path / n) for n in ("a.metrics.jsonl.gz", "b.metrics.jsonl.gz", "c.metrics.jsonl")])
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [["| a", "speedrun-hrm"], ["| b", "paper-sudoku"], ["| c", "-"]]


def test_speed_column_gives_the_steps_per_second_between_evals(tmp_path, capsys) -> None:
    rt = table_maker()
    # 10 steps/s up to the eval at step 500, 20 steps/s after it; left out: the 30 s compile before step 2 and
    # the eval's 5 s pause that the first step logged after it (501) still shows
    rows = [{"step": 1, "time": 5.0, "train/lm_loss": 1.0}]
    rows += [{"step": n, "time": 30.0 + n / 10, "train/lm_loss": 1.0} for n in range(2, 501)]
    rows += [our_eval(500, 85.0, 0.1, 0.1), {"step": 501, "time": 85.0, "train/lm_loss": 1.0}]
    rows += [{"step": n, "time": 90.0 + (n - 501) / 20, "train/lm_loss": 1.0} for n in range(502, 1001)]
    write_rows(tmp_path / "run.metrics.jsonl", rows)
    write_rows(tmp_path / "evals-only.metrics.jsonl", [our_eval(500, 85.0, 0.1, 0.1)])
    rt.main(["--speed", str(tmp_path / "run.metrics.jsonl"), str(tmp_path / "evals-only.metrics.jsonl")])
    head, _, run, evals_only = capsys.readouterr().out.strip().splitlines()
    assert head.endswith("| voted (tta) within 25 min | steps/s between evals |")
    assert run.endswith("| - | 10.0-20.0 |") and evals_only.endswith("| - | - |")
    rt.main([str(tmp_path / "run.metrics.jsonl")])  # without --speed the table is as before
    assert "steps/s" not in capsys.readouterr().out


def test_table_errors_are_one_line(tmp_path, capsys) -> None:
    rt = table_maker()
    old = tmp_path / "old.metrics.jsonl"
    write_rows(old, [{"step": 2604, "time": 295.0, "all/exact_accuracy": 0.01}])  # written before elapsed_s
    cases = [
        ([str(old)], f"{old}:1: an evaluation without elapsed_s"),
        ([str(tmp_path / "missing")], "does not exist"),
        (["--thresholds", "half", str(old)], "--thresholds 'half'"),
    ]
    for args, expect in cases:
        with pytest.raises(SystemExit) as e:
            rt.main(args)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and expect in err, err


@pytest.mark.bad_input
@pytest.mark.parametrize("key", ["all/exact_accuracy", "elapsed_s", "all/tta_exact_accuracy"])
@pytest.mark.parametrize("value", ["high", None, [0.5], {"v": 1}, True])
def test_a_metric_that_is_not_a_number_is_one_line(tmp_path, capsys, key: str, value) -> None:
    rt = table_maker()
    row = {"step": 10, "time": 1.0, "all/exact_accuracy": 0.5, "elapsed_s": 60.0, "all/tta_exact_accuracy": 0.6}
    write_rows(tmp_path / "r" / "metrics.jsonl", [row | {key: value}])
    with pytest.raises(SystemExit) as e:
        rt.main([str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"metrics.jsonl:1: {key} is" in err and "not a number" in err


@pytest.mark.crafted
@pytest.mark.parametrize(
    "name,text,expect",
    [
        ("run.json", "{not json", "not a JSON object"),
        ("run.json", "[1, 2]", "not a JSON object"),
        ("all_config.yaml", "recipe: [unclosed", "not a plain YAML config"),
        ("all_config.yaml", "recipe: !!python/object/apply:os.system ['true']", "not a plain YAML config"),
    ],
)
def test_a_broken_side_file_is_one_line(tmp_path, capsys, name: str, text: str, expect: str) -> None:
    rt = table_maker()
    write_rows(tmp_path / "r" / "metrics.jsonl", [{"step": 10, "all/exact_accuracy": 0.5, "elapsed_s": 60.0}])
    (tmp_path / "r" / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        rt.main([str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and expect in err, err


def test_a_diverged_eval_and_a_deeply_nested_line_set_nothing(tmp_path, capsys) -> None:
    rt = table_maker()
    f = tmp_path / "r" / "metrics.jsonl"
    write_rows(f, [{"step": 10, "all/exact_accuracy": float("nan"), "elapsed_s": 60.0}])
    with open(f, "a") as out:  # replace the cut-short last line by a line nested far deeper than json allows
        out.write("\n" + "[" * 100_000 + "]" * 100_000 + "\n")
        out.write('{"step": 20, "all/exact_accuracy": 0.25, "elapsed_s": 120.0}\n')
    rt.main(["--minutes", "8", str(tmp_path / "r")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "nan" not in line and "25.0% at 2m00s (step 20)" in line


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "args", [["--minutes", "nan"], ["--minutes", "inf"], ["--minutes", "0"], ["--thresholds", "nan"]]
)
def test_limits_that_are_not_positive_numbers_are_refused(tmp_path, capsys, args: list[str]) -> None:
    rt = table_maker()
    write_rows(tmp_path / "r" / "metrics.jsonl", [{"step": 10, "all/exact_accuracy": 0.5, "elapsed_s": 60.0}])
    with pytest.raises(SystemExit) as e:
        rt.main([*args, str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and args[0] in err, err


def test_runs_with_val_are_chosen_on_val_and_report_test(tmp_path, capsys) -> None:
    rt = table_maker()
    rows = [
        {"step": 10, "all/exact_accuracy": 0.30, "val/all/exact_accuracy": 0.10, "elapsed_s": 60.0},
        {"step": 20, "all/exact_accuracy": 0.22, "val/all/exact_accuracy": 0.25, "elapsed_s": 120.0},
        {"step": 30, "all/exact_accuracy": 0.26, "val/all/exact_accuracy": 0.21, "elapsed_s": 180.0},
    ]
    write_rows(tmp_path / "r" / "metrics.jsonl", rows)
    rt.main(["--minutes", "8", "--thresholds", "0.2", str(tmp_path / "r")])
    cells = [c.strip() for c in capsys.readouterr().out.strip().splitlines()[-1].split("|")]
    # time to 20%: the first eval whose val passed it (step 20), not test's (step 10); the best: val's best eval,
    # reporting test's 22.0% there, not test's own maximum (30.0% at step 10)
    assert cells[3] == "2m00s (step 20, on val)"
    assert cells[4] == "22.0% at 2m00s (step 20; val 25.0%)"


def test_runs_of_one_recipe_are_one_row_over_seeds(tmp_path, capsys) -> None:
    """Same config but seed and names (the defaults filled in: an old file lacking a key is the same recipe), same
    data: one row with the mean and min-max; a changed key, other data or another recipe is a row of its own."""
    rt = table_maker()
    runs = {  # name: (extra config, (seconds, exact, hard) of each eval)
        "s0": ("seed: 0\nrun_name: s0\nlr: 0.0001\n", [(100.0, 0.1, 0.0), (400.0, 0.5, 0.2)]),
        "s1": ("seed: 1\nrun_name: s1\nlr: 0.0001\ncheckpoint_path: x/s1\n", [(200.0, 0.3, 0.1), (500.0, 0.2, 0.1)]),
        "s2": ("seed: 2\nrun_name: s2\n", [(300.0, 0.4, 0.3), (2000.0, 0.9, 0.9)]),  # lr: the default, 1e-4
        "lever": ("seed: 0\nlr: 0.0003\n", [(100.0, 0.8, 0.5)]),  # one key changed: a lever, not a seed
        "other-data": ("seed: 0\ndata_path: data/elsewhere\n", [(100.0, 0.6, 0.5)]),
        "paper": ("seed: 0\nrecipe: paper-sudoku\n", [(100.0, 0.7, 0.6)]),
    }
    for name, (extra, evals) in runs.items():
        rows = [{"step": 100 * (i + 1), "elapsed_s": t, "all/exact_accuracy": e, "all/hard_exact_accuracy": h}
                for i, (t, e, h) in enumerate(evals)]  # fmt: skip
        write_rows(tmp_path / name / "metrics.jsonl", rows)
        recipe = "" if "recipe:" in extra else "recipe: speedrun-hrm\n"
        data = "" if "data_path" in extra else "data_path: data/mix\n"
        (tmp_path / name / "all_config.yaml").write_text(recipe + data + extra)
    rt.main(["--minutes", "10", "--thresholds", "0.3,0.45", *(str(tmp_path / n) for n in runs)])
    out = capsys.readouterr().out
    assert "Over seeds" in out
    rows = [line for line in out.split("Over seeds")[1].splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| recipe | data | runs (seeds) | best within 10 min: mean (min-max) |")
    by_name = {r.split(" | ")[0].removeprefix("| "): r.split(" | ")[1:] for r in rows[2:]}
    assert len(by_name) == 4  # s0-s2 together; lever, other data, the paper recipe each alone
    # best within 10 min: 0.5, 0.3, 0.4 (s2's 90% came after the limit); the hard band at those evals 0.2, 0.1, 0.3;
    # 30% reached by all three (at 400, 200, 300 s), 45% by s0 alone (400 s)
    assert by_name['speedrun-hrm, data_path="data/mix", lr=0.0001'] == [
        "data/mix", "3 (0, 1, 2)", "40.0% (30.0%-50.0%)", "20.0% (10.0%-30.0%)",
        "5m00s (3m20s-6m40s), 3 of 3", "6m40s, 1 of 3 |",
    ]  # fmt: skip
    lever = by_name['speedrun-hrm, data_path="data/mix", lr=0.0003']
    assert lever[:3] == ["data/mix", "1 (0)", "80.0%"]
    assert by_name['speedrun-hrm, data_path="data/elsewhere", lr=0.0001'][:3] == ["data/elsewhere", "1 (0)", "60.0%"]
    assert by_name["paper-sudoku"][:4] == ["data/mix", "1 (0)", "70.0%", "60.0%"]


def test_no_row_over_seeds_without_two_runs_of_one_recipe(tmp_path, capsys) -> None:
    rt = table_maker()
    for name, lr in (("a", "0.0001"), ("b", "0.0003")):
        write_rows(tmp_path / name / "metrics.jsonl", [our_eval(100, 60.0, 0.3, 0.3)])
        (tmp_path / name / "all_config.yaml").write_text(f"recipe: speedrun-hrm\nlr: {lr}\nseed: 0\n")
    rt.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert "Over seeds" not in capsys.readouterr().out
