"""The worker's side of the portal, on both engines, against a real STARTTLS SMTP sink: a
recipient server without TLS leads to the portal (a PHI-free notice, the message kept
only as its sealed archive, evidence with method "portal") or to a clear failure, as the
sender profile says; secure_delivery templates only ever mail the notice; a crash after a
notice left resends the same link and loses nothing.

The recipient server without TLS is `portal_support.MxTlsRefusing` (see there: it stands
in for the direct transport until that lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.delivery import dkim
from carepost.delivery.evidence import evidence
from carepost.delivery.models import ArchivedMessage, DeliveryAttempt, OutboxMessage
from carepost.portal import tokens
from carepost.portal.models import PortalMessage
from carepost.workspace import Workspace
from portal_support import (
    ORG,
    Clock,
    Crash,
    MxTlsRefusing,
    link_in,
    parsed,
    phi_in,
    relay,
    scenario,
    worker,
)

PUBLIC = "https://mail.clinic.example"
OK, NO_TLS = "ok.1@sink.test", "ok.notls@sink.test"


def _rows(ws: Workspace) -> dict[str, OutboxMessage]:
    with transaction(ws.engine) as s:
        rows = {r.contact_id: r for r in s.scalars(select(OutboxMessage))}
        for r in rows.values():
            s.expunge(r)
    return rows


def test_recipient_without_tls_gets_a_phi_free_notice_and_the_portal_keeps_the_message(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any, tmp_path: Path
) -> None:
    key = dkim.generate_key("rsa-sha256")
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim.private_pem(key))
    sc = scenario(workspace, actor, [OK, NO_TLS], dkim_key_file=str(key_file))
    sink = smtp_sink_factory()
    transport = MxTlsRefusing(relay(sink), {NO_TLS})

    report = worker(workspace, transport, Clock(), PUBLIC).run()

    assert report.results == {"sent": 2}
    # The route: PHI fields, so the message itself required TLS; the notice did not.
    assert sorted(transport.policies) == [
        (OK, "required"),
        (NO_TLS, "opportunistic"),
        (NO_TLS, "required"),
    ]
    rows = _rows(workspace)
    ok, portal = rows[sc.contact_ids[0]], rows[sc.contact_ids[1]]
    assert (ok.state, ok.last_reason) == ("sent", "accepted")
    assert (portal.state, portal.last_reason) == ("sent", "portal_notice")
    with transaction(workspace.engine) as s:
        attempts = {a.outbox_id: a for a in s.scalars(select(DeliveryAttempt))}
        stored = s.scalars(select(PortalMessage)).one()
        archived = s.scalars(
            select(ArchivedMessage).where(ArchivedMessage.outbox_id == portal.id)
        ).all()
        proof = evidence(s, portal.id)
        actions = [a for (a,) in s.execute(select(AuditEntry.action))]
    assert attempts[ok.id].method == "tls_relay"
    assert (attempts[portal.id].method, attempts[portal.id].status) == ("portal", "sent")
    assert attempts[portal.id].reason == "portal_notice"
    # The portal row points at the sealed archive of the attempt; nothing else holds it.
    assert (stored.outbox_id, stored.attempt, stored.reason) == (portal.id, 1, "mx_tls_unavailable")
    assert [a.attempt for a in archived] == [1]
    assert stored.verification == "code"
    assert stored.first_viewed_at is None
    assert proof["portal"]["reason"] == "mx_tls_unavailable"
    assert proof["portal"]["notice_message_id"] == stored.notice_message_id
    assert proof["attempts"][0]["method"] == "portal"
    assert "portal.stored" in actions

    by_rcpt = {r.rcpt_tos[0]: r for r in sink.state.received}
    assert set(by_rcpt) == {OK, NO_TLS}
    assert phi_in(by_rcpt[OK].data)  # the real message, over TLS, has the PHI
    notice = by_rcpt[NO_TLS].data
    assert phi_in(notice) == []
    msg = parsed(notice)
    assert msg["Subject"] == f"You have a secure message from {ORG}"
    assert msg["Message-ID"] == stored.notice_message_id
    link = link_in(notice)
    token = link.rsplit("/", 1)[1]
    assert link == f"{PUBLIC}/s/{token}"
    assert tokens.lookup_hash(token) == stored.token_hash
    assert portal.id not in link
    assert phi_in(link) == []
    record = dkim.dns_record_value(key).encode()
    assert dkimpy.verify(notice, dnsfunc=lambda name, timeout=5: record)


def test_fail_setting_fails_the_message_with_the_tls_reason_and_no_retry(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = scenario(workspace, actor, [OK, NO_TLS], tls_fallback="fail")
    sink = smtp_sink_factory()
    transport = MxTlsRefusing(relay(sink), {NO_TLS})

    report = worker(workspace, transport, Clock(), PUBLIC).run()

    assert report.results == {"sent": 1, "failed": 1}
    failed = _rows(workspace)[sc.contact_ids[1]]
    assert (failed.state, failed.last_reason, failed.next_attempt_at) == (
        "failed",
        "mx_tls_unavailable",
        None,
    )
    assert [r.rcpt_tos for r in sink.state.received] == [[OK]]  # no notice, nothing plain
    with transaction(workspace.engine) as s:
        assert s.scalars(select(PortalMessage)).all() == []
        attempt = s.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.outbox_id == failed.id)
        ).one()
    assert (attempt.status, attempt.reason) == ("failed", "mx_tls_unavailable")


def test_secure_delivery_mails_only_the_notice(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = scenario(workspace, actor, [OK, NO_TLS], secure_delivery=True)
    sink = smtp_sink_factory()
    transport = MxTlsRefusing(relay(sink), {NO_TLS})

    report = worker(workspace, transport, Clock(), PUBLIC).run()

    assert report.results == {"sent": 2}
    # Even the recipient whose server does TLS gets only the notice: the subject has PHI.
    assert sorted(transport.policies) == [(OK, "opportunistic"), (NO_TLS, "opportunistic")]
    assert len(sink.state.received) == 2
    assert all(phi_in(r.data) == [] for r in sink.state.received)
    with transaction(workspace.engine) as s:
        reasons = sorted(p.reason for p in s.scalars(select(PortalMessage)))
    assert reasons == ["secure_delivery", "secure_delivery"]
    assert {r.last_reason for r in _rows(workspace).values()} == {"portal_notice"}
    assert len(sc.contact_ids) == 2


def test_secure_delivery_without_a_portal_is_refused(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    scenario(workspace, actor, [OK], secure_delivery=True)
    sink = smtp_sink_factory()
    report = worker(workspace, MxTlsRefusing(relay(sink), set()), Clock(), "").run()
    assert report.results == {"failed": 1}
    assert sink.state.received == []
    assert {r.last_reason for r in _rows(workspace).values()} == {"portal_unavailable"}


def test_crash_after_the_notice_resends_the_same_link_and_loses_nothing(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    sc = scenario(workspace, actor, [NO_TLS])
    sink = smtp_sink_factory()
    clock = Clock()
    crashing = MxTlsRefusing(relay(sink), {NO_TLS}, crash_after_notice=True)
    with pytest.raises(Crash):
        worker(workspace, crashing, clock, PUBLIC).run()
    assert _rows(workspace)[sc.contact_ids[0]].state == "attempt_started"
    with transaction(workspace.engine) as s:
        assert s.scalars(select(PortalMessage)).all() == []
    first_link = link_in(sink.state.received[0].data)

    clock.advance(minutes=6)  # past the lease: the row comes back as unknown
    report = worker(workspace, MxTlsRefusing(relay(sink), {NO_TLS}), clock, PUBLIC).run()

    assert report.results == {"sent": 1}
    row = _rows(workspace)[sc.contact_ids[0]]
    assert (row.state, row.last_reason, row.attempts) == ("sent", "portal_notice", 2)
    notices = [r.data for r in sink.state.received]
    assert len(notices) == 2  # at least once: the crash cost one duplicate notice
    assert link_in(notices[1]) == first_link
    with transaction(workspace.engine) as s:
        stored = s.scalars(select(PortalMessage)).one()
    assert stored.attempt == 2
    assert stored.token_hash == tokens.lookup_hash(first_link.rsplit("/", 1)[1])
