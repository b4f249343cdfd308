"""Putting a message in the portal from the worker's send phase: build the PHI-free
notice, send it through the worker's own transport with opportunistic TLS, and say what
the batch's record transaction stores.

The message is already archived (sealed under the contact's key) by the prepare phase,
so nothing here stores a copy: the portal row only points at that attempt's archive.
A notice that may have left (accepted, or the line died after its body) leads to a
portal row; one that surely did not (refused, deferred) leaves the message to the retry
policy like any other attempt. A crash between the notice and the record leaves the row
`attempt_started`; the retry sends a notice with the same link (tokens.link_token), so
the first notice starts working when the retry records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from carepost.consent.service import address_bi
from carepost.crypto.keyring import KeyRing
from carepost.delivery.outcome import Outcome
from carepost.delivery.route import PORTAL_NOTICE
from carepost.delivery.smtp import Attempt, Envelope
from carepost.delivery.transport import Transport
from carepost.portal import tokens
from carepost.portal.notice import PortalSender, notice, portal_url
from carepost.portal.service import Handoff

METHOD = "portal"


@dataclass(frozen=True)
class FallbackKit:
    """Fixed per campaign."""

    sender: PortalSender
    sender_id: str
    public_url: str
    verification: str


async def to_portal(
    transport: Transport,
    ring: KeyRing,
    kit: FallbackKit,
    *,
    outbox_id: str,
    attempt: int,
    contact_id: str,
    rcpt: str,
    reason: str,
    at: datetime,
) -> tuple[Attempt, Handoff | None]:
    token = tokens.link_token(ring, outbox_id)
    mail = notice(
        kit.sender,
        outbox_id=outbox_id,
        attempt=attempt,
        rcpt=rcpt,
        link=portal_url(kit.public_url, token),
        at=at,
    )
    sent = await transport.send(
        Envelope(kit.sender.return_path, rcpt, mail.data, crlf_clean=True, tls="opportunistic")
    )
    got = sent.outcome
    outcome = (
        Outcome("sent", PORTAL_NOTICE, got.phase, got.code, got.enhanced)
        if got.status == "sent"
        else got
    )
    result = Attempt(outcome, sent.reply, sent.tls_version, sent.tls_cipher, METHOD)
    if got.status not in ("sent", "unknown"):
        return result, None
    return result, Handoff(
        outbox_id=outbox_id,
        attempt=attempt,
        contact_id=contact_id,
        sender_id=kit.sender_id,
        token_hash=tokens.lookup_hash(token),
        address_bi=address_bi(ring, "email", rcpt),
        verification=kit.verification,
        reason=reason,
        notice_message_id=mail.message_id,
        notice_sha256=mail.sha256,
    )
