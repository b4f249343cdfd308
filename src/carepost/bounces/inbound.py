"""An inbound bounce, delay notice, auto-reply or complaint: link it to the message it is
about, record it, and act, all in the caller's transaction with its audit entry.

Linking: a VERP envelope recipient whose MAC holds names the outbox row; a VERP tag whose
MAC fails is a forgery and has no effect (no fallback, or a forger could pick a Message-ID
instead); with no tag at all, the Message-IDs quoted from the original are checked against
what was sent. What cannot be linked is counted (`bounce_unlinked`) and dropped.

Acting (issue 6):
* hard bounce: suppress the failed address, by blind index, only when it is one of the
  linked contact's addresses (a report about some other address suppresses nothing);
* complaint from a person: suppress the complained-of address (every address of the
  contact when the report's recipient is absent or is none of the contact's: providers
  redact it, and the link, not the address, says whom the report is about) and opt the
  contact out of the campaign's topic and every topic they are opted in to on email
  (source "complaint"). ARF `auth-failure`, `fraud` and `virus` reports are about the mail
  stream, not a person's wish: recorded only;
* soft bounce, delay, auto-reply, delivery notice, anything else: recorded only. Live 4xx
  replies are the retry policy's; a late soft report for a message already `sent` is news,
  not a reason to send again.

Nothing of the message is kept but its SHA-256; no address is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.bounces import stats
from carepost.bounces.classify import Classification, classify
from carepost.bounces.correlate import referenced_message_ids
from carepost.bounces.models import BounceEvent, BounceUnlinked
from carepost.bounces.parse import ParseError, parse_message
from carepost.bounces.rates import NOT_A_PERSON, RatePolicy
from carepost.bounces.verp import VerpSigner
from carepost.campaigns.models import Campaign
from carepost.clock import Clock, system_clock
from carepost.consent import service as consent
from carepost.consent.records import OPTED_IN, OPTED_OUT
from carepost.contacts.store import new_id
from carepost.crypto.keyring import KeyRing
from carepost.delivery.models import DeliveryAttempt, OutboxMessage


@dataclass(frozen=True)
class Received:
    status: str  # recorded | duplicate | unlinked
    reason: str = ""  # why unlinked
    event_id: str | None = None
    outbox_id: str | None = None
    category: str = ""
    action: str = ""
    note: str = ""
    alerts: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Link:
    outbox: OutboxMessage
    message_id: str
    linked_by: str


def _link(
    session: Session, signer: VerpSigner, data: bytes, rcpt_tos: Sequence[str]
) -> _Link | str:
    """The outbox row, or the reason there is none."""
    results = [signer.verify(r) for r in rcpt_tos]
    valid = [r.outbox_id for r in results if r.outbox_id is not None]
    if valid:
        attempt = session.execute(
            select(DeliveryAttempt.message_id)
            .where(DeliveryAttempt.outbox_id == valid[0])
            .order_by(DeliveryAttempt.attempt.desc())
            .limit(1)
        ).scalar_one_or_none()
        row = session.get(OutboxMessage, valid[0])
        if row is None or attempt is None:
            return "unknown_message"
        return _Link(row, attempt, "verp")
    if any(r.status == "forged" for r in results):
        return "forged_verp"
    candidates = referenced_message_ids(data)
    if not candidates:
        return "no_reference"
    matches = session.execute(
        select(DeliveryAttempt.outbox_id, DeliveryAttempt.message_id)
        .where(DeliveryAttempt.message_id.in_(candidates))
        .distinct()
    ).all()
    outbox_ids = {m.outbox_id for m in matches}
    if len(outbox_ids) != 1:
        # Quoting several of our messages cannot say which one bounced.
        return "no_reference" if not outbox_ids else "ambiguous_reference"
    row = session.get(OutboxMessage, matches[0].outbox_id)
    if row is None:
        return "unknown_message"
    return _Link(row, matches[0].message_id, "message_id")


def _unlinked(session: Session, reason: str, digest: str, clock: Clock) -> Received:
    session.add(BounceUnlinked(id=new_id(), received_at=clock(), reason=reason, sha256=digest))
    return Received("unlinked", reason=reason)


def _recipients_text(result: Classification) -> str:
    parts = [f"{v.status or '-'}:{v.severity or '-'}" for v in result.recipients]
    text = " ".join(parts)
    return text if len(text) <= 256 else text[:250] + " ..."


def _matching_bis(ring: KeyRing, addresses: Sequence[str], contact_bis: set[str]) -> list[str]:
    found = []
    for address in addresses:
        try:
            bi = consent.address_bi(ring, "email", address)
        except consent.ConsentError:
            continue
        if bi in contact_bis and bi not in found:
            found.append(bi)
    return found


def receive(
    session: Session,
    ring: KeyRing,
    data: bytes,
    *,
    rcpt_tos: Sequence[str],
    actor: Actor,
    clock: Clock = system_clock,
    policy: RatePolicy | None = None,
) -> Received:
    """Record one inbound message and act on it. Never commits; raises nothing for bad
    input (unreadable or unlinkable mail is counted), only for database failures."""
    digest = hashlib.sha256(data).hexdigest()
    link = _link(session, VerpSigner(ring), data, rcpt_tos)
    if isinstance(link, str):
        return _unlinked(session, link, digest, clock)
    try:
        result = classify(parse_message(data))
    except ParseError:
        return _unlinked(session, "unreadable", digest, clock)
    row = link.outbox
    duplicate = session.execute(
        select(BounceEvent.id).where(BounceEvent.sha256 == digest, BounceEvent.outbox_id == row.id)
    ).scalar_one_or_none()
    if duplicate is not None:
        return Received("duplicate", event_id=duplicate, outbox_id=row.id)
    at = clock()
    event_id = new_id()
    domain = link.message_id.rstrip(">").rsplit("@", 1)[-1].lower()
    event = BounceEvent(
        id=event_id,
        received_at=at,
        outbox_id=row.id,
        campaign_id=row.campaign_id,
        sending_domain=domain,
        linked_by=link.linked_by,
        category=result.category,
        feedback_type=result.feedback_type or None,
        recipients=_recipients_text(result),
        action="recorded",
        note=None,
        sha256=digest,
    )
    session.add(event)
    # The unique (sha256, outbox) constraint answers a concurrent duplicate here, before
    # anything is suppressed.
    session.flush()
    evidence = f"bounce:{event_id}"
    if result.category == "bounce-hard":
        hard = [v.address for v in result.recipients if v.severity == "hard"]
        contact_bis = set(consent.contact_address_bis(session, row.contact_id, "email"))
        bis = _matching_bis(ring, hard, contact_bis)
        if bis:
            consent.add_suppression(
                session,
                channel="email",
                address_bis=bis,
                reason="hard_bounce",
                source="delivery",
                evidence_ref=evidence,
                contact_id=row.contact_id,
                actor=actor,
                clock=lambda: at,
            )
            event.action = "suppressed"
        else:
            event.note = "no_failed_recipient" if not hard else "recipient_not_contact"
    elif result.category == "complaint":
        if result.feedback_type in NOT_A_PERSON:
            event.note = f"not_a_person:{result.feedback_type}"
        else:
            _complaint(session, ring, event, result, row, actor, at)
    audit.append(
        session,
        actor=actor,
        action="bounce.recorded",
        subjects=[row.contact_id, row.id, event_id],
        details={
            "category": result.category,
            "action": event.action,
            "note": event.note or "",
            "linked_by": link.linked_by,
            "campaign_id": row.campaign_id or "",
        },
        clock=lambda: at,
    )
    session.flush()
    raised = stats.check_complaint_alerts(
        session,
        campaign_id=row.campaign_id,
        domain=domain,
        at=at,
        policy=policy or RatePolicy(),
        complaint=result.category == "complaint",
    )
    return Received(
        "recorded",
        event_id=event_id,
        outbox_id=row.id,
        category=result.category,
        action=event.action,
        note=event.note or "",
        alerts=tuple(raised),
    )


def _complaint(
    session: Session,
    ring: KeyRing,
    event: BounceEvent,
    result: Classification,
    row: OutboxMessage,
    actor: Actor,
    at: datetime,
) -> None:
    contact_bis = consent.contact_address_bis(session, row.contact_id, "email")
    named = [v.address for v in result.recipients if v.address]
    bis = _matching_bis(ring, named, set(contact_bis))
    if not bis:
        # Providers redact the complainant ("redacted@...", or nothing at all); the
        # link already names the message and so the contact it went to.
        bis = contact_bis
        event.note = "recipient_redacted" if not named else "recipient_unmatched"
    evidence = f"bounce:{event.id}"
    if bis:
        consent.add_suppression(
            session,
            channel="email",
            address_bis=bis,
            reason="spam_complaint",
            source="complaint",
            evidence_ref=evidence,
            contact_id=row.contact_id,
            actor=actor,
            clock=lambda: at,
        )
    current = consent.current_topics(session, row.contact_id, "email", at)
    topics = {topic for topic, status in current.items() if status == OPTED_IN}
    if row.campaign_id is not None:
        campaign = session.get(Campaign, row.campaign_id)
        if (
            campaign is not None
            and campaign.channel == "email"
            and current.get(campaign.topic) != OPTED_OUT
        ):
            topics.add(campaign.topic)
    for topic in sorted(topics):
        consent.set_consent(
            session,
            contact_id=row.contact_id,
            channel="email",
            topic=topic,
            status=OPTED_OUT,
            source="complaint",
            evidence_ref=evidence,
            actor=actor,
            clock=lambda: at,
        )
    event.action = "suppressed_opted_out"
