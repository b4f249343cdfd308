"""The burst window (pure): a later click reveals a burst and corrects the earlier clicks of
the same message, in the batch or already stored; failed batches leave no trace; opens and
honeypot clicks stay out; the window stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carepost.tracking.classifier import Event, Knowledge
from carepost.tracking.window import BurstWindow

K = Knowledge.default()
SENT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
T0 = SENT + timedelta(hours=2)  # long after delivery: nothing is "too fast"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def click(index: int, at: datetime, links: int = 3, *, honeypot: bool = False) -> Event:
    return Event(
        kind="click",
        link_index=index,
        method="GET",
        user_agent=CHROME,
        ip="198.51.100.7",
        headers={},
        delivered_at=SENT,
        at=at,
        message_links=links,
        honeypot=honeypot,
    )


def opened(at: datetime) -> Event:
    return Event("open", None, "GET", CHROME, "198.51.100.7", {}, SENT, at)


def ms(n: float) -> timedelta:
    return timedelta(milliseconds=n)


def test_a_person_clicking_links_minutes_apart_stays_human() -> None:
    w = BurstWindow(K)
    for i in range(3):
        verdict, changed = w.judge("m1", click(i, T0 + timedelta(minutes=i)), i)
        assert verdict.verdict == "human"
        assert changed == []


def test_the_click_that_completes_a_burst_corrects_the_earlier_ones_in_the_batch() -> None:
    w = BurstWindow(K)
    first, _ = w.judge("m1", click(0, T0), 0)
    second, changed = w.judge("m1", click(1, T0 + ms(200)), 1)
    assert (first.verdict, second.verdict) == ("human", "human")  # 2 of 3 links: not yet
    assert changed == []
    third, changed = w.judge("m1", click(2, T0 + ms(400)), 2)
    assert third.verdict == "machine"
    assert "all_links_burst" in third.reasons
    assert sorted((s.row, s.stored, s.verdict.verdict) for s in changed) == [
        (0, False, "machine"),
        (1, False, "machine"),
    ]
    assert all(s.verdict.reasons == ("all_links_burst",) for s in changed)


def test_after_commit_the_corrections_name_stored_rows() -> None:
    w = BurstWindow(K)
    w.judge("m1", click(0, T0), 0)
    w.judge("m1", click(1, T0 + ms(100)), 1)
    w.committed()
    _, changed = w.judge("m1", click(2, T0 + ms(300)), 0)
    assert [(s.stored, s.event.link_index) for s in changed] == [(True, 0), (True, 1)]
    # Judged again, the corrected clicks are machines already: nothing more to change.
    _, again = w.judge("m1", click(0, T0 + ms(500)), 1)
    assert again == []


def test_clicks_of_other_messages_and_outside_the_second_do_not_count() -> None:
    w = BurstWindow(K)
    w.judge("m1", click(0, T0), 0)
    w.judge("m2", click(1, T0 + ms(100)), 1)
    verdict, changed = w.judge("m1", click(2, T0 + ms(200)), 2)
    assert verdict.verdict == "human"
    w.judge("m3", click(0, T0), 3)
    w.judge("m3", click(1, T0 + ms(100)), 4)
    verdict, changed = w.judge("m3", click(2, T0 + ms(1500)), 5)
    assert verdict.verdict == "human"
    assert changed == []


def test_a_failed_batch_leaves_no_trace() -> None:
    w = BurstWindow(K)
    w.judge("m1", click(0, T0), 0)
    w.judge("m1", click(1, T0 + ms(100)), 1)
    w.abandoned()
    assert len(w) == 0
    verdict, changed = w.judge("m1", click(2, T0 + ms(200)), 0)
    assert verdict.verdict == "human"
    assert changed == []


def test_opens_and_the_honeypot_stay_out_of_the_window() -> None:
    w = BurstWindow(K)
    w.judge("m1", opened(T0), 0)
    verdict, _ = w.judge("m1", click(3, T0 + ms(50), honeypot=True), 1)
    assert verdict.verdict == "machine"
    assert "honeypot" in verdict.reasons
    assert len(w) == 0


def test_the_window_stays_bounded() -> None:
    w = BurstWindow(K, max_messages=100, max_per_message=4)
    for i in range(1000):
        w.judge(f"m{i}", click(0, T0 + ms(i)), i)
    assert len(w) <= 100
    for i in range(50):  # one message hammered: only the latest few clicks kept
        w.judge("busy", click(i % 3, T0 + ms(1000 + i), links=50), i)
    assert len(w._clicks["busy"]) == 4
    # Two seconds later every earlier message is stale and dropped.
    w.judge("late", click(0, T0 + timedelta(seconds=5)), 0)
    assert list(w._clicks) == ["late"]
