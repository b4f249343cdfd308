"""The six example journeys (examples/journeys) run to completion on the test clock over
a generated population, with deterministic engagement created here (human opens and
clicks of chosen contacts' messages, events for chosen contacts), and exact counts per
step; plus the loop and step-limit guards. On SQLite and PostgreSQL.

The birthday, post-visit survey and re-engagement journeys are enrolled by their own
triggers (the date and inactivity scans) on the test clock, not by hand."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.contacts import phi
from carepost.contacts.zones import do_set_time_zone
from carepost.db import transaction
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.journeys import events, service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.journeys.report import journey_report
from carepost.segments.models import Segment, StaticMember
from carepost.workspace import Workspace
from journey_support import SENDER, START, StepClock, add_people, engage, publish, setup
from smtp_sink import RELAY_TIMEOUT


def _event(ws: Workspace, actor: Actor, name: str, contacts: list[str], clock: StepClock) -> None:
    for c in contacts:
        with transaction(ws.engine) as session:
            events.do_send_event(session, name, c, {}, actor=actor, clock=clock)


def _enrol(ws: Workspace, actor: Actor, name: str, ids: list[str], clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_enrol(session, name, ids, actor=actor, clock=clock)


def _counts(ws: Workspace, name: str) -> dict[str, tuple[int, int, int, dict[str, int], int]]:
    """step -> (entered, completed, waiting, exited, sends) from `journey report`. An
    enrolment that finishes the journey at a step (completed, exit step) completed it."""
    with transaction(ws.engine) as session:
        rep = journey_report(session, name)
    return {s.step: (s.entered, s.completed, s.waiting, s.exited, s.sends or 0) for s in rep.steps}


def _reasons(ws: Workspace, name: str) -> Counter[str | None]:
    with transaction(ws.engine) as session:
        return Counter(
            session.scalars(
                select(JourneyEnrolment.exit_reason).where(JourneyEnrolment.journey_name == name)
            )
        )


def test_refill_reminder(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 12)
    publish(workspace, actor, "refill-reminder", clock)
    engine = JourneyEngine(workspace.engine, clock, batch=5)
    _event(workspace, actor, "refill_due", ids, clock)
    engine.run_until_idle()
    clock.advance(hours=10)
    engage(workspace, "remind", ids[:4], "click", clock, link=0)  # the refill link
    engage(workspace, "remind", ids[4:6], "click", clock, link=1)  # another link: no
    _event(workspace, actor, "purchase", ids[6:9], clock)  # the goal
    engine.run_until_idle()
    clock.advance(days=3)
    engine.run_until_idle()
    assert _reasons(workspace, "refill-reminder") == {"exit_step": 9, "goal": 3}
    assert _counts(workspace, "refill-reminder") == {
        "remind": (12, 12, 0, {}, 12),
        "wait-click": (12, 9, 0, {}, 0),
        "fallback": (5, 5, 0, {}, 5),
        "done": (9, 9, 0, {"exit_step": 9}, 0),
    }
    with transaction(workspace.engine) as session:
        rep = journey_report(session, "refill-reminder")
    goal = {s.step: s.goal_reached for s in rep.steps}
    assert goal["wait-click"] == 3


def test_lab_result(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 10)
    publish(workspace, actor, "lab-result", clock)
    engine = JourneyEngine(workspace.engine, clock)
    _event(workspace, actor, "lab_result_available", ids, clock)
    engine.run_until_idle()
    clock.advance(hours=5)
    engage(workspace, "notify", ids[:5], "open", clock)
    engage(workspace, "notify", ids[5:6], "click", clock, link=0)  # images off: a click
    engine.run_until_idle()
    clock.advance(days=2)
    engine.run_until_idle()
    assert _reasons(workspace, "lab-result") == {"exit_step": 10}
    assert _counts(workspace, "lab-result") == {
        "notify": (10, 10, 0, {}, 10),
        "seen": (10, 10, 0, {}, 0),
        "nudge": (4, 4, 0, {}, 4),
        "done": (10, 10, 0, {"exit_step": 10}, 0),
    }


HELLO = b"""
name: hello
trigger: {manual: {}}
steps:
  - id: hello
    send: {template: lab-result-ready, class: treatment}
