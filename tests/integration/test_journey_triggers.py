"""Segment enter/leave triggers scanned by the engine: the baseline at the first scan,
`existing: true`, entries and exits after contacts change, and the scan's throttle on
the engine's clock. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.db import transaction
from carepost.journeys import definition as D
from carepost.journeys import service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment
from carepost.segments.service import save_segment
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, add_people, setup


def _journey(name: str, trigger: str) -> bytes:
    return f"""
name: {name}
trigger: {{segment: {trigger}}}
reentry: always
steps:
  - id: hello
    send: {{template: lab-result-ready, class: treatment}}
""".encode()


def _plans(ws: Workspace, plans: dict[int, str], clock: StepClock) -> None:
    """Re-import these people with a new plan (the record is the source's full state)."""
    with transaction(ws.engine) as session:
        ContactWriter(session, ws.keyring, now=clock.now, source="test").upsert_contacts(
            [
                ContactInput(
                    f"person:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                        "emails": [f"person{i}@patients.example"],
                        "attributes": {"plan": plan},
                    },
                    [("email", f"person{i}@patients.example")],
                )
                for i, plan in plans.items()
            ]
        )


def _enrolled(ws: Workspace) -> dict[str, set[str]]:
    with transaction(ws.engine) as session:
        out: dict[str, set[str]] = {}
        for name, contact in session.execute(
            select(JourneyEnrolment.journey_name, JourneyEnrolment.contact_id)
        ):
            out.setdefault(name, set()).add(contact)
        return out


def test_segment_enter_and_leave(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    setup(workspace, actor, 0)
    plans = ["gold", "gold", "silver", "silver", "silver"]
    ids = add_people(workspace, [{"attributes": {"plan": p}} for p in plans])
    with transaction(workspace.engine) as session:
        save_segment(session, "gold", 'attr.plan == "gold"', actor=actor)
        for name, trigger in (
            ("gold-enter", "{name: gold}"),
            ("gold-leave", "{name: gold, on: leave}"),
            ("gold-all", "{name: gold, existing: true}"),
        ):
            service.do_publish_journey(
                session, _journey(name, trigger), sender_id=SENDER, actor=actor, clock=clock
            )
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)
    engine.run_until_idle()
    # The first scan is the baseline: only `existing: true` counts present members.
    assert _enrolled(workspace) == {"gold-all": set(ids[:2])}

    clock.advance(seconds=30)
    _plans(workspace, {0: "silver", 2: "gold", 3: "gold"}, clock)
    engine.run_until_idle()
    assert _enrolled(workspace) == {"gold-all": set(ids[:2])}  # scanned once a minute

    clock.advance(seconds=30)
    report = engine.run_until_idle()
    assert report.scan_enrolled == 5
    assert _enrolled(workspace) == {
        "gold-enter": set(ids[2:4]),
        "gold-leave": {ids[0]},
        "gold-all": set(ids[:4]),
    }
    # Nothing changed: the next scan enrols no one.
    clock.advance(minutes=1)
    assert engine.run_until_idle().scan_enrolled == 0
    # Back in: an entry again (reentry: always, the first enrolment has finished).
    _plans(workspace, {0: "gold"}, clock)
    clock.advance(minutes=1)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        again = list(
            session.scalars(
                select(JourneyEnrolment.contact_id).where(
                    JourneyEnrolment.journey_name == "gold-enter"
                )
            )
        )
    assert sorted(again) == sorted([ids[0], ids[2], ids[3]])


def test_scan_throttle_uses_the_engine_clock(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    engine = JourneyEngine(
        workspace.engine, clock, ring=workspace.keyring, scan_every=timedelta(minutes=5)
    )
    setup(workspace, actor, 0)
    engine.scan()
    clock.advance(minutes=4)
    assert engine._scanned_at == clock.now - timedelta(minutes=4)
    engine.scan()
    assert engine._scanned_at == clock.now - timedelta(minutes=4)
    clock.advance(minutes=1)
    engine.scan()
    assert engine._scanned_at == clock.now


def test_publish_refuses_a_segment_that_does_not_exist(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    setup(workspace, actor, 0)
    with transaction(workspace.engine) as session, pytest.raises(D.DefinitionError) as err:
        service.do_publish_journey(
            session, _journey("nowhere", "{name: nope}"), sender_id=SENDER, actor=actor, clock=clock
        )
    assert err.value.problems == [("trigger.segment.name", "no segment 'nope'")]
