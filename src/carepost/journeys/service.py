"""Journey use cases: publish a version, pause and resume, list, and enrol contacts.

Publishing checks the definition (definition.py) and what it names in this workspace: the
sender profile, each send step's template (whose class must be the step's class) and each
static list a step adds to or removes from. Each send step gets a hidden campaign (kind
'journey') so its messages go through the worker, the consent gate and the outbox like any
campaign's. Services never commit; every change is audited in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign, SenderProfile
from carepost.clock import Clock, system_clock
from carepost.consent.records import valid_topic
from carepost.contacts.models import Contact
from carepost.contacts.store import new_id
from carepost.content.service import latest_template
from carepost.db import driver_value, insert_if_absent
from carepost.journeys import definition as D
from carepost.journeys.document import parse_document
from carepost.journeys.models import (
    JourneyEnrolment,
    JourneySend,
    JourneyTransition,
    JourneyVersion,
)
from carepost.segments.models import Segment
from carepost.staff.principal import Principal

STATUSES = ("active", "paused")


class JourneyError(ValueError):
    pass


class JourneyNotFound(JourneyError):
    pass


def _require(principal: Principal | None, *permissions: str) -> None:
    # None is the trusted caller (the command line on the server, the engine).
    if principal is not None:
        principal.require(*permissions)


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def definition_of(row: JourneyVersion) -> D.Journey:
    """The checked journey a stored version holds (it was checked at publish)."""
    return D.check(json.loads(row.definition))


@dataclass(frozen=True)
class Published:
    row: JourneyVersion
    journey: D.Journey
    warnings: tuple[str, ...]


def do_publish_journey(
    session: Session,
    text: str | bytes,
    *,
    sender_id: str,
    topic: str | None = None,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> Published:
    """A new version of the journey the document describes; it takes new enrolments from
    now on, while running enrolments finish on their own version."""
    _require(principal, "journeys:write")
    doc = parse_document(text)
    journey = D.check(doc)
    topic = topic or journey.name
    if not valid_topic(topic):
        raise JourneyError("topic must be 1-64 characters of a-z, 0-9, '-', '_', '.'")
    if session.get(SenderProfile, sender_id) is None:
        raise JourneyError(f"no sender profile {sender_id!r}")
    problems: list[tuple[str, str]] = []
    templates: dict[str, Any] = {}
    warnings: list[str] = []
    for i, step in enumerate(journey.steps):
        where = f"steps[{i}] ({step.id})"
        action = step.action
        if isinstance(action, D.Send):
            template = latest_template(session, action.template)
            if template is None:
                problems.append((f"{where}.send.template", f"no template {action.template!r}"))
            elif template.message_class != action.message_class:
                problems.append(
                    (
                        f"{where}.send.class",
                        f"template {action.template!r} is of class {template.message_class}",
                    )
                )
            else:
                templates[step.id] = template
        elif isinstance(action, D.SegmentChange):
            seg = session.scalars(select(Segment).where(Segment.name == action.segment)).first()
            if seg is None or seg.kind != "static":
                kind = "add_to_segment" if action.add else "remove_from_segment"
                problems.append((f"{where}.{kind}.segment", f"no static list {action.segment!r}"))
    trigger = journey.trigger
    if isinstance(trigger, D.SegmentTrigger):
        seg = session.scalars(select(Segment).where(Segment.name == trigger.segment)).first()
        if seg is None:
            problems.append(("trigger.segment.name", f"no segment {trigger.segment!r}"))
    if problems:
        raise D.DefinitionError(problems)
    at = clock()
    latest = session.scalar(
        select(func.max(JourneyVersion.version)).where(JourneyVersion.name == journey.name)
    )
    row = JourneyVersion(
        id=new_id(),
        name=journey.name,
        version=int(latest or 0) + 1,
        definition=json.dumps(doc, default=_json_default, sort_keys=True),
        status="active",
        sender_id=sender_id,
        topic=topic,
        created_at=at,
        actor=actor.id,
    )
    session.add(row)
    session.flush()
    for step_id, template in templates.items():
        campaign = Campaign(
            id=new_id(),
            name=f"journey {journey.name} v{row.version} {step_id}"[:128],
            segment=f"journey:{journey.name}"[:64],
            template_id=template.id,
            message_class=template.message_class,
            channel="email",
            topic=topic,
            sender_id=sender_id,
            status="running",
            recipients=0,
            created_at=at,
            started_at=at,
            actor=actor.id,
            kind="journey",
        )
        session.add(campaign)
        session.flush()
        session.add(JourneySend(journey_id=row.id, step=step_id, campaign_id=campaign.id))
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="journeys.published",
        subjects=[row.id],
        details={"name": journey.name, "version": row.version, "sender": sender_id},
        clock=clock,
    )
    return Published(row, journey, tuple(warnings))


def do_set_status(
    session: Session,
    name: str,
    status: str,
    *,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> int:
    """Pause or resume every version of a journey: a paused journey takes no enrolments,
    its enrolments do not move and its queued messages wait (the hidden campaigns pause)."""
    _require(principal, "journeys:write")
    if status not in STATUSES:
        raise JourneyError(f"status: one of {', '.join(STATUSES)}")
    ids = list(session.scalars(select(JourneyVersion.id).where(JourneyVersion.name == name)))
    if not ids:
        raise JourneyNotFound(f"no journey {name!r}")
    session.execute(update(JourneyVersion).where(JourneyVersion.id.in_(ids)).values(status=status))
    campaign_ids = list(
        session.scalars(select(JourneySend.campaign_id).where(JourneySend.journey_id.in_(ids)))
    )
    if campaign_ids:
        session.execute(
            update(Campaign)
            .where(Campaign.id.in_(campaign_ids))
            .values(status="running" if status == "active" else "paused")
        )
    audit.append(
        session,
        actor=actor,
        action="journeys.resumed" if status == "active" else "journeys.paused",
        subjects=ids,
        details={"name": name},
        clock=clock,
    )
    return len(ids)


@dataclass(frozen=True)
class JourneySummary:
    name: str
    version: int
    status: str
    trigger: str
    sender: str
    active: int
    waiting: int
    exited: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def list_journeys(
    session: Session, names: Sequence[str] | None = None, *, principal: Principal | None = None
) -> list[JourneySummary]:
    """The newest version of each journey (or of those `names`, in that order), with its
    enrolments (all versions) by status."""
    _require(principal, "journeys:read")
    counting = select(
        JourneyEnrolment.journey_name, JourneyEnrolment.status, func.count()
    ).group_by(JourneyEnrolment.journey_name, JourneyEnrolment.status)
    versions = select(JourneyVersion).order_by(JourneyVersion.name, JourneyVersion.version)
    if names is not None:
        counting = counting.where(JourneyEnrolment.journey_name.in_(names))
        versions = versions.where(JourneyVersion.name.in_(names))
    counts: dict[tuple[str, str], int] = {
        (str(n), str(s)): int(c) for n, s, c in session.execute(counting)
    }
    out = []
    rows = session.scalars(versions)
    newest: dict[str, JourneyVersion] = {r.name: r for r in rows}
    for name, row in newest.items():
        trigger = type(definition_of(row).trigger).__name__.removesuffix("Trigger").lower()
        out.append(
            JourneySummary(
                name,
                row.version,
                row.status,
                trigger,
                row.sender_id,
                counts.get((name, "active"), 0),
                counts.get((name, "waiting"), 0),
                counts.get((name, "exited"), 0),
            )
        )
    if names is not None:
        order = {n: i for i, n in enumerate(names)}
        out.sort(key=lambda j: order[j.name])
    return out


def journey_page(
    session: Session, *, after: str | None, limit: int, principal: Principal | None = None
) -> list[tuple[str, JourneySummary]]:
    """Up to `limit` journeys ordered by the id of their first version, after that id:
    (first version id, summary) pairs (the API's cursor pages, keyed on ids only)."""
    _require(principal, "journeys:read")
    first = func.min(JourneyVersion.id)
    query = select(first, JourneyVersion.name).group_by(JourneyVersion.name)
    if after is not None:
        query = query.having(first > after)
    keys = [(str(k), str(n)) for k, n in session.execute(query.order_by(first).limit(limit))]
    summaries = list_journeys(session, [n for _, n in keys]) if keys else []
    return list(zip([k for k, _ in keys], summaries, strict=True))


def journey_versions(
    session: Session, name: str, *, principal: Principal | None = None
) -> list[JourneyVersion]:
    """Every version of journey `name`, newest first."""
    _require(principal, "journeys:read")
    rows = list(
        session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.name == name)
            .order_by(JourneyVersion.version.desc())
        )
    )
    if not rows:
        raise JourneyNotFound(f"no journey {name!r}")
    return rows


