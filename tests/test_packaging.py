"""`pip install .` and `pip install -e .`: the only top-level name installed is `hrm`, and `import hrm` works from
any folder (the training code ships nested as hrm/_lib: pyproject.toml, hrm/__init__.py). Built from a temporary
copy of the checkout's files, so the checkout gains no build/ or *.egg-info."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INTERNAL = ("models", "train", "dataset", "utils")

pytestmark = pytest.mark.slow


def source_copy(dst: Path) -> Path:
    """The files git would ship (tracked, and new ones not ignored), copied to `dst`."""
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


def pip(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([python, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def venv(path: Path) -> str:
    """A virtual environment that sees this interpreter's packages (torch...) and their pip and setuptools: without
    its own pip, whose bundled setuptools would be older than the one this build needs."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True)
    return str(path / "bin" / "python")


def run_elsewhere(python: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout on the path
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


CHECK = """
import os, sys, hrm, train.checkpoint, evaluate
from train import eval_config
from hrm.puzzles import to_tokens
print(hrm.CODE_ROOT)
print(os.path.dirname(os.path.dirname(train.checkpoint.__file__)))
assert to_tokens("." * 81, "sudoku", 81, 11).shape == (1, 81)
assert eval_config.default_config()["arch"]["name"]  # config/arch/hrm_v1.yaml shipped with the code
"""


def test_wheel_installs_only_hrm(tmp_path: Path) -> None:
    src = source_copy(tmp_path / "src")
    r = pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), ".", cwd=src)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hrm"}, sorted(tops)
    # every folder of the training code is in the wheel (pyproject.toml lists them by hand)
    for pkg in INTERNAL:
        for init in (REPO / pkg).rglob("*.py"):
            assert f"hrm/_lib/{init.relative_to(REPO).as_posix()}" in names, init
    for script in ("pretrain.py", "evaluate.py", "predict.py", "adam_atan2.py", "muon.py"):
        assert f"hrm/_lib/{script}" in names
    assert "hrm/_lib/config/arch/hrm_v1.yaml" in names and "hrm/_lib/config/cfg_pretrain.yaml" in names
    assert not any(n.startswith(("hrm/_lib/tests/", "hrm/_lib/bench/", "hrm/_lib/hrm/")) for n in names)

    python = venv(tmp_path / "venv")
    r = pip(python, "install", "--no-deps", str(wheel), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    assert not any((site / name).exists() for name in (*INTERNAL, "pretrain.py", "evaluate.py", "muon.py"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_elsewhere(python, CHECK, elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    root, code = r.stdout.split()
    assert root == code == str(site / "hrm" / "_lib")


def test_editable_install(tmp_path: Path) -> None:
    src = source_copy(tmp_path / "src")
    python = venv(tmp_path / "venv")
    r = pip(python, "install", "--no-deps", "--no-build-isolation", "-e", ".", cwd=src)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_elsewhere(python, CHECK, elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    root, code = r.stdout.split()
    assert root == code == str(src)  # the copy's own files: edits there take effect
    # the checkout's command still works as before, from the editable copy
    code = "import runpy, sys; sys.argv = ['predict.py']; runpy.run_path('predict.py', run_name='__main__')"
    r = run_elsewhere(python, code, src)
    assert r.returncode == 2 and "usage: python predict.py" in r.stderr
