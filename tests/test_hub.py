"""hrm/hub.py: Hub ids, fetching through huggingface_hub's real cache code offline, and publishing up to the
network call. CI cannot reach the Hub, so the cache is laid out here as huggingface_hub itself lays it out
(models--<org>--<name>/snapshots/<commit>/..., refs/<branch> holding the commit) and read with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrm import hub
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def fake_cache(root: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40, branch: str = "main") -> Path:
    """One snapshot of `repo_id` in a Hub cache at `root`, reachable by `branch` and by `commit`."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return snap


def offline(cache: Path) -> dict[str, str]:
    """The environment of a process that reads the Hub cache at `cache` and never the network (a fresh HF_HOME)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}


def fetch(source: str, cache: Path) -> subprocess.CompletedProcess:
    env = offline(cache)
    return subprocess.run(
        [sys.executable, "-m", "hrm.hub", "fetch", source], cwd=REPO, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "source,expect",
    [
        ("hf://sapientinc/HRM-checkpoint-sudoku-extreme", ("sapientinc/HRM-checkpoint-sudoku-extreme", None)),
        ("hf://org/name@v1.0", ("org/name", "v1.0")),
        ("hf://org/name@" + "0" * 40, ("org/name", "0" * 40)),
        ("hf://name", ("name", None)),
    ],
)
def test_parse(source: str, expect: tuple) -> None:
    assert hub.parse(source) == expect


@pytest.mark.parametrize(
    "source", ["org/name", "hf://", "hf://org/na me", "hf://org/name@", "hf://a/b/c", "hf://o/n@x..y"]
)
def test_parse_refuses(source: str) -> None:
    with pytest.raises(UserError, match="hf://"):
        hub.parse(source)


@pytest.mark.slow
def test_fetch_offline_reads_the_cache_by_branch_and_commit(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snap = fake_cache(cache, "org/sudoku", {"model.safetensors": b"w", "config.json": b"{}"}, commit="c" * 40)
    fake_cache(cache / "other", "org/x", {}, commit="d" * 40)  # a second cache elsewhere: not read
    for source in ("hf://org/sudoku", "hf://org/sudoku@main", "hf://org/sudoku@" + "c" * 40):
        r = fetch(source, cache)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()) == snap


@pytest.mark.slow
def test_fetch_reads_the_originals_released_layout(tmp_path: Path) -> None:
    # the original's released checkpoints hold `checkpoint` (weights) and `all_config.yaml`
    cache = tmp_path / "hub"
    snap = fake_cache(cache, "sapientinc/HRM-checkpoint-sudoku-extreme", {"checkpoint": b"w", "all_config.yaml": b""})
    r = fetch("hf://sapientinc/HRM-checkpoint-sudoku-extreme", cache)
    assert r.returncode == 0 and Path(r.stdout.strip()) == snap, r.stderr


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize(
    "source,expect",
    [
        ("hf://org/missing", "is not in the Hub cache and HF_HUB_OFFLINE is set"),
        ("hf://org/sudoku@dev", "is not in the Hub cache"),  # a branch the cache has no ref for
        ("hf://org/empty", "holds no model weights"),
        ("hf://org/bad id", "is not a Hub id"),
    ],
)
def test_fetch_errors_are_one_line(tmp_path: Path, source: str, expect: str) -> None:
    cache = tmp_path / "hub"
    fake_cache(cache, "org/sudoku", {"model.safetensors": b"w", "config.json": b"{}"})
    fake_cache(cache, "org/empty", {"README.md": b"# nothing"})
    r = fetch(source, cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr


def test_reproduce_command_names_what_differs_from_the_recipe() -> None:
    config = hub.composed_config(["recipe=trm-sudoku"])
    config.update(data_path="data/x y", eval_interval=500, run_name="r", checkpoint_path="c", recipe="trm-sudoku")
    config["arch"]["L_cycles"] = 4
    command = hub.reproduce_command(config)
    assert command == "python pretrain.py recipe=trm-sudoku 'data_path=data/x y' arch.L_cycles=4 eval_interval=500"
    # an arch group other than the recipe's is named, and the keys are read against it
    config = hub.composed_config(["arch=trm_singlez"])
    config.update(data_path="d", recipe=None)
    assert hub.reproduce_command(config) == "python pretrain.py arch=trm_singlez data_path=d"


# ---- publishing, and loading what was published, on a tiny trained run ------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_sudoku: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.conftest import TINY_ARCH, run_py

    run = tmp_path_factory.mktemp("hub") / "run"
    args = ["epochs=4", "eval_interval=2", "global_batch_size=64", "ema=true", "lr=3e-4", *TINY_ARCH]
    r = run_py(["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={run}", *args])
    assert r.returncode == 0, r.stderr[-3000:]
    return {"run": run, "data": tiny_sudoku}


class FakeApi:
    """HfApi's three calls publish makes, recorded (with the folder's files at upload time) instead of sent."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def create_repo(self, repo_id: str, **kw) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        if self.fail:
            raise OSError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")

    def create_branch(self, repo_id: str, **kw) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw) -> None:
        self.calls.append(("upload_folder", {**kw, "files": sorted(os.listdir(kw["folder_path"]))}))


