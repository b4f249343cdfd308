"""update_contact and branches on contact data, carried out by the engine (audited reads
and writes), and the contact's time zone for times of day; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from carepost.account import settings as account
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.config import Settings
from carepost.contacts import phi
from carepost.contacts.models import Contact
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.contacts.zones import ZoneError, do_set_time_zone
from carepost.db import transaction
from carepost.journeys import service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, setup

TAGGING = b"""
name: tagging
trigger: {manual: {}}
steps:
  - id: tag
    update_contact: {set: {attr.tier: gold, attr.visits: 3}}
  - id: check
    branch: {rule: 'attr.tier == "gold" and attr.visits >= 3', then: good, else: bad}
  - id: good
    update_contact: {set: {attr.checked: true, attr.tier: null}}
    next: done
  - id: bad
    exit: {}
  - id: done
    exit: {}
"""
VIP = b"""
name: vip
trigger: {manual: {}}
steps:
  - id: pause
    wait: {duration: 1d}
  - id: which
    branch: {rule: 'attr.vip == true or opened(step="hello")', then: hello, else: done}
  - id: hello
    send: {template: lab-result-ready, class: treatment}
  - id: done
    exit: {}
"""
MORNING = b"""
name: morning
trigger: {manual: {}}
steps:
  - id: at-nine
    wait: {time_of_day: "09:00"}
  - id: hello
    send: {template: lab-result-ready, class: treatment}
