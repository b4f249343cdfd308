"""Pure core of the report's splits: by recipient domain (small domains pooled), by link
(the honeypot apart), by segment clause and by day and hour (UTC). Plain rows in, plain
rows out; no database and no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from carepost.reports.measures import NONE, ZERO, Engagement, Tally, rate

# A domain with fewer recipients than this is pooled, so a small practice's own domain
# cannot point at the one or two patients who use it.
DEFAULT_MIN_DOMAIN_RECIPIENTS = 10
POOLED = "(other domains)"
UNRECORDED = "(not recorded)"
# Opens and clicks over time are drawn per hour up to this span, per day beyond it.
HOURLY_SPAN = timedelta(hours=72)

B = npt.NDArray[np.bool_]


# --- recipient domain --------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainInput:
    """One recipient domain as the queries see it. `domain` None: messages never
    attempted (denied, still queued) or attempted before the worker recorded domains."""

    domain: str | None
    recipients: int
    sent: int
    engagement: Engagement = NONE


@dataclass(frozen=True)
class DomainRow:
    label: str
    kind: str  # domain | pooled | unrecorded
    domains: int  # how many domains the row stands for
    recipients: int
    sent: int
    delivered: int
    bounced_hard: int
    bounced_soft: int
    complaints: int
    engagement: Engagement

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        o = self.engagement.opens_unique
        c = self.engagement.clicks_unique
        return {
            "domain": self.label,
            "kind": self.kind,
            "domains": self.domains,
            "recipients": self.recipients,
            "sent": self.sent,
            "delivered": self.delivered,
            "bounced": {"hard": self.bounced_hard, "soft": self.bounced_soft},
            "complaints": self.complaints,
            "opens_unique": o.as_dict(include_machine),
            "clicks_unique": c.as_dict(include_machine),
            "open_rate": rate(o.headline(include_machine), self.delivered),
            "click_rate": rate(c.headline(include_machine), self.delivered),
        }


@dataclass(frozen=True)
class DomainSplit:
    min_recipients: int
    rows: tuple[DomainRow, ...]

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        return {
            "min_recipients": self.min_recipients,
            "rows": [r.as_dict(include_machine) for r in self.rows],
        }


@dataclass(frozen=True)
class DomainBounces:
    """A domain's messages that bounced hard, soft (never hard), were reported as spam,
    or were accepted and then reported bounced (not delivered)."""

    hard: int = 0
    soft: int = 0
    complaints: int = 0
    undelivered: int = 0


def domain_split(
    inputs: Iterable[DomainInput],
    bounced: Mapping[str | None, DomainBounces],
    *,
    min_recipients: int = DEFAULT_MIN_DOMAIN_RECIPIENTS,
) -> DomainSplit:
    """Rows by recipient domain, largest first. Domains with fewer than `min_recipients`
    recipients are summed into one "(other domains)" row that does not name them;
    messages without a recorded domain are their own "(not recorded)" row."""
    if min_recipients < 1:
        raise ValueError("the smallest domain shown needs at least 1 recipient")

    def row(d: DomainInput, label: str, kind: str) -> DomainRow:
        b = bounced.get(d.domain, DomainBounces())
        return DomainRow(
            label,
            kind,
            1 if d.domain is not None else 0,
            d.recipients,
            d.sent,
            d.sent - b.undelivered,
            b.hard,
            b.soft,
            b.complaints,
            d.engagement,
        )

    shown: list[DomainRow] = []
    small: list[DomainRow] = []
    unrecorded: DomainRow | None = None
    for d in inputs:
        if d.domain is None:
            unrecorded = row(d, UNRECORDED, "unrecorded")
        elif d.recipients >= min_recipients:
            shown.append(row(d, d.domain, "domain"))
        else:
            small.append(row(d, POOLED, "pooled"))
    shown.sort(key=lambda r: (-r.recipients, r.label))
    if small:
        pooled = small[0]
        for r in small[1:]:
            pooled = DomainRow(
                POOLED,
                "pooled",
                pooled.domains + r.domains,
                pooled.recipients + r.recipients,
                pooled.sent + r.sent,
                pooled.delivered + r.delivered,
                pooled.bounced_hard + r.bounced_hard,
                pooled.bounced_soft + r.bounced_soft,
                pooled.complaints + r.complaints,
                pooled.engagement + r.engagement,
            )
        shown.append(pooled)
    if unrecorded is not None:
        shown.append(unrecorded)
    return DomainSplit(min_recipients, tuple(shown))


# --- links ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkRow:
    index: int
    url: str
    clicks_total: Tally
    clicks_unique: Tally

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        return {
            "index": self.index,
            "url": self.url,
            "clicks_total": self.clicks_total.as_dict(include_machine),
            "clicks_unique": self.clicks_unique.as_dict(include_machine),
        }


@dataclass(frozen=True)
class LinkSplit:
    rows: tuple[LinkRow, ...]
    honeypot_total: int
    honeypot_unique: int
    unattributed_total: int

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        return {
            "rows": [r.as_dict(include_machine) for r in self.rows],
            "honeypot_hits": {"total": self.honeypot_total, "unique": self.honeypot_unique},
            "clicks_on_unknown_links": self.unattributed_total,
        }


def link_split(links: Sequence[str], by_index: Mapping[int | None, Engagement]) -> LinkSplit:
    """`links[i]` is link i's destination; `by_index` the click events per link index
    (clicks_total / clicks_unique). Index len(links) is the hidden honeypot link: its
    hits are shown apart, as machine, whatever verdict they were recorded with. Any
    other index (none, or past the honeypot) is a click on no known link."""
    n = len(links)
    rows = tuple(
        LinkRow(
            i,
            url,
            by_index.get(i, NONE).clicks_total,
            by_index.get(i, NONE).clicks_unique,
        )
        for i, url in enumerate(links)
    )
    honeypot = by_index.get(n, NONE)
    unattributed = sum(
        e.clicks_total.everything for i, e in by_index.items() if i is None or i < 0 or i > n
    )
    return LinkSplit(
        rows, honeypot.clicks_total.everything, honeypot.clicks_unique.everything, unattributed
    )


# --- day and hour ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    start: datetime
    opens: Tally = ZERO
    clicks: Tally = ZERO

    def as_dict(self, include_machine: bool, key: str, label: str | int) -> dict[str, Any]:
        return {
            key: label,
            "opens": self.opens.as_dict(include_machine),
            "clicks": self.clicks.as_dict(include_machine),
        }


@dataclass(frozen=True)
class TimeSplit:
    """Open and click events (not distinct) per UTC hour, summed per day and per hour of
    the day; `timeline` is the chart's series: hourly buckets when the events span at
    most 72 hours, else daily, with empty buckets filled in."""

    hours: tuple[Bucket, ...]
    by_day: tuple[Bucket, ...]
    by_hour_of_day: tuple[Bucket, ...]
    step: str  # hour | day
    timeline: tuple[Bucket, ...]

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        return {
            "by_day": [
                b.as_dict(include_machine, "day", b.start.date().isoformat()) for b in self.by_day
            ],
            "by_hour_of_day": [
                b.as_dict(include_machine, "hour", b.start.hour) for b in self.by_hour_of_day
            ],
            "timeline": {
                "step": self.step,
                "points": [
                    b.as_dict(include_machine, "start", b.start.isoformat()) for b in self.timeline
                ],
            },
        }


def parse_hour(text: str) -> datetime:
    """'YYYY-MM-DD HH' (what both databases give for the hour bucket) -> aware UTC."""
    return datetime.strptime(text[:13], "%Y-%m-%d %H").replace(tzinfo=UTC)


def _tally(counts: Mapping[str, int]) -> Tally:
    return Tally.of_events(
        counts.get("human", 0), counts.get("machine", 0), counts.get("unknown", 0)
    )


def _sum(buckets: Iterable[Bucket], start: datetime) -> Bucket:
    opens, clicks = ZERO, ZERO
    for b in buckets:
        opens, clicks = opens + b.opens, clicks + b.clicks
    return Bucket(start, opens, clicks)


def time_split(rows: Iterable[tuple[str, str, str, int]]) -> TimeSplit:
    """`rows`: (hour 'YYYY-MM-DD HH' in UTC, kind open|click, verdict, events)."""
    cells: dict[datetime, dict[str, dict[str, int]]] = {}
    for hour, kind, verdict, n in rows:
        if kind not in ("open", "click"):
            continue
        cell = cells.setdefault(parse_hour(hour), {"open": {}, "click": {}})
        cell[kind][verdict] = cell[kind].get(verdict, 0) + int(n)
    hours = tuple(
        Bucket(at, _tally(c["open"]), _tally(c["click"])) for at, c in sorted(cells.items())
    )
    days: dict[datetime, list[Bucket]] = {}
    of_day: dict[int, list[Bucket]] = {}
    for b in hours:
        days.setdefault(b.start.replace(hour=0), []).append(b)
        of_day.setdefault(b.start.hour, []).append(b)
    by_day = tuple(_sum(bs, d) for d, bs in sorted(days.items()))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    by_hour = tuple(_sum(of_day.get(h, []), epoch.replace(hour=h)) for h in range(24))
    if not hours or hours[-1].start - hours[0].start <= HOURLY_SPAN:
        step, timeline = "hour", _filled(hours, timedelta(hours=1))
    else:
        step, timeline = "day", _filled(by_day, timedelta(days=1))
    return TimeSplit(hours, by_day, by_hour, step, timeline)


def _filled(buckets: Sequence[Bucket], step: timedelta) -> tuple[Bucket, ...]:
    if not buckets:
        return ()
    have = {b.start: b for b in buckets}
    out: list[Bucket] = []
    at = buckets[0].start
    while at <= buckets[-1].start:
        out.append(have.get(at, Bucket(at)))
        at += step
    return tuple(out)


# --- segment clauses ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipients:
    """The campaign's recipients as aligned arrays (one position per outbox row):
    whether the message was sent, reported bounced after it was sent, and opened (open
    or real-link click) and clicked per verdict."""

    contact_ids: tuple[str, ...]
    sent: B
    undelivered: B
    opened: Mapping[str, B]  # verdict -> flags
    clicked: Mapping[str, B]


def _distinct(flags: Mapping[str, B], mask: B) -> Tally:
    h, m, u = (flags[v] & mask for v in ("human", "machine", "unknown"))
    return Tally(
        int(h.sum()), int(m.sum()), int(u.sum()), int((h | u).sum()), int((h | m | u).sum())
    )


@dataclass(frozen=True)
class ClauseRow:
    index: int
    clause: str
    recipients: int
    sent: int
    delivered: int
    engagement: Engagement

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        o = self.engagement.opens_unique
        c = self.engagement.clicks_unique
        return {
            "index": self.index,
            "clause": self.clause,
            "recipients": self.recipients,
            "sent": self.sent,
            "delivered": self.delivered,
            "opens_unique": o.as_dict(include_machine),
            "clicks_unique": c.as_dict(include_machine),
            "open_rate": rate(o.headline(include_machine), self.delivered),
            "click_rate": rate(c.headline(include_machine), self.delivered),
        }


@dataclass(frozen=True)
class ClauseSplit:
    """`available` False with a `reason` when the campaign has no frozen segment rule
    (not started, or started without a freeze) or the split was not asked for."""

    available: bool
    reason: str = ""
    segment: str = ""
    version: int = 0
    rule: str = ""
    evaluated_at: datetime | None = None
    rows: tuple[ClauseRow, ...] = field(default_factory=tuple)

    def as_dict(self, include_machine: bool) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.reason, "rows": []}
        return {
            "available": True,
            "segment": self.segment,
            "version": self.version,
            "rule": self.rule,
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
            "rows": [r.as_dict(include_machine) for r in self.rows],
        }


def clause_rows(
    clauses: Sequence[str], matches: Sequence[B], recipients: Recipients
) -> tuple[ClauseRow, ...]:
    """One row per top-level clause: `matches[i]` says which recipients (aligned with
    `recipients`) the clause holds for."""
    rows = []
    for i, (text, mask) in enumerate(zip(clauses, matches, strict=True)):
        sent = recipients.sent & mask
        rows.append(
            ClauseRow(
                i,
                text,
                int(mask.sum()),
                int(sent.sum()),
                int((sent & ~recipients.undelivered).sum()),
                Engagement(
                    opens_unique=_distinct(recipients.opened, mask),
                    clicks_unique=_distinct(recipients.clicked, mask),
                ),
            )
        )
    return tuple(rows)
