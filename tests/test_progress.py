"""Progress lines and estimates on a fake clock: early, from steady steps only, never `0.00 steps/s`."""

from __future__ import annotations

import io

import pytest

from train.tracking import Estimate, LineProgress, StepRate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_leaves_out_compile_eval_and_saves() -> None:
    clock = Clock()
    rate = StepRate(clock=clock)
    clock.t += 50  # first step: compile
    rate.tick(1)
    assert rate.seconds_per_step() is None and rate.first == 50 and "first step 50s" in rate.describe()
    for step in range(2, 12):
        clock.t += 0.08
        rate.tick(step)
    assert abs(rate.seconds_per_step() - 0.08) < 1e-9  # type: ignore[operator]
    rate.pause()  # evaluation, 40 s with its compile
    clock.t += 40
    rate.tick(12)
    clock.t += 3  # one slow step (a checkpoint write without pause): the median ignores it
    rate.tick(13)
    assert abs(rate.seconds_per_step() - 0.08) < 1e-9  # type: ignore[operator]
    assert rate.describe() == "12.50 steps/s"


def test_gpu_run_eta_is_the_steady_one() -> None:
    """An H200 run said ETA 1h37m at first while the truth was 32 min: the average held the compile."""
    clock = Clock()
    rate = StepRate(clock=clock)
    out = io.StringIO()
    bar = LineProgress(25_000, interval=60, batch=768, file=out, rate=rate, clock=clock)
    clock.t += 55  # compile at the first step
    rate.tick(1)
    bar.update(1)
    for step in range(2, 800):
        clock.t += 0.077
        rate.tick(step)
        bar.update(1)
    first = out.getvalue().splitlines()[0]
    assert "ETA 31m" in first and "12.99 steps/s" in first, first


def test_slow_cpu_run_says_something_after_one_step() -> None:
    clock = Clock()
    rate = StepRate(clock=clock)
    said: list[str] = []
    estimate = Estimate(0, 500, 4, said.append, rate)
    out = io.StringIO()
    bar = LineProgress(500, interval=60, batch=768, file=out, rate=rate, clock=clock)
    clock.t += 240  # the paper's model on a CPU: 4 min a step
    rate.tick(1)
    estimate.tick(1)
    assert said and "first step took 4m00s" in said[0] and "499 steps would take 33h" in said[0]
    bar.update(1)  # the first step's metrics arrive one step late, after 60 s have long passed
    assert "first step 4m00s (incl. warm-up)" in out.getvalue() and "0.00" not in out.getvalue()
    clock.t += 230
    rate.tick(2)
    estimate.tick(2)
    assert "estimate: 31h" in said[1] and "230.0 s/step" in said[1] and "1 steady step" in said[1]
    bar.update(1)
    assert "230.0 s/step" in out.getvalue().splitlines()[-1] and "0.00 steps/s" not in out.getvalue()
    for step in range(3, 40):
        clock.t += 230
        rate.tick(step)
        estimate.tick(step)
    assert len(said) == 3 and "timed over 20 steady steps" in said[2]  # one refined estimate, then quiet


def test_eval_bar_times_itself() -> None:
    clock = Clock()
    out = io.StringIO()
    bar = LineProgress(10, interval=0, batch=100, file=out, desc="eval", clock=clock)
    for _ in range(10):
        clock.t += 0.5
        bar.update(1)
    assert "2.00 batches/s, 200 examples/s" in out.getvalue().splitlines()[-1]


def test_compiled_first_step_is_not_extrapolated() -> None:
    """On a GPU the first step holds a minute of torch.compile: 74 s x 65,099 steps read "1342h" on an H200."""
    clock = Clock()
    rate = StepRate(clock=clock)
    said: list[str] = []
    estimate = Estimate(0, 65_100, 50, said.append, rate, compiled=True)
    clock.t += 74
    rate.tick(1)
    estimate.tick(1)
    assert said == [
        "first step took 1m14s (start-up and torch.compile included); an estimate follows after a few steady steps"
    ]