"""


def _publish(ws: Workspace, actor: Actor, doc: bytes, clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_publish_journey(session, doc, sender_id=SENDER, actor=actor, clock=clock)


def _enrol(ws: Workspace, actor: Actor, name: str, ids: list[str], clock: StepClock) -> None:
    with transaction(ws.engine) as session:
        service.do_enrol(session, name, ids, actor=actor, clock=clock)


def _record(ws: Workspace, actor: Actor, contact: str) -> dict[str, object]:
    with transaction(ws.engine) as session:
        view = phi.read_contact(session, ws.keyring, contact, actor=actor, purpose="test check")
    return view.record


def test_update_contact_and_branch_see_the_new_values(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 4)
    _publish(workspace, actor, TAGGING, clock)
    _enrol(workspace, actor, "tagging", ids, clock)
    JourneyEngine(workspace.engine, clock, ring=workspace.keyring).run_until_idle()
    with transaction(workspace.engine) as session:
        reasons = Counter(
            session.execute(select(JourneyEnrolment.exit_reason, JourneyEnrolment.exit_step))
        )
        details = list(
            session.scalars(
                select(JourneyTransition.detail).where(JourneyTransition.step == "check")
            )
        )
        entries = list(
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action.in_(("journeys.contacts_read", "journeys.contact_updated"))
                )
            )
        )
    # The branch ran after the first update in the same run and saw its values.
    assert reasons == {("exit_step", "done"): 4}
    # No PHI in transitions: whether the contact met the rule is not written down.
    assert details == ['attr.tier == "gold" and attr.visits >= 3: contact data (not recorded)'] * 4
    assert sorted(e.action for e in entries) == [
        "journeys.contact_updated",
        "journeys.contacts_read",
    ]
    for e in entries:
        assert sorted(json.loads(e.subjects)) == sorted(ids)
    updated = next(e for e in entries if e.action == "journeys.contact_updated")
    assert "gold" not in updated.details  # names of attributes only, never values
    for contact in ids:
        record = _record(workspace, actor, contact)
        assert record["attributes"] == {"visits": 3, "checked": True}
        assert record["emails"]  # the rest of the record is untouched


def test_branch_on_stored_attributes_and_engagement(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 6)
    with transaction(workspace.engine) as session:
        writer = ContactWriter(session, workspace.keyring, now=datetime.now(UTC), source="test")
        writer.upsert_contacts(
            [
                ContactInput(
                    f"test:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                        "emails": [f"p{i}@patients.example"],
                        "attributes": {"vip": i < 2},
                    },
                    [("email", f"p{i}@patients.example")],
                )
                for i in range(6)
            ]
        )
    _publish(workspace, actor, VIP, clock)
    _enrol(workspace, actor, "vip", ids, clock)
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)
    engine.run_until_idle()
    clock.advance(days=1)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        sent = set(
            session.scalars(
                select(JourneyEnrolment.contact_id).join(
                    JourneyMessage, JourneyMessage.enrolment_id == JourneyEnrolment.id
                )
            )
        )
        reads = list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "journeys.contacts_read"))
        )
    assert sent == set(ids[:2])
    assert len(reads) == 1
    assert sorted(json.loads(reads[0].subjects)) == sorted(ids)


def test_without_a_key_ring_contact_steps_exit_unsupported(
    workspace: Workspace, actor: Actor
) -> None:
    clock = StepClock()
    ids = setup(workspace, actor, 2)
    _publish(workspace, actor, TAGGING, clock)
    _enrol(workspace, actor, "tagging", ids, clock)
    JourneyEngine(workspace.engine, clock).run_until_idle()
    with transaction(workspace.engine) as session:
        reasons = Counter(session.scalars(select(JourneyEnrolment.exit_reason)))
    assert reasons == {"unsupported_step": 2}
    assert "attributes" not in _record(workspace, actor, ids[0])


def test_time_of_day_waits_use_the_contacts_zone(workspace: Workspace, actor: Actor) -> None:
    clock = StepClock()  # 2027-03-01 08:00 UTC
    ids = setup(workspace, actor, 3)
    with transaction(workspace.engine) as session:
        do_set_time_zone(session, ids[:1], "America/New_York", actor=actor)
        do_set_time_zone(session, ids[1:2], "Asia/Tokyo", actor=actor)
        account.do_set_setting(session, "journeys.default_time_zone", "Europe/Paris", actor=actor)
    _publish(workspace, actor, MORNING, clock)
    _enrol(workspace, actor, "morning", ids, clock)
    engine = JourneyEngine(workspace.engine, clock, ring=workspace.keyring)
    engine.run_until_idle()
    with transaction(workspace.engine) as session:
        wake = dict(
            session.execute(select(JourneyEnrolment.contact_id, JourneyEnrolment.wake_at)).all()
        )
    assert wake[ids[0]] == datetime(2027, 3, 1, 14, tzinfo=UTC)  # 09:00 EST, same day
    assert wake[ids[1]] == datetime(2027, 3, 2, 0, tzinfo=UTC)  # 09:00 JST, next day
    # Default zone: 08:00 UTC is 09:00 in Paris already, so tomorrow's 09:00.
    assert wake[ids[2]] == datetime(2027, 3, 2, 8, tzinfo=UTC)
    clock.advance(hours=6)
    assert engine.run_until_idle().sends == 1


def test_zone_names_are_checked(workspace: Workspace, actor: Actor) -> None:
    ids = setup(workspace, actor, 1)
    with transaction(workspace.engine) as session:
        with pytest.raises(ZoneError, match="time_zone: an IANA time zone name"):
            do_set_time_zone(session, ids, "Mars/Olympus", actor=actor)
        with pytest.raises(account.SettingError, match=r"journeys\.default_time_zone"):
            account.do_set_setting(session, "journeys.default_time_zone", "../etc", actor=actor)
        with pytest.raises(ZoneError, match="no contact"):
            do_set_time_zone(session, [*ids, "nope"], "UTC", actor=actor)


def test_contacts_zone_command(
    workspace: Workspace, settings: Settings, actor: Actor, tmp_path: Path
) -> None:
    ids = setup(workspace, actor, 2)
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_DATABASE_URL": settings.database_url,
        "CAREPOST_ACTOR": "cli:test-user",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "carepost.cli", "contacts", "zone", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    bad = cli(*ids, "--zone", "Mars/Olympus")
    assert bad.returncode == 2
    assert "time_zone: an IANA time zone name" in bad.stderr
    assert cli(*ids, "--zone", "Asia/Tokyo").returncode == 0
    assert cli(ids[1], "--clear").returncode == 0
    with transaction(workspace.engine) as session:
        zones = dict(session.execute(select(Contact.id, Contact.time_zone)).all())
    assert zones == {ids[0]: "Asia/Tokyo", ids[1]: None}
