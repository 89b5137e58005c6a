"""hrm: the Python API of this fork (load a trained model, solve puzzles, export a model folder).

    import hrm
    solver = hrm.load("checkpoints/<project>/<run>")   # a checkpoint, a run folder, an exported folder, hf://...
    result = solver.solve(puzzles)                     # texts or digit arrays; grids, steps, confidence, valid
    hrm.export("checkpoints/<project>/<run>", "my-model")   # model.safetensors + config.json

Packaging, and why the internal code is found through sys.path: the training code is a set of top-level
packages and scripts (`models`, `train`, `dataset`, `utils`, `pretrain.py`, `evaluate.py`...) that import one
another by those names, and `python pretrain.py` from a checkout must keep working exactly as the original's.
Renaming them into `hrm.*` would touch every import, every test and every command in the docs. Instead the wheel
ships them nested, as `hrm/_lib/` (pyproject.toml maps it onto the checkout's root), so the only top-level name
installed is `hrm`, and importing hrm puts that folder (in a checkout or an editable install: the repository root)
first on sys.path. The cost: after `import hrm` the names `models`, `train`, `dataset`, `utils`, `evaluate`...
are importable in the process and are hrm's, shadowing another package of those names imported later; one
imported before hrm is refused here with a message rather than mixing the two.
"""

from __future__ import annotations

import os
import sys


def _code_root() -> str:
    """The folder holding the internal packages: hrm/_lib in an installed wheel, else the checkout's root."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.join(here, "_lib"), os.path.dirname(here)):
        if os.path.isfile(os.path.join(root, "train", "checkpoint.py")):
            return root
    raise ImportError(f"hrm: the training code (train/, models/...) is neither in {here}/_lib nor beside {here}")


def _add_code_root() -> str:
    root = _code_root()
    # first on the path: a folder of the user's named `utils` (or train, models...) must not stand in for ours
    if sys.path[:1] != [root]:
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    for name in ("train", "models", "dataset", "utils"):  # another package of the same name, imported already
        mod = sys.modules.get(name)
        where = os.path.dirname(os.path.dirname(os.path.abspath(getattr(mod, "__file__", None) or root)))
        if mod is not None and getattr(mod, "__file__", None) and where != root:
            raise ImportError(
                f"hrm: a module named {name!r} from {where} is already imported; hrm's internal {name!r} lives in "
                f"{root}: import hrm before it, or rename yours"
            )
    return root


CODE_ROOT = _add_code_root()

# isort: split

from hrm.api import Result, Solver, export, load  # noqa: E402
from utils.errors import UserError  # noqa: E402

__all__ = ["CODE_ROOT", "Result", "Solver", "UserError", "export", "load"]
