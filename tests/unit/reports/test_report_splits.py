"""The splits' pure core: domain pooling, links and the honeypot, day and hour buckets,
segment clause rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from carepost.reports.measures import Engagement, Tally
from carepost.reports.splits import (
    POOLED,
    UNRECORDED,
    DomainBounces,
    DomainInput,
    Recipients,
    clause_rows,
    domain_split,
    link_split,
    time_split,
)


def _opens(n: int) -> Engagement:
    return Engagement(opens_unique=Tally(n, 0, 0, n, n))


def test_small_domains_are_pooled_and_never_named() -> None:
    split = domain_split(
        [
            DomainInput("big.example", 50, 48, _opens(20)),
            DomainInput("mid.example", 10, 10, _opens(4)),
            DomainInput("smallpractice.example", 3, 3, _opens(2)),
            DomainInput("solo.example", 1, 1, _opens(1)),
            DomainInput(None, 6, 0),
        ],
        {
            "big.example": DomainBounces(hard=2, undelivered=1),
            "solo.example": DomainBounces(soft=1, undelivered=1),
        },
        min_recipients=10,
    )
    labels = [r.label for r in split.rows]
    assert labels == ["big.example", "mid.example", POOLED, UNRECORDED]
    big, _, pooled, unrecorded = split.rows
    assert (big.delivered, big.bounced_hard) == (47, 2)
    assert (pooled.domains, pooled.recipients, pooled.sent, pooled.delivered) == (2, 4, 4, 3)
    assert pooled.bounced_soft == 1
    assert pooled.engagement.opens_unique.human == 3
    assert (unrecorded.domains, unrecorded.recipients) == (0, 6)
    text = str(split.as_dict(False))
    assert "smallpractice" not in text
    assert "solo" not in text


@given(
    st.lists(st.integers(min_value=1, max_value=40), max_size=12),
    st.integers(min_value=1, max_value=20),
)
def test_pooling_keeps_every_recipient_and_hides_every_small_domain(
    sizes: list[int], k: int
) -> None:
    inputs = [DomainInput(f"d{i}.example", n, n) for i, n in enumerate(sizes)]
    split = domain_split(inputs, {}, min_recipients=k)
    assert sum(r.recipients for r in split.rows) == sum(sizes)
    named = [r for r in split.rows if r.kind == "domain"]
    assert all(r.recipients >= k for r in named)
    assert len(named) == sum(1 for n in sizes if n >= k)
    assert sum(1 for r in split.rows if r.kind == "pooled") == (
        1 if any(n < k for n in sizes) else 0
    )


def _clicks(total: int, unique: int, machine: int = 0) -> Engagement:
    return Engagement(
        clicks_total=Tally.of_events(total, machine, 0),
        clicks_unique=Tally(unique, min(machine, 1), 0, unique, unique + min(machine, 1)),
    )


def test_links_honeypot_and_unknown_indexes_are_apart() -> None:
    split = link_split(
        ("https://a.example/1", "https://a.example/2"),
        {
            0: _clicks(4, 3, machine=2),
            2: _clicks(1, 1, machine=5),  # the honeypot, even if one hit was called human
            5: _clicks(0, 0, machine=1),
            None: _clicks(1, 1),
        },
    )
    assert [(r.index, r.url) for r in split.rows] == [
        (0, "https://a.example/1"),
        (1, "https://a.example/2"),
    ]
    assert split.rows[0].clicks_total.human == 4
    assert split.rows[0].clicks_total.machine == 2
    assert split.rows[1].clicks_unique.everything == 0
    assert (split.honeypot_total, split.honeypot_unique) == (6, 2)
    assert split.unattributed_total == 2


def test_time_buckets_by_day_hour_of_day_and_timeline() -> None:
    split = time_split(
        [
            ("2026-03-02 09", "open", "human", 3),
            ("2026-03-02 09", "open", "machine", 5),
            ("2026-03-02 11", "click", "human", 2),
            ("2026-03-03 09", "open", "unknown", 1),
        ]
    )
    assert [b.start.isoformat() for b in split.by_day] == [
        "2026-03-02T00:00:00+00:00",
        "2026-03-03T00:00:00+00:00",
    ]
    assert split.by_day[0].opens.human == 3
    assert split.by_day[0].opens.machine == 5
    assert split.by_day[0].clicks.human == 2
    nine = split.by_hour_of_day[9]
    assert (nine.opens.human, nine.opens.unknown, nine.opens.without_machine) == (3, 1, 4)
    assert len(split.by_hour_of_day) == 24
    assert split.step == "hour"
    assert len(split.timeline) == 25  # 09:00 one day to 09:00 the next, gaps filled
    assert split.timeline[1].opens.everything == 0


def test_a_long_span_is_drawn_per_day() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        ((start + timedelta(days=d)).strftime("%Y-%m-%d %H"), "open", "human", 1) for d in (0, 2, 9)
    ]
    split = time_split(rows)
    assert split.step == "day"
    assert len(split.timeline) == 10
    assert [b.opens.human for b in split.timeline] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]


def test_no_events_no_timeline() -> None:
    split = time_split([])
    assert (split.hours, split.by_day, split.timeline) == ((), (), ())
    assert split.as_dict(False)["timeline"] == {"step": "hour", "points": []}


def test_clause_rows_count_recipients_delivered_and_uniques() -> None:
    b = np.array
    recipients = Recipients(
        contact_ids=("c1", "c2", "c3", "c4"),
        sent=b([True, True, True, False]),
        undelivered=b([False, True, False, False]),
        opened={
            "human": b([True, False, False, False]),
            "machine": b([True, True, False, False]),
            "unknown": b([False, False, True, False]),
        },
        clicked={
            "human": b([True, False, False, False]),
            "machine": b([False, True, False, False]),
            "unknown": b([False, False, False, False]),
        },
    )
    rows = clause_rows(
        ["a", "b"], [b([True, True, False, True]), b([False, True, True, False])], recipients
    )
    a, second = rows
    assert (a.recipients, a.sent, a.delivered) == (3, 2, 1)
    assert a.engagement.opens_unique == Tally(1, 2, 0, 1, 2)
    assert a.engagement.clicks_unique == Tally(1, 1, 0, 1, 2)
    assert (second.recipients, second.delivered) == (2, 1)
    assert second.engagement.opens_unique == Tally(0, 1, 1, 1, 2)
    assert second.as_dict(False)["open_rate"] == 1.0