def test_cuda_graph_recording_is_not_a_steady_step() -> None:
    """With CUDA graphs the second step records the graph: an H200 run at batch 192 first said 1h57m at 12.52
    steps/s (that step, 80 ms), then 23m09s at 63.70 steps/s over 20 steps."""
    clock = Clock()
    rate = StepRate(clock=clock, warmup_steps=2)
    said: list[str] = []
    estimate = Estimate(0, 88_550, 17, said.append, rate, compiled=True)
    for step, dt in ((1, 49.0), (2, 0.08), (3, 0.0157)):
        clock.t += dt
        rate.tick(step)
        estimate.tick(step)
    assert len(said) == 2 and "63.69 steps/s" in said[1] and "timed over 1 steady step" in said[1], said
    rate.pause()  # an evaluation: the step after it is left out as before, without a second warm-up
    clock.t += 4.0
    rate.tick(4)
    clock.t += 0.0157
    rate.tick(5)
    assert rate.describe() == "63.69 steps/s"


def test_a_depth_curriculum_estimate_counts_the_deeper_stages_by_their_cost() -> None:
    """CGAR's stages on 1,000 steps: 300 at (1, 2), 300 at (2, 4), 400 at (3, 6), costing 9 : 20 : 35 (f's calls a
    segment, a call with gradient 3x). Timed in the first stage at 0.1 s a step, the rest is not 999 x 0.1 s."""
    from train.curriculum import DEPTH, Curriculum, parse

    c = Curriculum(DEPTH, parse(DEPTH, [[0.3, 1, 2], [0.6, 2, 4]]), 1000, (3, 6), run_at=lambda *_: None)
    assert [round(c.cost_of(s) * 35) for s in (0, 299, 300, 600, 999)] == [9, 9, 20, 35, 35]
    assert c.steps_left_at(1, 1000) == pytest.approx((299 * 9 + 300 * 20 + 400 * 35) / 9)
    assert c.steps_left_at(600, 1000) == pytest.approx(400)  # the arch's depth: plain steps
    clock = Clock()
    rate = StepRate(clock=clock)
    said: list[str] = []
    estimate = Estimate(0, 1000, 5, said.append, rate, compiled=True, steps_left_at=c.steps_left_at)
    for step, dt in ((1, 30.0), (2, 0.1)):
        clock.t += dt
        rate.tick(step)
        estimate.tick(step)
    # 298 x 0.1 + 300 x 0.1 x 20/9 + 400 x 0.1 x 35/9 = 29.8 + 66.7 + 155.6 s: 4m12s, where plain steps say 1m40s
    assert "estimate: 4m12s for the remaining 998 steps at 10.00 steps/s" in said[1], said
    assert "later curriculum stages' steps counted by their cost" in said[1]


def test_the_log_line_eta_counts_a_depth_curriculum_by_cost() -> None:
    """The progress line's ETA, like the estimate: in CGAR's first stage the rest is not (steps left) x (this rate)."""
    from train.curriculum import DEPTH, Curriculum, parse

    c = Curriculum(DEPTH, parse(DEPTH, [[0.3, 1, 2], [0.6, 2, 4]]), 1000, (3, 6), run_at=lambda *_: None)
    clock = Clock()
    rate = StepRate(clock=clock)
    out = io.StringIO()
    bar = LineProgress(1000, interval=0, file=out, rate=rate, clock=clock, steps_left_at=c.steps_left_at)
    for step in range(1, 3):
        clock.t += 0.1
        rate.tick(step)
        bar.update(1)
    # 298 x 0.1 + 300 x 0.1 x 20/9 + 400 x 0.1 x 35/9 = 29.8 + 66.7 + 155.6 s, where plain steps say 1m40s
    assert "10.00 steps/s | ETA 4m12s" in out.getvalue().splitlines()[-1], out.getvalue()
