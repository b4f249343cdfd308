"""The one door to decrypted PHI. Every read writes an audit entry (who, what, when,
where, why) in the caller's transaction, so an unaudited read cannot commit.

A read on behalf of a staff principal (a signed-in user or an API key) passes the
principal: it is refused unless the principal may read those contacts' PHI
(staff/access.py: `phi:read`, a live break-glass grant, or `phi:read_recipients` for
the contacts it sent to), and the audit entry records what the read rested on. Callers
without a principal are the system itself (the command line on the server, workers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.key_service import material_aad
from carepost.contacts.models import ClinicalFact, Contact, ContactEncryptionKey, ContactKey
from carepost.contacts.store import open_contact, open_contact_with, open_fact
from carepost.crypto.envelope import open_sealed, unwrap_dek
from carepost.crypto.keyring import KeyRing
from carepost.db import among
from carepost.messages.data import open_data
from carepost.messages.models import MessageData
from carepost.staff.access import phi_basis
from carepost.staff.principal import Principal


class ContactNotFound(LookupError):
    pass


class ContactShredded(LookupError):
    """The contact's data key was destroyed; its record can never be read again."""


class PurposeRequired(ValueError):
    pass


@dataclass(frozen=True)
class ContactView:
    id: str
    source: str
    created_at: str
    updated_at: str
    record: dict[str, Any]
    facts: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "record": self.record,
            "facts": self.facts,
        }