def current_version(session: Session, name: str) -> JourneyVersion | None:
    return session.scalars(
        select(JourneyVersion)
        .where(JourneyVersion.name == name)
        .order_by(JourneyVersion.version.desc())
        .limit(1)
    ).first()


def entry_refusal(
    journey: D.Journey, previous: Sequence[tuple[str, datetime]], now: datetime
) -> str | None:
    """Why a contact may not enter (None: it may). `previous` holds (status, enrolled_at)
    of its earlier enrolments in this journey, any version.

    - any unfinished enrolment: `already_enrolled` (one at a time, whatever the policy);
    - `reentry: never`: one enrolment ever (`reentry_never`);
    - `reentry: {after_days: N}`: N days after the last entry (`reentry_too_soon`);
    - `reentry: always`: whenever the previous one has finished.
    """
    if any(status != "exited" for status, _ in previous):
        return "already_enrolled"
    if not previous or journey.reentry == "always":
        return None
    if journey.reentry == "never":
        return "reentry_never"
    last = max(at for _, at in previous)
    if now - last < timedelta(days=journey.reentry_after_days or 0):
        return "reentry_too_soon"
    return None


@dataclass
class EnrolOutcome:
    enrolled: list[str] = field(default_factory=list)  # enrolment ids
    refused: dict[str, int] = field(default_factory=dict)  # reason -> contacts


