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
    """Follows the eval exact accuracy of a run; resumed runs add the time of the jobs before (`offset`).

    With a val/ split the accuracy followed is val's, and each time and the best carry test's accuracy at that
    step (`test`): the figure reported is never the one it was chosen on. Without one, it is test's (the paper's
    protocol, which chooses on the figure it reports: the lines say which)."""

    def __init__(self, start: float = PROCESS_START, offset: float = 0.0, reached: dict | None = None):
        self.start, self.offset = start, offset
        # "0.55" -> (seconds, step) or, chosen on val, (seconds, step, test accuracy at that step)
        self.reached: dict[str, tuple] = {k: tuple(v) for k, v in (reached or {}).items()}
        self.best: tuple | None = None  # (accuracy, seconds, step[, test accuracy])
        self.on = "test"  # the split the accuracy followed is from: "val" once a val accuracy came

    def elapsed(self) -> float:
        return self.offset + time.time() - self.start

    def update(self, accuracy: float, step: int, at: float | None = None, test: float | None = None) -> list[str]:
        """Record one evaluation, known at `at` seconds (default: now); returns a line per threshold crossed first.
        `test`: given when `accuracy` is val's, test's exact accuracy at the same step."""
        t = self.elapsed() if at is None else at
        if test is not None:
            self.on = "val"
        extra = () if test is None else (test,)
        if self.best is None or accuracy > self.best[0]:
            self.best = (accuracy, t, step, *extra)
        lines = []
        there = f"; test {test:.1%} there" if test is not None else ""
        for thr in THRESHOLDS:
            key = f"{thr:g}"
            if accuracy >= thr and key not in self.reached:
                self.reached[key] = (t, step, *extra)
                lines.append(
                    f"{self.on} exact accuracy >= {thr:.0%} first reached at {clock(t)} (step {step:,}{there})"
                )
        return lines

    def summary(self) -> str:
        parts = [
            f"{float(k):.0%} {clock(v[0])} (step {v[1]:,}" + (f", test {v[2]:.1%})" if len(v) > 2 else ")")
            for k, v in sorted(self.reached.items(), key=lambda x: float(x[0]))
        ]
        best = ""
        if self.best:
            test = f", test {self.best[3]:.1%}" if len(self.best) > 3 else ""
            best = f"; best {self.best[0]:.1%} at {clock(self.best[1])} (step {self.best[2]:,}{test})"
        return f"time to {self.on} exact accuracy: " + (", ".join(parts) if parts else "no threshold reached") + best

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed(), "reached": dict(self.reached), "best": self.best, "on": self.on}

    @classmethod
    def resumed(cls, saved: dict | None) -> TimeToAccuracy:
        if not saved:
            return cls()
        out = cls(offset=float(saved.get("elapsed", 0.0)), reached=saved.get("reached"))
        out.best = tuple(saved["best"]) if saved.get("best") else None
        out.on = str(saved.get("on", "test"))
        return out
