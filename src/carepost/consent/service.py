"""Consent use cases, audited. Services never commit: the caller's transaction holds the
change and its audit entry together.

Audit actions: consent.set, consent.authorization_added, consent.revoked,
consent.expiry_event, consent.gate_run, suppression.added, suppression.removed.
Subjects are ids only.

Concurrency with the send gate: every change to a contact's consent state first locks the
contact's row (`FOR UPDATE` on PostgreSQL; SQLite write transactions are serialized), and
`gate_batch` locks its batch's contact rows `FOR SHARE` before it reads their state. So a
change either commits before a batch reads (and is honoured) or waits until that batch's
transaction ends: a decision is never made on state that a committed change contradicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, isoformat_utc, system_clock
from carepost.consent import gate
from carepost.consent.authorization import AuthorizationDocument, validate_authorization
from carepost.consent.models import Authorization, Consent, GateDecision, GateRun, Suppression
from carepost.consent.records import (
    CHANNELS,
    CONSENT_SOURCES,
    CONSENT_STATUSES,
    EMAIL,
    MESSAGE_CLASSES,
    OPTED_OUT,
    SUPPRESSION_REASONS,
    AuthorizationState,
    ConsentEvent,
    ContactState,
    SuppressionState,
    valid_topic,
)
from carepost.contacts.models import Contact, ContactLookup
from carepost.contacts.store import ContactWriter, new_id
from carepost.crypto.blind_index import blind_index, normalize_email, normalize_phone
from carepost.crypto.envelope import aad, seal
from carepost.crypto.keyring import KeyRing
from carepost.db import among, bulk_insert
from carepost.staff.principal import Principal

CHUNK = 1000
LOOKUP_KIND = {EMAIL: "email", "sms": "phone"}


class ConsentError(ValueError):
    """Bad input to a consent use case; the message names the problem, never PHI."""


class NotFound(LookupError):
    pass


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_channel_topic(channel: str, topic: str | None) -> None:
    if channel not in CHANNELS:
        raise ConsentError(f"unknown channel; use one of {', '.join(CHANNELS)}")
    if topic is not None and not valid_topic(topic):
        raise ConsentError("topic must be 1-64 characters of a-z, 0-9, '-', '_', '.'")


def _lock_contacts(session: Session, contact_ids: Sequence[str], *, share: bool) -> set[str]:
    """The ids that exist, locked (PostgreSQL) in id order so lockers never deadlock."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(contact_ids))):
        stmt = select(Contact.id).where(among(session, Contact.id, chunk)).order_by(Contact.id)
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=share, key_share=False)
        found.update(session.execute(stmt).scalars())
    return found


def _require_contact(session: Session, contact_id: str) -> None:
    if not _lock_contacts(session, [contact_id], share=False):
        raise NotFound(f"no contact with id {contact_id}")


# --- consents --------------------------------------------------------------------------
def set_consent(
    session: Session,
    *,
    contact_id: str,
    channel: str,
    topic: str,
    status: str,
    source: str,
    evidence_ref: str = "",
    effective_at: datetime | None = None,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> str:
    """Append a consent statement (history is never overwritten); returns its id."""
    if principal is not None:
        principal.require("consent:write")
    _check_channel_topic(channel, topic)
    if status not in CONSENT_STATUSES:
        raise ConsentError(f"status must be one of {', '.join(CONSENT_STATUSES)}")
    if source not in CONSENT_SOURCES:
        raise ConsentError(f"source must be one of {', '.join(CONSENT_SOURCES)}")
    if len(evidence_ref) > 256:
        raise ConsentError("evidence reference is longer than 256 characters")
    now = clock()
    if effective_at is not None and effective_at.tzinfo is None:
        raise ConsentError("effective time needs a UTC offset")
    _require_contact(session, contact_id)
    consent_id = new_id()
    session.add(
        Consent(
            id=consent_id,
            contact_id=contact_id,
            channel=channel,
            topic=topic,
            status=status,
            source=source,
            evidence_ref=evidence_ref,
            effective_at=effective_at or now,
            recorded_at=now,
            actor=actor.id,
        )
    )
    audit.append(
        session,
        actor=actor,
        action="consent.set",
        subjects=[contact_id, consent_id],
        details={"channel": channel, "topic": topic, "status": status, "source": source},
        clock=clock,
    )
    return consent_id


@dataclass(frozen=True)
class ConsentRow:
    id: str
    channel: str
    topic: str
    status: str
    source: str
    evidence_ref: str
    effective_at: datetime
    recorded_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "topic": self.topic,
            "status": self.status,
            "source": self.source,
            "evidence_ref": self.evidence_ref,
            "effective_at": isoformat_utc(self.effective_at),
            "recorded_at": isoformat_utc(self.recorded_at),
        }


