"""The id cursor's hole rule: stop at an id not yet seen until it fills or grows old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from carepost.id_cursor import LATE_COMMIT_GRACE, HoleWatch, grace_for

T0 = datetime(2027, 3, 1, 8, tzinfo=UTC)


def test_contiguous_ids_are_all_readable() -> None:
    watch = HoleWatch(LATE_COMMIT_GRACE)
    assert watch.readable(6, [7, 8, 9], T0) == 3
    assert watch.readable(9, [], T0) == 0
    assert watch.first_seen == {}


def test_a_young_hole_stops_the_reader_until_it_fills() -> None:
    watch = HoleWatch(LATE_COMMIT_GRACE)
    assert watch.readable(6, [7, 9, 10], T0) == 1  # 8 is in a transaction not committed
    assert watch.first_seen == {8: T0}
    assert watch.readable(7, [9, 10], T0 + timedelta(seconds=5)) == 0
    assert watch.readable(7, [8, 9, 10], T0 + timedelta(seconds=6)) == 3  # it committed
    assert watch.first_seen == {}


def test_a_hole_older_than_the_grace_is_passed() -> None:
    watch = HoleWatch(LATE_COMMIT_GRACE)
    assert watch.readable(0, [3, 4], T0) == 0
    assert watch.readable(0, [3, 4], T0 + LATE_COMMIT_GRACE - timedelta(seconds=1)) == 0
    # Rolled back or deleted: the reader goes on, and the next hole gets its own grace.
    later = T0 + LATE_COMMIT_GRACE
    assert watch.readable(0, [3, 4, 6], later) == 2
    assert watch.first_seen == {5: later}


def test_sqlite_passes_holes_at_once() -> None:
    assert grace_for("sqlite") == timedelta(0)
    assert grace_for("postgresql") == LATE_COMMIT_GRACE
    assert HoleWatch(grace_for("sqlite")).readable(0, [2, 5, 9], T0) == 3


@given(
    n=st.integers(0, 60),
    pending=st.sets(st.integers(1, 60), max_size=10),
)
def test_no_row_is_passed_while_its_hole_is_young(n: int, pending: set[int]) -> None:
    """Ids 1..n, some of them in transactions still open at the first read: the cursor
    stops below every one of those, and takes the rest once they commit."""
    pending = {p for p in pending if p <= n}
    watch = HoleWatch(LATE_COMMIT_GRACE)
    visible = [i for i in range(1, n + 1) if i not in pending]
    taken = watch.readable(0, visible, T0)
    position = visible[taken - 1] if taken else 0
    assert all(p > position for p in pending)
    rest = list(range(position + 1, n + 1))
    assert watch.readable(position, rest, T0 + timedelta(seconds=1)) == len(rest)
    assert watch.first_seen == {}
