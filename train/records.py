"""Time to accuracy: wall time from the training command's start to the first evaluation at or above each
threshold of test exact accuracy (the speedrun's figure: compile, data loading and evaluations included)."""

from __future__ import annotations

import time

# The paper's HRM Sudoku-Extreme figure (55%) and TRM's (87.4% -> 87%), among round steps.
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.87, 0.9)

# Set when pretrain.py is first imported, before torch: the closest the program gets to "the command's start".
PROCESS_START = time.time()


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class TimeToAccuracy:
    """Follows the eval exact accuracy of a run; resumed runs add the time of the jobs before (`offset`)."""

    def __init__(self, start: float = PROCESS_START, offset: float = 0.0, reached: dict | None = None):
        self.start, self.offset = start, offset
        self.reached: dict[str, tuple[float, int]] = dict(reached or {})  # "0.55" -> (seconds, step)
        self.best: tuple[float, float, int] | None = None  # (accuracy, seconds, step)

    def elapsed(self) -> float:
        return self.offset + time.time() - self.start

    def update(self, accuracy: float, step: int, at: float | None = None) -> list[str]:
        """Record one evaluation, known at `at` seconds (default: now); returns a line per threshold crossed first."""
        t = self.elapsed() if at is None else at
        if self.best is None or accuracy > self.best[0]:
            self.best = (accuracy, t, step)
        lines = []
        for thr in THRESHOLDS:
            key = f"{thr:g}"
            if accuracy >= thr and key not in self.reached:
                self.reached[key] = (t, step)
                lines.append(f"test exact accuracy >= {thr:.0%} first reached at {clock(t)} (step {step:,})")
        return lines

    def summary(self) -> str:
        parts = [
            f"{float(k):.0%} {clock(t)} (step {s:,})"
            for k, (t, s) in sorted(self.reached.items(), key=lambda x: float(x[0]))
        ]
        best = f"; best {self.best[0]:.1%} at {clock(self.best[1])} (step {self.best[2]:,})" if self.best else ""
        return "time to test exact accuracy: " + (", ".join(parts) if parts else "no threshold reached") + best

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed(), "reached": dict(self.reached), "best": self.best}

    @classmethod
    def resumed(cls, saved: dict | None) -> TimeToAccuracy:
        if not saved:
            return cls()
        out = cls(offset=float(saved.get("elapsed", 0.0)), reached=saved.get("reached"))
        out.best = tuple(saved["best"]) if saved.get("best") else None  # type: ignore[assignment]
        return out
