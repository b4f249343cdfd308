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
    func,
    literal,
    or_,
    select,
)

from carepost.bounces.models import BounceEvent
from carepost.bounces.rates import live_kind
from carepost.campaigns.models import Campaign
from carepost.consent.models import Consent, GateDecision, GateRun, Suppression
from carepost.consent.service import LOOKUP_KIND
from carepost.contacts.models import ContactLookup
from carepost.db import READ_ONLY
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.reports.campaign import (
    UNSUBSCRIBE_ALL,
    BounceRow,
    CampaignInfo,
    LaterSend,
    OptOut,
    report_kind,
)
from carepost.reports.measures import Engagement, Tally
from carepost.reports.splits import DomainInput, Recipients
from carepost.segments.models import SegmentFreeze
from carepost.tracking.models import EngagementEvent

o = OutboxMessage.__table__
e = EngagementEvent.__table__
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


def opt_outs(conn: Connection, campaign: CampaignInfo) -> list[OptOut]:
    """Opt-outs of the campaign's channel and topic, and unsubscribe-all suppressions of
    the channel, by contacts this campaign's message reached, with when it reached them
    (the end of the first attempt the relay accepted). The window and the later-campaign
    rule are applied by campaign.attribute_unsubscribes. Starts from the opt-outs (few),
    not the messages."""
    c = Consent.__table__
    sent_at = func.min(da.c.finished_at)
    topic_rows = conn.execute(
        select(o.c.contact_id, c.c.source, c.c.recorded_at, sent_at)
        .select_from(c)
        .join(o, and_(o.c.contact_id == c.c.contact_id, o.c.campaign_id == campaign.id))
        .join(da, and_(da.c.outbox_id == o.c.id, da.c.status == "sent"))
        .where(
            c.c.channel == campaign.channel,
            c.c.topic == campaign.topic,
            c.c.status == "opted_out",
        )
        .group_by(c.c.id, o.c.contact_id, c.c.source, c.c.recorded_at)
        .having(c.c.recorded_at >= sent_at)
    )
    out = [OptOut(cid, source, at, first) for cid, source, at, first in topic_rows]
    s = Suppression.__table__
    lk = ContactLookup.__table__
    all_rows = conn.execute(
        select(o.c.contact_id, s.c.created_at, sent_at)
        .select_from(s)
        .join(lk, lk.c.value_bi == s.c.address_bi)
        .join(o, and_(o.c.contact_id == lk.c.contact_id, o.c.campaign_id == campaign.id))
        .join(da, and_(da.c.outbox_id == o.c.id, da.c.status == "sent"))
        .where(
            lk.c.kind == LOOKUP_KIND.get(campaign.channel, campaign.channel),
            s.c.channel == campaign.channel,
            s.c.reason == UNSUBSCRIBE_ALL,
        )
        .group_by(s.c.id, o.c.contact_id, s.c.created_at)
        .having(s.c.created_at >= sent_at)
    )
    out += [OptOut(cid, UNSUBSCRIBE_ALL, at, first) for cid, at, first in all_rows]
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
            select(o.c.contact_id, c.c.topic, func.min(da.c.finished_at))
            .join(c, c.c.id == o.c.campaign_id)
            .join(da, da.c.outbox_id == o.c.id)
            .where(
                o.c.contact_id.in_(chunk),
                c.c.channel == campaign.channel,
                c.c.id != campaign.id,
                da.c.status == "sent",
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


def _engagement(row: Any) -> Engagement:
    def tally(prefix: str) -> Tally:
        return Tally(*(int(row[f"{prefix}_{name}"] or 0) for name, _ in POPULATIONS))

    return Engagement(tally("ou"), tally("ot"), tally("cu"), tally("ct"))


def clicks_by_link(conn: Connection, campaign_id: str) -> dict[int | None, Engagement]:
    """Every click event by link index (the honeypot and unknown indexes included: the
    split puts them apart): clicks grouped per link and message, then per link."""
    per = _per_message(campaign_id, e.c.kind == "click", e.c.link_index)
    rows = conn.execute(
        select(per.c.key.label("link_index"), *_sums(per)).group_by(per.c.key)
    ).mappings()
    return {r["link_index"]: _engagement(r) for r in rows}


def _per_message(campaign_id: str, where: ColumnElement[bool], key: Any = None) -> Any:
    """The campaign's events matching `where` grouped per message (and `key`), in one
    pass: for each verdict whether the message was opened (an open or a click) and
    clicked, and how many open and click events it had."""
    cols: list[Any] = []
    is_open = e.c.kind == "open"
    is_click = e.c.kind == "click"
    for v in VERDICTS:
        pop = e.c.verdict == v
        cols += [
            func.max(case((pop, 1), else_=0)).label(f"o_{v}"),
            func.max(case((and_(pop, is_click), 1), else_=0)).label(f"c_{v}"),
            func.sum(case((and_(pop, is_open), 1), else_=0)).label(f"ot_{v}"),
            func.sum(case((and_(pop, is_click), 1), else_=0)).label(f"ct_{v}"),
        ]
    keys = [e.c.message_id.label("message_id")]
    if key is not None:
        keys.append(key.label("key"))
    return (
        select(*keys, *cols).where(e.c.campaign_id == campaign_id, where).group_by(*keys).subquery()
    )


def _sums(per: Any) -> list[Any]:
    """Per-message rows summed into a group's Engagement columns (see _engagement):
    messages opened and clicked (distinct, since each row is one message) and events,
    for each population."""

    def col(name: str) -> Any:
        return func.coalesce(per.c[name], 0)

    cols: list[Any] = []
    for prefix in ("o", "c"):
        for name, verdicts in POPULATIONS:
            hit = or_(*(col(f"{prefix}_{v}") == 1 for v in verdicts or VERDICTS))
            cols.append(func.sum(case((hit, 1), else_=0)).label(f"{prefix}u_{name}"))
    for prefix in ("ot", "ct"):
        for name, verdicts in POPULATIONS:
            total = sum((col(f"{prefix}_{v}") for v in verdicts or VERDICTS), literal(0))
            cols.append(func.sum(total).label(f"{prefix}_{name}"))
    return cols


def domain_inputs(conn: Connection, campaign_id: str, n_links: int) -> list[DomainInput]:
    """Recipients, sent messages and engagement per recipient domain, in one statement:
    events grouped per message, then messages grouped per domain. Every message is in
    exactly one row (its domain, or none), so the rows add up to the campaign's totals,
    distinct counts included."""
    dom = _domains(campaign_id)
    ev = _per_message(campaign_id, _real(n_links))
    rows = conn.execute(
        select(
            dom.c.domain.label("domain"),
            func.count().label("recipients"),
            func.sum(case((o.c.state == "sent", 1), else_=0)).label("sent"),
            *_sums(ev),
        )
        .select_from(
            o.outerjoin(dom, dom.c.outbox_id == o.c.id).outerjoin(ev, ev.c.message_id == o.c.id)
        )
        .where(o.c.campaign_id == campaign_id)
        .group_by(dom.c.domain)
    ).mappings()
    return [
        DomainInput(r["domain"], int(r["recipients"]), int(r["sent"] or 0), _engagement(r))
        for r in rows
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
    verdict. The events are grouped per message first (one pass over the campaign's
    events), then joined to the campaign's messages."""
    per_message = _per_message(campaign_id, _real(n_links))
    flags = [func.coalesce(per_message.c[f"{k}_{v}"], 0) for v in VERDICTS for k in ("o", "c")]
    rows = conn.execute(
        select(o.c.id, o.c.contact_id, o.c.state, *flags)
        .select_from(o.outerjoin(per_message, per_message.c.message_id == o.c.id))
        .where(o.c.campaign_id == campaign_id)
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
