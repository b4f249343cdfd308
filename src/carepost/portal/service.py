"""Portal use cases. The caller owns the transaction (a worker batch, a web request), so
each change commits with its audit entry or not at all.

PHI is read in two places only, both through the audited doors: the recipient's address
for a code mail and the date of birth for the DOB check (contacts.phi.read_for_job), and
the message itself (delivery.archive.read_sent, which names the contact and purpose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns.models import SenderProfile
from carepost.clock import isoformat_utc
from carepost.consent import service as consent
from carepost.contacts import phi
from carepost.contacts.store import new_id
from carepost.crypto.keyring import KeyRing
from carepost.delivery import archive
from carepost.portal import limits as lim
from carepost.portal import tokens
from carepost.portal.message import PortalMessage as ParsedMessage
from carepost.portal.message import parse
from carepost.portal.models import PortalCode, PortalMessage, PortalSession, PortalWrongAnswer


@dataclass(frozen=True)
class Handoff:
    """A message the worker put in the portal: what its record transaction stores."""

    outbox_id: str
    attempt: int
    contact_id: str
    sender_id: str
    token_hash: str
    address_bi: str
    verification: str
    reason: str
    notice_message_id: str
    notice_sha256: str


def store_handoffs(
    session: Session, handoffs: Sequence[Handoff], *, actor: Actor, at: datetime
) -> None:
    """Insert what is not there yet. A message already in the portal (a notice resent
    after a crash, a retry after an unknown notice) keeps its first row: its link is the
    same (tokens.link_token) and its archived bytes are as good as the new ones."""
    if not handoffs:
        return
    ids = [h.outbox_id for h in handoffs]
    present = set(
        session.scalars(select(PortalMessage.outbox_id).where(PortalMessage.outbox_id.in_(ids)))
    )
    new = [h for h in handoffs if h.outbox_id not in present]
    for h in new:
        session.add(
            PortalMessage(
                outbox_id=h.outbox_id,
                attempt=h.attempt,
                contact_id=h.contact_id,
                sender_id=h.sender_id,
                token_hash=h.token_hash,
                address_bi=h.address_bi,
                verification=h.verification,
                reason=h.reason,
                notice_message_id=h.notice_message_id,
                notice_sha256=h.notice_sha256,
                created_at=at,
                failed_tries=0,
            )
        )
    if new:
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="portal.stored",
            subjects=[h.outbox_id for h in new],
            details={"count": len(new)},
            clock=lambda: at,
        )


def find(session: Session, token: str, *, lock: bool = False) -> PortalMessage | None:
    if not tokens.well_formed(token):
        return None
    query = select(PortalMessage).where(PortalMessage.token_hash == tokens.lookup_hash(token))
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def sender_of(session: Session, row: PortalMessage) -> SenderProfile:
    sender = session.get(SenderProfile, row.sender_id)
    assert sender is not None  # a foreign key
    return sender


# --- one-time codes ----------------------------------------------------------------------
@dataclass(frozen=True)
class CodeToSend:
    code_id: str
    code: str
    rcpt: str


CodeRefusal = Literal["locked", "too_many_codes", "network_limit", "address_gone"]


def request_code(
    session: Session,
    ring: KeyRing,
    row: PortalMessage,
    *,
    network: str,
    limits: lim.PortalLimits,
    actor: Actor,
    at: datetime,
) -> CodeToSend | CodeRefusal:
    """A new code for `row`'s message, stored as its hash, and the address to mail it to
    (the one the notice went to, found again by its blind index)."""
    since = at - limits.code_window
    for_message = session.scalar(
        select(func.count())
        .select_from(PortalCode)
        .where(PortalCode.outbox_id == row.outbox_id, PortalCode.created_at > since)
    )
    for_network = session.scalar(
        select(func.count())
        .select_from(PortalCode)
        .where(PortalCode.client_network == network, PortalCode.created_at > since)
    )
    refusal = lim.may_request_code(
        limits,
        locked_until=row.locked_until,
        codes_for_message=int(for_message or 0),
        codes_for_network=int(for_network or 0),
        at=at,
    )
    if refusal is not None:
        return refusal
    code_id = new_id()
    opened = phi.read_for_job(
        session,
        ring,
        [row.contact_id],
        actor=actor,
        purpose="mail a one-time code for a secure message to the address it was sent to",
        action="portal.code_address_read",
        with_facts=False,
        details={"outbox_id": row.outbox_id, "code_id": code_id},
        clock=lambda: at,
    )
    contact = opened.get(row.contact_id)
    rcpt = _address_matching(ring, contact.record if contact else {}, row.address_bi)
    if rcpt is None:
        return "address_gone"
    code = tokens.new_code()
    session.add(
        PortalCode(
            id=code_id,
            outbox_id=row.outbox_id,
            code_hash=tokens.code_hash(ring, row.outbox_id, code_id, code),
            client_network=network,
            created_at=at,
            expires_at=at + limits.code_ttl,
        )
    )
    return CodeToSend(code_id, code, rcpt)


def _address_matching(ring: KeyRing, record: dict[str, object], address_bi: str) -> str | None:
    emails = record.get("emails")
    for email in emails if isinstance(emails, list) else []:
        try:
            if consent.address_bi(ring, "email", str(email)) == address_bi:
                return str(email)
        except consent.ConsentError:
            continue
    return None


# --- answers -----------------------------------------------------------------------------
AnswerResult = Literal["ok", "wrong", "locked", "network_limit", "unverifiable"]


def answer_code(
    session: Session,
    ring: KeyRing,
    row: PortalMessage,
    code_text: str,
    *,
    network: str,
    limits: lim.PortalLimits,
    actor: Actor,
    at: datetime,
) -> AnswerResult:
    refusal = _refused(session, row, network, limits, at)
    if refusal is not None:
        return refusal
    code = tokens.normalize_code(code_text)
    live = session.scalars(
        select(PortalCode).where(
            PortalCode.outbox_id == row.outbox_id,
            PortalCode.used_at.is_(None),
            PortalCode.expires_at > at,
        )
    ).all()
    match = None
    if code is not None:
        for candidate in live:
            if lim.code_alive(
                created_at=candidate.created_at,
                expires_at=candidate.expires_at,
                used_at=candidate.used_at,
                at=at,
            ) and tokens.code_matches(ring, row.outbox_id, candidate.id, code, candidate.code_hash):
                match = candidate
    if match is None:
        return _wrong(session, row, network, limits, actor, at)
    # Single use, and the others die with it: one verification per code mail.
    _spend_codes(session, row.outbox_id, at)
    _verified(session, row, "code", actor, at)
    return "ok"


def answer_birth_date(
    session: Session,
    ring: KeyRing,
    row: PortalMessage,
    text: str,
    *,
    network: str,
    limits: lim.PortalLimits,
    actor: Actor,
    at: datetime,
) -> AnswerResult:
    refusal = _refused(session, row, network, limits, at)
    if refusal is not None:
        return refusal
    try:
        given: date | None = date.fromisoformat(text.strip())
    except ValueError:
        given = None
    if given is None:
        return _wrong(session, row, network, limits, actor, at)
    opened = phi.read_for_job(
        session,
        ring,
        [row.contact_id],
        actor=actor,
        purpose="check the date of birth given to open a secure message",
        action="portal.identity_check",
        with_facts=False,
        details={"outbox_id": row.outbox_id},
        clock=lambda: at,
    )
    contact = opened.get(row.contact_id)
    on_file = contact.record.get("birth_date") if contact is not None else None
    if not isinstance(on_file, str):
        return "unverifiable"
    try:
        right = date.fromisoformat(on_file) == given
    except ValueError:
        return "unverifiable"
    if not right:
        return _wrong(session, row, network, limits, actor, at)
    _verified(session, row, "dob", actor, at)
    return "ok"


def _refused(
    session: Session, row: PortalMessage, network: str, limits: lim.PortalLimits, at: datetime
) -> Literal["locked", "network_limit"] | None:
    wrong = session.scalar(
        select(func.count())
        .select_from(PortalWrongAnswer)
        .where(
            PortalWrongAnswer.client_network == network,
            PortalWrongAnswer.at > at - limits.wrong_window,
        )
    )
    return lim.may_answer(
        limits, locked_until=row.locked_until, wrong_for_network=int(wrong or 0), at=at
    )


def _wrong(
    session: Session,
    row: PortalMessage,
    network: str,
    limits: lim.PortalLimits,
    actor: Actor,
    at: datetime,
) -> AnswerResult:
    session.add(PortalWrongAnswer(outbox_id=row.outbox_id, client_network=network, at=at))
    after = lim.after_wrong(limits, failed_tries=row.failed_tries, at=at)
    row.failed_tries = after.failed_tries
    if after.locked_until is None:
        return "wrong"
    row.locked_until = after.locked_until
    _spend_codes(session, row.outbox_id, at)
    audit.append(
        session,
        actor=actor,
        action="portal.locked",
        subjects=[row.contact_id, row.outbox_id],
        details={"until": isoformat_utc(after.locked_until)},
        clock=lambda: at,
    )
    return "locked"


def _spend_codes(session: Session, outbox_id: str, at: datetime) -> None:
    session.execute(
        update(PortalCode)
        .where(PortalCode.outbox_id == outbox_id, PortalCode.used_at.is_(None))
        .values(used_at=at)
    )


def _verified(
    session: Session, row: PortalMessage, method: str, actor: Actor, at: datetime
) -> None:
    row.failed_tries = 0
    audit.append(
        session,
        actor=actor,
        action="portal.verified",
        subjects=[row.contact_id, row.outbox_id],
        details={"method": method},
        clock=lambda: at,
    )


# --- sessions ----------------------------------------------------------------------------
def open_session(session: Session, row: PortalMessage, at: datetime) -> str:
    session_id = tokens.new_session_id()
    session.add(
        PortalSession(
            id_hash=tokens.lookup_hash(session_id),
            outbox_id=row.outbox_id,
            created_at=at,
            last_seen_at=at,
        )
    )
    return session_id


def use_session(
    session: Session,
    row: PortalMessage,
    session_id: str,
    *,
    limits: lim.PortalLimits,
    at: datetime,
) -> bool:
    """Whether `session_id` opens `row`'s message now; a live one is kept alive."""
    if not session_id or len(session_id) > 100 or not session_id.isascii():
        return False
    found = session.get(PortalSession, tokens.lookup_hash(session_id))
    if found is None or found.outbox_id != row.outbox_id:
        return False
    if not lim.session_alive(
        limits, created_at=found.created_at, last_seen_at=found.last_seen_at, at=at
    ):
        session.delete(found)
        return False
    found.last_seen_at = at
    return True


