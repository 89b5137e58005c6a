"""utils/records.py: time to each test exact accuracy threshold, across a resume too."""

from __future__ import annotations

import pytest

from utils import records


def test_first_crossings_best_and_resume(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    t = records.TimeToAccuracy(start=1000.0)
    now[0] = 1060.0
    assert t.update(0.05, step=100) == []
    now[0] = 1130.0
    lines = t.update(0.56, step=200)  # crosses 10% .. 55% at once
    assert lines[0] == "test exact accuracy >= 10% first reached at 2m10s (step 200)"
    assert lines[-1].startswith("test exact accuracy >= 55% first reached at 2m10s") and len(lines) == 6
    now[0] = 1200.0
    assert t.update(0.50, step=300) == []  # a drop changes nothing already reached
    assert t.best == (0.56, 130.0, 200)

    saved = t.state_dict()  # a checkpoint at 3m20s; the next job starts at a fresh clock
    now[0] = 5000.0
    monkeypatch.setattr(records, "PROCESS_START", 5000.0)
    r = records.TimeToAccuracy.resumed(saved)
    r.start = 5000.0
    now[0] = 5100.0
    assert r.update(0.61, step=400) == ["test exact accuracy >= 60% first reached at 5m00s (step 400)"]
    s = r.summary()
    assert s.startswith("time to test exact accuracy: 10% 2m10s (step 200)") and "60% 5m00s (step 400)" in s
    assert s.endswith("best 61.0% at 5m00s (step 400)")
    assert records.clock(3725) == "1h02m05s"


@pytest.mark.parametrize("saved", [None, {}])
def test_fresh_run_has_no_offset(saved) -> None:
    t = records.TimeToAccuracy.resumed(saved)
    assert t.offset == 0 and t.reached == {} and t.summary() == "time to test exact accuracy: no threshold reached"