ENROL_COLUMNS = (
    "id", "journey_id", "journey_name", "contact_id", "status", "step", "visited", "visits",
    "sent", "seq", "enrolled_at", "updated_at",
)  # fmt: skip


def enrol(
    session: Session,
    name: str,
    contact_ids: Iterable[str],
    *,
    now: datetime,
    source: str,
    definitions: Mapping[str, D.Journey] | None = None,
) -> EnrolOutcome:
    """Enrol contacts in the newest version of journey `name`, each checked against the
    re-entry policy; batched (one query per 1000 contacts). The contacts must exist."""
    outcome = EnrolOutcome()
    row = current_version(session, name)
    ids = list(dict.fromkeys(contact_ids))
    if row is None or row.status != "active":
        reason = "no_such_journey" if row is None else "journey_paused"
        outcome.refused[reason] = len(ids)
        return outcome
    journey = (definitions or {}).get(row.id) or definition_of(row)
    first = journey.steps[0].id
    at = driver_value(session, JourneyEnrolment.__table__.c.enrolled_at, now)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        previous: dict[str, list[tuple[str, datetime]]] = {c: [] for c in chunk}
        for contact_id, status, enrolled_at in session.execute(
            select(
                JourneyEnrolment.contact_id, JourneyEnrolment.status, JourneyEnrolment.enrolled_at
            ).where(JourneyEnrolment.journey_name == name, JourneyEnrolment.contact_id.in_(chunk))
        ):
            previous[contact_id].append((status, enrolled_at))
        rows = []
        for contact_id in chunk:
            refusal = entry_refusal(journey, previous[contact_id], now)
            if refusal is not None:
                outcome.refused[refusal] = outcome.refused.get(refusal, 0) + 1
                continue
            rows.append(
                (new_id(), row.id, name, contact_id, "active", first, "[]", 0, "[]", 1, at, at)
            )
        # A concurrent enrolment of the same contact (the same event twice, at once) meets
        # the unique index on unfinished enrolments; the loser's row is skipped here.
        insert_if_absent(session, JourneyEnrolment.__table__, ENROL_COLUMNS, rows)
        written = set(
            session.scalars(
                select(JourneyEnrolment.id).where(JourneyEnrolment.id.in_([r[0] for r in rows]))
            )
        )
        lost = len(rows) - len(written)
        if lost:
            outcome.refused["already_enrolled"] = outcome.refused.get("already_enrolled", 0) + lost
        kept = [r for r in rows if r[0] in written]
        insert_if_absent(
            session,
            JourneyTransition.__table__,
            ("enrolment_id", "seq", "step", "outcome", "detail", "at"),
            [(r[0], 0, first, "enrolled", source[:512], at) for r in kept],
        )
        outcome.enrolled.extend(r[0] for r in kept)
    return outcome


def do_enrol(
    session: Session,
    name: str,
    contact_ids: Sequence[str],
    *,
    actor: Actor,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> EnrolOutcome:
    """Manual enrolment (`carepost journey enrol`, the API), audited."""
    _require(principal, "journeys:write")
    if current_version(session, name) is None:
        raise JourneyNotFound(f"no journey {name!r}")
    ids = list(dict.fromkeys(contact_ids))
    found = set(session.scalars(select(Contact.id).where(Contact.id.in_(ids))))
    missing = [c for c in ids if c not in found]
    if missing:
        raise JourneyError(f"no contact {missing[0]!r}")
    outcome = enrol(session, name, ids, now=clock(), source="manual")
    audit.append(
        session,
        actor=actor,
        action="journeys.enrolled",
        subjects=ids,
        details={"journey": name, "enrolled": len(outcome.enrolled), "refused": outcome.refused},
        clock=clock,
    )
    return outcome