@pytest.mark.slow
def test_publish_writes_weights_config_and_card_then_uploads_once(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    import json

    run = tiny_run["run"]
    api = FakeApi()
    url = hub.publish(str(run / "step_4"), "me/tiny", out_dir=str(tmp_path / "pub"), revision="v1", api=api)
    assert url == "https://huggingface.co/me/tiny/tree/v1"
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "me/tiny", "private": False, "exist_ok": True, "repo_type": "model"}
    upload = api.calls[2][1]
    assert upload["repo_id"] == "me/tiny" and upload["revision"] == "v1"
    assert upload["files"] == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "pub" / "README.md").read_text()
    # the scores are the run's own eval at step 4, as its metrics.jsonl logged them
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = next(r for r in rows if r.get("step") == 4 and "all/exact_accuracy" in r)
    assert (
        f"| test exact accuracy, paper protocol (all ACT segments) | {100 * logged['all/exact_accuracy']:.1f}% |"
        in card
    )
    assert "step 4" in card and "weights: ema" in card
    command = next(line for line in card.splitlines() if line.startswith("python pretrain.py"))
    assert f"data_path={tiny_run['data']}" in command and "ema=true" in command and "lr=0.0003" in command
    assert "checkpoint_path" not in command and "run_name" not in command


@pytest.mark.slow
@pytest.mark.bad_input
def test_publish_failures_keep_the_export_and_say_so(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pub"
    with pytest.raises(UserError, match=f"the export is kept in {out}"):
        hub.publish(str(tiny_run["run"]), "me/tiny", out_dir=str(out), api=FakeApi(fail=True))
    assert (out / "model.safetensors").is_file()
    with pytest.raises(UserError, match="needs its owner"):
        hub.publish(str(tiny_run["run"]), "tiny", out_dir=str(tmp_path / "x"), api=FakeApi())
    with pytest.raises(UserError, match="is not empty"):
        hub.publish(str(tiny_run["run"]), "me/tiny", out_dir=str(out), api=FakeApi())


SOLVE = """
import json, sys, numpy as np, hrm
over = json.loads(sys.argv[2])
s = hrm.load(sys.argv[1], device="cpu", overrides=over or None, ema=sys.argv[4])
digits = np.load(sys.argv[3])[:6].astype(np.int64) - 1
r = s.solve(digits)
print(json.dumps({"grids": r.grids.tolist(), "confidence": r.confidence.tolist()}))
"""


def published(run: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The run exported with its card (a dry run: no network), and that folder as me/tiny in a Hub cache:
    (the folder, the cache, the cache's snapshot of it)."""
    folder = Path(hub.publish(str(run), "me/tiny", out_dir=str(tmp_path / "pub"), dry_run=True))
    cache = tmp_path / "hub"
    return folder, cache, fake_cache(cache, "me/tiny", {p.name: p.read_bytes() for p in folder.iterdir()})


def solve_in_process(source: str, cache: Path, data: Path, overrides: dict | None = None, ema: str = "auto") -> dict:
    import json

    env = offline(cache)
    env["PYTHONPATH"] = str(REPO)  # `import hrm` from another folder, as after pip install -e .
    inputs = str(data / "test" / "all__inputs.npy")
    r = subprocess.run(
        [sys.executable, "-c", SOLVE, source, json.dumps(overrides or {}), inputs, ema],
        cwd=cache.parent, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_published_model_and_a_released_checkpoint_load_by_hub_id_offline(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    run, data = tiny_run["run"], tiny_run["data"]
    folder, cache, _ = published(run, tmp_path)
    local = solve_in_process(str(folder), cache, data)
    assert solve_in_process("hf://me/tiny", cache, data) == local
    # the original's released layout: `checkpoint` (raw weights) and all_config.yaml, its data named by the caller
    released = {"checkpoint": (run / "step_4").read_bytes(), "all_config.yaml": (run / "all_config.yaml").read_bytes()}
    fake_cache(cache, "sapientinc/HRM-checkpoint-tiny", released)
    got = solve_in_process("hf://sapientinc/HRM-checkpoint-tiny", cache, data, {"data_path": str(data)})
    assert got == solve_in_process(str(run / "step_4"), cache, data, ema="false")  # the same raw weights


@pytest.mark.slow
def test_evaluate_scores_a_hub_model_offline_and_writes_nothing_into_the_cache(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    run, data = tiny_run["run"], tiny_run["data"]
    folder, cache, snap = published(run, tmp_path)
    env = offline(cache)

    def evaluate(source: str, *extra: str) -> str:
        r = subprocess.run(
            [sys.executable, str(REPO / "evaluate.py"), f"checkpoint={source}", f"data_path={data}", "device=cpu", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return next(line for line in r.stdout.splitlines() if "exact" in line and "all" in line)

    before = sorted(p.name for p in snap.iterdir())
    by_id = evaluate("hf://me/tiny")
    assert sorted(p.name for p in snap.iterdir()) == before and not list(tmp_path.glob("step_*"))
    assert by_id == evaluate(str(folder))  # the same scores as the exported folder on disk
    out = tmp_path / "preds"
    evaluate("hf://me/tiny", f"output_dir={out}")
    assert [p.name for p in out.iterdir()] == ["step_0_all_preds.0"]
