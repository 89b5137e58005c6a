"""`--help` for the key=value commands (pretrain.py, evaluate.py, predict.py, demo.py): every key on one line with
its default and what it does, read from where the key is defined (a config class's fields and the comments beside
them, an arch YAML file and its comments), so the help cannot drift from the code.
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import re
import tokenize
from typing import Any

HELP_FLAGS = ("-h", "--help")


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def _comments_by_line(source: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def field_docs(cls: type) -> dict[str, str]:
    """What each annotated field of `cls` is for: the comment on its own line, else the comment lines right above
    it (joined), else ''."""
    source = inspect.getsource(cls)
    comments = _comments_by_line(source)
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.lineno, "")
        if not text:
            above, n = [], node.lineno - 1
            while n >= 1 and lines[n - 1].strip().startswith("#"):
                above.insert(0, comments.get(n, ""))
                n -= 1
            text = " ".join(above)
        docs[node.target.id] = text
    return docs


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def key_rows(defaults: dict[str, Any], docs: dict[str, str], prefix: str = "") -> list[tuple[str, str]]:
    return [(f"{prefix}{k}={_show(v)}", docs.get(k, "")) for k, v in defaults.items()]


def yaml_rows(path: str, prefix: str = "") -> list[tuple[str, str]]:
    """`prefix.key=value` and its comment (same line, else the lines above) for each key of a flat-ish YAML file
    (one level of nesting, as config/arch/*.yaml)."""
    rows: list[tuple[str, str]] = []
    above: list[str] = []
    parent = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip():
                above = []
                continue
            if line.strip().startswith("#"):
                above.append(line.strip().lstrip("#").strip())
                continue
            m = re.match(r"^(\s*)([A-Za-z_][\w]*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
            if not m:
                above = []
                continue
            indent, key, value, comment = m.groups()
            if not indent:
                parent = ""
            if value == "":  # a mapping opens: its keys follow, indented
                parent = key
                above = []
                continue
            name = f"{prefix}{parent + '.' if indent and parent else ''}{key}"
            rows.append((f"{name}={value}", comment or " ".join(above)))
            above = []
    return rows


def format_rows(rows: list[tuple[str, str]], indent: int = 2) -> str:
    width = min(max((len(k) for k, _ in rows), default=0), 36)
    return "\n".join(f"{' ' * indent}{k.ljust(width)}  {doc}".rstrip() for k, doc in rows)


def config_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")


def choices(group: str) -> list[str]:
    folder = os.path.join(config_dir(), group)
    return sorted(n.removesuffix(".yaml") for n in os.listdir(folder) if n.endswith(".yaml"))


def command_help(usage: str, what: str, own: list[tuple[str, str]]) -> str:
    """--help of a command that takes its own keys and, beside them, the training config's (evaluate.py,
    predict.py): its keys one a line, then a pointer to the rest."""
    return "\n".join(
        [
            usage,
            "",
            what,
            "",
            "keys (key=default, then what it is):",
            format_rows(own),
            "",
            "Any training key overrides the checkpoint's saved config (python pretrain.py --help lists them), e.g.",
            "data_path=<another folder of the same kind>, device=cpu, global_batch_size=256, arch.halt_max_steps=32.",
        ]
    )
