"""Issue 6's TLS matrix end to end: the real worker, the real direct transport and eight
loopback recipient servers (tests/tls_servers.py: good certificate, self-signed, expired,
wrong host name, no STARTTLS, STARTTLS answered 454, STARTTLS that breaks, TLS 1.0 only),
on both engines.

A PHI-bearing message must reach only the server that gives verified TLS >= 1.2. Every
other recipient gets the PHI-free portal notice instead (or, when the sender profile says
`fail`, nothing at all), and no server ever sees a byte of PHI in plaintext."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery.direct import DirectConfig, DirectTransport
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.portal.models import PortalMessage
from carepost.workspace import Workspace
from portal_support import ORG, Clock, parsed, phi_in, scenario, worker
from tls_servers import BEHAVIOURS, TlsMatrix

PUBLIC = "https://mail.clinic.example"
# What the recipient's server makes of a message that requires verified TLS.
EXPECTED_REASON = {
    "selfsigned": "mx_tls_failed",
    "expired": "mx_tls_failed",
    "wrongname": "mx_tls_failed",
    "nostarttls": "mx_tls_unavailable",
    "starttls454": "mx_tls_failed",
    "brokentls": "mx_tls_failed",
    "tls10": "mx_tls_failed",
}


def _direct(tls_servers: TlsMatrix, clock: Clock) -> DirectTransport:
    return DirectTransport(
        tls_servers.resolver,
        None,
        DirectConfig(verify_context=tls_servers.client_context(), timeout=5.0),
        clock=clock,
    )


def _by_email(ws: Workspace, ids: list[str], emails: list[str]) -> dict[str, Any]:
    with transaction(ws.engine) as s:
        rows = {r.contact_id: r for r in s.scalars(select(OutboxMessage))}
        attempts = {a.outbox_id: a for a in s.scalars(select(DeliveryAttempt))}
        portal = {p.outbox_id: p for p in s.scalars(select(PortalMessage))}
        out = {}
        for cid, email in zip(ids, emails, strict=True):
            row = rows[cid]
            a, p = attempts.get(row.id), portal.get(row.id)
            out[email] = (
                row.state,
                row.last_reason,
                a.method if a else None,
                p.reason if p else None,
            )
    return out


def _assert_no_phi_in_plaintext(tls_servers: TlsMatrix) -> None:
    for server in tls_servers.servers.values():
        assert phi_in(server.plaintext) == [], server.behaviour


def test_phi_goes_only_over_verified_tls_and_everyone_else_gets_the_portal(
    workspace: Workspace, actor: Actor, tls_servers: TlsMatrix
) -> None:
    emails = [f"patient@{b}.test" for b in BEHAVIOURS]
    sc = scenario(workspace, actor, emails)
    clock = Clock()

    report = worker(workspace, _direct(tls_servers, clock), clock, PUBLIC).run()

    assert report.results == {"sent": len(BEHAVIOURS)}
    got = _by_email(workspace, sc.contact_ids, emails)
    assert got["patient@good.test"] == ("sent", "accepted", "tls_direct", None)
    for behaviour, reason in EXPECTED_REASON.items():
        assert got[f"patient@{behaviour}.test"] == ("sent", "portal_notice", "portal", reason)

    good = tls_servers.servers["good"].state.received
    assert len(good) == 1
    assert phi_in(good[0].data)  # the real message, with its PHI
    for behaviour in EXPECTED_REASON:
        received = tls_servers.servers[behaviour].state.received
        # Exactly one message reached this server: the notice, without PHI.
        assert len(received) == 1, behaviour
        notice = received[0].data
        assert phi_in(notice) == [], behaviour
        assert parsed(notice)["Subject"] == f"You have a secure message from {ORG}"
    _assert_no_phi_in_plaintext(tls_servers)


@pytest.mark.parametrize("behaviour", ["nostarttls", "expired", "tls10"])
def test_fail_profile_sends_nothing_at_all_to_a_server_without_usable_tls(
    workspace: Workspace, actor: Actor, tls_servers: TlsMatrix, behaviour: str
) -> None:
    emails = [f"patient@{behaviour}.test", "patient@good.test"]
    sc = scenario(workspace, actor, emails, tls_fallback="fail")
    clock = Clock()

    report = worker(workspace, _direct(tls_servers, clock), clock, PUBLIC).run()

    assert report.results == {"sent": 1, "failed": 1}
    got = _by_email(workspace, sc.contact_ids, emails)
    assert got[emails[0]][:2] == ("failed", EXPECTED_REASON[behaviour])
    server = tls_servers.servers[behaviour]
    assert server.state.received == []
    # Not even the envelope went out in the clear: the session stopped before MAIL FROM.
    assert b"MAIL FROM" not in server.plaintext.upper()
    assert b"RCPT TO" not in server.plaintext.upper()
    _assert_no_phi_in_plaintext(tls_servers)
