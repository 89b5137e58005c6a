"""The depth curriculum (`depth_curriculum=`, a recipe change, off as in the paper): TRM trained at a shallower
recursion depth early and at its own depth late (CGAR's progressive depth curriculum, arXiv 2511.08653).

TRM's one network f does every update, so the same weights run at any depth (T = H_cycles recursions of n =
L_cycles latent updates). A shallow step is cheaper (f's calls per segment: T (n + 1); with gradient the last
n + 1): depth (1, 2) costs about a quarter of (3, 6), so early training sees several times the batches in the same
minutes. CGAR reports 2.26x less training time to ~85% on Sudoku-Extreme with this alone.

Format (this module is its one home): a list of stages [until, H_cycles, L_cycles], `until` a fraction of the
run's steps (the lr schedule's length, `total_steps`), increasing, in (0, 1). Steps from the last `until` on run
the arch's own depth; so does every evaluation (the model a run produces is the arch's, and evaluate.py scores
it so). The depth of a step follows from the step alone, so a resumed run trains at the depth it would have.

    depth_curriculum=[[0.3,1,2],[0.6,2,4]]   # CGAR's: (1, 2) for the first 30%, (2, 4) to 60%, then (3, 6)

Under whole-model torch.compile each new depth compiles the step again (the loop is unrolled in the graph);
with `compile_scope=block` only the repeated block is compiled, and every depth reuses it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from utils.errors import UserError

EXAMPLE = "depth_curriculum=[[0.3,1,2],[0.6,2,4]]"


@dataclass(frozen=True)
class Stage:
    until: float  # the stage ends at this fraction of the run's steps
    H_cycles: int
    L_cycles: int

    @property
    def name(self) -> str:
        return f"H{self.H_cycles}xL{self.L_cycles}"


def parse(value: Sequence[Sequence[Any]] | None) -> list[Stage]:
    """The stages of `depth_curriculum`, or a UserError naming what is wrong and an example."""
    stages: list[Stage] = []
    for i, entry in enumerate(value or []):
        if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 3:
            raise UserError(
                f"depth_curriculum[{i}]={entry!r}: each stage is [until, H_cycles, L_cycles], e.g. {EXAMPLE}"
            )
        until, h, lc = entry
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not (0 < until < 1):
            raise UserError(
                f"depth_curriculum[{i}]: until={until!r} must be a fraction of the run's steps between 0 and 1 "
                f"(the arch's depth runs after the last stage), e.g. {EXAMPLE}"
            )
        if stages and until <= stages[-1].until:
            raise UserError(f"depth_curriculum: the stages' `until` must increase; {until} follows {stages[-1].until}")
        for name, v in (("H_cycles", h), ("L_cycles", lc)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
                raise UserError(f"depth_curriculum[{i}]: {name}={v!r} must be a whole number >= 1, e.g. {EXAMPLE}")
        stages.append(Stage(float(until), int(h), int(lc)))
    return stages


def check_model(stages: list[Stage], model_class: type, arch_name: str) -> None:
    """The curriculum needs a model whose depth can change (TRM's family); each stage must be a depth it can run."""
    if not stages:
        return
    inner = getattr(model_class, "inner_class", None)
    if not hasattr(inner, "at_depth"):
        raise UserError(
            f"depth_curriculum is for TRM (arch=trm and its variants); arch {arch_name} has no depth to change: "
            "drop depth_curriculum"
        )
    for s in stages:
        try:
            inner.check_depth(s.H_cycles, s.L_cycles)  # type: ignore[union-attr]
        except ValueError as e:
            raise UserError(f"depth_curriculum stage {s.name}: {e}") from None


class DepthCurriculum:
    """Which depth a training step runs, and the context that runs it there."""

    def __init__(self, stages: list[Stage], total_steps: int, full: tuple[int, int]) -> None:
        self.stages = stages
        self.full = full
        # the first step of the next stage: stage i trains steps [ends[i-1], ends[i])
        self.ends = [math.ceil(s.until * total_steps) for s in stages]

    def stage_of(self, step: int) -> int:
        """The index of the stage that trains step `step` (0-based, before the step); len(stages): the arch's depth."""
        return next((i for i, end in enumerate(self.ends) if step < end), len(self.stages))

    def depth_of(self, step: int) -> tuple[int, int]:
        i = self.stage_of(step)
        return (self.stages[i].H_cycles, self.stages[i].L_cycles) if i < len(self.stages) else self.full

    def starts_stage(self, step: int) -> bool:
        """Step `step` (0-based) is the first of a stage (so the log says the new depth)."""
        return bool(self.stages) and (step == 0 or self.stage_of(step) != self.stage_of(step - 1))

    def at(self, model: nn.Module, step: int) -> contextlib.AbstractContextManager[None]:
        """Train step `step` at its depth (after the last stage: the arch's, the ints torch.compile saw before)."""
        return model.inner.at_depth(*self.depth_of(step))  # type: ignore[union-attr,operator]

    def describe(self) -> str:
        """One line for the start-up report."""
        parts, start = [], 0
        for s, end in zip(self.stages, self.ends):
            parts.append(f"{s.name} for steps {start:,}-{max(start, end - 1):,}")
            start = end
        h, lc = self.full
        return f"{', '.join(parts)}, then the arch's H{h}xL{lc} (evaluations always H{h}xL{lc}; CGAR, train/depth.py)"

    def stage_line(self, step: int) -> str:
        """The depth that trains from step `step` on (printed at each stage's first step and when a run resumes)."""
        i = self.stage_of(step)
        h, lc = self.depth_of(step)
        return (
            f"depth H_cycles={h} L_cycles={lc} from step {step:,} (curriculum stage {i + 1} of {len(self.stages) + 1})"
        )
