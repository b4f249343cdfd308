"""The report's SQL: grouped queries that return plain rows for the pure assembly
(campaign.py, splits.py). Every query is bounded by the campaign's indexes (outbox,
engagement events and bounce events by campaign, gate decisions by campaign and contact),
and counts in the database (GROUP BY, conditional aggregates) rather than in Python;
the rows that come back are per group, except the per-recipient flags that the segment
clause split needs. Reads ids, states, codes, domains, link indexes and times: no PHI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    and_,
    case,
    distinct,
    func,
    or_,
    select,
)

from carepost.bounces.models import BounceEvent
from carepost.campaigns.models import Campaign
from carepost.consent.models import Consent, GateDecision, GateRun, Suppression
from carepost.consent.service import LOOKUP_KIND
from carepost.contacts.models import ContactLookup
from carepost.db import READ_ONLY
from carepost.delivery.models import DeliveryAttempt, OutboxMessage, OutboxTransition
from carepost.reports.campaign import (
    UNSUBSCRIBE_ALL,
    BounceRow,
    CampaignInfo,
    LaterSend,
    OptOut,
    live_kind,
    report_kind,
)
from carepost.reports.measures import NONE, Engagement, Tally
from carepost.reports.splits import DomainInput, Recipients
from carepost.segments.models import SegmentFreeze
from carepost.tracking.models import EngagementEvent

o = OutboxMessage.__table__
e = EngagementEvent.__table__
t = OutboxTransition.__table__
da = DeliveryAttempt.__table__

# Verdict populations counted apart (measures.Tally's fields, in order); None: every event.
POPULATIONS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("human", ("human",)),
    ("machine", ("machine",)),
    ("unknown", ("unknown",)),
    ("without_machine", ("human", "unknown")),
    ("everything", None),
)
VERDICTS = ("human", "machine", "unknown")


class CampaignNotFound(LookupError):
    pass


@contextmanager
def consistent_read(engine: Engine) -> Iterator[Connection]:
    """One read transaction for the whole report, so its numbers agree with each other:
    SQLite's deferred BEGIN reads one snapshot in WAL mode; PostgreSQL needs REPEATABLE
    READ for that (its default gives each statement its own)."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        yield conn


# --- the campaign ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    info: CampaignInfo
    membership_ref: str | None


