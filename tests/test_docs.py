"""README claims that can be checked: the quick start's install line installs what its test line needs, no path or
words that only make sense on the project's own machines, the demo's parameter count, and every path into the
repo's own folders that the code or the docs name exists."""

from __future__ import annotations

import re
import shlex

import yaml

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def quick_start_lines() -> list[str]:
    block = README.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


def requirement_names(path: str) -> set[str]:
    names = set()
    for line in (REPO / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def test_install_line_installs_what_the_test_line_needs() -> None:
    install, run = quick_start_lines()
    assert run == "python demo.py"
    args = shlex.split(install)
    files = [args[i + 1] for i, a in enumerate(args) if a == "-r"]
    assert args[:2] == ["pip", "install"] and files, install
    names = set().union(*(requirement_names(f) for f in files))
    assert {"pytest", "matplotlib"} <= names  # the test runner; PIL (view tests) and plot.py come with matplotlib
    assert "Tests: `python -m pytest -q`" in README
    assert "\npython -m pytest -q\n" in (REPO / ".ci" / "run").read_text()  # CI runs the README's test line


def test_docs_hold_no_private_paths_or_infrastructure() -> None:
    for doc in (
        "README.md",
        "TROUBLESHOOTING.md",
        "SPEEDRUN.md",
        "Makefile",
        *(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")),
    ):
        text = (REPO / doc).read_text()
        assert "../shared" not in text, doc
        for words in ("device call", "lent", "could not leave", "64 MiB", "our machines"):
            assert not re.search(rf"\b{words}\b", text), (doc, words)


# A path into one of these folders, e.g. dataset/puzzles/arc.py, not one inside another checkout (orig/dataset/...);
# a bare document name (README.md, TROUBLESHOOTING.md) is one at the top or beside the file that names it.
OWN_PATH = re.compile(
    r"(?<![\w/.~-])((?:bench|config|dataset|docs|models|results|tests|train|utils)/[\w/.*+-]*\w\.(?:py|md|yaml))"
)
DOC_NAME = re.compile(r"(?<![\w/.~-])([A-Z][A-Z_]*\.md)\b")


def test_paths_named_in_code_and_docs_exist() -> None:
    # Docstrings, comments, messages and docs point readers at files: a move must update what names them.
    # BENCHMARKS.md is left out: a log of past sessions, it also names files of other branches.
    files = [p for p in REPO.glob("*") if p.suffix in (".py", ".md") and p.name != "BENCHMARKS.md"]
    files += [REPO / "Makefile", REPO / ".ci" / "run"]
    for top in ("bench", "config", "dataset", "docs", "hrm", "models", "tests", "train", "utils"):
        files += [p for p in (REPO / top).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    missing = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            found = [m for m in OWN_PATH.findall(line) if not any(REPO.glob(m))]
            found += [m for m in DOC_NAME.findall(line) if not (REPO / m).exists() and not (f.parent / m).exists()]
            missing += [f"{f.relative_to(REPO)}:{n}: {m}" for m in found]
    assert not missing, missing


def test_demo_parameter_count_in_readme() -> None:
    import importlib

    import demo

    name = next((a.split("=", 1)[1] for a in demo.TRAIN if a.startswith("arch=")), "hrm_v1")
    arch = yaml.safe_load((REPO / "config" / "arch" / f"{name}.yaml").read_text())
    for arg in demo.TRAIN:
        if arg.startswith("arch."):
            key, value = arg[len("arch.") :].split("=")
            arch[key] = yaml.safe_load(value)
    module, cls = arch.pop("name").split("@")
    del arch["loss"]
    if arch["puzzle_emb_ndim"] == "${.hidden_size}":
        arch["puzzle_emb_ndim"] = arch["hidden_size"]
    meta = dict(batch_size=8, vocab_size=11, seq_len=81, num_puzzle_identifiers=1, causal=False)
    model = getattr(importlib.import_module(f"models.{module}"), cls)({**arch, **meta, "forward_dtype": "float32"})
    n = sum(p.numel() for p in model.parameters())
    kind = "TRM" if "trm" in name else "HRM"
    assert f"trains a\n{n:,}-parameter {kind}" in README or f"trains a {n:,}-parameter {kind}" in README, n