"""


def _deliver(ws: Workspace, clock: StepClock, sink_factory: Any) -> None:
    """Deliver what is queued through the real worker to a real SMTP server."""
    sink = sink_factory()
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    worker = Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=50),
        name="w1",
        clock=clock,
        rng=Random(7),
    )
    assert set(worker.run().results) == {"sent"}


def test_re_engagement(workspace: Workspace, actor: Actor, smtp_sink_factory: Any) -> None:
    """Enrolled by the inactivity scan: mailed at least 90 days ago, no human open or
    click in the last 90 days; never mailed is not inactive."""
    clock = StepClock()
    ids = setup(workspace, actor, 8)
    with transaction(workspace.engine) as session:
        service.do_publish_journey(session, HELLO, sender_id=SENDER, actor=actor, clock=clock)
    publish(workspace, actor, "re-engagement", clock)
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)
    _enrol(workspace, actor, "hello", ids[:7], clock)  # ids[7] is never mailed
    engine.run_until_idle()
    _deliver(workspace, clock, smtp_sink_factory)
    clock.advance(days=60)
    engage(workspace, "hello", ids[:2], "open", clock)
    engage(workspace, "hello", ids[2:3], "open", clock, verdict="machine")  # not a person
    clock.advance(days=30, hours=1)
    engine.run_until_idle()
    assert _reasons(workspace, "re-engagement") == {None: 5}  # ids[2:7], waiting
    clock.advance(days=2)
    engage(workspace, "miss-you", ids[2:3], "click", clock, link=0)
    engine.run_until_idle()
    clock.advance(days=14)
    engine.run_until_idle()
    assert _counts(workspace, "re-engagement") == {
        "miss-you": (5, 5, 0, {}, 5),
        "wait-click": (5, 5, 0, {}, 0),
        "tag-dormant": (4, 4, 0, {}, 0),
        "done": (5, 5, 0, {"exit_step": 5}, 0),
    }
    with transaction(workspace.engine) as session:
        members = set(
            session.scalars(
                select(StaticMember.contact_id)
                .join(Segment, Segment.id == StaticMember.segment_id)
                .where(Segment.name == "dormant")
            )
        )
    assert members == set(ids[3:7])
    # 90 days after their last open the first two are inactive too; the others entered
    # less than 180 days ago (reentry) and ids[2] clicked.
    clock.now = START + timedelta(days=150, hours=2)
    assert engine.run_until_idle().scan_enrolled == 2
    with transaction(workspace.engine) as session:
        second = set(
            session.scalars(
                select(JourneyEnrolment.contact_id).where(
                    JourneyEnrolment.journey_name == "re-engagement",
                    JourneyEnrolment.status != "exited",
                )
            )
        )
    assert second == set(ids[:2])


def test_birthday(workspace: Workspace, actor: Actor) -> None:
    """Enrolled by the date scan at 09:00 in each contact's zone, once per birthday; a
    birthday whose 09:00 passed before the journey was published does not fire."""
    clock = StepClock()  # 2027-03-01 08:00 UTC
    setup(workspace, actor, 0)
    ids = add_people(
        workspace,
        [
            {"birth_date": "1980-03-01"},  # UTC: 2027-03-01 09:00Z
            {"birth_date": "1990-03-01"},  # Tokyo: 2027-03-01 00:00Z, before publishing
            {"birth_date": "1985-03-02"},  # New York: 2027-03-02 14:00Z
            {"birth_date": "2000-02-29"},  # 28 February in 2027 (past), 29th in 2028
            {"birth_date": "1970-07-04"},
            {},
        ],
    )
    with transaction(workspace.engine) as session:
        do_set_time_zone(session, ids[1:2], "Asia/Tokyo", actor=actor)
        do_set_time_zone(session, ids[2:3], "America/New_York", actor=actor)
    publish(workspace, actor, "birthday", clock)
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)

    def greeted() -> Counter[str]:
        with transaction(workspace.engine) as session:
            return Counter(
                session.scalars(
                    select(JourneyEnrolment.contact_id).where(
                        JourneyEnrolment.journey_name == "birthday"
                    )
                )
            )

    engine.run_until_idle()
    assert greeted() == {}
    for hours, expected in ((1, [0]), (29, [0]), (30, [0, 2]), (31, [0, 2])):
        clock.now = START + timedelta(hours=hours)
        engine.run_until_idle()
        assert greeted() == Counter(ids[i] for i in expected), hours
    for at, expected in (
        (datetime(2028, 2, 28, 12, tzinfo=UTC), [0, 2]),
        (datetime(2028, 2, 29, 12, tzinfo=UTC), [0, 2, 3]),
        (datetime(2028, 3, 1, 12, tzinfo=UTC), [0, 2, 3, 0, 1]),
        (datetime(2028, 3, 2, 15, tzinfo=UTC), [0, 2, 3, 0, 1, 2]),
        (datetime(2028, 3, 2, 18, tzinfo=UTC), [0, 2, 3, 0, 1, 2]),
    ):
        clock.now = at
        engine.run_until_idle()
        assert greeted() == Counter(ids[i] for i in expected), at
    assert _reasons(workspace, "birthday") == {"completed": 6}
    assert _counts(workspace, "birthday") == {"greet": (6, 6, 0, {"completed": 6}, 6)}


def test_post_visit_survey(workspace: Workspace, actor: Actor) -> None:
    """Enrolled by the date scan 3 days after the last visit at 10:00; update_contact
    records that the survey went out (audited, re-sealed)."""
    clock = StepClock()  # 2027-03-01 08:00 UTC
    setup(workspace, actor, 0)
    ids = add_people(
        workspace,
        [{}] * 6,
        visits={
            0: ["2027-02-26"],
            1: ["2027-02-26"],
            2: ["2026-11-02", "2027-02-26"],  # the last visit counts
            3: ["2027-02-27"],
            4: ["2027-02-20"],  # its survey day passed before publishing
        },
    )
    publish(workspace, actor, "post-visit-survey", clock)
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)
    engine.run_until_idle()
    assert _reasons(workspace, "post-visit-survey") == {}
    clock.advance(hours=2, minutes=30)
    engine.run_until_idle()
    assert _reasons(workspace, "post-visit-survey") == {"completed": 3}
    clock.advance(days=1)
    engine.run_until_idle()
    assert _reasons(workspace, "post-visit-survey") == {"completed": 4}
    assert _counts(workspace, "post-visit-survey") == {
        "survey": (4, 4, 0, {}, 4),
        "mark": (4, 4, 0, {"completed": 4}, 0),
    }
    with transaction(workspace.engine) as session:
        views = phi.read_contacts(
            session, workspace.keyring, ids, actor=actor, purpose="test check"
        )
    marked = {v.id for v in views if (v.record.get("attributes") or {}).get("last_survey_sent")}
    assert marked == set(ids[:4])


LOOP = b"""
name: loop
trigger: {manual: {}}
steps:
  - id: hello
    send: {template: lab-result-ready, class: treatment}
  - id: pause
    wait: {duration: 1d}
  - id: back
    goto: {step: hello}
