"""Pure core of the campaign report: the numbers assembled from plain rows (no database,
no clock). Every number is defined here and in docs/architecture.md ("Campaign
reporting (issue 7)"); `measures.py` has the populations, `splits.py` the splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from carepost.bounces.rates import NOT_A_PERSON
from carepost.reports.measures import Engagement, rate
from carepost.reports.splits import (
    ClauseSplit,
    DomainBounces,
    DomainInput,
    DomainSplit,
    LinkSplit,
    TimeSplit,
    domain_split,
)

PENDING_STATES = ("queued", "claimed", "attempt_started")
# An opt-out counts for a campaign when it was recorded within this long after the
# campaign's message reached the contact (and before a later one did).
UNSUBSCRIBE_WINDOW = timedelta(days=30)
# Opt-outs that are a person's answer to a message. Not counted: `import` (a bulk load of
# old choices), `complaint` (a spam report: counted as a complaint), `delivery`.
UNSUBSCRIBE_SOURCES = frozenset({"unsubscribe_link", "form", "api", "staff"})
# The preference page's "unsubscribe from everything": a suppression of the channel.
UNSUBSCRIBE_ALL = "unsubscribe_all"
NO_REASON = "(none recorded)"


# --- bounces and complaints ------------------------------------------------------------------
@dataclass(frozen=True)
class BounceRow:
    """One way a message came back: `live` (a 5xx reply during delivery: the message is
    failed) or `report` (a DSN or complaint received later). `kind`: hard | soft |
    complaint. `domain`: the recipient's domain, when the attempt recorded it."""

    outbox_id: str
    state: str
    domain: str | None
    source: str
    kind: str


def report_kind(category: str, feedback_type: str | None) -> str | None:
    """A received report's kind; None for what is not a bounce or a person's complaint
    (auto-replies, delay notices, ARF auth-failure/fraud/virus reports)."""
    if category == "bounce-hard":
        return "hard"
    if category == "bounce-soft":
        return "soft"
    if category == "complaint" and feedback_type not in NOT_A_PERSON:
        return "complaint"
    return None


@dataclass(frozen=True)
class Bounces:
    """Messages (outbox ids), each counted once: `hard` bounced hard (live or reported),
    `soft` bounced soft and never hard, `complaints` reported as spam by a person,
    `undelivered` sent (accepted) and then reported as bounced, hard or soft."""

    hard: frozenset[str] = frozenset()
    soft: frozenset[str] = frozenset()
    complaints: frozenset[str] = frozenset()
    undelivered: frozenset[str] = frozenset()


def summarize_bounces(rows: Iterable[BounceRow]) -> Bounces:
    hard: set[str] = set()
    soft: set[str] = set()
    complaints: set[str] = set()
    undelivered: set[str] = set()
    for r in rows:
        if r.kind == "complaint":
            complaints.add(r.outbox_id)
            continue
        (hard if r.kind == "hard" else soft).add(r.outbox_id)
        if r.source == "report" and r.state == "sent":
            undelivered.add(r.outbox_id)
    return Bounces(
        frozenset(hard), frozenset(soft - hard), frozenset(complaints), frozenset(undelivered)
    )


# --- unsubscribes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptOut:
    """An opt-out of the campaign's channel and topic (source = the consent's source) or
    of the whole channel (source `unsubscribe_all`) by a contact this campaign's message
    reached at `sent_at`."""

    contact_id: str
    source: str
    recorded_at: datetime
    sent_at: datetime


@dataclass(frozen=True)
class LaterSend:
    """Another campaign's message on the same channel that reached the contact."""

    contact_id: str
    topic: str
    sent_at: datetime


def attribute_unsubscribes(
    opt_outs: Iterable[OptOut],
    later_sends: Iterable[LaterSend],
    *,
    topic: str,
    window: timedelta = UNSUBSCRIBE_WINDOW,
) -> dict[str, frozenset[str]]:
    """Contacts whose opt-out this campaign gets, by source. An opt-out recorded at t
    counts when sent_at <= t < sent_at + window and no other campaign's message on the
    same topic (any topic, for unsubscribe-all) reached the contact in (sent_at, t]: the
    latest message before an opt-out gets it, so no opt-out counts for two campaigns."""
    later: dict[str, list[LaterSend]] = {}
    for s in later_sends:
        later.setdefault(s.contact_id, []).append(s)
    by_source: dict[str, set[str]] = {}
    for o in opt_outs:
        if not o.sent_at <= o.recorded_at < o.sent_at + window:
            continue
        if o.source != UNSUBSCRIBE_ALL and o.source not in UNSUBSCRIBE_SOURCES:
            continue
        superseded = any(
            o.sent_at < s.sent_at <= o.recorded_at
            and (o.source == UNSUBSCRIBE_ALL or s.topic == topic)
            for s in later.get(o.contact_id, ())
        )
        if not superseded:
            by_source.setdefault(o.source, set()).add(o.contact_id)
    return {k: frozenset(v) for k, v in sorted(by_source.items())}


# --- delivery ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    recipients: int
    pending: int
    denied: int
    denied_by_reason: dict[str, int]
    sent: int
    delivered: int
    deferred: int
    failed: int
    failed_by_reason: dict[str, int]
    unknown: int
    bounced_hard: int
    bounced_soft: int
    complaints: int
    unsubscribes: int
    unsubscribes_by_source: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients,
            "pending": self.pending,
            "denied": self.denied,
            "denied_by_reason": self.denied_by_reason,
            "sent": self.sent,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "failed": self.failed,
            "failed_by_reason": self.failed_by_reason,
            "unknown": self.unknown,
            "bounced": {"hard": self.bounced_hard, "soft": self.bounced_soft},
            "complaints": self.complaints,
            "unsubscribes": self.unsubscribes,
            "unsubscribes_by_source": self.unsubscribes_by_source,
            "rates": {
                "delivery_rate": rate(self.delivered, self.sent),
                "hard_bounce_rate": rate(self.bounced_hard, self.sent + self.failed),
                "complaint_rate": rate(self.complaints, self.delivered),
                "unsubscribe_rate": rate(self.unsubscribes, self.delivered),
            },
        }


