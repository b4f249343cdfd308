"""Named events (`carepost event send NAME --contact ID --props JSON`, later the REST
API): recorded as an `api_event` engagement event, then matched to journeys.

- Journeys whose trigger is this event (and whose `where` matches the properties) enrol
  the contact, under their re-entry policy.
- Enrolments of this contact waiting for this event wake exactly once: each wake is an
  UPDATE conditional on the row still waiting for it (engine.wake_one), so two copies of
  the event delivered at once, from two processes, wake it once.
- Enrolments whose journey has this event as its goal exit with `goal`.

The properties only select journeys; they are never stored (they may hold PHI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import Contact
from carepost.db import insert_if_absent
from carepost.journeys import definition as D
from carepost.journeys import service
from carepost.journeys.engine import TRANSITION_COLUMNS, at_value, wake_one
from carepost.journeys.models import JourneyEnrolment, JourneyTransition, JourneyVersion
from carepost.staff.principal import Principal
from carepost.tracking.service import record_event

Props = Mapping[str, str | int | float | bool | None]


class EventError(ValueError):
    pass


class NoSuchContact(EventError, LookupError):
    pass


@dataclass
class EventOutcome:
    enrolled: dict[str, int] = field(default_factory=dict)  # journey -> enrolments
    woken: int = 0
    goal_reached: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"enrolled": self.enrolled, "woken": self.woken, "goal_reached": self.goal_reached}


def matches(trigger: D.Trigger, name: str, props: Props) -> bool:
    if not isinstance(trigger, D.EventTrigger) or trigger.name != name:
        return False
    return all(key in props and props[key] == want for key, want in trigger.where.items())


def check_props(props: object) -> Props:
    if not isinstance(props, Mapping):
        raise EventError("--props: a JSON object")
    for key, value in props.items():
        if not isinstance(key, str):
            raise EventError("--props: property names are text")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise EventError(
                f"--props: property {key!r} must be text, a number, true/false or null"
            )
    return props


def do_send_event(
    session: Session,
    name: str,
    contact_id: str,
    props: Props,
    *,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> EventOutcome:
    """Record the event, enrol the contact in the journeys it triggers, wake the
    contact's enrolments waiting for it and end those whose goal it is. `principal`:
    a staff caller (the API), checked for `events:write`; None is the system."""
    if principal is not None:
        principal.require("events:write")
    if not D.EVENT_NAME.match(name):
        raise EventError("an event name like purchase or form_submitted:newsletter")
    if session.get(Contact, contact_id) is None:
        raise NoSuchContact(f"no contact {contact_id!r}")
    now = clock()
    outcome = EventOutcome()
    record_event(session, contact_id=contact_id, kind="api_event", at=now, name=name)
    cache: dict[str, D.Journey] = {}

    def journey_of(s: Session, journey_id: str) -> D.Journey:
        if journey_id not in cache:
            row = s.get(JourneyVersion, journey_id)
            assert row is not None
            cache[journey_id] = service.definition_of(row)
        return cache[journey_id]

    newest: dict[str, JourneyVersion] = {}
    for row in session.scalars(select(JourneyVersion).order_by(JourneyVersion.version)):
        newest[row.name] = row
    goals: list[str] = []
    for journey_name, row in newest.items():
        if row.status != "active":
            continue
        journey = journey_of(session, row.id)
        if journey.goal_event == name:
            goals.append(journey_name)
        if matches(journey.trigger, name, props):
            got = service.enrol(
                session,
                journey_name,
                [contact_id],
                now=now,
                source=f"event:{name}",
                definitions={row.id: journey},
            )
            outcome.enrolled[journey_name] = len(got.enrolled)
    t = JourneyEnrolment
    at = at_value(session, now)
    waiting = session.execute(
        select(t.id, t.journey_id, t.contact_id, t.step, t.waiting_for, t.seq, t.visits).where(
            t.contact_id == contact_id, t.status == "waiting", t.waiting_for == name
        )
    ).all()
    for r in waiting:
        if wake_one(session, journey_of, r, name, now, at):
            outcome.woken += 1
    if goals:
        outcome.goal_reached = _reach_goal(session, contact_id, goals, name, now, at)
    audit.append(
        session,
        actor=actor,
        action="journeys.event_received",
        subjects=[contact_id],
        details={"event": name, **outcome.as_dict()},
        clock=lambda: now,
    )
    return outcome


def _reach_goal(
    session: Session, contact_id: str, journeys: list[str], name: str, now: datetime, at: object
) -> int:
    t = JourneyEnrolment
    rows = session.execute(
        select(t.id, t.step, t.seq).where(
            t.contact_id == contact_id, t.journey_name.in_(journeys), t.status != "exited"
        )
    ).all()
    reached = 0
    for r in rows:
        done = session.execute(
            update(t)
            .where(t.id == r.id, t.status != "exited", t.seq == r.seq)
            .values(
                status="exited",
                step=None,
                wake_at=None,
                waiting_for=None,
                exit_reason="goal",
                exit_step=r.step,
                seq=r.seq + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            reached += 1
            insert_if_absent(
                session,
                JourneyTransition.__table__,
                TRANSITION_COLUMNS,
                [(r.id, r.seq, r.step or "", "goal", name, at)],
            )
    return reached
