"""Training curricula (recipe changes, off as in the paper): a run trains its first stages differently from the
arch's own setting and the rest as the arch says; every evaluation runs the arch's setting (the model a run
produces is the arch's, and evaluate.py scores it so). This module is the one home of their format.

- `depth_curriculum`: TRM at a shallower recursion depth early (CGAR's progressive depth curriculum, arXiv
  2511.08653). TRM's one network f does every update, so the same weights run at any depth (T = H_cycles
  recursions of n = L_cycles latent updates). A shallow step is cheaper (f's calls per segment: T (n + 1), the
  last n + 1 with gradient): depth (1, 2) costs about a quarter of (3, 6), so early training sees several times
  the batches in the same minutes. CGAR reports 2.26x less training time to ~85% on Sudoku-Extreme with it alone.
- `segments_curriculum`: fewer supervision segments early (HRM and TRM): a row halts at the stage's
  `halt_max_steps` (M_max, TRM's N_sup) instead of the arch's, so the batch takes new puzzles more often. A step
  costs the same (it is one segment); what changes is how many different puzzles the early steps see. When a
  stage raises the limit, rows carry on from their count; when a limit is lower than a row's count, the row halts
  at its next segment.

Format: a list of stages [until, value...], `until` a fraction of the run's steps (the lr schedule's length,
`total_steps`), increasing, in (0, 1). Steps from the last `until` on run the arch's own setting. The stage of a
step follows from the step alone, so a resumed run trains each step as it would have.

    depth_curriculum=[[0.3,1,2],[0.6,2,4]]   # CGAR's: (1, 2) for the first 30%, (2, 4) to 60%, then (3, 6)
    segments_curriculum=[[0.3,4],[0.6,8]]    # at most 4 segments a puzzle for 30%, 8 to 60%, then the arch's 16

The settings are Python ints on the model, which torch.compile guards on: under whole-model compile each new
stage compiles the step again; with `compile_scope=block` only the repeated block is compiled, every depth reuses
it, and the halting bookkeeping runs outside it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch._dynamo
from torch import nn

from utils.errors import UserError


@dataclass(frozen=True)
class Kind:
    """One curriculum: its config key, the names of a stage's values, and how a stage is shown."""

    key: str
    fields: tuple[str, ...]
    example: str
    tag: str  # the stage's name, formatted with its values: "H{}xL{}"

    @property
    def what(self) -> str:
        """`depth`, `segments`: the curriculum's name in the start-up report and the stage lines."""
        return self.key.removesuffix("_curriculum")

    def name(self, values: tuple[int, ...]) -> str:
        return self.tag.format(*values)

    def line(self, values: tuple[int, ...]) -> str:
        """`H_cycles=1 L_cycles=2`: the values as the step lines print them."""
        return " ".join(f"{f}={v}" for f, v in zip(self.fields, values))


DEPTH = Kind("depth_curriculum", ("H_cycles", "L_cycles"), "depth_curriculum=[[0.3,1,2],[0.6,2,4]]", "H{}xL{}")
SEGMENTS = Kind("segments_curriculum", ("halt_max_steps",), "segments_curriculum=[[0.3,4],[0.6,8]]", "M{}")


@dataclass(frozen=True)
class Stage:
    until: float  # the stage ends at this fraction of the run's steps
    values: tuple[int, ...]  # the kind's fields, in order


def show(entry: Any) -> str:
    """A stage as the user typed it: the config hands whole numbers back as floats (2.0), printed here as 2."""
    if isinstance(entry, Sequence) and not isinstance(entry, str):
        return "[" + ", ".join(show(v) for v in entry) + "]"
    return f"{entry:g}" if isinstance(entry, float) else repr(entry)


