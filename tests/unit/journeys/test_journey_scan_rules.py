"""The scan triggers' pure decisions: segment entries and exits with the baseline,
birthdays (29 February), occurrence instants in the contact's zone, instant dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from carepost.journeys.definition import SegmentTrigger
from carepost.journeys.scan import birthday_dates, date_fires, instant_date, segment_change

NY = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def test_segment_change_and_baseline() -> None:
    enter = SegmentTrigger("s", "enter")
    leave = SegmentTrigger("s", "leave")
    existing = SegmentTrigger("s", "enter", existing=True)
    assert segment_change(None, {"a", "b"}, enter) == set()
    assert segment_change(None, {"a", "b"}, leave) == set()
    assert segment_change(None, {"a", "b"}, existing) == {"a", "b"}
    assert segment_change({"a", "b"}, {"b", "c"}, enter) == {"c"}
    assert segment_change({"a", "b"}, {"b", "c"}, leave) == {"a"}
    assert segment_change({"a", "b"}, {"b", "c"}, existing) == {"c"}


def test_birthdays_around_a_date() -> None:
    assert birthday_dates(2, 29, date(2027, 6, 1)) == [
        date(2026, 2, 28),
        date(2027, 2, 28),
        date(2028, 2, 29),
    ]
    assert birthday_dates(12, 31, date(2027, 1, 1))[0] == date(2026, 12, 31)


def test_fires_at_the_local_time_in_the_window() -> None:
    base = [date(2027, 3, 1)]
    since = datetime(2027, 2, 28, 23, tzinfo=UTC)
    at_nine = time(9)
    # 09:00 in New York is 14:00 UTC (EST); in Tokyo 00:00 UTC the same day.
    assert date_fires(base, 0, at_nine, NY, since, datetime(2027, 3, 1, 13, 59, tzinfo=UTC)) == []
    assert date_fires(base, 0, at_nine, NY, since, datetime(2027, 3, 1, 14, tzinfo=UTC)) == base
    assert date_fires(base, 0, at_nine, TOKYO, since, datetime(2027, 3, 1, 0, tzinfo=UTC)) == base
    late = datetime(2027, 3, 1, 1, tzinfo=UTC)
    assert date_fires(base, 0, at_nine, TOKYO, late, datetime(2027, 3, 1, 2, tzinfo=UTC)) == []
    # Offsets: three days after, two days before.
    now = datetime(2027, 3, 4, 10, tzinfo=UTC)
    assert date_fires(base, 3, time(10), UTC, since, now) == [date(2027, 3, 4)]
    assert date_fires(
        [date(2027, 3, 3)], -2, time(10), UTC, since, datetime(2027, 3, 1, 10, tzinfo=UTC)
    ) == [date(2027, 3, 1)]


def test_instant_dates() -> None:
    midnight = int(datetime(2027, 3, 1, tzinfo=UTC).timestamp())
    assert instant_date(midnight, NY) == date(2027, 3, 1)  # a date stays that date
    evening = int(datetime(2027, 3, 2, 2, tzinfo=UTC).timestamp())
    assert instant_date(evening, NY) == date(2027, 3, 1)  # 21:00 the day before in NY
    assert instant_date(evening, TOKYO) == date(2027, 3, 2)
