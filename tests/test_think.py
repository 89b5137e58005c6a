"""Watch it think (dataset/viewer/think.py, predict.py picture=): one panel a segment in the PNG strip, one frame a
segment in the GIF, one figure a segment in the HTML page; the grids drawn are the API's Result.segments and the
halting mark sits where says_halt first holds; bad picture= paths are refused before any work."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import hrm
from dataset.viewer import think
from tests.conftest import TINY_ARCH, run_py
from utils.errors import UserError

STEPS = 5  # segments run: more than the tiny model's halt_max_steps (2), thinking on past training's limit


@pytest.fixture(scope="module")
def run(tiny_sudoku: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("think")
    data, out = tmp / "data", tmp / "run"
    shutil.copytree(tiny_sudoku, data)
    r = run_py(["pretrain.py", f"data_path={data}", f"checkpoint_path={out}", "epochs=2", "eval_interval=2",
                "global_batch_size=64", *TINY_ARCH])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def puzzle_text(data: Path, i: int) -> str:
    grid = np.load(data / "test" / "all__inputs.npy")[i].astype(int) - 1
    return "".join("." if v == 0 else str(v) for v in grid)


def opinionated(solver: hrm.Solver, texts: list[str]) -> hrm.Solver:
    """The tiny run's Q head barely changes from its start (never halting): give it opinions, as conftest.build
    does. q_continue is made 0, so says_halt is q_halt > 0; q_halt's bias is set so that about one segment in
    five says halt: puzzles then halt at different segments, some not at all."""
    torch.manual_seed(0)
    with torch.no_grad():
        q = solver.model.model.inner.q_head
        q.weight.normal_(0, 0.5)
        q.weight[1] = 0
        q.bias.zero_()
        p = np.concatenate(solver.solve(texts, max_steps=STEPS).segment_confidence).astype(np.float64)
        logits = np.log(p / (1 - p))
        q.bias[0] = -float(np.quantile(logits, 0.8))
    return solver


def html_figures(page: str) -> list[tuple[str, int, list]]:
    """(class, segment, grid) of each segment's figure of a think page."""
    found = re.findall(
        r'<figure class="([^"]+)" data-segment="(\d+)" data-confidence="[^"]+" data-grid="([^"]+)"', page
    )
    return [(c, int(s), json.loads(g)) for c, s, g in found]


