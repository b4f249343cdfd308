"""Scan triggers: who enters a journey because of a segment, a date or inactivity.

Run by the engine (`JourneyEngine.scan`) at most once per `scan_every` of its clock. The
deciding parts are pure functions of plain data and a time (`segment_change`,
`birthday_dates`, `date_fires`); `scan_journeys` applies them in the caller's
transaction and enrols through `service.enrol` (re-entry policy, one open enrolment).

Decisions (docs/architecture.md, "Journey triggers"):
- Segment: membership per journey name is kept in `journey_segment_members`. The first
  scan after publishing takes the baseline: present members have not "entered" unless
  the trigger says `existing: true`. Then each scan enrols who entered (or who left).
- Date: an occurrence is the local date of the birthday (29 February: the 28th in other
  years), of the last visit, or of each booked appointment, plus `offset_days`; it fires
  at `at` in the contact's zone. It fires once (`journey_occurrences`), and only if its
  instant is after the version was published and at most `LATE_LIMIT` ago: an engine
  that was down for a week does not send last week's birthday greetings.
- Inactivity: a contact is inactive after N days if a message was sent to it at least N
  days ago and it has no human open or click in the last N days. A contact never sent a
  message is not inactive (there was nothing to engage with).
PHI: dates come from the segment snapshot (its build and refreshes are audited) and are
never written: an occurrence row holds the date the journey fired, an id and a time.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.contacts.zones import zones_of
from carepost.db import driver_value, insert_if_absent
from carepost.delivery.models import OutboxMessage
from carepost.journeys import definition as D
from carepost.journeys import service
from carepost.journeys.models import (
    JourneyEnrolment,
    JourneyOccurrence,
    JourneyScan,
    JourneySegmentMember,
)
from carepost.segments.snapshot import BOOKED_BIT, MISSING, Snapshot, epoch
from carepost.tracking.models import EngagementEvent

LATE_LIMIT = timedelta(days=1)


# --- pure cores -----------------------------------------------------------------------
def segment_change(
    previous: set[str] | None, current: set[str], trigger: D.SegmentTrigger
) -> set[str]:
    """Who the trigger enrols: `previous` is None on the first scan (the baseline)."""
    if previous is None:
        return set(current) if trigger.on == "enter" and trigger.existing else set()
    return current - previous if trigger.on == "enter" else previous - current


def birthday_dates(month: int, day: int, around: date) -> list[date]:
    """The birthdays in the years around `around` (29 February: the 28th in other years)."""
    out = []
    for year in (around.year - 1, around.year, around.year + 1):
        d = day if (month, day) != (2, 29) or calendar.isleap(year) else 28
        out.append(date(year, month, d))
    return out


def date_fires(
    bases: Iterable[date],
    offset_days: int,
    at: time,
    zone: tzinfo,
    since: datetime,
    now: datetime,
) -> list[date]:
    """The occurrences (base date + offset) whose local `at` falls in (since, now]."""
    out = []
    for base in bases:
        occurrence = base + timedelta(days=offset_days)
        fire = datetime.combine(occurrence, at, tzinfo=zone)
        if since < fire <= now:
            out.append(occurrence)
    return out


def instant_date(t: int, zone: tzinfo) -> date:
    """The date of a stored instant: a date without time (midnight UTC) is that date; a
    date-time is its local date in the contact's zone."""
    if t % 86400 == 0:
        return datetime.fromtimestamp(t, UTC).date()
    return datetime.fromtimestamp(t, zone).date()


# --- dates from the snapshot ------------------------------------------------------------
@dataclass(frozen=True)
class Bases:
    """A contact's base dates for a date trigger: a birthday (month, day), or instants."""

    birthday: tuple[int, int] | None = None
    instants: tuple[int, ...] = ()

    def dates(self, zone: tzinfo, now: datetime) -> list[date]:
        if self.birthday is not None:
            month, day = self.birthday
            return birthday_dates(month, day, now.astimezone(zone).date())
        return [instant_date(t, zone) for t in self.instants]


def date_bases(snap: Snapshot, attribute: str, now: datetime) -> dict[str, Bases]:
    """contact id -> the base dates of the attribute, for the contacts that have one."""
    out: dict[str, Bases] = {}
    present = snap.present & ~snap.deceased
    ids = snap.ids
    if attribute == "birthday":
        for row in np.flatnonzero(present & (snap.birth_md > 0)).tolist():
            month, day = divmod(int(snap.birth_md[row]), 100)
            out[ids[row]] = Bases(birthday=(month, day))
        return out
    if attribute == "last_visit":
        table = snap.facts["encounter"]
        latest: dict[int, int] = {}
        t_now = int(now.timestamp())
        for row, t in zip(table.row.tolist(), table.t.tolist(), strict=True):
            if t != MISSING and t <= t_now and present[row] and t > latest.get(row, MISSING):
                latest[row] = t
        return {ids[row]: Bases(instants=(t,)) for row, t in latest.items()}
    if attribute == "next_appointment":
        table = snap.facts["appointment"]
        times: dict[int, list[int]] = {}
        for row, t, flag in zip(
            table.row.tolist(), table.t.tolist(), table.flag.tolist(), strict=True
        ):
            if t != MISSING and flag & BOOKED_BIT and present[row]:
                times.setdefault(row, []).append(t)
        return {ids[row]: Bases(instants=tuple(ts)) for row, ts in times.items()}
    codes = snap.attrs.get(attribute.removeprefix("attr."))
    if codes is None:
        return out
    values = snap.attr_vocab.values
    for row in np.flatnonzero(present & (codes >= 0)).tolist():
        t = epoch(values[int(codes[row])])
        if t != MISSING:
            out[ids[row]] = Bases(instants=(t,))
    return out


