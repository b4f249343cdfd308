"""delivery.timeline.merge: transition rows and attempt rows in one timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carepost.delivery.timeline import merge

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_frozen_clock_orders_by_position() -> None:
    # Two attempts in the same instant: each start and result follow their own claim.
    transitions = [(0, "queued", T0, None), (1, "claimed", T0, "w1"), (2, "claimed", T0, "w1")]
    attempts = [
        (2, T0, T0, "sent", "accepted"),
        (1, T0, T0, "deferred", "reply_4xx"),
    ]
    assert merge(transitions, attempts) == [
        ("queued", T0, None),
        ("claimed", T0, "w1"),
        ("attempt_started", T0, None),
        ("deferred", T0, "reply_4xx"),
        ("claimed", T0, "w1"),
        ("attempt_started", T0, None),
        ("sent", T0, "accepted"),
    ]


def test_an_attempt_without_a_result_is_only_its_start() -> None:
    transitions = [(0, "queued", at(0), None), (1, "claimed", at(1), "w1")]
    assert merge(transitions, [(1, at(2), None, None, None)]) == [
        ("queued", at(0), None),
        ("claimed", at(1), "w1"),
        ("attempt_started", at(2), None),
    ]


def test_a_stalled_workers_result_lands_at_its_time() -> None:
    # w1 stalled past its lease; the lease expired and w2 claimed the row before w1's
    # result was recorded. Time decides: the late result is shown where it happened.
    transitions = [
        (0, "queued", at(0), None),
        (1, "claimed", at(1), "w1"),
        (2, "unknown", at(400), "lease_expired"),
        (3, "claimed", at(401), "w2"),
    ]
    attempts = [(1, at(2), at(500), "sent", "accepted"), (3, at(402), None, None, None)]
    assert [s for s, _, _ in merge(transitions, attempts)] == [
        "queued",
        "claimed",
        "attempt_started",
        "unknown",
        "claimed",
        "attempt_started",
        "sent",
    ]


def test_rows_from_before_the_attempt_columns_add_nothing() -> None:
    # Written before migration 0019: the start and the result are transitions already.
    transitions = [
        (0, "queued", at(0), None),
        (1, "claimed", at(1), "w1"),
        (2, "attempt_started", at(2), None),
        (3, "sent", at(3), "accepted"),
    ]
    assert merge(transitions, [(None, at(2), at(3), None, None)]) == [
        (state, when, detail) for _, state, when, detail in transitions
    ]


def test_nothing_yields_nothing() -> None:
    assert merge([], []) == []
