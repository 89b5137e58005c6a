"""Commands the project prints, rendered so that they paste into a shell and read back the exact values.

Two layers of quoting meet in `python pretrain.py "data_path='my data/é'"`: the shell's (bash, zsh, sh) and
the one of the script's `key=value` parser. pretrain.py reads overrides with Hydra's grammar, where a value
with spaces at the ends, non-ASCII letters, `=`, `,`, `~`, brackets, braces, parentheses or quotes must be
quoted ('...' or "...", a backslash before a quote escapes it) and `true`, `1`, `null` are not strings;
evaluate.py and predict.py read them with OmegaConf.from_cli (YAML), where `yes`, `0x10` or `a: b` are not
strings either. A value here is left bare only when both parsers read it back as the same string; otherwise
it is single-quoted, which both read the same unless it holds a `'`, a control character or a trailing
backslash (then the grammar's own escapes). `${` is escaped as `\\${` so OmegaConf does not resolve it.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable
from typing import Literal

Grammar = Literal["hydra", "yaml"]  # pretrain.py | evaluate.py, predict.py

_BARE = re.compile(r"[A-Za-z0-9_./+:@%-]+")  # characters both grammars accept unquoted
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+:@%=,-]+")  # shlex's safe set: no quoting needed in sh/bash/zsh
_DOUBLE_UNSAFE = re.compile(r'["$`\\!]')  # special inside the shell's double quotes (! is bash history)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def quote(word: str) -> str:
    """One shell word: bare when safe, else '...', else "..." when it holds a ' (reads better than '"'"')."""
    if _SHELL_SAFE.fullmatch(word):
        return word
    if "'" not in word:
        return f"'{word}'"
    if not _DOUBLE_UNSAFE.search(word):
        return f'"{word}"'
    return shlex.quote(word)


def join(words: Iterable[str]) -> str:
    return " ".join(quote(w) for w in words)


@functools.cache
def _hydra_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def read_back(item: str, grammar: Grammar) -> object:
    """What the script ends up with for one `key=value` argument (after the shell): parsed by its grammar,
    then resolved by OmegaConf as the scripts do (`to_container(resolve=True)`)."""
    from omegaconf import OmegaConf

    key, raw = item.split("=", 1)
    if grammar == "hydra":
        conf = OmegaConf.create({"k": _hydra_parser().parse_override(item).value()})
    else:
        conf = OmegaConf.from_dotlist([f"k={raw}"])
    return OmegaConf.to_container(conf, resolve=True)["k"]  # type: ignore[index]


def _reads_as_itself(text: str) -> bool:
    try:
        return all(read_back(f"k={text}", g) == text for g in ("hydra", "yaml"))
    except Exception:  # a lexer error: it needs quoting
        return False


def value(v: str, grammar: Grammar = "hydra") -> str:
    """`v` as the value part of `key=<value>`, read back by `grammar` as exactly `v` (a string)."""
    if _BARE.fullmatch(v) and _reads_as_itself(v):
        return v
    v = v.replace("${", "\\${")  # OmegaConf would resolve it as an interpolation
    if "'" not in v and not _CONTROL.search(v) and not v.endswith("\\"):
        return f"'{v}'"  # the same in both grammars
    if grammar == "hydra":
        # quoted strings: a backslash escapes the next quote, so backslashes before a quote are doubled
        body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", v)
        body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
        return f"'{body}'"
    # YAML double quotes: backslash escapes (\\, \", \n, \t, \xNN) mean what they do in C
    esc = "".join(c if c >= " " and c not in '"\\\x7f' else _yaml_escape(c) for c in v)
    return f'"{esc}"'


def _yaml_escape(c: str) -> str:
    return {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}")


def override(key: str, v: str, grammar: Grammar = "hydra") -> str:
    """`key=<value>` for a script's argv (quote it for the shell with `quote`/`join`)."""
    return f"{key}={value(v, grammar)}"


def command(script: str, *args: str, grammar: Grammar | None = None, **overrides: str) -> str:
    """`python <script> <args> key=value ...`, paste-able: args are plain words (argparse scripts), overrides
    are rendered for `grammar` (by default the one the script uses: Hydra for pretrain.py, YAML otherwise)."""
    g: Grammar = grammar or ("hydra" if script.endswith("pretrain.py") else "yaml")
    return join(["python", script, *args, *(override(k, v, g) for k, v in overrides.items())])
