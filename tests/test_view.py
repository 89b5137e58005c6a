"""dataset/view.py: PNG and HTML pages of tiny Sudoku, Maze and ARC datasets, with fabricated predictions; the HTML
checked by parsing it and by a headless Chromium screenshot; errors without tracebacks."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import viewer as view
from dataset.puzzles import arc
from tests.conftest import build_tiny_arc, run_py

# test example -> how many of its cells the fabricated model gets wrong (the rest are right)
WRONG_CELLS = {0: 0, 1: 3}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: tiny datasets from the real builders, predictions as evaluate.py writes them


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("view")
    out = {"sudoku": root / "sudoku", "maze": root / "maze"}
    builds = {
        "sudoku": ["dataset/build_sudoku_dataset.py", "--generate", "8", "--test-size", "4", "--num-aug", "1"],
        "maze": ["dataset/build_maze_dataset.py", "--generate", "4", "--test-size", "2"],
    }
    for kind, args in builds.items():
        r = run_py([*args, "--output-dir", str(out[kind])])
        assert r.returncode == 0, r.stderr
    out["arc"] = build_tiny_arc(root, training=2, evaluation=3)  # a few real tasks
    return out


def fabricate(data: Path, run: Path, ranks: int = 1, step: int = 5) -> np.ndarray:
    """step_<step>_all_preds.<rank> files answering the test split right except WRONG_CELLS; returns the answers.
    With several ranks, rows are dealt out batch by batch as the test loader does (local batch 1)."""
    t = {
        f: np.load(data / "test" / f"all__{f}.npy")
        for f in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")
    }
    meta = json.loads((data / "test" / "dataset.json").read_text())
    vocab = meta["vocab_size"]
    answers = t["labels"].astype(np.int64)
    for row, k in WRONG_CELLS.items():
        cells = np.flatnonzero(answers[row] >= 2)[:k]  # colour / digit / non-wall cells: the ones that are drawn
        answers[row, cells] = 2 + (answers[row, cells] - 2 + 1) % (vocab - 2)
    n = len(answers)
    logits = torch.zeros(n, answers.shape[1], vocab, dtype=torch.bfloat16)
    logits.scatter_(2, torch.from_numpy(answers)[..., None], 1.0)
    example_puzzle = np.repeat(np.arange(len(t["puzzle_identifiers"])), np.diff(t["puzzle_indices"]))
    labels = torch.from_numpy(t["labels"].astype(np.int32))
    preds = {
        "inputs": torch.from_numpy(t["inputs"].astype(np.int32)),
        "labels": torch.where(labels == 0, -100, labels),
        "puzzle_identifiers": torch.from_numpy(t["puzzle_identifiers"][example_puzzle].astype(np.int32)),
        "logits": logits,
        "q_halt_logits": torch.linspace(-2, 2, n),
        "q_continue_logits": torch.zeros(n),
    }
    run.mkdir(parents=True, exist_ok=True)
    for rank in range(ranks):
        rows = torch.arange(rank, n, ranks)
        torch.save({k: v[rows].clone() for k, v in preds.items()}, run / f"step_{step}_all_preds.{rank}")
    return answers


class Page(html.parser.HTMLParser):
    """What a reader would see: tags, example titles and captions, and any script or external address."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.titles: list[str] = []
        self.captions: list[str] = []
        self.scores: list[str] = []
        self.wrong_rects = 0
        self.external: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        for v in a.values():
            if v and re.search(r"(https?:)?//|url\(", v):
                self.external.append(v)
        if tag == "rect" and (a.get("stroke") == view.WRONG or a.get("fill") == view.WRONG_FILL):
            self.wrong_rects += 1
        cls = a.get("class") or ""
        if tag == "h2":
            self._text = self.titles
        elif tag == "figcaption":
            self._text = self.captions
        elif tag == "p" and "score" in cls:
            self._text = self.scores

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)
            self._text = None


