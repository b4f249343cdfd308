"""Segments on a real store, on SQLite and PostgreSQL: the snapshot built from encrypted
data, its audit entry, incremental refresh, saved segments, cycles, static lists,
frozen membership and the audited preview."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.contacts import phi
from carepost.contacts.models import ClinicalFact, Contact, ContactKey
from carepost.contacts.population import people, write_population
from carepost.contacts.store import ContactInput, ContactWriter, FactInput
from carepost.db import transaction
from carepost.id_cursor import LATE_COMMIT_GRACE
from carepost.segments import evaluator, service, snapshot
from carepost.segments.ast import RuleError
from carepost.segments.evaluator import SegmentCycle
from carepost.segments.parser import parse
from carepost.segments.snapshot import Part, Snapshot, build_snapshot
from carepost.tracking.service import record_event
from carepost.workspace import Workspace

AS_OF = date(2026, 11, 24)
AT = datetime(2026, 11, 24, 12, tzinfo=UTC)
N = 400
RULES = [
    'age >= 50 and has_condition("hypertension")',
    'has_condition("diabetes") and lab("4548-4") > 7.0 within 180d',
    'not vaccinated("influenza", within=365d) and age >= 65',
    "opened(within=90d) and not clicked(within=90d)",
    'stage in ["active", "overdue", "at_risk"]',
    'state in ["MA", "NH"] or postal_code starts_with "100"',
    'attr.plan == "gold" and insurance_type == "medicare"',
    "no_shows(within=365d) >= 1 or visits(within=365d) >= 3",
]


def _populate(ws: Workspace, actor: Actor, n: int = N) -> None:
    with transaction(ws.engine) as session:
        write_population(
            session, ws.keyring, contacts=n, seed=5, as_of=AS_OF, actor=actor, now=datetime.now(UTC)
        )


def _plain_snapshot(n: int = N) -> Snapshot:
    part = Part()
    snap_events = []
    for i, p in enumerate(people(n, 5, AS_OF)):
        part.add_contact(p.source_key, p.record, [payload for _, _, payload in p.facts])
        snap_events += [
            (0, p.source_key, k, nm, v, int(at.timestamp())) for k, nm, v, at in p.events
        ]
        assert i < n
    snap = Snapshot.from_parts([part])
    snap.add_events(snap_events)
    return snap


def _actions(ws: Workspace, action: str) -> list[AuditEntry]:
    with transaction(ws.engine) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_snapshot_from_the_encrypted_store_matches_the_plain_population(
    workspace: Workspace, actor: Actor
) -> None:
    _populate(workspace, actor)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    plain = _plain_snapshot()
    assert snap.stats() == plain.stats()
    for rule in RULES:
        node = parse(rule)
        n = evaluator.count(node, snap, AT)
        assert n == evaluator.count(node, plain, AT), rule
    assert evaluator.count(parse(RULES[0]), snap, AT) > 0
    entries = _actions(workspace, "segments.snapshot_built")
    assert len(entries) == 1
    assert orjson.loads(entries[0].details) == {"contacts": N}
    assert entries[0].subjects == "[]"


def test_two_process_build_equals_one_process(
    workspace: Workspace, actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _populate(workspace, actor, 300)
    one = build_snapshot(workspace.engine, workspace.keyring, actor=actor, workers=1)
    monkeypatch.setattr(snapshot, "PARALLEL_MIN_CONTACTS", 10)
    two = build_snapshot(workspace.engine, workspace.keyring, actor=actor, workers=2)
    assert sorted(one.ids) == sorted(two.ids)
    for rule in RULES:
        node = parse(rule)
        assert set(evaluator.member_ids(node, one, AT)) == set(evaluator.member_ids(node, two, AT))


def test_changes_show_in_counts_within_a_second(workspace: Workspace, actor: Actor) -> None:
    _populate(workspace, actor, 200)
    engine = service.SegmentEngine(workspace.engine, workspace.keyring, actor=actor)
    rule_state = 'state == "ZZ"'
    rule_event = 'event_received("vip_signup", within=1d)'
    rule_flu = 'vaccinated("influenza", within=30d) and state == "ZZ"'
    now = datetime.now(UTC)
    assert engine.count(rule_state, now) == 0
    assert engine.count(rule_event, now) == 0
    with transaction(workspace.engine) as session:
        target = session.scalars(select(Contact.id).order_by(Contact.id).limit(1)).one()
    # 1. The contact moves to another state (a re-import of its record).
    with transaction(workspace.engine) as session:
        writer = ContactWriter(session, workspace.keyring, now=datetime.now(UTC), source="demo")
        gen = next(people(1, 5, AS_OF))
        record = dict(gen.record)
        record["address"] = {**record["address"], "state": "ZZ"}
        out = writer.upsert_contacts([ContactInput(gen.source_key, record, gen.lookups)])
        assert out[0].status == "updated"
        assert out[0].contact_id == target
    started = time.perf_counter()
    assert engine.count(rule_state, datetime.now(UTC)) == 1
    assert time.perf_counter() - started < 1.0
    # 2. A new fact for the contact.
    with transaction(workspace.engine) as session:
        writer = ContactWriter(session, workspace.keyring, now=datetime.now(UTC), source="demo")
        coding = {"system": "CVX", "code": "158", "display": "flu"}
        payload = {
            "kind": "immunization",
            "code": coding,
            "codes": [coding],
            "status": "completed",
            "date": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
        }
        writer.upsert_facts(
            [FactInput(target, "immunization", "test:flu", payload, "Immunization")]
        )
    started = time.perf_counter()
    assert engine.count(rule_flu, datetime.now(UTC)) == 1
    assert time.perf_counter() - started < 1.0
    # 3. An event received over the API.
    with transaction(workspace.engine) as session:
        record_event(
            session,
            contact_id=target,
            kind="api_event",
            name="vip_signup",
            at=datetime.now(UTC) - timedelta(seconds=5),
        )
    started = time.perf_counter()
    assert engine.count(rule_event, datetime.now(UTC)) == 1
    assert time.perf_counter() - started < 1.0
    # Each refresh that decrypted wrote an entry naming only the changed contact.
    refreshed = _actions(workspace, "segments.snapshot_refreshed")
    assert [orjson.loads(e.subjects) for e in refreshed] == [[target], [target]]
    assert len(_actions(workspace, "segments.snapshot_built")) == 1
    # Nothing changed: nothing decrypted.
    assert engine.refresh() == {"contacts": 0, "events": 0}


def test_saved_segments_versions_cycles_and_frozen_membership(
    workspace: Workspace, actor: Actor
) -> None:
    _populate(workspace, actor, 250)
    with transaction(workspace.engine) as session:
        seg, v1, changed = service.save_segment(session, "older", "age >= 65", actor=actor)
        assert (v1, changed) == (1, True)
        assert service.save_segment(session, "older", "age >= 65", actor=actor)[1:] == (1, False)
        service.save_segment(
            session,
            "older_hyper",
            'in_segment("older") and has_condition("hypertension")',
            actor=actor,
        )
        with pytest.raises(SegmentCycle, match="older -> older_hyper -> older"):
            service.save_segment(session, "older", 'in_segment("older_hyper")', actor=actor)
        with pytest.raises(RuleError, match="no segment with that name"):
            service.save_segment(session, "x", 'in_segment("nope")', actor=actor)
        with pytest.raises(SegmentCycle):
            service.save_segment(session, "self", 'in_segment("self")', actor=actor)
        with pytest.raises(RuleError, match="belong in a journey's branch"):
            service.save_segment(session, "j", 'opened(step="welcome")', actor=actor)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    with pytest.raises(RuleError, match="evaluated only in a journey's branch"):
        evaluator.count(parse('clicked(step="offer", link=1)'), snap, AT)
    with transaction(workspace.engine) as session:
        seg = service.get_segment(session, "older_hyper")
        freeze = service.freeze_membership(
            session, seg, at=AT, actor=actor, campaign_id="camp-1", snapshot=snap
        )
        freeze_id = freeze.id
        defs = service.definitions(session)
    expected = sorted(
        evaluator.member_ids(parse('age >= 65 and has_condition("hypertension")'), snap, AT)
    )
    assert expected
    with transaction(workspace.engine) as session:
        assert service.frozen_members(session, freeze_id) == expected
        assert "older" in defs
    # A new rule version does not change what was frozen.
    with transaction(workspace.engine) as session:
        _, v2, _ = service.save_segment(session, "older_hyper", "age >= 80", actor=actor)
        assert v2 == 2
        assert service.frozen_members(session, freeze_id) == expected
        listed = {s.name: s for s in service.list_segments(session)}
        assert listed["older_hyper"].version == 2
        assert listed["older_hyper"].rule == "age >= 80"
    entry = _actions(workspace, "segments.membership_frozen")[0]
    details = orjson.loads(entry.details)
    assert details["members"] == len(expected)
    assert details["version"] == 1
    assert details["members_sha256"] == service.members_digest(expected)
    assert details["campaign"] == "camp-1"


def test_static_lists_and_the_audited_preview(workspace: Workspace, actor: Actor) -> None:
    _populate(workspace, actor, 50)
    with transaction(workspace.engine) as session:
        ids = list(session.scalars(select(Contact.id).order_by(Contact.id).limit(3)))
        service.save_static_list(session, "vips", ids, actor=actor)
        with pytest.raises(service.SegmentError, match="not found"):
            service.save_static_list(session, "bad", ["0" * 32], actor=actor)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    with transaction(workspace.engine) as session:
        defs = service.definitions(session)
    members = evaluator.member_ids(parse('in_segment("vips")'), snap, AT, segments=defs)
    assert sorted(members) == sorted(ids)
    with transaction(workspace.engine) as session, pytest.raises(phi.PurposeRequired):
        phi.read_contacts(session, workspace.keyring, members, actor=actor, purpose=" ")
    with transaction(workspace.engine) as session:
        views = phi.read_contacts(
            session,
            workspace.keyring,
            members,
            actor=actor,
            purpose="check the VIP list",
            action="segments.preview",
        )
    assert len(views) == 3
    assert all(v.record.get("emails") for v in views)
    entry = _actions(workspace, "segments.preview")[0]
    assert sorted(orjson.loads(entry.subjects)) == sorted(ids)
    assert entry.purpose == "check the VIP list"


def test_refresh_drops_deleted_contacts(workspace: Workspace, actor: Actor) -> None:
    _populate(workspace, actor, 30)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor)
    before = evaluator.count(parse("age >= 0 or not age >= 0"), snap, AT)
    with transaction(workspace.engine) as session:
        victim = session.scalars(select(Contact.id).limit(1)).one()
        fact = session.scalars(
            select(ClinicalFact).where(ClinicalFact.contact_id == victim).limit(1)
        ).first()
        if fact is None:
            pytest.skip("contact without facts")
        # Touch a fact, then delete the contact's key: the refresh cannot decrypt it.
        fact.updated_at = datetime.now(UTC) + timedelta(seconds=1)
        session.execute(delete(ContactKey).where(ContactKey.contact_id == victim))
    snap.refresh(workspace.engine, workspace.keyring, actor=actor)
    assert evaluator.count(parse("age >= 0 or not age >= 0"), snap, AT) == before - 1


def test_an_event_committed_late_reaches_the_snapshot_once(
    workspace: Workspace, actor: Actor
) -> None:
    """PostgreSQL numbers an event when it is inserted: the refresh reads an event whose
    transaction commits after a later-numbered one, and adds each event once."""
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no id is committed out of order")
    _populate(workspace, actor, 20)
    now = datetime.now(UTC)
    snap = build_snapshot(workspace.engine, workspace.keyring, actor=actor, clock=lambda: now)
    with transaction(workspace.engine) as session:
        first, second = session.scalars(select(Contact.id).order_by(Contact.id).limit(2))
    rule = parse('event_received("vip_signup", within=1d)')

    def signup(session: Session, contact: str) -> None:
        record_event(session, contact_id=contact, kind="api_event", name="vip_signup", at=now)
        session.flush()

    def refresh(at: datetime) -> int:
        return snap.refresh(workspace.engine, workspace.keyring, actor=actor, clock=lambda: at)[
            "events"
        ]

    with Session(workspace.engine) as slow:
        signup(slow, first)  # numbered first, committed last
        with transaction(workspace.engine) as fast:
            signup(fast, second)
        assert refresh(now) == 1
        assert evaluator.count(rule, snap, now) == 1
        slow.commit()
    assert refresh(now) == 1  # the late one; the other is not added again
    assert evaluator.count(rule, snap, now) == 2
    assert refresh(now) == 0
    # A rolled-back insert leaves a hole that never fills: passed after the grace.
    with Session(workspace.engine) as gone:
        signup(gone, first)
        gone.rollback()
    with transaction(workspace.engine) as session:
        signup(session, first)
    assert refresh(now) == 1
    later = now + LATE_COMMIT_GRACE
    assert refresh(later) == 0
    assert snap.cursors.events_ahead == set()
    assert evaluator.count(rule, snap, now) == 2