# --- applying -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scanned:
    name: str
    version_at: datetime  # when the enrolling version was published
    journey: D.Journey


def scan_journeys(
    session: Session,
    journeys: Sequence[Scanned],
    *,
    now: datetime,
    snapshot: Snapshot | None,
    segment_members: Mapping[str, set[str]],
    actor: Actor,
) -> dict[str, int]:
    """Enrol who the scan triggers name; journey name -> contacts enrolled."""
    out: dict[str, int] = {}
    for item in journeys:
        trigger = item.journey.trigger
        if isinstance(trigger, D.SegmentTrigger):
            if item.name not in segment_members:
                continue
            targets = _segment(session, item.name, trigger, segment_members[item.name], now)
            source = f"segment_{trigger.on}"
        elif isinstance(trigger, D.DateTrigger):
            if snapshot is None:
                continue
            targets = _dates(session, item, trigger, snapshot, now)
            source = "date"
        elif isinstance(trigger, D.InactivityTrigger):
            targets = _inactive(session, trigger.days, now)
            source = "inactivity"
        else:
            continue
        if not targets:
            continue
        got = service.enrol(session, item.name, sorted(targets), now=now, source=source)
        if got.enrolled:
            audit.append(
                session,
                actor=actor,
                action="journeys.enrolled",
                subjects=sorted(
                    session.scalars(
                        select(JourneyEnrolment.contact_id).where(
                            JourneyEnrolment.id.in_(got.enrolled)
                        )
                    )
                ),
                details={"journey": item.name, "source": source, "enrolled": len(got.enrolled)},
                clock=lambda: now,
            )
        out[item.name] = len(got.enrolled)
    return out


def _segment(
    session: Session, name: str, trigger: D.SegmentTrigger, current: set[str], now: datetime
) -> set[str]:
    m = JourneySegmentMember
    scanned = session.get(JourneyScan, name)
    previous = (
        None
        if scanned is None
        else set(session.scalars(select(m.contact_id).where(m.journey_name == name)))
    )
    targets = segment_change(previous, current, trigger)
    before = previous or set()
    left = sorted(before - current)
    for start in range(0, len(left), 1000):
        session.execute(
            delete(m).where(m.journey_name == name, m.contact_id.in_(left[start : start + 1000]))
        )
    insert_if_absent(
        session,
        m.__table__,
        ("journey_name", "contact_id"),
        [(name, c) for c in sorted(current - before)],
    )
    if scanned is None:
        session.add(JourneyScan(journey_name=name, scanned_at=now))
    else:
        scanned.scanned_at = now
    session.flush()
    return targets


def _dates(
    session: Session, item: Scanned, trigger: D.DateTrigger, snap: Snapshot, now: datetime
) -> set[str]:
    since = max(item.version_at, now - LATE_LIMIT)
    bases = date_bases(snap, trigger.attribute, now)
    # Zones move a local date by at most a day either way: only contacts with a base date
    # near the window need their zone.
    lo = since.date() - timedelta(days=2)
    hi = now.date() + timedelta(days=2)
    near = []
    for cid, found in bases.items():
        if any(lo <= d + timedelta(days=trigger.offset_days) <= hi for d in found.dates(UTC, now)):
            near.append(cid)
    if not near:
        return set()
    zones = zones_of(session, near)
    fired: dict[str, date] = {}
    for cid in near:
        for occurrence in date_fires(
            bases[cid].dates(zones[cid], now),
            trigger.offset_days,
            trigger.at,
            zones[cid],
            since,
            now,
        ):
            fired[cid] = occurrence
    if not fired:
        return set()
    o = JourneyOccurrence
    done: set[tuple[str, str]] = set()
    ids = sorted(fired)
    for start in range(0, len(ids), 1000):
        for row in session.execute(
            select(o.contact_id, o.occurrence).where(
                o.journey_name == item.name, o.contact_id.in_(ids[start : start + 1000])
            )
        ):
            done.add((row.contact_id, row.occurrence))
    new = {c: d.isoformat() for c, d in fired.items() if (c, d.isoformat()) not in done}
    # An occurrence is spent once it fired, whether or not the contact could enter.
    at = driver_value(session, o.__table__.c.at, now)
    insert_if_absent(
        session,
        o.__table__,
        ("journey_name", "contact_id", "occurrence", "at"),
        [(item.name, c, d, at) for c, d in sorted(new.items())],
    )
    return set(new)


def _inactive(session: Session, days: int, now: datetime) -> set[str]:
    cutoff = now - timedelta(days=days)
    mailed = select(OutboxMessage.contact_id).where(
        OutboxMessage.state == "sent", OutboxMessage.updated_at <= cutoff
    )
    engaged = select(EngagementEvent.contact_id).where(
        EngagementEvent.verdict == "human",
        EngagementEvent.kind.in_(("open", "click")),
        EngagementEvent.at > cutoff,
    )
    return set(session.scalars(mailed.except_(engaged)))
