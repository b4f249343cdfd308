"""The report's pure core: populations, rates, bounces, the unsubscribe attribution rule,
denial reasons and the delivery numbers, from plain rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.bounces.rates import live_kind
from carepost.reports.campaign import (
    UNSUBSCRIBE_ALL,
    BounceRow,
    LaterSend,
    OptOut,
    attribute_unsubscribes,
    delivery_of,
    denial_reasons,
    report_kind,
    summarize_bounces,
)
from carepost.reports.measures import Engagement, Tally, rate

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_rate_is_rounded_and_none_without_a_denominator() -> None:
    assert rate(1, 3) == 0.3333
    assert rate(0, 0) is None
    assert rate(5, 0) is None


def test_tally_headline_follows_the_machine_choice() -> None:
    t = Tally(human=3, machine=4, unknown=1, without_machine=4, everything=6)
    assert t.as_dict(False) == {"human": 3, "machine": 4, "unknown": 1, "headline": 4}
    assert t.as_dict(True)["headline"] == 6
    events = Tally.of_events(2, 5, 1)
    assert (events.without_machine, events.everything) == (3, 8)
    assert (events + events).everything == 16


def test_engagement_rates_use_delivered_and_unique_opens() -> None:
    e = Engagement(
        opens_unique=Tally(4, 6, 0, 4, 8),
        clicks_unique=Tally(1, 3, 0, 1, 3),
    )
    rates = e.rates(delivered=10, include_machine=False)
    assert rates["headline"] == {"open_rate": 0.4, "click_rate": 0.1, "click_to_open_rate": 0.25}
    assert rates["machine"] == {"open_rate": 0.6, "click_rate": 0.3, "click_to_open_rate": 0.5}
    assert e.rates(delivered=10, include_machine=True)["headline"]["open_rate"] == 0.8
    assert e.rates(delivered=0, include_machine=False)["human"]["open_rate"] is None


def test_live_refusals_and_reports_are_classified_as_bounce_rates_does() -> None:
    assert live_kind(550, "550 5.1.1 <x>: User unknown") == "hard"
    assert live_kind(552, "552 5.2.2 Mailbox full") == "soft"
    assert live_kind(550, "550 5.7.1 Message rejected") == "soft"  # policy: not the mailbox
    assert live_kind(None, None) == "hard"  # a bare 5xx with no code is taken as 550
    assert report_kind("bounce-hard", None) == "hard"
    assert report_kind("bounce-soft", None) == "soft"
    assert report_kind("complaint", "abuse") == "complaint"
    assert report_kind("complaint", "auth-failure") is None
    assert report_kind("auto-reply", None) is None
    assert report_kind("delayed", None) is None


def test_a_message_counts_once_and_hard_beats_soft() -> None:
    b = summarize_bounces(
        [
            BounceRow("m1", "sent", "a.example", "report", "soft"),
            BounceRow("m1", "sent", "a.example", "report", "hard"),
            BounceRow("m2", "failed", "a.example", "live", "soft"),
            BounceRow("m3", "sent", None, "report", "complaint"),
            BounceRow("m3", "sent", None, "report", "complaint"),
            BounceRow("m4", "failed", "b.example", "live", "hard"),
        ]
    )
    assert b.hard == {"m1", "m4"}
    assert b.soft == {"m2"}
    assert b.complaints == {"m3"}
    # only a message that was accepted and then reported bounced leaves "delivered"
    assert b.undelivered == {"m1"}


def _out(contact: str, source: str, after: timedelta) -> OptOut:
    return OptOut(contact, source, T0 + after, T0)


def test_unsubscribes_within_the_window_from_a_person() -> None:
    got = attribute_unsubscribes(
        [
            _out("c1", "unsubscribe_link", timedelta(minutes=5)),
            _out("c1", "form", timedelta(hours=1)),  # same contact: once in the total
            _out("c2", "staff", timedelta(days=29, hours=23)),
            _out("c3", "unsubscribe_link", timedelta(days=30)),  # window is [sent, sent+30d)
            _out("c4", "import", timedelta(hours=1)),
            _out("c5", "complaint", timedelta(hours=1)),
            _out("c6", UNSUBSCRIBE_ALL, timedelta(hours=2)),
            OptOut("c7", "unsubscribe_link", T0 - timedelta(seconds=1), T0),  # before the send
        ],
        [],
        topic="flu",
    )
    assert got == {
        "form": {"c1"},
        "staff": {"c2"},
        "unsubscribe_all": {"c6"},
        "unsubscribe_link": {"c1"},
    }


def test_a_later_campaign_on_the_topic_takes_the_opt_out() -> None:
    outs = [
        _out("c1", "unsubscribe_link", timedelta(days=3)),
        _out("c2", "unsubscribe_link", timedelta(days=3)),
        _out("c3", UNSUBSCRIBE_ALL, timedelta(days=3)),
        _out("c4", "unsubscribe_link", timedelta(days=3)),
    ]
    later = [
        LaterSend("c1", "flu", T0 + timedelta(days=1)),  # same topic, in between: theirs
        LaterSend("c2", "newsletter", T0 + timedelta(days=1)),  # other topic: still ours
        LaterSend("c3", "newsletter", T0 + timedelta(days=1)),  # any topic for unsubscribe-all
        LaterSend("c4", "flu", T0 + timedelta(days=4)),  # after the opt-out: still ours
    ]
    got = attribute_unsubscribes(outs, later, topic="flu")
    assert got == {"unsubscribe_link": {"c2", "c4"}}


@given(st.lists(st.integers(min_value=0, max_value=60 * 24 * 40), max_size=20))
def test_attribution_never_counts_outside_the_window(minutes: list[int]) -> None:
    outs = [_out(f"c{i}", "unsubscribe_link", timedelta(minutes=m)) for i, m in enumerate(minutes)]
    got = attribute_unsubscribes(outs, [], topic="flu").get("unsubscribe_link", frozenset())
    assert got == {f"c{i}" for i, m in enumerate(minutes) if m < 30 * 24 * 60}


def test_denial_reasons_split_codes_and_count_contacts() -> None:
    assert denial_reasons(
        [("no_opt_in no_authorization", 3), ("no_authorization", 2), ("", 1), ("opted_out", 1)]
    ) == {"no_authorization": 5, "no_opt_in": 3, "(none recorded)": 1, "opted_out": 1}


def test_delivery_numbers() -> None:
    states = {
        ("sent", None): 90,
        ("sent", "relay_ok"): 5,
        ("denied", "gate_denied"): 7,
        ("failed", "reply_5xx"): 3,
        ("failed", "no_address"): 1,
        ("deferred", "reply_4xx"): 2,
        ("queued", None): 4,
        ("claimed", None): 1,
        ("attempt_started", None): 1,
        ("unknown", "connection_lost"): 1,
    }
    bounces = summarize_bounces(
        [
            BounceRow("m1", "sent", None, "report", "hard"),
            BounceRow("m2", "sent", None, "report", "soft"),
            BounceRow("m3", "failed", None, "live", "hard"),
            BounceRow("m4", "sent", None, "report", "complaint"),
        ]
    )
    d = delivery_of(
        states,
        [("no_opt_in", 7)],
        bounces,
        {"unsubscribe_link": frozenset({"c1", "c2"}), "form": frozenset({"c2"})},
    )
    assert d.recipients == 115
    assert (d.sent, d.delivered, d.pending, d.denied) == (95, 93, 6, 7)
    assert (d.failed, d.deferred, d.unknown) == (4, 2, 1)
    assert d.failed_by_reason == {"reply_5xx": 3, "no_address": 1}
    assert (d.bounced_hard, d.bounced_soft, d.complaints) == (2, 1, 1)
    assert d.unsubscribes == 2
    assert d.unsubscribes_by_source == {"unsubscribe_link": 2, "form": 1}
    rates = d.as_dict()["rates"]
    assert rates["delivery_rate"] == round(93 / 95, 4)
    assert rates["complaint_rate"] == round(1 / 93, 4)


def test_min_domain_recipients_below_one_is_refused() -> None:
    from carepost.reports.splits import domain_split

    with pytest.raises(ValueError, match="at least 1"):
        domain_split([], {}, min_recipients=0)