def parse(kind: Kind, value: Sequence[Sequence[Any]] | None) -> list[Stage]:
    """The stages of `kind.key`, or a UserError naming what is wrong and an example."""
    stages: list[Stage] = []
    shape = ", ".join(("until", *kind.fields))
    for i, entry in enumerate(value or []):
        if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 1 + len(kind.fields):
            raise UserError(f"{kind.key}[{i}]={show(entry)}: each stage is [{shape}], e.g. {kind.example}")
        until, *values = entry
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not (0 < until < 1):
            raise UserError(
                f"{kind.key}[{i}]: until={until!r} must be a fraction of the run's steps between 0 and 1 "
                f"(the arch's setting runs after the last stage), e.g. {kind.example}"
            )
        if stages and until <= stages[-1].until:
            raise UserError(f"{kind.key}: the stages' `until` must increase; {until} follows {stages[-1].until}")
        for name, v in zip(kind.fields, values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
                raise UserError(f"{kind.key}[{i}]: {name}={v!r} must be a whole number >= 1, e.g. {kind.example}")
        stages.append(Stage(float(until), tuple(int(v) for v in values)))
    return stages


def check_model(
    kind: Kind, stages: list[Stage], model_class: type, arch_name: str, halt_max_steps: int | None = None
) -> None:
    """Each stage must be a setting the model can run: a depth needs TRM's family (and one its variant allows); a
    segment limit is at most the arch's `halt_max_steps` (the curriculum trains fewer segments early, never more)."""
    if not stages:
        return
    if kind is SEGMENTS:  # every ACT model halts, so any whole number of segments >= 1 runs
        over = [s for s in stages if halt_max_steps is not None and s.values[0] > halt_max_steps]
        if over:
            raise UserError(
                f"segments_curriculum stage {SEGMENTS.name(over[0].values)}: {over[0].values[0]} segments is more than "
                f"the arch's arch.halt_max_steps={halt_max_steps}; a stage trains fewer segments, e.g. {SEGMENTS.example}"
            )
        return
    inner = getattr(model_class, "inner_class", None)
    if not hasattr(inner, "at_depth"):
        raise UserError(
            f"depth_curriculum is for TRM (arch=trm and its variants); arch {arch_name} has no depth to change: "
            "drop depth_curriculum"
        )
    for s in stages:
        try:
            inner.check_depth(*s.values)  # type: ignore[union-attr]
        except ValueError as e:
            raise UserError(f"depth_curriculum stage {DEPTH.name(s.values)}: {e}") from None


class Curriculum:
    """Which setting a training step runs, and the context that runs it there."""

    def __init__(
        self,
        kind: Kind,
        stages: list[Stage],
        total_steps: int,
        full: tuple[int, ...],
        run_at: Callable[..., contextlib.AbstractContextManager[None]],
    ) -> None:
        self.kind = kind
        self.stages = stages
        self.full = full  # the arch's setting
        self.run_at = run_at  # run_at(*values): the model at that setting
        # the first step of the next stage: stage i trains steps [ends[i-1], ends[i])
        self.ends = [math.ceil(s.until * total_steps) for s in stages]

    def stage_of(self, step: int) -> int:
        """The index of the stage that trains step `step` (0-based, before the step); len(stages): the arch's."""
        return next((i for i, end in enumerate(self.ends) if step < end), len(self.stages))

    def values_of(self, step: int) -> tuple[int, ...]:
        i = self.stage_of(step)
        return self.stages[i].values if i < len(self.stages) else self.full

    def starts_stage(self, step: int) -> bool:
        """Step `step` (0-based) is the first of a stage (so the log says the new setting)."""
        return bool(self.stages) and (step == 0 or self.stage_of(step) != self.stage_of(step - 1))

    def at(self, step: int) -> contextlib.AbstractContextManager[None]:
        """Train step `step` at its stage's setting (after the last stage: the arch's, the ints compile saw)."""
        return self.run_at(*self.values_of(step))

    def cost_of(self, step: int) -> float:
        """What step `step` costs against one at the arch's setting. Depth: f's calls per segment with a call that
        takes gradient counted 3x (forward and backward), (T - 1)(n + 1) + 3(n + 1) = (T + 2)(n + 1), so (1, 2)
        is 9/35 of (3, 6). Segments: 1 (a step is one segment whatever the limit)."""
        if self.kind is not DEPTH:
            return 1.0
        h, lc = self.values_of(step)
        fh, flc = self.full
        return (h + 2) * (lc + 1) / ((fh + 2) * (flc + 1))

    def steps_left_at(self, step: int, total: int) -> float:
        """The steps from `step` to `total`, counted in steps of `step`'s cost: the remaining time over the time a
        step of `step`'s stage takes (train/tracking.Estimate)."""
        bounds = [0, *self.ends, max(total, *self.ends)]
        left = 0.0
        for i in range(len(bounds) - 1):
            lo, hi = max(step, bounds[i]), min(total, bounds[i + 1])
            if hi > lo:
                left += (hi - lo) * self.cost_of(lo)
        return left / self.cost_of(step)

    def describe(self) -> str:
        """One line for the start-up report."""
        parts, start = [], 0
        for s, end in zip(self.stages, self.ends):
            parts.append(f"{self.kind.name(s.values)} for steps {start:,}-{max(start, end - 1):,}")
            start = end
        full = self.kind.name(self.full)
        return f"{', '.join(parts)}, then the arch's {full} (evaluations always {full}; train/curriculum.py)"

    def stage_line(self, step: int) -> str:
        """The setting that trains from step `step` on (printed at each stage's first step and when a run resumes)."""
        return (
            f"{self.kind.what} {self.kind.line(self.values_of(step))} from step {step:,} "
            f"(curriculum stage {self.stage_of(step) + 1} of {len(self.stages) + 1})"
        )


KINDS = (DEPTH, SEGMENTS)


def build(config: Any, act: nn.Module, total_steps: int) -> list[Curriculum]:
    """The run's curricula (none: the paper's training), for the ACT model `act` (checked against it by
    train/config.validate_config)."""
    out = []
    for kind in KINDS:
        stages = parse(kind, getattr(config, kind.key))
        if not stages:
            continue
        if kind is DEPTH:
            full, run_at = (act.inner.H_cycles, act.inner.L_cycles), act.inner.at_depth  # type: ignore[union-attr]
        else:
            full, run_at = (act.config.halt_max_steps,), act.at_halt_max_steps  # type: ignore[union-attr]
        out.append(Curriculum(kind, stages, total_steps, full, run_at))  # type: ignore[arg-type]
    return out


def steps_left_counter(curricula: list[Curriculum]) -> Callable[[int, int], float] | None:
    """The steps left counted by their cost (Curriculum.steps_left_at) where some stage's steps cost differently
    (the depth curriculum's); None where every step costs the same."""
    return next((c.steps_left_at for c in curricula if c.kind is DEPTH), None)


def settings(curricula: list[Curriculum]) -> int:
    """How many different settings the run's training steps have (every curriculum's stages together)."""
    starts = sorted({0, *(e for c in curricula for e in c.ends)})
    return len({tuple(c.values_of(s) for c in curricula) for s in starts})


def make_room_for_recompiles(curricula: list[Curriculum], log=print) -> None:
    """Under whole-model compile each setting is a graph of its own (Dynamo guards on the ints; measured: one per
    setting, plus evaluation's). Past Dynamo's recompile limit (8 per function) the step would run eagerly from
    then on, several times slower, with only a log line of Dynamo's: raise the limit to fit, and say so."""
    n = settings(curricula)
    need = n + 4  # + evaluation, the first step's variant, and room
    if need > torch._dynamo.config.recompile_limit:
        log(f"torch.compile: recompile limit raised to {need} for the curricula's {n} settings of the step")
        torch._dynamo.config.recompile_limit = need


def check_config(config: Any, model_class: type, arch_name: str) -> None:
    """Every curriculum's format and its fit to the model, once, before any data (train/config.validate_config)."""
    limit = (config.arch.__pydantic_extra__ or {}).get("halt_max_steps")
    for kind in KINDS:
        check_model(kind, parse(kind, getattr(config, kind.key)), model_class, arch_name, limit)
