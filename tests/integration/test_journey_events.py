"""Named events: journeys they trigger, waits they end (exactly once, under concurrent
deliveries of the same event from many threads), goals they reach; on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.journeys import events, service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, setup

AWAIT = b"""
name: await-event
trigger: {manual: {}}
steps:
  - id: wait-it
    wait: {event: results_in, timeout: 2d, on_timeout: late}
  - id: notify
    send: {template: lab-result-ready, class: treatment}
    next: fin
  - id: late
    send: {template: lab-result-reminder, class: treatment}
  - id: fin
    exit: {}
"""
SIGNUP = b"""
name: on-signup
trigger: {event: {name: signup, where: {plan: basic}}}
reentry: always
goal: {event: purchase}
steps:
  - id: hello
    send: {template: welcome, class: marketing}
  - id: later
    wait: {duration: 5d}
  - id: again
    send: {template: healthy-habits, class: marketing}
"""
THREADS = 8


def _concurrently(
    ws: Workspace, actor: Actor, calls: list[tuple[str, str, dict[str, object]]], clock: StepClock
) -> list[events.EventOutcome]:
    results: list[events.EventOutcome] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()

    def worker(share: list[tuple[str, str, dict[str, object]]]) -> None:
        barrier.wait()
        for name, contact, props in share:
            try:
                with transaction(ws.engine) as session:
                    got = events.do_send_event(
                        session,
                        name,
                        contact,
                        props,
                        actor=actor,
                        clock=clock,  # type: ignore[arg-type]
                    )
                with lock:
                    results.append(got)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(calls,)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_concurrent_deliveries_wake_each_enrolment_once(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 10)
    with transaction(workspace.engine) as session:
        service.do_publish_journey(session, AWAIT, sender_id=SENDER, actor=actor, clock=clock)
        service.do_enrol(session, "await-event", ids, actor=actor, clock=clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    # Every thread delivers `results_in` to every contact: 80 deliveries, 10 waits.
    results = _concurrently(workspace, actor, [("results_in", c, {}) for c in ids], clock)
    assert len(results) == THREADS * 10
    assert sum(r.woken for r in results) == 10
    engine.run_until_idle()
    clock.advance(days=3)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        woke = Counter(
            session.scalars(
                select(JourneyTransition.enrolment_id).where(JourneyTransition.outcome == "woke")
            )
        )
        assert sorted(woke.values()) == [1] * 10
        sends = Counter(session.scalars(select(JourneyMessage.step)))
        assert sends == {"notify": 10}
        reasons = Counter(session.scalars(select(JourneyEnrolment.exit_reason)))
        assert reasons == {"exit_step": 10}


def test_concurrent_trigger_events_enrol_once_and_goal_exits(
    workspace: Workspace, actor: Actor
) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 4)
    with transaction(workspace.engine) as session:
        service.do_publish_journey(session, SIGNUP, sender_id=SENDER, actor=actor, clock=clock)
    calls: list[tuple[str, str, dict[str, object]]] = [
        ("signup", c, {"plan": "basic"}) for c in ids[:3]
    ]
    calls.append(("signup", ids[3], {"plan": "premium"}))  # `where` does not match
    results = _concurrently(workspace, actor, calls, clock)
    assert sum(r.enrolled.get("on-signup", 0) for r in results) == 3
    with transaction(workspace.engine) as session:
        per_contact = Counter(session.scalars(select(JourneyEnrolment.contact_id)))
        assert per_contact == {ids[0]: 1, ids[1]: 1, ids[2]: 1}
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        got = events.do_send_event(session, "purchase", ids[0], {}, actor=actor, clock=clock)
    assert got.goal_reached == 1
    clock.advance(days=6)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        reasons = Counter(
            session.execute(select(JourneyEnrolment.contact_id, JourneyEnrolment.exit_reason))
        )
        assert reasons == {(ids[0], "goal"): 1, (ids[1], "completed"): 1, (ids[2], "completed"): 1}
        sends = session.scalar(select(func.count()).select_from(JourneyMessage))
        assert sends == 1 + 2 + 2  # the goal stopped contact 0 before its second message


def test_event_cli_and_journey_commands(workspace: Workspace, actor: Actor, carepost) -> None:  # type: ignore[no-untyped-def]
    import json

    from carepost.delivery.models import OutboxMessage
    from carepost.tracking.service import TrackedEvent, record_tracked
    from journey_support import EXAMPLES

    clock = StepClock()
    ids = setup(workspace, actor, 3)
    carepost("journey", "publish", str(EXAMPLES / "lab-result.yaml"), "--sender", SENDER)
    bad = carepost(
        "event", "send", "lab_result_available", "--contact", ids[0], "--props", "[1", check=False
    )
    assert bad.returncode == 2
    assert "--props: not JSON" in bad.stderr
    for c in ids:
        got = json.loads(
            carepost(
                "event",
                "send",
                "lab_result_available",
                "--contact",
                c,
                "--props",
                '{"panel": "cbc"}',
                "--json",
            ).stdout
        )
        assert got == {"enrolled": {"lab-result": 1}, "woken": 0, "goal_reached": 0}
    ran = json.loads(carepost("journey", "run", "--once", "--json").stdout)
    assert ran["sends"] == 3
    with transaction(workspace.engine) as session:
        oid, camp = session.execute(
            select(OutboxMessage.id, OutboxMessage.campaign_id).where(
                OutboxMessage.contact_id == ids[1]
            )
        ).one()
        record_tracked(
            session,
            [TrackedEvent(ids[1], oid, camp, "open", None, "human", "test", 0.9, None, clock.now)],
        )
    ran = json.loads(carepost("journey", "run", "--once", "--json").stdout)
    assert ran["woken_by_engagement"] == 1
    rep = json.loads(carepost("journey", "report", "lab-result", "--json").stdout)
    steps = {s["step"]: s for s in rep["steps"]}
    assert steps["notify"]["entered"] == 3
    assert steps["notify"]["sends"] == 3
    assert steps["notify"]["human_opens"] == 1
    assert steps["seen"]["waiting"] == 2
    assert steps["done"]["exited"] == {"exit_step": 1}
    assert rep["statuses"] == {"waiting": 2, "exited": 1}
    path = json.loads(
        carepost(
            "journey", "explain", "--contact", ids[1], "--journey", "lab-result", "--json"
        ).stdout
    )
    assert [(p["step"], p["outcome"]) for p in path[0]["path"]] == [
        ("notify", "enrolled"),
        ("notify", "sent"),
        ("seen", "waiting"),
        ("seen", "woke"),
        ("done", "exited"),
    ]
    listed = json.loads(carepost("journey", "list", "--json").stdout)
    assert listed[0]["name"] == "lab-result"
    carepost("journey", "pause", "lab-result")
    refused = json.loads(
        carepost("journey", "enrol", "lab-result", "--contact", ids[0], "--json").stdout
    )
    assert refused == {"enrolled": 0, "refused": {"journey_paused": 1}}