@pytest.mark.slow
def test_predict_draws_every_segment(run: Path, tiny_sudoku: Path, tmp_path: Path) -> None:
    """predict.py picture=: PNG, GIF and HTML hold one panel / frame / figure a segment, the grids of
    Result.segments, the confidences of Result.segment_confidence and the halt of Result.q_halt_segment."""
    puzzle = puzzle_text(tiny_sudoku, 3)
    result = hrm.load(run / "step_2", device="cpu").solve(puzzle, max_steps=STEPS)
    segments = result.segments[0].tolist()
    assert len(segments) == STEPS and result.segment_confidence is not None and result.q_halt_segment is not None
    halt = int(result.q_halt_segment[0])
    (tmp_path / "my pictures").mkdir()
    for ext in ("png", "gif", "html"):
        rel = f"my pictures/think.{ext}"
        r = run_py(["predict.py", f"checkpoint={run / 'step_2'}", f"puzzle={puzzle}", f"max_steps={STEPS}",
                    "device=cpu", f"picture={rel}"], cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"picture: '{rel}' ({STEPS} segments;" in r.stdout  # quoted: pastes into a shell as printed
        path = tmp_path / rel
        if ext == "png":
            img = Image.open(path)
            data = json.loads(img.text[think.KEY])
            rows, across = think.strip_shape(STEPS)
            assert (rows, across) == (1, STEPS) and img.size[0] == round(100 * (across * 2.0 + 0.4))
        elif ext == "gif":
            img = Image.open(path)
            assert img.n_frames == STEPS
            data = json.loads(img.info["comment"])
        else:
            page = path.read_text()
            figs = html_figures(page)
            assert [s for _, s, _ in figs] == list(range(1, STEPS + 1))
            assert [g for _, _, g in figs] == segments
            assert [s for c, s, _ in figs if "halt" in c.split()] == ([halt] if halt else [])
            assert not re.search(r"https?:|//[a-z]|<script|src=|href=", page, re.I)  # self-contained, no scripts
            continue
        assert data["segments"] == segments and data["halt_at"] == halt
        np.testing.assert_allclose(data["confidence"], result.segment_confidence[0], atol=1e-5)
        assert not data["labelled"] and data["wrong"] == [think.sudoku_rule_breaks(g, result.puzzles[0]).astype(int).tolist() for g in result.segments[0]]  # fmt: skip


@pytest.mark.slow
def test_predict_marks_wrong_cells_against_a_label(run: Path, tiny_sudoku: Path, tmp_path: Path) -> None:
    puzzle = puzzle_text(tiny_sudoku, 5)
    label = np.load(tiny_sudoku / "test" / "all__labels.npy")[5].astype(int) - 1
    args = ["predict.py", f"checkpoint={run}", f"puzzle={puzzle}", "max_steps=3", "device=cpu"]
    r = run_py([*args, "label=" + "".join(map(str, label)), "picture=l.png"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(Image.open(tmp_path / "l.png").text[think.KEY])
    segs = hrm.load(run, device="cpu").solve(puzzle, max_steps=3).segments[0]
    assert data["labelled"] and data["wrong"] == (segs != label.reshape(9, 9)).astype(int).tolist()
    r = run_py([*args, f"label={puzzle}", "picture=blanks.png"], cwd=tmp_path)  # the puzzle is no solution
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: label= must be a full solution")
    assert not (tmp_path / "blanks.png").exists()


@pytest.mark.slow
def test_the_halt_mark_is_where_says_halt_first_holds(run: Path, tiny_sudoku: Path) -> None:
    texts = [puzzle_text(tiny_sudoku, i) for i in range(12)]
    solver = opinionated(hrm.load(run / "step_2", device="cpu"), texts)
    full = solver.solve(texts, max_steps=STEPS, halt="max")
    early = solver.solve(texts, max_steps=STEPS, halt="q")
    assert full.q_halt_segment is not None and len(set(full.q_halt_segment.tolist())) > 1  # puzzles differ
    for i in range(len(texts)):
        h = int(full.q_halt_segment[i])
        assert h == 0 or early.steps[i] == h  # halt=q stops where the mark is...
        assert h or early.steps[i] == STEPS  # ...and runs on to the end where there is none
        t = think.build_think(full, i)
        assert t.halt_at == h and [p.grid.tolist() for p in t.panels] == full.segments[i].tolist()
        figs = html_figures(think.render_think_html(t))
        assert [s for c, s, _ in figs if "halt" in c.split()] == ([h] if h else [])
    i = int(np.flatnonzero(full.q_halt_segment)[0])
    data = json.loads(Image.open(io.BytesIO(think.render_think_png(think.build_think(full, i)))).text[think.KEY])
    assert data["halt_at"] == full.q_halt_segment[i]


def fake_result(kind: str, n: int, halt: int) -> SimpleNamespace:
    """A Result as the API returns one (hrm/api.py), for drawing without a model."""
    rng = np.random.default_rng(0)
    shape = (9, 9) if kind == "sudoku" else (30, 30)
    top = 9 if kind == "sudoku" else 4
    puzzle = rng.integers(0, top + 1, shape).astype(np.uint8)
    segs = rng.integers(0, top + 1, (n, *shape)).astype(np.uint8)
    return SimpleNamespace(kind=kind, puzzles=puzzle[None], segments=[segs], segment_confidence=[np.linspace(0, 1, n)],
                           q_halt_segment=np.array([halt]))  # fmt: skip


@pytest.mark.parametrize("kind", [pytest.param("sudoku", marks=pytest.mark.slow), "maze"])
def test_wrapped_strip_and_html_without_a_model(kind: str) -> None:
    """Many segments wrap into rows of ACROSS panels; mazes are drawn as the viewer draws them (tokens = digits + 1)."""
    n = 9 if kind == "sudoku" else 3
    r = fake_result(kind, n, halt=2)
    t = think.build_think(r, 0)
    data = t.data()
    assert data["segments"] == r.segments[0].tolist() and data["halt_at"] == 2
    assert t.panels[0].changed is None and all(p.changed is not None for p in t.panels[1:])
    img = Image.open(io.BytesIO(think.render_think_png(t)))
    rows, across = think.strip_shape(n)
    assert json.loads(img.text[think.KEY]) == data
    if kind == "sudoku":
        assert (rows, across) == (2, think.ACROSS) and img.size[0] == round(100 * (across * 2.0 + 0.4))
    page = think.render_think_html(t)
    assert len(html_figures(page)) == n and [s for c, s, _ in html_figures(page) if "halt" in c] == [2]


def test_sudoku_rule_breaks_and_label() -> None:
    solution = np.array([[(r * 3 + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)])
    puzzle = solution * (np.arange(81).reshape(9, 9) % 2)
    assert not think.sudoku_rule_breaks(solution, puzzle).any()
    bad = solution.copy()
    bad[0, 0] = bad[0, 1]  # (0, 0) is blank in the puzzle: a 2 repeated in row 0 and box 0, and in column 0 (row 3)
    marks = think.sudoku_rule_breaks(bad, puzzle)
    assert marks[0, 0] and marks[0, 1] and marks[3, 0] and marks.sum() == 3
    given = solution.copy()
    given[0, 1] = solution[0, 0]  # a given changed: marked, as are the repeats it makes
    assert think.sudoku_rule_breaks(given, puzzle)[0, 1]
    r = SimpleNamespace(kind="sudoku", puzzles=puzzle[None], segments=[np.stack([bad, solution])],
                        segment_confidence=[np.array([0.2, 0.9])], q_halt_segment=np.array([0]))  # fmt: skip
    t = think.build_think(r, 0, label=solution)
    assert t.labelled and t.panels[0].wrong.sum() == 1 and not t.panels[1].wrong.any()  # type: ignore[union-attr]
    assert t.panels[1].changed.sum() == 1 and "does not say halt" in t.halt_line()  # type: ignore[union-attr]


def test_picture_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"\.png .*\.gif .*\.html"):
        think.picture_args([f"picture={tmp_path / 'think.jpg'}"])
    (tmp_path / "old.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists: name a new file, or delete"):
        think.picture_args([f"picture={tmp_path / 'old.png'}"])
    with pytest.raises(UserError, match="does not exist; create it"):
        think.picture_args([f"picture={tmp_path / 'nowhere' / 'think.png'}"])
    monkeypatch.setattr(think.os, "access", lambda *_: False)  # root writes anywhere: say the folder is read-only
    with pytest.raises(UserError, match="is not writable"):
        think.picture_args([f"picture={tmp_path / 'think.png'}"])
    monkeypatch.undo()
    with pytest.raises(UserError, match="give picture="):
        think.picture_args(["label=" + "1" * 81])
    with pytest.raises(UserError, match="given twice"):
        think.picture_args(["picture=a.png", "picture=b.png"])
    rest, want = think.picture_args(["checkpoint=x", "picture=t.html", "label=123"])
    assert rest == ["checkpoint=x"] and want == {"picture": "t.html", "label": "123"}
    assert (tmp_path / "old.png").read_bytes() == b"mine"


@pytest.mark.slow
def test_predict_refuses_a_picture_before_loading(tmp_path: Path) -> None:
    """An existing file is never overwritten: one error line, exit 2, before the (here missing) checkpoint is read."""
    (tmp_path / "think.png").write_bytes(b"mine")
    r = run_py(["predict.py", "checkpoint=no/such/step_1", "puzzle=" + "." * 81, "picture=think.png"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: picture='think.png' already exists: name a new file, or delete that one first"
    ]
    assert (tmp_path / "think.png").read_bytes() == b"mine"
