"""`carepost journey migrate` (running enrolments moved to another version explicitly,
all or nothing, audited) and `carepost journey report --chart` (the funnel as SVG), as a
user runs them: a real process on a real workspace. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.config import Settings
from carepost.db import transaction
from carepost.journeys import service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyVersion
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, setup

V1 = b"""
name: reminders
trigger: {manual: {}}
steps:
  - id: first
    send: {template: lab-result-ready, class: treatment}
  - id: pause
    wait: {duration: 2d}
  - id: old-second
    send: {template: lab-result-reminder, class: treatment}
"""
V2 = b"""
name: reminders
trigger: {manual: {}}
steps:
  - id: first
    send: {template: lab-result-ready, class: treatment}
  - id: pause
    wait: {duration: 2d}
  - id: second
    send: {template: lab-result-reminder, class: treatment}
  - id: last
    send: {template: refill-reminder, class: treatment}
"""
V3 = b"""
name: reminders
trigger: {manual: {}}
steps:
  - id: first
    send: {template: lab-result-ready, class: treatment}
  - id: second
    send: {template: lab-result-reminder, class: treatment}
"""


def _cli(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_ACTOR": "cli:test-user",
    }
    return subprocess.run(
        [sys.executable, "-m", "carepost.cli", "journey", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _publish(ws: Workspace, actor: Actor, doc: bytes, clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_publish_journey(session, doc, sender_id=SENDER, actor=actor, clock=clock)


def test_migrate_then_report_chart(
    workspace: Workspace, settings: Settings, actor: Actor, tmp_path: Path
) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 5)
    _publish(workspace, actor, V1, clock)
    with transaction(workspace.engine) as session:
        service.do_enrol(session, "reminders", ids, actor=actor, clock=clock)
    engine = JourneyEngine(workspace.engine, clock)
    engine.run_until_idle()  # all five wait at `pause` on version 1
    _publish(workspace, actor, V2, clock)
    _publish(workspace, actor, V3, clock)

    # Version 3 has no `pause`: refused with the list, nothing moves.
    refused = _cli(settings, tmp_path, "migrate", "reminders", "--from-version", "1")
    assert refused.returncode == 2
    assert "step 'pause': 5 enrolments, no step to go to" in refused.stderr
    # Mapped onto a send step: a waiting enrolment needs a wait step.
    unfit = _cli(
        settings, tmp_path, "migrate", "reminders", "--from-version", "1", "--map", "pause=second"
    )
    assert unfit.returncode == 2
    assert "pause -> second (waiting): 5 enrolments" in unfit.stderr
    bad_map = _cli(settings, tmp_path, "migrate", "reminders", "--from-version", "1", "--map", "x")
    assert bad_map.returncode == 2
    assert "--map item 1" in bad_map.stderr
    with transaction(workspace.engine) as session:
        versions = dict(session.execute(select(JourneyVersion.id, JourneyVersion.version)).all())
        on = Counter(versions[j] for j in session.scalars(select(JourneyEnrolment.journey_id)))
    assert on == {1: 5}

    moved = _cli(
        settings, tmp_path, "migrate", "reminders", "--from-version", "1", "--to-version", "2",
        "--json",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {"moved": 5}
    clock.advance(days=2)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        sends = Counter(session.scalars(select(JourneyMessage.step)))
        on = Counter(versions[j] for j in session.scalars(select(JourneyEnrolment.journey_id)))
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "journeys.migrated")
        ).one()
    # Version 2's steps after the wait ran, with the same timer.
    assert sends == {"first": 5, "second": 5, "last": 5}
    assert on == {2: 5}
    assert json.loads(audit.details)["moved"] == 5
    assert sorted(json.loads(audit.subjects)) == sorted(str(e) for e in _enrolment_ids(workspace))

    chart = tmp_path / "funnel.svg"
    done = _cli(settings, tmp_path, "report", "reminders", "--chart", str(chart), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    root = ET.fromstring(chart.read_bytes())  # noqa: S314 (our own output)
    ns = {"s": "http://www.w3.org/2000/svg"}
    steps = {
        g.get("data-step"): int(g.get("data-entered") or -1)
        for g in root.iterfind(".//s:g[@class='step']", ns)
    }
    assert steps == {s["step"]: s["entered"] for s in report["funnel"]}
    # The funnel (and chart) is the newest version's steps (version 3's); a `migrated`
    # transition is not a visit of the step it lands on.
    assert steps == {"first": 5, "second": 5}
    # Steps only earlier versions have follow, newest version first: their visits and
    # sends stay in the report.
    assert [(s["step"], s["entered"], s["sends"], s["current"]) for s in report["steps"]] == [
        ("first", 5, 5, True),
        ("second", 5, 5, True),
        ("pause", 5, None, False),
        ("last", 5, 5, False),
        ("old-second", 0, 0, False),
    ]
    text = _cli(settings, tmp_path, "report", "reminders")
    assert text.returncode == 0, text.stderr
    retired = [line.split()[0] for line in text.stdout.splitlines() if "earlier versions" in line]
    assert retired == ["pause", "last", "old-second"]


def _enrolment_ids(ws: Workspace) -> list[str]:
    with transaction(ws.engine) as session:
        return list(session.scalars(select(JourneyEnrolment.id)))