"""
LIMIT = b"""
name: limited
trigger: {manual: {}}
max_steps: 7
steps:
  - id: pause
    wait: {duration: 1d}
    allow_revisit: true
  - id: back
    goto: {step: pause}
    allow_revisit: true
"""


def test_loop_and_step_limit_guards(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    with transaction(workspace.engine) as session:
        for doc in (LOOP, LIMIT):
            service.do_publish_journey(session, doc, sender_id=SENDER, actor=actor, clock=clock)
    _enrol(workspace, actor, "loop", ids, clock)
    _enrol(workspace, actor, "limited", ids, clock)
    engine = JourneyEngine(workspace.engine, clock)
    for _ in range(6):
        engine.run_until_idle()
        clock.advance(days=1)
    assert _reasons(workspace, "loop") == {"loop_guard": 3}
    assert _reasons(workspace, "limited") == {"step_limit": 3}
    with transaction(workspace.engine) as session:
        sends = Counter(session.scalars(select(JourneyMessage.step)))
        guards = Counter(
            session.execute(
                select(JourneyTransition.step, JourneyTransition.detail).where(
                    JourneyTransition.outcome == "exited"
                )
            )
        )
    assert sends == {"hello": 3}  # sent once per enrolment, never again
    assert guards == {("hello", "loop_guard"): 3, ("back", "step_limit"): 3}