def end_session(session: Session, session_id: str) -> None:
    if session_id and len(session_id) <= 100 and session_id.isascii():
        found = session.get(PortalSession, tokens.lookup_hash(session_id))
        if found is not None:
            session.delete(found)


# --- reading -----------------------------------------------------------------------------
def read_message(
    session: Session, ring: KeyRing, row: PortalMessage, *, actor: Actor, at: datetime
) -> ParsedMessage:
    """The message for a verified reader, through the audited archive read. The first
    view is the read receipt: `first_viewed_at` and one audit entry, in this transaction;
    the conditional update makes two racing first views record one receipt."""
    first = session.execute(
        update(PortalMessage)
        .where(PortalMessage.outbox_id == row.outbox_id, PortalMessage.first_viewed_at.is_(None))
        .values(first_viewed_at=at)
        .execution_options(synchronize_session=False)
    )
    if first.rowcount == 1:  # type: ignore[attr-defined]
        audit.append(
            session,
            actor=actor,
            action="portal.read_receipt",
            subjects=[row.contact_id, row.outbox_id],
            details={"outbox_id": row.outbox_id},
            clock=lambda: at,
        )
    data = archive.read_sent(
        session,
        ring,
        row.outbox_id,
        attempt=row.attempt,
        actor=actor,
        purpose="show a secure message to its verified recipient",
    )
    return parse(data)


def evidence(session: Session, outbox_id: str) -> dict[str, object] | None:
    """The portal part of a message's proof of delivery (delivery.evidence shows it)."""
    row = session.get(PortalMessage, outbox_id)
    if row is None:
        return None
    return {
        "reason": row.reason,
        "attempt": row.attempt,
        "verification": row.verification,
        "notice_message_id": row.notice_message_id,
        "notice_sha256": row.notice_sha256,
        "stored_at": isoformat_utc(row.created_at),
        "first_viewed_at": isoformat_utc(row.first_viewed_at) if row.first_viewed_at else None,
    }