def parse(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text and "@import" not in text  # self-contained
    page = Page()
    page.feed(text)
    assert not page.external
    return page


def check_png(path: Path, printed: str) -> Image.Image:
    m = re.search(rf"wrote {re.escape(str(path))} \((\d+)x(\d+) px", printed)
    assert m, printed
    im = Image.open(path)
    im.load()  # decodes the whole file: a truncated PNG fails here
    assert im.format == "PNG" and im.size == (int(m[1]), int(m[2]))
    assert im.size[0] >= 600 and im.size[1] >= 300 and path.stat().st_size > 5_000
    assert len(im.convert("RGB").getcolors(1 << 20) or []) > 20  # drawn, not blank
    return im


# ---------------------------------------------------------------------------------------------------------------
# Rendering


@pytest.mark.parametrize("kind", ["sudoku", "maze", "arc"])
def test_png_and_html_with_predictions(
    kind: str, datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = datasets[kind]
    run = tmp_path / "run"
    answers = fabricate(data, run)
    png, page_path = tmp_path / "v.png", tmp_path / "v.html"
    argv = [str(data), "--preds", str(run / "step_5_all_preds.0"), "--png", str(png), "--html", str(page_path)]
    assert view.main(argv) == 0
    printed = capsys.readouterr().out
    check_png(png, printed)
    page = parse(page_path)

    n = len(answers)
    assert page.tags["section"] == n and page.tags["svg"] == 3 * n  # input, label, prediction per example
    assert [t.split()[0] for t in page.titles] == [f"#{i}" for i in range(n)]
    assert page.scores[0].startswith("accuracy 100.0%, exact") and "not exact" in page.scores[1]
    assert f"shown: {n - 1} of {n} exact" in printed
    labels = np.load(data / "test" / "all__labels.npy")
    acc = float((answers[1] == labels[1])[labels[1] != 0].mean())
    assert f"accuracy {100 * acc:.1f}%" in page.scores[1]
    assert page.wrong_rects == WRONG_CELLS[1]  # one outline (Sudoku: one red cell) per wrong cell
    if kind == "arc":
        names = json.loads((data / "identifiers.json").read_text())
        pids = np.load(data / "test" / "all__puzzle_identifiers.npy")
        assert page.titles[0] == f"#0 {names[pids[0]]}"
        grid = arc.crop(labels[0])
        assert f"label {grid.shape[0]}x{grid.shape[1]}" in page.captions[1]


def test_arc_train_grids_are_cut_out_where_they_sit(datasets: dict[str, Path], tmp_path: Path) -> None:
    """Train examples sit at random offsets of the canvas; the panels must show the task file's grids."""
    data = datasets["arc"]
    ds = view.open_dataset(str(data), "train")
    names = json.loads((data / "identifiers.json").read_text())
    raw = data.parent / "raw"
    seen_offset = False
    for i in range(ds.total):
        inp, lab, pid, _ = ds.row(i)
        if names[pid] != arc.parse_aug_name(names[pid])[0]:
            continue  # augmented: not in the task file as it is
        task = next(raw.glob(f"*/{names[pid]}.json"))
        pairs = json.loads(task.read_text())
        pairs = [(p["input"], p["output"]) for p in pairs["train"] + pairs["test"]]
        g_in, at = view.arc_grid(inp)
        g_lab, _ = view.arc_grid(lab)
        assert (g_in.tolist(), g_lab.tolist()) in pairs
        seen_offset |= at != (0, 0)
    assert seen_offset
    assert (
        view.main([str(data), "--split", "train", "--n", "5", "--start", "3", "--html", str(tmp_path / "t.html")]) == 0
    )
    page = parse(tmp_path / "t.html")
    assert page.tags["section"] == 5 and page.tags["svg"] == 10 and page.titles[0].startswith("#3 ")


def test_rank_files_are_matched_by_their_inputs(datasets: dict[str, Path], tmp_path: Path) -> None:
    """A 2-process evaluation interleaves rows: given all its files (or their folder) the right rows are found."""
    data = datasets["sudoku"]
    fabricate(data, tmp_path / "one")
    fabricate(data, tmp_path / "two", ranks=2)
    fabricate(data, tmp_path / "two", ranks=2, step=2)  # an older step beside it: the folder means the latest
    one = view.main(
        [str(data), "--preds", str(tmp_path / "one" / "step_5_all_preds.0"), "--html", str(tmp_path / "a.html")]
    )
    two = view.main([str(data), "--preds", str(tmp_path / "two"), "--html", str(tmp_path / "b.html")])
    assert one == two == 0
    a, b = parse(tmp_path / "a.html"), parse(tmp_path / "b.html")
    assert a.scores == b.scores and a.titles == b.titles and a.wrong_rects == b.wrong_rects == WRONG_CELLS[1]


# ---------------------------------------------------------------------------------------------------------------
# In a browser


def chromium() -> str:
    for name in ("chromium", "/usr/bin/chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed (apt-get install -y chromium): the HTML pages are only parsed")


def screenshot(page: Path, tmp_path: Path) -> Image.Image:
    shot = tmp_path / "shot.png"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,900",
        page.resolve().as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot (exit {r.returncode}): {r.stderr[-2000:]}"
    im = Image.open(shot).convert("RGB")
    assert im.size == (1200, 900)
    return im


@pytest.mark.parametrize("kind", ["sudoku", "maze", "arc"])
def test_html_renders_in_chromium(kind: str, datasets: dict[str, Path], tmp_path: Path) -> None:
    data = datasets[kind]
    chromium()  # skip before building anything
    fabricate(data, tmp_path / "run")
    page = tmp_path / "page.html"
    assert view.main([str(data), "--preds", str(tmp_path / "run"), "--html", str(page)]) == 0
    im = screenshot(page, tmp_path)
    colours = {c: n for n, c in im.getcolors(1 << 20) or []}
    assert len(colours) > 30, "screenshot looks blank"
    if kind == "sudoku":
        assert colours.get(rgb(view.WRONG_FILL), 0) > 100  # the wrong cells' red background
        assert colours.get(rgb(view.SOLVED_INK), 0) > 0
    else:
        assert colours.get(rgb(view.WRONG), 0) > 20  # the wrong cells' red outlines
        palette = view.ARC_PALETTE if kind == "arc" else view.MAZE_PALETTE
        present = [c for c, _ in palette.values() if colours.get(rgb(c), 0) > 20]
        assert len(present) >= 4, present


def test_default_page_goes_beside_the_data(datasets: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "my sudoku"  # a space: the printed path must still paste into a shell
    shutil.copytree(datasets["sudoku"], data)
    work = tmp_path / "checkout"  # the working folder: a user's checkout, which must stay clean
    work.mkdir()
    r = run_py(["dataset/view.py", str(data), "--n", "2"], cwd=work)
    assert r.returncode == 0, r.stderr
    assert list(work.iterdir()) == []
    line = r.stdout.splitlines()[0]
    assert shlex.split(line)[:2] == ["wrote", str(data / "view-test-0.html")], line
    assert len(parse(data / "view-test-0.html").titles) == 2


def test_default_page_of_a_read_only_dataset_goes_to_the_temp_folder(
    datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = datasets["sudoku"]
    before = sorted(data.iterdir())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == data else real_access(p, mode))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert view.main([str(data), "--n", "1"]) == 0
    page = tmp_path / "hrm-view" / f"{data.name}-view-test-0.html"
    assert f"wrote {page} " in capsys.readouterr().out and len(parse(page).titles) == 1
    assert sorted(data.iterdir()) == before and sorted(tmp_path.iterdir()) == [tmp_path / "hrm-view"]


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_errors_are_one_line(datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sudoku, maze = datasets["sudoku"], datasets["maze"]
    r = run_py(["dataset/view.py", str(tmp_path / "nope")])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr

    fabricate(sudoku, tmp_path / "s")
    fabricate(maze, tmp_path / "m")
    fabricate(sudoku, tmp_path / "r2", ranks=2)
    moved = tmp_path / "other"  # same shapes, other puzzles: the rows' inputs do not match
    shutil.copytree(sudoku, moved)
    inputs = np.load(moved / "test" / "all__inputs.npy")
    np.save(moved / "test" / "all__inputs.npy", inputs[::-1].copy())
    cases = [
        ([str(sudoku), "--n", "0"], "--n 0"),
        ([str(sudoku), "--n", "1000"], "--n 1000"),
        ([str(sudoku), "--start", "99"], "has 4 examples"),
        ([str(sudoku), "--split", "train", "--preds", str(tmp_path / "s")], "test split"),
        ([str(sudoku), "--preds", str(tmp_path / "m" / "step_5_all_preds.0")], "do not fit"),  # maze on sudoku
        ([str(sudoku), "--preds", str(tmp_path / "r2" / "step_5_all_preds.0")], "one of 2 rank files"),
        ([str(sudoku), "--preds", str(tmp_path / "nothing")], "no such file"),
        ([str(moved), "--preds", str(tmp_path / "s")], "is not the input of test example 0"),
        ([str(maze), "--preds", str(tmp_path / "s"), str(tmp_path / "m")], "several evaluations"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            view.main([*argv, "--html", str(tmp_path / "x.html")])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith("error: ") and message in err, (argv, err)
    truncated = torch.load(tmp_path / "s" / "step_5_all_preds.0")
    torch.save({k: v[:3] for k, v in truncated.items()}, tmp_path / "short")
    with pytest.raises(SystemExit):
        view.main([str(sudoku), "--preds", str(tmp_path / "short")])
    assert "holds 3 rows for 4 test examples" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
