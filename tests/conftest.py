from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from train.runtime import Dist

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------------------------
# Parallel by default on a machine without a GPU (CI and CPU-only users): most of the suite's time is commands run
# end to end, one core each, so 2 worker processes on 2 cores take ~11 minutes where one took ~18 (README "Tests").
# A file's tests stay on one worker (--dist loadfile): the gloo tests of a file share a fixed port, and a file's
# session data is built once. `-n 0` runs everything in this process; `-n N` picks N. On a GPU machine the suite
# runs in one process, as the GPU tests time and size themselves on one card.
MAX_WORKERS = 4


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which turns the worker count into workers
def pytest_cmdline_main(config: pytest.Config) -> None:
    if (
        not config.pluginmanager.hasplugin("xdist")
        or os.environ.get("PYTEST_XDIST_WORKER")  # a worker: it runs what it is sent
        or config.option.numprocesses is not None  # -n given
        or config.option.collectonly
        or config.option.usepdb
        or torch.cuda.is_available()
    ):
        return
    workers = min(cpu_cores(), MAX_WORKERS)
    if workers > 1:
        config.option.numprocesses, config.option.dist = workers, "loadfile"


if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: each takes its part for torch's threads
    torch.set_num_threads(max(1, cpu_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
# Small samples of the public raw data, committed (tests/fixtures/data/README.md): what the tests read by default.
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"
# The full public data, for the few tests of exact counts (README "Tests"): a folder laid out like FIXTURE_DATA.
FULL_DATA = Path(os.environ["HRM_TEST_DATA"]) if os.environ.get("HRM_TEST_DATA") else None
FULL_DATA_SKIP = (
    "needs the full public data: HRM_TEST_DATA=DIR python -m pytest -q, DIR holding sudoku/ and raw-data/ "
    "(README 'Tests')"
)

# A model small enough to train for a few dozen steps in seconds on 2 CPU cores.
TINY_ARCH = [
    "arch.hidden_size=64",
    "arch.num_heads=2",
    "arch.H_layers=1",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=2",
]


# A short schedule for the long-run tests: 16 steps of 32 on the tiny Sudoku set, evals at steps 8 and 16.
SHORT_RUN = [
    "epochs=8",
    "eval_interval=4",
    "global_batch_size=32",
    "lr=1e-3",
    "lr_warmup_steps=3",
    "checkpoint_minutes=null",
    *TINY_ARCH,
]


# Metrics keys that hold wall-clock times: they differ between otherwise identical runs.
WALL_CLOCK_KEYS = ("time", "elapsed_s")


def pretrain_args(data: Path, run_dir: Path, base: list[str], *extra: str) -> list[str]:
    return [str(REPO / "pretrain.py"), f"data_path={data}", f"checkpoint_path={run_dir}", *base, *extra]


# Commands run in a fresh folder of their own, never in the checkout: what a script writes relative to its working
# directory (Hydra's outputs/<date>/<time>/ logs, checkpoints/<project>/ run folders without checkpoint_path,
# default dataset folders under data/) lands there and is deleted with the session's temporary folders.
_SCRATCH = Path(tempfile.mkdtemp(prefix="hrm-tests-"))


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(dir=_SCRATCH))


def repo_args(args: list[str]) -> list[str]:
    """Relative paths of the repo's scripts (`pretrain.py`, `dataset/view.py`) made absolute, so a command runs
    from any working directory."""
    return [str(REPO / a) if a.endswith(".py") and (REPO / a).is_file() else a for a in args]


def py_env(env: dict[str, str] | None = None) -> dict[str, str]:
    # the repo first, then whatever PYTHONPATH the environment already has (packages installed with --target)
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    base = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    return {**os.environ, **base, **(env or {})}


def run_py(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`python args...` in `cwd` (default: a fresh scratch folder)."""
    return subprocess.run(
        [sys.executable, *repo_args(args)],
        cwd=cwd or scratch_dir(),
        env=py_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_script(path: Path) -> ModuleType:
    """A script outside the packages (bench/*.py, bench/standins/*.py) as a module, registered under its file name
    (a dataclass in it looks its module up)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def tiny_config(data: Path, **overrides):
    """A PretrainConfig for calling trainer functions directly (values that matter are passed by the test)."""
    import pretrain

    base = dict(
        arch={"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "loss": {"name": "losses@ACTLossHead"}},
        data_path=str(data),
        global_batch_size=8,
        epochs=4,
        **dict.fromkeys(["lr", "lr_min_ratio", "weight_decay", "beta1", "beta2", "puzzle_emb_lr"], 0.5),
        puzzle_emb_weight_decay=0.5,
        lr_warmup_steps=1,
    )
    return pretrain.PretrainConfig(**(base | overrides))


def launch_config(data: Path, run_dir: Path, **overrides):
    """The config `pretrain.launch` gets from the command line, for a tiny CPU run of the tiny model in-process."""
    from omegaconf import OmegaConf

    from train import eval_config

    cfg = eval_config.default_config()
    cfg.update(data_path=str(data), checkpoint_path=str(run_dir), global_batch_size=64, epochs=2, eval_interval=1)
    cfg.update(wandb_mode="disabled", device="cpu", **overrides)
    cfg["arch"].update(hidden_size=64, num_heads=2, H_layers=1, L_layers=1, halt_max_steps=2)
    return OmegaConf.create(cfg)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# Runs of pretrain.py compared step by step (resume, paths, distributed, GPU tests)

BASE = [*SHORT_RUN, "seed=1"]


def args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return pretrain_args(data, run_dir, BASE, *extra)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    steps = sorted(int(p.name.split("_")[1]) for p in run_dir.glob("step_*") if p.name.split("_")[1].isdigit())
    return torch.load(run_dir / f"step_{steps[-1]}", weights_only=True)


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def start(a: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, *a], cwd=scratch_dir(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120) -> None:
    t = time.time()
    while time.time() - t < timeout:
        if (run_dir / "metrics.jsonl").exists() and any(r.get("step", 0) >= step for r in read_metrics(run_dir)):
            return
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    raise TimeoutError(step)


# ---------------------------------------------------------------------------------------------------------------
# Trainer functions called in-process (halting-aware eval, EMA, test-time augmentation)

D = Dist(rank=0, world_size=1, local_rank=0)
CPU = torch.device("cpu")
HALT_ARCH = dict(
    hidden_size=32,
    num_heads=2,
    H_layers=1,
    L_layers=1,
    H_cycles=1,
    L_cycles=1,
    expansion=2,
    puzzle_emb_ndim=32,
    pos_encodings="rope",
    halt_exploration_prob=0.1,
    forward_dtype="float32",
)


def build(data: Path, halt_max_steps: int, no_act_continue: bool = False):
    """(config, state, loader, meta) of a tiny HRM on the test split whose Q-head halts about a third of the rows at
    once: for the halting-aware evaluation tests."""
    import pretrain

    arch = {
        "name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
        "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        **HALT_ARCH,
        "halt_max_steps": halt_max_steps,
        "no_ACT_continue": no_act_continue,
    }
    config = tiny_config(data, arch=arch, global_batch_size=16)
    loader, meta = pretrain.create_dataloader(
        config, "test", D, CPU, test_set_mode=True, epochs_per_iter=1, global_batch_size=16
    )
    torch.manual_seed(0)
    model, opts, lrs = pretrain.create_model(config, meta, D, CPU, "float32", use_compile=False, log=lambda *_: None)
    model.eager.eval()
    with torch.no_grad():  # the initial Q-head never halts (zero weights, equal biases): give it opinions...
        q = model.eager.model.inner.q_head
        q.weight.normal_(0, 0.5)
        q.bias.zero_()
        _set, batch, _gbs = next(iter(loader))  # ...centred so that about a third of the rows halt at once
        carry = model.eager.initial_carry(batch)
        _, _, _, out, _ = model.eager(carry=carry, batch=batch, return_keys=["q_halt_logits", "q_continue_logits"])
        margin = out["q_halt_logits"] - (0 if no_act_continue else out["q_continue_logits"])
        q.bias[0] = -torch.quantile(margin, 0.67)
    state = pretrain.TrainState(model=model, optimizers=opts, optimizer_lrs=lrs, carry=None, step=0, total_steps=0)
    return config, state, loader, meta


@pytest.fixture(scope="session")
def tiny_sudoku(tmp_path_factory) -> Path:
    """64 generated puzzles x 8 (7 augmentations), 32 test puzzles: built offline by our builder."""
    out = tmp_path_factory.mktemp("data") / "sudoku-tiny"
    r = run_py(
        [
            "dataset/build_sudoku_dataset.py",
            "--generate",
            "64",
            "--test-size",
            "32",
            "--num-aug",
            "7",
            "--output-dir",
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    return out


def build_tiny_arc(root: Path, training: int = 2, evaluation: int = 2) -> Path:
    """root/arc: an ARC dataset (one augmentation) of the first few real tasks committed in FIXTURE_DATA."""
    from dataset.build_arc_dataset import main as build_arc

    src = FIXTURE_DATA / "raw-data" / "ARC-AGI" / "data"
    for sub, n in (("training", training), ("evaluation", evaluation)):
        (root / "raw" / sub).mkdir(parents=True)
        for f in sorted((src / sub).glob("*.json"))[:n]:
            shutil.copy(f, root / "raw" / sub / f.name)
    assert build_arc(["--dataset-dirs", str(root / "raw"), "--num-aug", "1", "--output-dir", str(root / "arc")]) == 0
    return root / "arc"


@pytest.fixture
def full_data() -> Path:
    if FULL_DATA is None or not FULL_DATA.is_dir():
        pytest.skip(FULL_DATA_SKIP)
    return FULL_DATA


def kaggle_like_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A CSV in the Kaggle bryanpark/sudoku format (`quizzes,solutions`, 0 = blank) of easy puzzles like its own
    (34 clues, solved by singles alone), made by our generator: the Kaggle file's licence cannot be checked."""
    from dataset.puzzles import sudoku

    inputs, labels, ratings = sudoku.generate(2 * n, np.random.default_rng(seed), min_clues=34)
    keep = np.flatnonzero(ratings == 0)[:n]
    assert len(keep) == n, "too few generated puzzles need no guess"
    rows = [
        f"{sudoku.format_puzzle(q, blank='0')},{sudoku.format_puzzle(a, blank='0')}"
        for q, a in zip(inputs[keep], labels[keep])
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("quizzes,solutions\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def sudoku_lists(tmp_path_factory) -> Path:
    """A `--mix` folder: the committed tdoku samples and a Kaggle-format CSV of 200 generated puzzles."""
    root = tmp_path_factory.mktemp("lists") / "sudoku"
    shutil.copytree(FIXTURE_DATA / "sudoku" / "tdoku", root / "tdoku")
    kaggle_like_csv(root / "kaggle-bryanpark" / "sudoku.csv", 200)
    return root


# ---------------------------------------------------------------------------------------------------------------
# The suite leaves the checkout as it found it: enforced, not hoped for.

_CACHES = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}  # Python's and pytest's own caches


def checkout_listing(root: Path = REPO) -> set[str]:
    """Every file and folder under the checkout, caches and virtual environments left out; folders too, so an
    empty run folder counts."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _CACHES and not (Path(dirpath, d) / "pyvenv.cfg").exists()]
        for name in dirnames + [f for f in filenames if not f.endswith(".pyc")]:
            out.add(str(Path(dirpath, name).relative_to(root)))
    return out


def listing_changes(before: set[str], after: set[str]) -> list[str]:
    # files edited in place are left out: a developer may be editing while the tests run
    return [f"added {p}" for p in sorted(after - before)] + [f"removed {p}" for p in sorted(before - after)]


@pytest.fixture(scope="session", autouse=True)
def checkout_unchanged():
    before = checkout_listing()
    yield
    shutil.rmtree(_SCRATCH, ignore_errors=True)
    changes = listing_changes(before, checkout_listing())
    if changes:
        shown = "\n  ".join(changes[:20]) + (f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else "")
        pytest.fail(f"the tests changed the checkout {REPO} (they must write under tmp_path):\n  {shown}")
