"""Kill -9 the journey engine during timer processing, at reduced counts (full counts: by
hand with tests/fault/crash_journeys.py, results in docs/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fault"))
from crash_journeys import run


@pytest.mark.slow
def test_kill_minus_nine_loses_no_step_and_sends_nothing_twice(db_url: str, tmp_path: Path) -> None:
    report = run(db_url, enrolments=2000, kills=3, seed=2, workdir=tmp_path)
    assert report.kills >= 1
    assert report.lost_steps == 0
    assert report.duplicate_sends == 0
    assert report.missing_sends == 0
    assert report.states == {"exited": 2000}
