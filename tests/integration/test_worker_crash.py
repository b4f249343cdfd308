"""Kill -9 the worker during a campaign, at reduced counts (full counts: by hand with
tests/fault/crash_worker.py, results in docs/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fault"))
from crash_worker import CONCURRENCY, run


@pytest.mark.slow
def test_kill_minus_nine_loses_nothing(db_url: str, tmp_path: Path) -> None:
    report = run(db_url, recipients=400, kills=4, seed=3, workdir=tmp_path)
    assert report.lost == 0
    assert report.duplicates <= CONCURRENCY * report.kills
    assert report.stuck == 0
    assert report.states == {"sent": 400}
    assert report.broken_timelines == 0
    assert report.kills >= 1