def read_contact(
    session: Session,
    ring: KeyRing,
    contact_id: str,
    *,
    actor: Actor,
    purpose: str,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> ContactView:
    if not purpose.strip():
        raise PurposeRequired("a purpose is required to read PHI (45 CFR 164.502(b))")
    basis = _basis(session, principal, actor, [contact_id], clock)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise ContactNotFound(f"no contact with id {contact_id}")
    key = session.get(ContactKey, contact_id)
    if key is None:
        raise ContactShredded(f"contact {contact_id} was crypto-shredded")
    # Audit first: if anything below fails the transaction rolls back with it, and an
    # attempted read that raised leaves no half-story.
    audit.append(
        session,
        actor=actor,
        action="contacts.phi_read",
        subjects=[contact_id],
        purpose=purpose.strip(),
        details=basis,
        clock=clock,
    )
    wrapped = bytes(key.wrapped_dek)
    record = orjson.loads(
        open_contact(
            ring, contact_id, bytes(contact.phi), key.dek_version, key.kek_version, wrapped
        )
    )
    cipher = AESGCM(unwrap_dek(ring, wrapped, key.kek_version, contact_id))
    facts = []
    rows = session.execute(
        select(ClinicalFact.id, ClinicalFact.payload).where(ClinicalFact.contact_id == contact_id)
    )
    for fid, payload in rows:
        facts.append(orjson.loads(open_fact(cipher, fid, key.dek_version, bytes(payload))))
    facts.sort(key=lambda f: (f.get("kind", ""), str(f.get("date") or "")))
    return ContactView(
        contact.id,
        contact.source,
        contact.created_at.isoformat(),
        contact.updated_at.isoformat(),
        record,
        facts,
    )


def _basis(
    session: Session,
    principal: Principal | None,
    actor: Actor,
    contact_ids: Sequence[str],
    clock: Clock,
) -> dict[str, object]:
    """The principal's right to read (raises PermissionDenied), for the audit details."""
    if principal is None:
        return {}
    if principal.actor != actor:
        raise ValueError("the actor must be the principal's actor")
    return phi_basis(session, principal, contact_ids, clock())


# --- bulk access -----------------------------------------------------------------------
@dataclass(frozen=True)
class BulkAccess:
    """Proof that a bulk PHI access was written to the audit chain: only
    `record_bulk_access` makes one, and `bulk_open` requires it. A process forked after
    the entry committed (the segment snapshot's decrypt workers) carries it along."""

    audit_seq: int
    action: str


def record_bulk_access(
    session: Session,
    *,
    actor: Actor,
    action: str,
    purpose: str,
    subjects: Sequence[str] = (),
    details: Mapping[str, object] | None = None,
    clock: Clock = system_clock,
) -> BulkAccess:
    """Audit one bulk PHI access (for example the segment snapshot: every contact, one
    entry) in the caller's transaction, before anything is decrypted."""
    if not purpose.strip():
        raise PurposeRequired("a purpose is required to read PHI (45 CFR 164.502(b))")
    entry = audit.append(
        session,
        actor=actor,
        action=action,
        subjects=subjects,
        purpose=purpose.strip(),
        details=details,
        clock=clock,
    )
    return BulkAccess(entry.seq, action)


ContactRow = tuple[str, bytes, int, int, bytes]  # id, sealed phi, dek, kek version, wrapped
FactRow = tuple[str, str, bytes]  # fact id, contact id, sealed payload


def bulk_open(
    access: BulkAccess,
    ring: KeyRing,
    contacts: Iterable[ContactRow],
    facts: Iterable[FactRow],
) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """Decrypt contacts and their facts under an audited bulk access: yields
    (contact id, record, facts). Both inputs are ordered by contact id (facts by their
    contact id); a fact whose contact is not in `contacts` is skipped."""
    if not isinstance(access, BulkAccess):
        raise TypeError("bulk_open needs the BulkAccess of an audited access")
    fact_iter = iter(facts)
    pending = next(fact_iter, None)
    loads = orjson.loads
    for cid, sealed, dek_version, kek_version, wrapped in contacts:
        wrapped_b = bytes(wrapped)
        cipher = AESGCM(unwrap_dek(ring, wrapped_b, kek_version, cid))
        record = loads(open_contact_with(cipher, cid, bytes(sealed), dek_version))
        out: list[dict[str, Any]] = []
        while pending is not None and pending[1] < cid:
            pending = next(fact_iter, None)
        while pending is not None and pending[1] == cid:
            out.append(loads(open_fact(cipher, pending[0], dek_version, bytes(pending[2]))))
            pending = next(fact_iter, None)
        yield cid, record, out


def read_contacts(
    session: Session,
    ring: KeyRing,
    contact_ids: Sequence[str],
    *,
    actor: Actor,
    purpose: str,
    action: str = "contacts.phi_read",
    details: Mapping[str, object] | None = None,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> list[ContactView]:
    """Several contacts' records (without facts) with ONE audit entry naming them all,
    for previews of a segment. Shredded or missing contacts are left out."""
    if not purpose.strip():
        raise PurposeRequired("a purpose is required to read PHI (45 CFR 164.502(b))")
    ids = list(dict.fromkeys(contact_ids))
    basis = _basis(session, principal, actor, ids, clock)
    if basis:
        details = {**(details or {}), **basis}
    audit.append(
        session,
        actor=actor,
        action=action,
        subjects=ids,
        purpose=purpose.strip(),
        details=details,
        clock=clock,
    )
    views: dict[str, ContactView] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        rows = session.execute(
            select(
                Contact.id,
                Contact.source,
                Contact.created_at,
                Contact.updated_at,
                Contact.phi,
                ContactKey.dek_version,
                ContactKey.kek_version,
                ContactKey.wrapped_dek,
            )
            .join(ContactKey, ContactKey.contact_id == Contact.id)
            .where(Contact.id.in_(chunk))
        )
        for cid, source, created, updated, sealed, dek_v, kek_v, wrapped in rows:
            record = orjson.loads(
                open_contact(ring, cid, bytes(sealed), dek_v, kek_v, bytes(wrapped))
            )
            views[cid] = ContactView(
                cid, source, created.isoformat(), updated.isoformat(), record, []
            )
    return [views[c] for c in ids if c in views]


@dataclass(frozen=True)
class OpenedContact:
    """A contact decrypted for one job, with its data key's cipher so the job can seal
    what it derives (an archived message) under the same key."""

    id: str
    record: dict[str, Any]
    facts: list[dict[str, Any]]
    dek_version: int
    cipher: AESGCM
    # With `with_keys`: the contact's encryption keys, oldest first.
    keys: list[OpenedKey] = field(default_factory=list)


@dataclass(frozen=True)
class OpenedKey:
    """A contact's S/MIME certificate (DER) or OpenPGP certificate (binary), opened."""

    kind: str
    fingerprint: str
    not_after: datetime | None
    material: bytes


def read_for_job(
    session: Session,
    ring: KeyRing,
    contact_ids: list[str],
    *,
    actor: Actor,
    purpose: str,
    action: str,
    with_facts: bool,
    with_keys: bool = False,
    details: dict[str, object] | None = None,
    clock: Clock = system_clock,
) -> dict[str, OpenedContact]:
    """A worker batch's read: one audited bulk access naming every contact, then the
    records (and facts, and encryption keys, if asked) with each contact's cipher.
    Shredded or missing contacts are absent from the result."""
    if not contact_ids:
        return {}
    if with_keys:  # the entry says the contacts' encryption keys were opened too
        details = {**(details or {}), "encryption_keys": True}
    record_bulk_access(
        session,
        actor=actor,
        action=action,
        purpose=purpose,
        subjects=contact_ids,
        details=details,
        clock=clock,
    )
    opened: dict[str, OpenedContact] = {}
    rows = session.execute(
        select(
            Contact.id,
            Contact.phi,
            ContactKey.dek_version,
            ContactKey.kek_version,
            ContactKey.wrapped_dek,
        )
        .join(ContactKey, ContactKey.contact_id == Contact.id)
        .where(among(session, Contact.id, contact_ids))
    )
    for cid, sealed, dek_version, kek_version, wrapped in rows:
        cipher = AESGCM(unwrap_dek(ring, bytes(wrapped), kek_version, cid))
        record = orjson.loads(open_contact_with(cipher, cid, bytes(sealed), dek_version))
        opened[cid] = OpenedContact(cid, record, [], dek_version, cipher)
    if with_facts and opened:
        for fid, cid, payload in session.execute(
            select(ClinicalFact.id, ClinicalFact.contact_id, ClinicalFact.payload).where(
                among(session, ClinicalFact.contact_id, list(opened))
            )
        ):
            c = opened[cid]
            c.facts.append(orjson.loads(open_fact(c.cipher, fid, c.dek_version, bytes(payload))))
    if with_keys and opened:
        _open_keys(session, opened)
    return opened


def open_message_data(
    session: Session, opened: Mapping[str, OpenedContact], rows: Sequence[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """The sealed data of one-off messages, (outbox id, contact id) rows, whose contacts
    the job opened with `read_for_job`: that call's audit entry (which names the contacts
    and says `message_data`) is this read's, so there is no way here without it. One
    query for the batch; rows of contacts not opened (shredded) stay closed."""
    contact_of = {oid: cid for oid, cid in rows if cid in opened}
    found: dict[str, dict[str, Any]] = {}
    ids = list(contact_of)
    for start in range(0, len(ids), 1000):
        for oid, dek_version, body in session.execute(
            select(MessageData.outbox_id, MessageData.dek_version, MessageData.body).where(
                among(session, MessageData.outbox_id, ids[start : start + 1000])
            )
        ):
            contact = opened[contact_of[oid]]
            found[oid] = open_data(contact.cipher, oid, dek_version, bytes(body))
    return found


def _open_keys(session: Session, opened: dict[str, OpenedContact]) -> None:
    rows = session.execute(
        select(
            ContactEncryptionKey.id,
            ContactEncryptionKey.contact_id,
            ContactEncryptionKey.kind,
            ContactEncryptionKey.fingerprint,
            ContactEncryptionKey.not_after,
            ContactEncryptionKey.dek_version,
            ContactEncryptionKey.material,
        )
        .where(among(session, ContactEncryptionKey.contact_id, list(opened)))
        .order_by(ContactEncryptionKey.added_at, ContactEncryptionKey.id)
    )
    for kid, cid, kind, fingerprint, not_after, dek_version, sealed in rows:
        c = opened[cid]
        material = open_sealed(c.cipher, bytes(sealed), material_aad(kid, dek_version))
        c.keys.append(OpenedKey(kind, fingerprint, not_after, material))
