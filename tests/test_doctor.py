"""doctor.py: the table, exit codes, dataset checks, and a Hub check that never hangs."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import doctor
from tests.conftest import run_py

CHECK_NAMES = (
    "python",
    "torch",
    "packages",
    "gpu",
    "sdpa",
    "fa3",
    "fa2",
    "optimizer",
    "wandb",
    "hf hub",
    "data",
    "compile",
)


@pytest.fixture(scope="module")
def small_sudoku(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("doctor") / "sudoku-small"
    args = ["--generate", "16", "--test-size", "8", "--num-aug", "1", "--output-dir", str(out)]
    r = run_py(["dataset/build_sudoku_dataset.py", *args], timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def lines_named(output: str, name: str) -> list[str]:
    """Table rows of one check: '  <name padded> <status> <detail>'."""
    return [ln for ln in output.splitlines() if ln[2:].startswith(f"{name:<{doctor.NAME_WIDTH}} ")]


def status_of(line: str) -> str:
    return line[2 + doctor.NAME_WIDTH + 1 :].split()[0]


def test_quick_run_on_a_good_dataset(small_sudoku: Path) -> None:
    t0 = time.monotonic()
    r = run_py(["doctor.py", "--quick", str(small_sudoku)], timeout=120)
    elapsed = time.monotonic() - t0
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "Traceback" not in r.stderr
    for name in CHECK_NAMES:
        assert lines_named(out, name), f"no '{name}' line in:\n{out}"
    (data,) = lines_named(out, "data")
    assert status_of(data) == "ok" and "train 16 groups" in data and "test 8 groups" in data, data
    assert status_of(lines_named(out, "compile")[0]) == "skip"
    assert status_of(lines_named(out, "optimizer")[0]) == "ok"
    assert status_of(lines_named(out, "sdpa")[0]) == "ok"
    assert "a run here would use:" in out and "0 FAIL" in out
    assert "\033[" not in out  # no colour codes when writing to a pipe or log
    assert elapsed < 30, f"doctor --quick took {elapsed:.1f} s"


def test_broken_and_missing_datasets_fail(small_sudoku: Path, tmp_path: Path, capsys) -> None:
    missing_file = tmp_path / "sudoku-missing-file"
    shutil.copytree(small_sudoku, missing_file)
    (missing_file / "test" / "all__labels.npy").unlink()
    bad_json = tmp_path / "sudoku-bad-json"
    shutil.copytree(small_sudoku, bad_json)
    (bad_json / "train" / "dataset.json").write_text("{not json")

    code = doctor.main(["--quick", str(small_sudoku), str(missing_file), str(bad_json), str(tmp_path / "nowhere")])
    out = capsys.readouterr().out
    assert code == 1
    rows = lines_named(out, "data")
    assert [status_of(r) for r in rows] == ["ok", "FAIL", "FAIL", "FAIL"], out
    assert "all__labels.npy is missing" in rows[1]
    assert "not valid JSON" in rows[2]
    assert "does not exist" in rows[3]
    assert "fix:" in out and "some checks FAILed" in out


def test_tokens_outside_vocab_fail(small_sudoku: Path, tmp_path: Path) -> None:
    bad = tmp_path / "sudoku-bad-tokens"
    shutil.copytree(small_sudoku, bad)
    vocab = json.loads((bad / "train" / "dataset.json").read_text())["vocab_size"]
    arr = np.load(bad / "train" / "all__inputs.npy")
    arr[-1, 0] = vocab + 5
    np.save(bad / "train" / "all__inputs.npy", arr)
    c = doctor.check_data(str(bad))
    assert c.status == "FAIL" and "outside vocab_size" in c.detail and c.fix == "rebuild the dataset"


def test_default_datasets_are_folders_under_data(small_sudoku: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert doctor.find_datasets() == []
    (tmp_path / "data" / "not-a-dataset").mkdir(parents=True)
    (tmp_path / "data" / "sudoku-small").symlink_to(small_sudoku)
    assert doctor.find_datasets() == [str(Path("data") / "sudoku-small")]


@pytest.mark.parametrize("endpoint", [None, "http://10.255.255.1:81"])  # real Hub; a blackhole address
def test_hub_check_is_bounded(endpoint: str | None, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    t0 = time.monotonic()
    c = doctor.HubProbe().check()
    assert time.monotonic() - t0 < 5
    assert c.name == "hf hub" and c.status in ("ok", "warn")
    if c.status == "warn":
        assert "--source-dir" in c.fix and "--generate" in c.fix


def test_compile_skipped_when_disabled(monkeypatch) -> None:
    monkeypatch.setenv("DISABLE_COMPILE", "1")
    c = doctor.CompileProbe("cpu", "skipped: DISABLE_COMPILE is set, runs do not compile").check()
    assert c.status == "skip" and "DISABLE_COMPILE" in c.detail


@pytest.mark.slow
def test_full_run_with_compile(small_sudoku: Path) -> None:
    t0 = time.monotonic()
    r = run_py(["doctor.py", str(small_sudoku)], env={"DISABLE_COMPILE": ""}, timeout=180)
    elapsed = time.monotonic() - t0
    (line,) = lines_named(r.stdout, "compile")
    assert status_of(line) in ("ok", "warn"), r.stdout
    if status_of(line) == "ok":
        assert "compiled on" in line
    assert elapsed < 60, f"doctor took {elapsed:.1f} s"


def fake_cuda_torch_without_gpu() -> SimpleNamespace:
    """A CUDA build of torch that sees no GPU (what pip installs by default on a machine without one)."""
    return SimpleNamespace(
        version=SimpleNamespace(cuda="13.0"),
        cuda=SimpleNamespace(is_available=lambda: False),
        backends=SimpleNamespace(mps=None),
    )


@pytest.mark.parametrize("trace", [None, "proc", "nvidia-smi", "libcuda"])
def test_cuda_torch_without_gpu_advice_depends_on_the_driver(trace: str | None, monkeypatch) -> None:
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: trace == "proc" if p == "/proc/driver/nvidia" else real_exists(p))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi" if trace == "nvidia-smi" else None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libcuda.so.1" if trace == "libcuda" else None)
    c = doctor.check_gpu(fake_cuda_torch_without_gpu())
    assert c.status == "warn" and "CUDA 13.0 build but sees no GPU" in c.detail
    if trace is None:  # no NVIDIA driver at all: the fix is the CPU build, not driver advice
        assert "no NVIDIA driver" in c.detail
        assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in c.fix and "GB" in c.fix
        assert "nvidia-smi" not in c.fix
    else:  # a driver is there, the GPU is not visible: check the driver
        assert "nvidia-smi" in c.fix and "CUDA_VISIBLE_DEVICES" in c.fix and "whl/cpu" not in c.fix
