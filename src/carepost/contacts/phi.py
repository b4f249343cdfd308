"""The one door to decrypted PHI. Every read writes an audit entry (who, what, when,
where, why) in the caller's transaction, so an unaudited read cannot commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import ClinicalFact, Contact, ContactKey
from carepost.contacts.store import contact_aad, open_contact, open_fact
from carepost.crypto.envelope import open_sealed, unwrap_dek
from carepost.crypto.keyring import KeyRing


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
    clock: Clock = system_clock,
) -> ContactView:
    if not purpose.strip():
        raise PurposeRequired("a purpose is required to read PHI (45 CFR 164.502(b))")
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


@dataclass(frozen=True)
class OpenedContact:
    """A contact decrypted for one job, with its data key's cipher so the job can seal
    what it derives (an archived message) under the same key."""

    id: str
    record: dict[str, Any]
    facts: list[dict[str, Any]]
    dek_version: int
    cipher: AESGCM


def read_for_job(
    session: Session,
    ring: KeyRing,
    contact_ids: list[str],
    *,
    actor: Actor,
    purpose: str,
    action: str,
    with_facts: bool,
    details: dict[str, object] | None = None,
    clock: Clock = system_clock,
) -> dict[str, OpenedContact]:
    """The bulk form of the door, for a worker's batch: ONE audit entry naming every
    contact and the purpose, in the caller's transaction, before anything is decrypted.
    Shredded or missing contacts are absent from the result."""
    if not purpose.strip():
        raise PurposeRequired("a purpose is required to read PHI (45 CFR 164.502(b))")
    if not contact_ids:
        return {}
    audit.append(
        session,
        actor=actor,
        action=action,
        subjects=contact_ids,
        purpose=purpose.strip(),
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
        .where(Contact.id.in_(contact_ids))
    )
    for cid, sealed, dek_version, kek_version, wrapped in rows:
        cipher = AESGCM(unwrap_dek(ring, bytes(wrapped), kek_version, cid))
        record = orjson.loads(open_sealed(cipher, bytes(sealed), contact_aad(cid, dek_version)))
        opened[cid] = OpenedContact(cid, record, [], dek_version, cipher)
    if with_facts and opened:
        for fid, cid, payload in session.execute(
            select(ClinicalFact.id, ClinicalFact.contact_id, ClinicalFact.payload).where(
                ClinicalFact.contact_id.in_(list(opened))
            )
        ):
            c = opened[cid]
            c.facts.append(orjson.loads(open_fact(c.cipher, fid, c.dek_version, bytes(payload))))
    return opened
