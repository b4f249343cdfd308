"""Consent services on SQLite and PostgreSQL: history, audit, encryption, the batch gate."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from consent_support import add_contacts
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "consent"))
from consent_docs import SIGNED_TEXT, valid_doc

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.clock import fixed_clock
from carepost.consent import gate, service
from carepost.consent.authorization import AuthorizationInvalid
from carepost.consent.models import Authorization, Consent, GateDecision
from carepost.contacts.store import ContactWriter
from carepost.crypto.envelope import open_sealed
from carepost.db import transaction
from carepost.workspace import Workspace

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def actions(ws: Workspace) -> list[str]:
    with transaction(ws.engine) as s:
        return list(s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars())


def test_consent_history_is_appended_and_latest_wins(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
    for i, status in enumerate(["opted_in", "opted_out", "opted_in"]):
        with transaction(ws.engine) as s:
            service.set_consent(
                s,
                contact_id=cid,
                channel="email",
                topic="newsletter",
                status=status,
                source="form",
                evidence_ref=f"form-sub-{i}",
                actor=actor,
                clock=fixed_clock(T0 + timedelta(hours=i)),
            )
    with transaction(ws.engine) as s:
        history = service.consent_history(s, cid)
        assert [h.status for h in history] == ["opted_in", "opted_out", "opted_in"]
        assert s.execute(select(Consent)).scalars().all().__len__() == 3
        for at, expected in [(T0, "opted_in"), (T0 + timedelta(minutes=90), "opted_out")]:
            assert service.current_topics(s, cid, "email", at) == {"newsletter": expected}
    assert actions(ws).count("consent.set") == 3
    assert audit.verify(ws.engine).ok


def test_bad_input_writes_nothing(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
    bad = [
        {"channel": "fax"},
        {"topic": "Jane Doe"},
        {"status": "maybe"},
        {"source": "rumour"},
    ]
    for change in bad:
        args = {"channel": "email", "topic": "news", "status": "opted_in", "source": "api"}
        args.update(change)
        with pytest.raises(service.ConsentError), transaction(ws.engine) as s:
            service.set_consent(s, contact_id=cid, actor=actor, **args)
    with pytest.raises(service.NotFound), transaction(ws.engine) as s:
        service.set_consent(
            s,
            contact_id="f" * 32,
            channel="email",
            topic="n",
            status="opted_in",
            source="api",
            actor=actor,
        )
    with transaction(ws.engine) as s:
        assert s.execute(select(Consent)).first() is None
    assert "consent.set" not in actions(ws)


def test_authorization_is_validated_and_sealed(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
    incomplete = valid_doc()
    del incomplete["phi_description"]
    del incomplete["statements"]["redisclosure"]
    with pytest.raises(AuthorizationInvalid) as info, transaction(ws.engine) as s:
        service.add_authorization(s, ws.keyring, contact_id=cid, document=incomplete, actor=actor)
    assert info.value.missing == ["phi_description", "statements.redisclosure"]
    with transaction(ws.engine) as s:
        assert s.execute(select(Authorization)).first() is None

    with transaction(ws.engine) as s:
        auth_id = service.add_authorization(
            s, ws.keyring, contact_id=cid, document=valid_doc(), actor=actor
        )
    with transaction(ws.engine) as s:
        row = s.get(Authorization, auth_id)
        assert row is not None
        assert row.purposes == "marketing"
        assert row.recipients == "acme-pharmacy self"
        assert SIGNED_TEXT.encode() not in bytes(row.document)
        assert b"203.0.113.7" not in bytes(row.document)
        # Opens under the contact's data key, bound to this row.
        _, cipher = ContactWriter(s, ws.keyring, now=T0, source="t").cipher(cid)
        plain = open_sealed(cipher, bytes(row.document), service.document_aad(auth_id, 1))
        assert orjson.loads(plain)["signed_text"] == SIGNED_TEXT
        with pytest.raises(Exception, match="authentication"):
            open_sealed(cipher, bytes(row.document), service.document_aad("x" * 32, 1))
        assert isinstance(cipher, AESGCM)
    assert actions(ws)[-1] == "consent.authorization_added"


def test_revocation_and_expiry_event_are_recorded_once(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
        doc = valid_doc(expiry_event="end of the refill program")
        del doc["expires_at"]
        auth_id = service.add_authorization(
            s, ws.keyring, contact_id=cid, document=doc, actor=actor
        )
        dated = service.add_authorization(
            s, ws.keyring, contact_id=cid, document=valid_doc(), actor=actor
        )
    with transaction(ws.engine) as s:
        first = service.revoke_authorization(
            s, authorization_id=auth_id, source="form", actor=actor, clock=fixed_clock(T0)
        )
    with transaction(ws.engine) as s:
        again = service.revoke_authorization(
            s,
            authorization_id=auth_id,
            source="staff",
            actor=actor,
            clock=fixed_clock(T0 + timedelta(days=1)),
        )
        assert again == first == T0
        service.record_expiry_event(s, authorization_id=auth_id, actor=actor, clock=fixed_clock(T0))
        with pytest.raises(service.ConsentError, match="by date"):
            service.record_expiry_event(s, authorization_id=dated, actor=actor)
    assert actions(ws).count("consent.revoked") == 1
    assert actions(ws).count("consent.expiry_event") == 1
    with pytest.raises(service.NotFound), transaction(ws.engine) as s:
        service.revoke_authorization(s, authorization_id="0" * 32, source="staff", actor=actor)


def _authorize_and_opt_in(ws: Workspace, ids: list[str], actor: Actor) -> dict[str, str]:
    auths = {}
    with transaction(ws.engine) as s:
        for cid in ids:
            auths[cid] = service.add_authorization(
                s, ws.keyring, contact_id=cid, document=valid_doc(), actor=actor
            )
            service.set_consent(
                s,
                contact_id=cid,
                channel="email",
                topic="newsletter",
                status="opted_in",
                source="form",
                actor=actor,
                clock=fixed_clock(T0 - timedelta(days=1)),
            )
    return auths


def test_gate_batch_stores_decisions_and_explains(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        ids = add_contacts(s, ws.keyring, 6)
    auths = _authorize_and_opt_in(ws, ids[:4], actor)
    with transaction(ws.engine) as s:
        service.revoke_authorization(
            s,
            authorization_id=auths[ids[1]],
            source="form",
            actor=actor,
            clock=fixed_clock(T0 - timedelta(hours=1)),
        )
        service.set_consent(
            s,
            contact_id=ids[2],
            channel="email",
            topic="newsletter",
            status="opted_out",
            source="unsubscribe_link",
            actor=actor,
            clock=fixed_clock(T0 - timedelta(hours=1)),
        )
        service.add_suppression(
            s,
            channel="email",
            address_bis=[service.address_bi(ws.keyring, "email", "P3@Example.org ")],
            reason="hard_bounce",
            source="api",
            actor=actor,
            clock=fixed_clock(T0 - timedelta(hours=1)),
        )
    batch = [*ids, "0" * 32]
    with transaction(ws.engine) as s:
        result = service.gate_batch(
            s,
            campaign_id="spring-refills",
            contact_ids=batch,
            message_class="marketing",
            channel="email",
            topic="newsletter",
            sender="acme-pharmacy",
            actor=actor,
            clock=fixed_clock(T0),
        )
    d = result.decisions
    assert d[ids[0]] == gate.Decision(True, (gate.AUTHORIZED,), auths[ids[0]])
    assert d[ids[1]].reasons == (gate.AUTH_REVOKED,)
    assert d[ids[2]].reasons == (gate.OPTED_OUT_TOPIC,)
    assert d[ids[3]].reasons == (gate.SUPPRESSED_HARD_BOUNCE,)
    assert d[ids[4]].reasons == (gate.NO_OPT_IN, gate.NO_AUTHORIZATION)
    assert d["0" * 32].reasons == (gate.UNKNOWN_CONTACT,)
    assert result.allowed_ids == [ids[0]]
    # The batch form equals deciding each one on its own.
    with transaction(ws.engine) as s:
        for cid in ids:
            single = service.check(
                s,
                contact_id=cid,
                message_class="marketing",
                channel="email",
                topic="newsletter",
                sender="acme-pharmacy",
                at=T0,
            )
            assert single == d[cid]
    with transaction(ws.engine) as s:
        assert len(s.execute(select(GateDecision)).all()) == len(batch)
        why = service.explain(s, contact_id=ids[1], campaign_id="spring-refills")
    assert why[0]["allowed"] is False
    assert why[0]["reasons"] == ["authorization_revoked"]
    assert "revoked" in why[0]["explanations"][0]
    assert actions(ws)[-1] == "consent.gate_run"
    assert audit.verify(ws.engine).ok


def test_load_states_uses_a_few_queries_per_batch(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        ids = add_contacts(s, ws.keyring, 300)
    _authorize_and_opt_in(ws, ids[:50], actor)
    statements: list[str] = []

    from sqlalchemy import event

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(ws.engine, "before_cursor_execute", count)
    try:
        with transaction(ws.engine) as s:
            states = service.load_states(s, ids, channel="email", topic="newsletter", lock=True)
    finally:
        event.remove(ws.engine, "before_cursor_execute", count)
    assert len(states) == 300
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) <= 5


def test_suppression_by_blind_index_add_remove_list(workspace: Workspace, actor: Actor) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        [cid] = add_contacts(s, ws.keyring, 1)
        bi = service.address_bi(ws.keyring, "email", "p0@example.org")
        [sid] = service.add_suppression(
            s, channel="email", address_bis=[bi], reason="manual", source="staff", actor=actor
        )
        assert (
            service.add_suppression(
                s, channel="email", address_bis=[bi], reason="manual", source="staff", actor=actor
            )
            == []
        )
        listed = service.list_suppressions(s)
        assert [r["id"] for r in listed] == [sid]
        assert bi not in orjson.dumps(listed).decode()
    with transaction(ws.engine) as s:
        assert not service.check(
            s,
            contact_id=cid,
            message_class="treatment",
            channel="email",
            topic="x",
            sender="self",
            at=datetime.now(UTC) + timedelta(seconds=1),
        ).allowed
        service.remove_suppression(s, suppression_id=sid, actor=actor)
        with pytest.raises(service.ConsentError):
            service.remove_suppression(s, suppression_id=sid, actor=actor)
    with transaction(ws.engine) as s:
        assert service.check(
            s,
            contact_id=cid,
            message_class="treatment",
            channel="email",
            topic="x",
            sender="self",
            at=datetime.now(UTC) + timedelta(seconds=1),
        ).allowed
        assert service.list_suppressions(s) == []
        assert len(service.list_suppressions(s, include_removed=True)) == 1
    assert actions(ws)[-2:] == ["suppression.added", "suppression.removed"]
    # No plain address anywhere in the database.
    with transaction(ws.engine) as s:
        for table in ("suppressions", "audit_log", "consents"):
            dump = str(s.execute(text(f"SELECT * FROM {table}")).all())
            assert "p0@example.org" not in dump
