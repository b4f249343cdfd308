"""The canonical UTC text of hashed records: four-digit years even before 1000 (a date
a client sent through the API), microseconds and 'Z', whatever the offset given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from carepost.clock import isoformat_utc


def test_canonical_text() -> None:
    assert (
        isoformat_utc(datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC)) == "2026-11-24T09:00:05.000000Z"
    )
    east = timezone(timedelta(hours=2))
    assert isoformat_utc(datetime(2026, 1, 1, 1, 30, tzinfo=east)) == "2025-12-31T23:30:00.000000Z"
    assert (
        isoformat_utc(datetime(322, 1, 24, 17, 1, 42, 7, tzinfo=UTC))
        == "0322-01-24T17:01:42.000007Z"
    )
    assert datetime.fromisoformat(isoformat_utc(datetime(99, 5, 1, tzinfo=UTC))).year == 99