def denial_reasons(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """(space-separated reason codes of a contact's latest decision, contacts) -> contacts
    per code. A contact denied for two reasons counts under both."""
    counts: Counter[str] = Counter()
    for reasons, n in rows:
        codes = reasons.split() or [NO_REASON]
        for code in dict.fromkeys(codes):
            counts[code] += n
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def delivery_of(
    states: Mapping[tuple[str, str | None], int],
    denied_reasons: Iterable[tuple[str, int]],
    bounces: Bounces,
    unsubscribes: Mapping[str, frozenset[str]],
) -> Delivery:
    """`states`: outbox rows by (state, last reason)."""
    by_state: Counter[str] = Counter()
    failed_by: Counter[str] = Counter()
    for (state, reason), n in states.items():
        by_state[state] += n
        if state == "failed":
            failed_by[reason or NO_REASON] += n
    sent = by_state["sent"]
    everyone: set[str] = set().union(*unsubscribes.values()) if unsubscribes else set()
    return Delivery(
        recipients=sum(by_state.values()),
        pending=sum(by_state[s] for s in PENDING_STATES),
        denied=by_state["denied"],
        denied_by_reason=denial_reasons(denied_reasons),
        sent=sent,
        delivered=sent - len(bounces.undelivered),
        deferred=by_state["deferred"],
        failed=by_state["failed"],
        failed_by_reason=dict(sorted(failed_by.items(), key=lambda kv: (-kv[1], kv[0]))),
        unknown=by_state["unknown"],
        bounced_hard=len(bounces.hard),
        bounced_soft=len(bounces.soft),
        complaints=len(bounces.complaints),
        unsubscribes=len(everyone),
        unsubscribes_by_source={k: len(v) for k, v in unsubscribes.items()},
    )


# --- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CampaignInfo:
    id: str
    name: str
    status: str
    segment: str
    template_id: str
    message_class: str
    channel: str
    topic: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "segment": self.segment,
            "template_id": self.template_id,
            "message_class": self.message_class,
            "channel": self.channel,
            "topic": self.topic,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class CampaignReport:
    campaign: CampaignInfo
    generated_at: datetime
    include_machine: bool
    setting_excludes_machine: bool
    delivery: Delivery
    engagement: Engagement
    domains: DomainSplit
    links: LinkSplit
    clauses: ClauseSplit
    time: TimeSplit

    @property
    def headline_basis(self) -> str:
        return "including_machine" if self.include_machine else "excluding_machine"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`carepost report campaign --json`); keys are stable, version 1."""
        m = self.include_machine
        return {
            "report": "campaign",
            "version": 1,
            "generated_at": self.generated_at.isoformat(),
            "campaign": self.campaign.as_dict(),
            "headline_basis": self.headline_basis,
            "setting_exclude_machine_events": self.setting_excludes_machine,
            "delivery": self.delivery.as_dict(),
            "engagement": {
                **self.engagement.as_dict(self.delivery.delivered, m),
                "honeypot_hits": {
                    "total": self.links.honeypot_total,
                    "unique": self.links.honeypot_unique,
                },
                "clicks_on_unknown_links": self.links.unattributed_total,
            },
            "splits": {
                "domains": self.domains.as_dict(m),
                "links": self.links.as_dict(m),
                "clauses": self.clauses.as_dict(m),
                "time": self.time.as_dict(m),
            },
        }


def bounces_by_domain(
    rows: Iterable[BounceRow], bounces: Bounces
) -> dict[str | None, DomainBounces]:
    """The bounce counts of `bounces` per recipient domain."""
    domain_of = {r.outbox_id: r.domain for r in rows}
    hard = Counter(domain_of.get(i) for i in bounces.hard)
    soft = Counter(domain_of.get(i) for i in bounces.soft)
    complaints = Counter(domain_of.get(i) for i in bounces.complaints)
    undelivered = Counter(domain_of.get(i) for i in bounces.undelivered)
    return {
        d: DomainBounces(hard[d], soft[d], complaints[d], undelivered[d])
        for d in set(hard) | set(soft) | set(complaints) | set(undelivered)
    }


def build_report(
    *,
    campaign: CampaignInfo,
    generated_at: datetime,
    include_machine: bool,
    setting_excludes_machine: bool,
    states: Mapping[tuple[str, str | None], int],
    denied_reasons: Sequence[tuple[str, int]],
    bounce_rows: Sequence[BounceRow],
    opt_outs: Sequence[OptOut],
    later_sends: Sequence[LaterSend],
    engagement: Engagement,
    domains: Sequence[DomainInput],
    min_domain_recipients: int,
    links: LinkSplit,
    clauses: ClauseSplit,
    time: TimeSplit,
) -> CampaignReport:
    bounces = summarize_bounces(bounce_rows)
    unsubscribes = attribute_unsubscribes(opt_outs, later_sends, topic=campaign.topic)
    return CampaignReport(
        campaign=campaign,
        generated_at=generated_at,
        include_machine=include_machine,
        setting_excludes_machine=setting_excludes_machine,
        delivery=delivery_of(states, denied_reasons, bounces, unsubscribes),
        engagement=engagement,
        domains=domain_split(
            domains,
            bounces_by_domain(bounce_rows, bounces),
            min_recipients=min_domain_recipients,
        ),
        links=links,
        clauses=clauses,
        time=time,
    )
