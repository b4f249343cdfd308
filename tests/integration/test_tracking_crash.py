"""Kill -9 the tracking server under load, at reduced counts (full counts: by hand with
tests/fault/crash_tracking.py, results in docs/benchmarks.md): every acknowledged event is
stored, none twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fault"))
from crash_tracking import run


@pytest.mark.slow
def test_kill_minus_nine_loses_no_acknowledged_event(db_url: str, tmp_path: Path) -> None:
    report = run(db_url, messages=1500, kills=4, seed=5, workdir=tmp_path)
    assert report.kills == 4
    assert report.acknowledged > 0
    assert report.lost == 0
    assert report.duplicates == 0
    # Requests in flight at a kill are neither retried nor acknowledged; the rest are.
    assert report.requested == 1500 * 4
    assert report.acknowledged + report.kills * 32 >= report.requested