def consent_history(
    session: Session, contact_id: str, *, principal: Principal | None = None
) -> list[ConsentRow]:
    if principal is not None:
        principal.require("consent:read")
    rows = session.execute(
        select(Consent)
        .where(Consent.contact_id == contact_id)
        .order_by(Consent.channel, Consent.topic, Consent.effective_at, Consent.recorded_at)
    ).scalars()
    return [
        ConsentRow(
            r.id,
            r.channel,
            r.topic,
            r.status,
            r.source,
            r.evidence_ref,
            r.effective_at,
            r.recorded_at,
        )
        for r in rows
    ]


def current_topics(session: Session, contact_id: str, channel: str, at: datetime) -> dict[str, str]:
    """topic -> status in force at `at` for one channel (the preference page)."""
    state = load_states(session, [contact_id], channel=channel).get(contact_id)
    result: dict[str, str] = {}
    if state is None:
        return result
    for (ch, topic), events in state.consents.items():
        if ch != channel:
            continue
        current = [e for e in events if e.at <= at]
        if current:
            result[topic] = current[-1].status
    return dict(sorted(result.items()))


# --- authorizations --------------------------------------------------------------------
def document_aad(authorization_id: str, dek_version: int) -> bytes:
    return aad("authorizations", "document", authorization_id, dek_version)