def find_campaign(conn: Connection, ref: str) -> Found:
    """By id, else by name when exactly one campaign has it."""
    c = Campaign.__table__
    rows = conn.execute(select(c).where(c.c.id == ref)).mappings().all()
    if not rows:
        rows = conn.execute(select(c).where(c.c.name == ref).limit(11)).mappings().all()
    if not rows:
        raise CampaignNotFound(f"no campaign with id or name {ref!r}")
    if len(rows) > 1:
        ids = ", ".join(str(r["id"]) for r in rows[:10])
        raise CampaignNotFound(
            f"{len(rows) if len(rows) <= 10 else 'more than 10'} campaigns are named "
            f"{ref!r}; give the id ({ids})"
        )
    r = rows[0]
    return Found(
        CampaignInfo(
            id=r["id"],
            name=r["name"],
            status=r["status"],
            segment=r["segment"],
            template_id=r["template_id"],
            message_class=r["message_class"],
            channel=r["channel"],
            topic=r["topic"],
            created_at=r["created_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
        ),
        r["membership_ref"],
    )


@dataclass(frozen=True)
class Freeze:
    id: str
    segment: str
    version: int
    rule_text: str
    evaluated_at: datetime


def freeze_of(conn: Connection, membership_ref: str | None) -> Freeze | None:
    if not membership_ref:
        return None
    f = SegmentFreeze.__table__
    row = conn.execute(
        select(f.c.id, f.c.segment_name, f.c.version, f.c.rule_text, f.c.evaluated_at).where(
            f.c.id == membership_ref
        )
    ).first()
    return Freeze(row[0], row[1], row[2], row[3], row[4]) if row else None


# --- delivery ------------------------------------------------------------------------------
def outbox_states(conn: Connection, campaign_id: str) -> dict[tuple[str, str | None], int]:
    rows = conn.execute(
        select(o.c.state, o.c.last_reason, func.count())
        .where(o.c.campaign_id == campaign_id)
        .group_by(o.c.state, o.c.last_reason)
    )
    return {(state, reason): int(n) for state, reason, n in rows}


def denied_reasons(conn: Connection, campaign_id: str) -> list[tuple[str, int]]:
    """Contacts whose LATEST gate decision for the campaign denied them, grouped by its
    reason codes (a retried message may have been decided more than once)."""
    d = GateDecision.__table__
    r = GateRun.__table__
    ranked = (
        select(
            d.c.allowed,
            d.c.reasons,
            func.row_number()
            .over(partition_by=d.c.contact_id, order_by=(r.c.decided_at.desc(), r.c.id.desc()))
            .label("rn"),
        )
        .join(r, r.c.id == d.c.run_id)
        .where(d.c.campaign_id == campaign_id)
        .subquery()
    )
    rows = conn.execute(
        select(ranked.c.reasons, func.count())
        .where(ranked.c.rn == 1, ranked.c.allowed.is_(False))
        .group_by(ranked.c.reasons)
    )
    return [(str(reasons or ""), int(n)) for reasons, n in rows]


def _domains(campaign_id: str) -> Any:
    """Each attempted message's recipient domain (null before the worker recorded it)."""
    return (
        select(da.c.outbox_id, func.max(da.c.recipient_domain).label("domain"))
        .join(o, o.c.id == da.c.outbox_id)
        .where(o.c.campaign_id == campaign_id)
        .group_by(da.c.outbox_id)
        .subquery()
    )


def bounce_rows(conn: Connection, campaign_id: str) -> list[BounceRow]:
    """Live 5xx refusals and received bounce and complaint reports (rows only for
    messages that came back); campaign.summarize_bounces counts each message once."""
    out: list[BounceRow] = []
    live = conn.execute(
        select(da.c.outbox_id, o.c.state, da.c.recipient_domain, da.c.code, da.c.reply)
        .join(o, o.c.id == da.c.outbox_id)
        .where(
            o.c.campaign_id == campaign_id,
            da.c.status == "failed",
            da.c.reason == "reply_5xx",
        )
    )
    for outbox_id, state, domain, code, reply in live:
        out.append(BounceRow(outbox_id, state, domain, "live", live_kind(code, reply)))
    b = BounceEvent.__table__
    dom = _domains(campaign_id)
    reports = conn.execute(
        select(b.c.outbox_id, o.c.state, dom.c.domain, b.c.category, b.c.feedback_type)
        .join(o, o.c.id == b.c.outbox_id)
        .outerjoin(dom, dom.c.outbox_id == b.c.outbox_id)
        .where(
            b.c.campaign_id == campaign_id,
            b.c.category.in_(("bounce-hard", "bounce-soft", "complaint")),
        )
    )
    for outbox_id, state, domain, category, feedback_type in reports:
        kind = report_kind(category, feedback_type)
        if kind is not None:
            out.append(BounceRow(outbox_id, state, domain, "report", kind))
    return out


def _sent_times(campaign_id: str) -> Any:
    """Each of the campaign's messages that was sent: its contact and when (the first
    `sent` transition)."""
    return (
        select(o.c.id, o.c.contact_id, func.min(t.c.at).label("sent_at"))
        .join(t, t.c.outbox_id == o.c.id)
        .where(o.c.campaign_id == campaign_id, t.c.state == "sent")
        .group_by(o.c.id, o.c.contact_id)
        .subquery()
    )


def opt_outs(conn: Connection, campaign: CampaignInfo) -> list[OptOut]:
    """Opt-outs of the campaign's channel and topic, and unsubscribe-all suppressions of
    the channel, recorded at or after the campaign's message reached the contact (the
    window and the later-campaign rule are applied by campaign.attribute_unsubscribes)."""
    sent = _sent_times(campaign.id)
    c = Consent.__table__
    topic_rows = conn.execute(
        select(sent.c.contact_id, c.c.source, c.c.recorded_at, sent.c.sent_at)
        .join(c, c.c.contact_id == sent.c.contact_id)
        .where(
            c.c.channel == campaign.channel,
            c.c.topic == campaign.topic,
            c.c.status == "opted_out",
            c.c.recorded_at >= sent.c.sent_at,
        )
    )
    out = [OptOut(cid, source, at, sent_at) for cid, source, at, sent_at in topic_rows]
    s = Suppression.__table__
    lk = ContactLookup.__table__
    all_rows = conn.execute(
        select(sent.c.contact_id, s.c.created_at, sent.c.sent_at)
        .distinct()
        .join(lk, lk.c.contact_id == sent.c.contact_id)
        .join(s, s.c.address_bi == lk.c.value_bi)
        .where(
            lk.c.kind == LOOKUP_KIND.get(campaign.channel, campaign.channel),
            s.c.channel == campaign.channel,
            s.c.reason == UNSUBSCRIBE_ALL,
            s.c.created_at >= sent.c.sent_at,
        )
    )
    out += [OptOut(cid, UNSUBSCRIBE_ALL, at, sent_at) for cid, at, sent_at in all_rows]
    return out


def later_sends(
    conn: Connection, campaign: CampaignInfo, contact_ids: Sequence[str]
) -> list[LaterSend]:
    """Other campaigns' messages on the same channel sent to these contacts."""
    c = Campaign.__table__
    out: list[LaterSend] = []
    ids = sorted(set(contact_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = conn.execute(
            select(o.c.contact_id, c.c.topic, func.min(t.c.at))
            .join(c, c.c.id == o.c.campaign_id)
            .join(t, t.c.outbox_id == o.c.id)
            .where(
                o.c.contact_id.in_(chunk),
                c.c.channel == campaign.channel,
                c.c.id != campaign.id,
                t.c.state == "sent",
            )
            .group_by(o.c.id, o.c.contact_id, c.c.topic)
        )
        out += [LaterSend(cid, topic, at) for cid, topic, at in rows]
    return out


# --- opens and clicks --------------------------------------------------------------------------
def _real(n_links: int) -> ColumnElement[bool]:
    """Opens, and clicks on one of the template's links (not the honeypot at index
    n_links, not an index nobody sent)."""
    return or_(
        e.c.kind == "open",
        and_(e.c.kind == "click", e.c.link_index >= 0, e.c.link_index < n_links),
    )


def _aggregates() -> list[Any]:
    """Per population: messages opened (open or click), open events, messages clicked,
    click events."""
    cols: list[Any] = []
    is_open = e.c.kind == "open"
    is_click = e.c.kind == "click"
    for name, verdicts in POPULATIONS:
        if verdicts is None:
            opened = func.count(distinct(e.c.message_id))
            open_events = func.sum(case((is_open, 1), else_=0))
            clicked = func.count(distinct(case((is_click, e.c.message_id))))
            click_events = func.sum(case((is_click, 1), else_=0))
        else:
            pop = e.c.verdict.in_(verdicts)
            opened = func.count(distinct(case((pop, e.c.message_id))))
            open_events = func.sum(case((and_(pop, is_open), 1), else_=0))
            clicked = func.count(distinct(case((and_(pop, is_click), e.c.message_id))))
            click_events = func.sum(case((and_(pop, is_click), 1), else_=0))
        cols += [
            opened.label(f"ou_{name}"),
            open_events.label(f"ot_{name}"),
            clicked.label(f"cu_{name}"),
            click_events.label(f"ct_{name}"),
        ]
    return cols


def _engagement(row: Any) -> Engagement:
    def tally(prefix: str) -> Tally:
        return Tally(*(int(row[f"{prefix}_{name}"] or 0) for name, _ in POPULATIONS))

    return Engagement(tally("ou"), tally("ot"), tally("cu"), tally("ct"))


def engagement(conn: Connection, campaign_id: str, n_links: int) -> Engagement:
    row = (
        conn.execute(select(*_aggregates()).where(e.c.campaign_id == campaign_id, _real(n_links)))
        .mappings()
        .one()
    )
    return _engagement(row)


def clicks_by_link(conn: Connection, campaign_id: str) -> dict[int | None, Engagement]:
    """Every click event by link index (the honeypot and unknown indexes included: the
    split puts them apart)."""
    rows = conn.execute(
        select(e.c.link_index.label("link_index"), *_aggregates())
        .where(e.c.campaign_id == campaign_id, e.c.kind == "click")
        .group_by(e.c.link_index)
    ).mappings()
    return {r["link_index"]: _engagement(r) for r in rows}


def domain_inputs(conn: Connection, campaign_id: str, n_links: int) -> list[DomainInput]:
    dom = _domains(campaign_id)
    counts = conn.execute(
        select(dom.c.domain, func.count(), func.sum(case((o.c.state == "sent", 1), else_=0)))
        .select_from(o.outerjoin(dom, dom.c.outbox_id == o.c.id))
        .where(o.c.campaign_id == campaign_id)
        .group_by(dom.c.domain)
    ).all()
    events = {
        r["domain"]: _engagement(r)
        for r in conn.execute(
            select(dom.c.domain.label("domain"), *_aggregates())
            .select_from(e.outerjoin(dom, dom.c.outbox_id == e.c.message_id))
            .where(e.c.campaign_id == campaign_id, _real(n_links))
            .group_by(dom.c.domain)
        ).mappings()
    }
    return [
        DomainInput(domain, int(n), int(sent or 0), events.get(domain, NONE))
        for domain, n, sent in counts
    ]


def hourly(conn: Connection, campaign_id: str, n_links: int) -> list[tuple[str, str, str, int]]:
    """(UTC hour 'YYYY-MM-DD HH', kind, verdict, events)."""
    if conn.dialect.name == "postgresql":
        bucket: Any = func.to_char(func.timezone("UTC", e.c.at), "YYYY-MM-DD HH24")
    else:  # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff' text
        bucket = func.substr(e.c.at, 1, 13, type_=String)
    bucket = bucket.label("bucket")
    rows = conn.execute(
        select(bucket, e.c.kind, e.c.verdict, func.count())
        .where(e.c.campaign_id == campaign_id, _real(n_links))
        .group_by(bucket, e.c.kind, e.c.verdict)
    )
    return [(str(b), kind, verdict, int(n)) for b, kind, verdict, n in rows]


def recipient_flags(
    conn: Connection, campaign_id: str, n_links: int, undelivered: frozenset[str]
) -> Recipients:
    """Per recipient (outbox row): sent, bounced after sending, opened and clicked per
    verdict; one grouped pass over the campaign's messages and their events."""
    cols: list[Any] = []
    for v in VERDICTS:
        cols.append(func.max(case((e.c.verdict == v, 1), else_=0)).label(f"o_{v}"))
        cols.append(
            func.max(case((and_(e.c.verdict == v, e.c.kind == "click"), 1), else_=0)).label(
                f"c_{v}"
            )
        )
    rows = conn.execute(
        select(o.c.id, o.c.contact_id, o.c.state, *cols)
        .select_from(
            o.outerjoin(
                e, and_(e.c.message_id == o.c.id, e.c.campaign_id == campaign_id, _real(n_links))
            )
        )
        .where(o.c.campaign_id == campaign_id)
        .group_by(o.c.id, o.c.contact_id, o.c.state)
        .order_by(o.c.contact_id)
    ).all()
    n = len(rows)

    def column(i: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
        return np.fromiter((bool(r[i]) for r in rows), bool, n)

    return Recipients(
        contact_ids=tuple(r[1] for r in rows),
        sent=np.fromiter((r[2] == "sent" for r in rows), bool, n),
        undelivered=np.fromiter((r[0] in undelivered for r in rows), bool, n),
        opened={v: column(3 + 2 * k) for k, v in enumerate(VERDICTS)},
        clicked={v: column(4 + 2 * k) for k, v in enumerate(VERDICTS)},
    )