def add_authorization(
    session: Session,
    ring: KeyRing,
    *,
    contact_id: str,
    document: Mapping[str, Any] | AuthorizationDocument,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> str:
    """Validate every 164.508(c) element (AuthorizationInvalid lists all that are missing),
    then store the structure plain and the document sealed under the contact's key."""
    if principal is not None:
        principal.require("authorizations:write")
    doc = (
        document
        if isinstance(document, AuthorizationDocument)
        else validate_authorization(document)
    )
    _require_contact(session, contact_id)
    now = clock()
    writer = ContactWriter(session, ring, now=now, source="consent")
    try:
        dek_version, cipher = writer.cipher(contact_id)
    except KeyError:
        raise NotFound(f"contact {contact_id} has no data key (crypto-shredded)") from None
    auth_id = new_id()
    sealed = seal(cipher, orjson.dumps(doc.to_json()), document_aad(auth_id, dek_version))
    session.add(
        Authorization(
            id=auth_id,
            contact_id=contact_id,
            purposes=" ".join(sorted(doc.purpose_codes)),
            recipients=" ".join(sorted(doc.recipient_ids)),
            signed_at=doc.signed_at,
            signature_method=doc.signature_method,
            signed_text_sha256=doc.signed_text_sha256,
            signed_by_representative=doc.signed_by == "representative",
            remuneration_statement=doc.remuneration_statement,
            expires_at=doc.expires_at,
            has_expiry_event=doc.expiry_event is not None,
            expiry_event_at=None,
            revoked_at=None,
            revocation_source=None,
            revocation_evidence_ref=None,
            recorded_at=now,
            actor=actor.id,
            dek_version=dek_version,
            document=sealed,
        )
    )
    audit.append(
        session,
        actor=actor,
        action="consent.authorization_added",
        subjects=[contact_id, auth_id],
        details={
            "purposes": sorted(doc.purpose_codes),
            "recipients": sorted(doc.recipient_ids),
            "signed_text_sha256": doc.signed_text_sha256,
            "expires": "date" if doc.expires_at else "event",
        },
        clock=clock,
    )
    return auth_id


def _locked_authorization(session: Session, authorization_id: str) -> Authorization:
    contact_id = session.execute(
        select(Authorization.contact_id).where(Authorization.id == authorization_id)
    ).scalar_one_or_none()
    if contact_id is None:
        raise NotFound(f"no authorization with id {authorization_id}")
    _lock_contacts(session, [contact_id], share=False)
    auth = session.get(Authorization, authorization_id, populate_existing=True)
    assert auth is not None
    return auth


def revoke_authorization(
    session: Session,
    *,
    authorization_id: str,
    source: str,
    evidence_ref: str = "",
    revoked_at: datetime | None = None,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> datetime:
    """Record a revocation (164.508(b)(5)). The earliest revocation stands: revoking again
    changes nothing and returns the time already on record."""
    if principal is not None:
        principal.require("authorizations:write")
    if source not in CONSENT_SOURCES:
        raise ConsentError(f"source must be one of {', '.join(CONSENT_SOURCES)}")
    auth = _locked_authorization(session, authorization_id)
    if auth.revoked_at is not None:
        return auth.revoked_at
    when = revoked_at or clock()
    if when.tzinfo is None:
        raise ConsentError("revocation time needs a UTC offset")
    auth.revoked_at = when
    auth.revocation_source = source
    auth.revocation_evidence_ref = evidence_ref
    audit.append(
        session,
        actor=actor,
        action="consent.revoked",
        subjects=[auth.contact_id, authorization_id],
        details={"source": source, "revoked_at": isoformat_utc(when)},
        clock=clock,
    )
    session.flush()
    return when


def record_expiry_event(
    session: Session,
    *,
    authorization_id: str,
    occurred_at: datetime | None = None,
    actor: Actor,
    clock: Clock = system_clock,
) -> datetime:
    """The authorization's expiration event happened: it ends the authorization."""
    auth = _locked_authorization(session, authorization_id)
    if not auth.has_expiry_event:
        raise ConsentError("this authorization expires by date, not by an event")
    if auth.expiry_event_at is not None:
        return auth.expiry_event_at
    when = occurred_at or clock()
    auth.expiry_event_at = when
    audit.append(
        session,
        actor=actor,
        action="consent.expiry_event",
        subjects=[auth.contact_id, authorization_id],
        details={"occurred_at": isoformat_utc(when)},
        clock=clock,
    )
    session.flush()
    return when


def authorizations_of(
    session: Session, contact_id: str, *, principal: Principal | None = None
) -> list[dict[str, Any]]:
    """The plain structure of a contact's authorizations (nothing decrypted)."""
    if principal is not None:
        principal.require("authorizations:read")
    rows = session.execute(
        select(Authorization)
        .where(Authorization.contact_id == contact_id)
        .order_by(Authorization.signed_at)
    ).scalars()

    def t(v: datetime | None) -> str | None:
        return isoformat_utc(v) if v else None

    return [
        {
            "id": a.id,
            "purposes": a.purposes.split(),
            "recipients": a.recipients.split(),
            "signed_at": t(a.signed_at),
            "signature_method": a.signature_method,
            "signed_text_sha256": a.signed_text_sha256,
            "signed_by_representative": a.signed_by_representative,
            "remuneration_statement": a.remuneration_statement,
            "expires_at": t(a.expires_at),
            "expires_by_event": a.has_expiry_event,
            "expiry_event_at": t(a.expiry_event_at),
            "revoked_at": t(a.revoked_at),
            "revocation_source": a.revocation_source,
        }
        for a in rows
    ]


# --- suppression -----------------------------------------------------------------------
def address_bi(ring: KeyRing, channel: str, address: str) -> str:
    if channel == EMAIL:
        normalized = normalize_email(address)
        if "@" not in normalized:
            raise ConsentError("not an email address")
        return blind_index(ring, "email", normalized)
    normalized = normalize_phone(address)
    if len(normalized) < 8:
        raise ConsentError("not a phone number")
    return blind_index(ring, "phone", normalized)


def contact_address_bis(session: Session, contact_id: str, channel: str) -> list[str]:
    return list(
        session.execute(
            select(ContactLookup.value_bi).where(
                ContactLookup.contact_id == contact_id,
                ContactLookup.kind == LOOKUP_KIND[channel],
            )
        ).scalars()
    )


def add_suppression(
    session: Session,
    *,
    channel: str,
    address_bis: Sequence[str],
    reason: str,
    source: str,
    evidence_ref: str = "",
    contact_id: str | None = None,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> list[str]:
    """Suppress addresses (by blind index). An address already suppressed for the same
    reason is left as it is. Returns the new suppression ids."""
    if principal is not None:
        principal.require("consent:write")
    _check_channel_topic(channel, None)
    if reason not in SUPPRESSION_REASONS:
        raise ConsentError(f"reason must be one of {', '.join(SUPPRESSION_REASONS)}")
    if source not in CONSENT_SOURCES:
        raise ConsentError(f"source must be one of {', '.join(CONSENT_SOURCES)}")
    if not address_bis:
        raise ConsentError("no address to suppress (the contact has none on this channel)")
    # Lock every contact with these addresses, so a batch being decided sees all or none.
    owners = set(
        session.execute(
            select(ContactLookup.contact_id).where(
                ContactLookup.kind == LOOKUP_KIND[channel],
                ContactLookup.value_bi.in_(list(address_bis)),
            )
        ).scalars()
    )
    _lock_contacts(session, sorted(owners), share=False)
    existing = set(
        session.execute(
            select(Suppression.address_bi).where(
                Suppression.channel == channel,
                Suppression.address_bi.in_(list(address_bis)),
                Suppression.reason == reason,
                Suppression.removed_at.is_(None),
            )
        ).scalars()
    )
    now = clock()
    ids: list[str] = []
    for bi in dict.fromkeys(address_bis):
        if bi in existing:
            continue
        sid = new_id()
        ids.append(sid)
        session.add(
            Suppression(
                id=sid,
                channel=channel,
                address_bi=bi,
                reason=reason,
                source=source,
                evidence_ref=evidence_ref,
                created_at=now,
                actor=actor.id,
            )
        )
    if ids:
        audit.append(
            session,
            actor=actor,
            action="suppression.added",
            subjects=[*([contact_id] if contact_id else []), *ids],
            details={"channel": channel, "reason": reason, "source": source},
            clock=clock,
        )
        session.flush()
    return ids


def remove_suppression(
    session: Session,
    *,
    suppression_id: str,
    actor: Actor,
    clock: Clock = system_clock,
    principal: Principal | None = None,
) -> None:
    if principal is not None:
        principal.require("consent:write")
    row = session.get(Suppression, suppression_id)
    if row is None:
        raise NotFound(f"no suppression with id {suppression_id}")
    if row.removed_at is not None:
        raise ConsentError(f"suppression {suppression_id} was already removed")
    row.removed_at = clock()
    row.removed_by = actor.id
    audit.append(
        session,
        actor=actor,
        action="suppression.removed",
        subjects=[suppression_id],
        details={"channel": row.channel, "reason": row.reason},
        clock=clock,
    )
    session.flush()


def list_suppressions(
    session: Session,
    *,
    include_removed: bool = False,
    limit: int = 100,
    after: str | None = None,
    address_bis: Sequence[str] | None = None,
    principal: Principal | None = None,
) -> list[dict[str, Any]]:
    if principal is not None:
        principal.require("consent:read")
    stmt = select(Suppression).order_by(Suppression.id).limit(limit)
    if not include_removed:
        stmt = stmt.where(Suppression.removed_at.is_(None))
    if after:
        stmt = stmt.where(Suppression.id > after)
    if address_bis is not None:
        stmt = stmt.where(Suppression.address_bi.in_(list(address_bis)))
    return [
        {
            "id": s.id,
            "channel": s.channel,
            "address_bi": s.address_bi[:8] + "…",  # enough to tell rows apart; not the key
            "reason": s.reason,
            "source": s.source,
            "evidence_ref": s.evidence_ref,
            "created_at": isoformat_utc(s.created_at),
            "actor": s.actor,
            "removed_at": isoformat_utc(s.removed_at) if s.removed_at else None,
        }
        for s in session.execute(stmt).scalars()
    ]


# --- state loading and the gate --------------------------------------------------------
def load_states(
    session: Session,
    contact_ids: Sequence[str],
    *,
    channel: str | None = None,
    topic: str | None = None,
    lock: bool = False,
) -> dict[str, ContactState]:
    """Everything the gate needs for these contacts, in five queries per 1,000 ids and
    nothing decrypted. Ids that are not contacts are absent from the result (the gate
    denies them). With `lock`, the contact rows are locked FOR SHARE first (PostgreSQL)."""
    existing = _lock_contacts(session, contact_ids, share=True) if lock else None
    ids = sorted(set(contact_ids))
    if existing is None:
        existing = set()
        for chunk in _chunks(ids):
            existing.update(
                session.execute(
                    select(Contact.id).where(among(session, Contact.id, chunk))
                ).scalars()
            )
    consents: dict[str, dict[tuple[str, str], list[tuple[datetime, datetime, str]]]] = {}
    auths: dict[str, list[AuthorizationState]] = {}
    bis: dict[str, list[tuple[str, str]]] = {}
    sups: dict[tuple[str, str], list[SuppressionState]] = {}
    kinds = [LOOKUP_KIND[channel]] if channel else list(LOOKUP_KIND.values())
    channel_of_kind = {v: k for k, v in LOOKUP_KIND.items()}
    for chunk in _chunks([i for i in ids if i in existing]):
        stmt = select(
            Consent.contact_id,
            Consent.channel,
            Consent.topic,
            Consent.status,
            Consent.effective_at,
            Consent.recorded_at,
        ).where(among(session, Consent.contact_id, chunk))
        if channel:
            stmt = stmt.where(Consent.channel == channel)
        if topic:
            stmt = stmt.where(Consent.topic == topic)
        for cid, ch, tp, status, eff, rec in session.execute(stmt):
            consents.setdefault(cid, {}).setdefault((ch, tp), []).append((eff, rec, status))
        for a in session.execute(
            select(
                Authorization.contact_id,
                Authorization.id,
                Authorization.purposes,
                Authorization.recipients,
                Authorization.signed_at,
                Authorization.expires_at,
                Authorization.expiry_event_at,
                Authorization.revoked_at,
                Authorization.remuneration_statement,
            ).where(among(session, Authorization.contact_id, chunk))
        ):
            auths.setdefault(a[0], []).append(
                AuthorizationState(
                    id=a[1],
                    purposes=frozenset(a[2].split()),
                    recipients=frozenset(a[3].split()),
                    signed_at=a[4],
                    expires_at=a[5],
                    expiry_event_at=a[6],
                    revoked_at=a[7],
                    remuneration_statement=bool(a[8]),
                )
            )
        for cid, kind, bi in session.execute(
            select(ContactLookup.contact_id, ContactLookup.kind, ContactLookup.value_bi).where(
                among(session, ContactLookup.contact_id, chunk), ContactLookup.kind.in_(kinds)
            )
        ):
            bis.setdefault(cid, []).append((channel_of_kind[kind], bi))
    all_bis = sorted({bi for pairs in bis.values() for _, bi in pairs})
    for chunk in _chunks(all_bis):
        stmt2 = select(
            Suppression.channel,
            Suppression.address_bi,
            Suppression.reason,
            Suppression.created_at,
            Suppression.removed_at,
        ).where(among(session, Suppression.address_bi, chunk))
        if channel:
            stmt2 = stmt2.where(Suppression.channel == channel)
        for ch, bi, reason, created, removed in session.execute(stmt2):
            sups.setdefault((ch, bi), []).append(SuppressionState(ch, reason, created, removed))
    states: dict[str, ContactState] = {}
    for cid in ids:
        if cid not in existing:
            continue
        history = {
            key: tuple(ConsentEvent(status, eff) for eff, _rec, status in sorted(events))
            for key, events in consents.get(cid, {}).items()
        }
        contact_sups: list[SuppressionState] = []
        for ch, bi in bis.get(cid, []):
            contact_sups.extend(sups.get((ch, bi), []))
        states[cid] = ContactState(cid, history, tuple(auths.get(cid, [])), tuple(contact_sups))
    return states


def _check_gate_args(message_class: str, channel: str, topic: str) -> None:
    if message_class not in MESSAGE_CLASSES:
        raise ConsentError(f"message class must be one of {', '.join(MESSAGE_CLASSES)}")
    _check_channel_topic(channel, topic)


def check(
    session: Session,
    *,
    contact_id: str,
    message_class: str,
    channel: str,
    topic: str,
    sender: str,
    at: datetime,
) -> gate.Decision:
    """One decision, nothing stored (the `consent check` command)."""
    _check_gate_args(message_class, channel, topic)
    states = load_states(session, [contact_id], channel=channel, topic=topic)
    if contact_id not in states:
        raise NotFound(f"no contact with id {contact_id}")
    return gate.decide(states[contact_id], message_class, channel, topic, sender, at)


@dataclass(frozen=True)
class GateRunResult:
    run_id: str
    decided_at: datetime
    decisions: dict[str, gate.Decision]

    @property
    def allowed_ids(self) -> list[str]:
        return [cid for cid, d in self.decisions.items() if d.allowed]


def gate_batch(
    session: Session,
    *,
    campaign_id: str,
    contact_ids: Sequence[str],
    message_class: str,
    channel: str,
    topic: str,
    sender: str,
    actor: Actor,
    clock: Clock = system_clock,
) -> GateRunResult:
    """The entry point the delivery engine calls when it claims a batch, INSIDE its claiming
    transaction: lock and load the batch's state (a few queries), decide every recipient at
    the current time, store each decision compactly, audit the run. Returns the decisions;
    only allowed recipients may be handed to a transport."""
    _check_gate_args(message_class, channel, topic)
    if not campaign_id or len(campaign_id) > 64:
        raise ConsentError("campaign id must be 1-64 characters")
    ids = list(dict.fromkeys(contact_ids))
    if any(not cid or len(cid) > 32 for cid in ids):
        raise ConsentError("contact ids are 1-32 characters")
    states = load_states(session, ids, channel=channel, topic=topic, lock=True)
    # Time is read after the locks are held: a change that committed before is older.
    at = clock()
    decisions = gate.decide_batch(states, ids, message_class, channel, topic, sender, at)
    run_id = new_id()
    allowed = sum(1 for d in decisions if d.allowed)
    session.add(
        GateRun(
            id=run_id,
            campaign_id=campaign_id,
            message_class=message_class,
            channel=channel,
            topic=topic,
            sender=sender,
            decided_at=at,
            actor=actor.id,
            allowed=allowed,
            denied=len(ids) - allowed,
        )
    )
    session.flush()
    bulk_insert(
        session,
        GateDecision.__table__,
        ("run_id", "contact_id", "campaign_id", "allowed", "reasons", "authorization_id"),
        [
            (run_id, cid, campaign_id, d.allowed, " ".join(d.reasons), d.authorization_id)
            for cid, d in zip(ids, decisions, strict=True)
        ],
    )
    audit.append(
        session,
        actor=actor,
        action="consent.gate_run",
        subjects=[run_id],
        details={
            "campaign_id": campaign_id,
            "message_class": message_class,
            "channel": channel,
            "topic": topic,
            "sender": sender,
            "allowed": allowed,
            "denied": len(ids) - allowed,
        },
        clock=clock,
    )
    return GateRunResult(run_id, at, dict(zip(ids, decisions, strict=True)))


def explain(session: Session, *, contact_id: str, campaign_id: str) -> list[dict[str, Any]]:
    """Every stored decision for this contact in this campaign, newest first."""
    rows = session.execute(
        select(GateRun, GateDecision)
        .join(GateDecision, GateDecision.run_id == GateRun.id)
        .where(GateDecision.campaign_id == campaign_id, GateDecision.contact_id == contact_id)
        .order_by(GateRun.decided_at.desc(), GateRun.id.desc())
    ).all()
    result = []
    for run, dec in rows:
        reasons = dec.reasons.split()
        result.append(
            {
                "run_id": run.id,
                "campaign_id": campaign_id,
                "contact_id": contact_id,
                "decided_at": isoformat_utc(run.decided_at),
                "message_class": run.message_class,
                "channel": run.channel,
                "topic": run.topic,
                "sender": run.sender,
                "allowed": bool(dec.allowed),
                "reasons": reasons,
                "explanations": [gate.EXPLANATIONS.get(r, r) for r in reasons],
                "authorization_id": dec.authorization_id,
            }
        )
    return result


# --- what the public pages do ----------------------------------------------------------
def unsubscribe_topic(
    session: Session,
    *,
    contact_id: str,
    channel: str,
    topic: str,
    actor: Actor,
    clock: Clock = system_clock,
) -> bool:
    """One-click or page unsubscribe from one topic. Returns False when the contact was
    already opted out (nothing is written twice)."""
    current = current_topics(session, contact_id, channel, clock()).get(topic)
    if current == OPTED_OUT:
        return False
    set_consent(
        session,
        contact_id=contact_id,
        channel=channel,
        topic=topic,
        status=OPTED_OUT,
        source="unsubscribe_link",
        actor=actor,
        clock=clock,
    )
    return True


def unsubscribe_all(
    session: Session, *, contact_id: str, channel: str, actor: Actor, clock: Clock = system_clock
) -> list[str]:
    """Suppress every address the contact has on this channel (reason unsubscribe_all)."""
    bis = contact_address_bis(session, contact_id, channel)
    if not bis:
        return []
    return add_suppression(
        session,
        channel=channel,
        address_bis=bis,
        reason="unsubscribe_all",
        source="unsubscribe_link",
        contact_id=contact_id,
        actor=actor,
        clock=clock,
    )


def is_unsubscribed_all(session: Session, contact_id: str, channel: str) -> bool:
    bis = contact_address_bis(session, contact_id, channel)
    if not bis:
        return False
    rows = list_suppressions(session, address_bis=bis, limit=1000)
    return any(s["reason"] == "unsubscribe_all" and s["channel"] == channel for s in rows)
