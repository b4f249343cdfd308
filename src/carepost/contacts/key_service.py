"""A contact's encryption keys for end-to-end mail: add (validated, sealed), list (no
PHI: kinds, fingerprints, dates), remove. Services never commit; each change writes its
audit entry (`contacts.key_added`, `contacts.key_removed`) in the caller's transaction.

Reading the sealed material for sending is not here: it goes through the audited door,
`contacts.phi.read_for_job(..., with_keys=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, isoformat_utc, system_clock
from carepost.contacts.models import Contact, ContactEncryptionKey, ContactLookup
from carepost.contacts.recipient_keys import KeyRejected, ParsedKey, parse_key
from carepost.contacts.store import ContactWriter, new_id
from carepost.crypto.blind_index import blind_index
from carepost.crypto.envelope import aad, seal
from carepost.crypto.keyring import KeyRing


class KeyNotFound(LookupError):
    pass


def material_aad(key_id: str, dek_version: int) -> bytes:
    return aad("contact_encryption_keys", "material", key_id, dek_version)


@dataclass(frozen=True)
class KeyListing:
    id: str
    contact_id: str
    kind: str
    fingerprint: str
    not_after: datetime | None
    added_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "contact_id": self.contact_id,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "not_after": isoformat_utc(self.not_after) if self.not_after else None,
            "added_at": isoformat_utc(self.added_at),
        }


def _require_contact(session: Session, contact_id: str) -> None:
    stmt = select(Contact.id).where(Contact.id == contact_id)
    if session.get_bind().dialect.name == "postgresql":
        # Serializes with a crypto-shredding of the same contact.
        stmt = stmt.with_for_update()
    if session.execute(stmt).scalar_one_or_none() is None:
        raise KeyNotFound(f"no contact with id {contact_id}")


def add_key(
    session: Session,
    ring: KeyRing,
    *,
    contact_id: str,
    kind: str,
    data: bytes,
    where: str,
    actor: Actor,
    clock: Clock = system_clock,
) -> KeyListing:
    """Validate the key (KeyRejected names `where` and the problem), check that it names
    one of the contact's addresses (by blind index: nothing is decrypted), seal it under
    the contact's data key and audit the addition."""
    now = clock()
    parsed = parse_key(kind, data, at=now, where=where)
    _require_contact(session, contact_id)
    _check_addresses(session, ring, contact_id, parsed, where)
    duplicate = session.execute(
        select(ContactEncryptionKey.id).where(
            ContactEncryptionKey.contact_id == contact_id,
            ContactEncryptionKey.kind == parsed.kind,
            ContactEncryptionKey.fingerprint == parsed.fingerprint,
        )
    ).scalar_one_or_none()
    if duplicate is not None:
        raise KeyRejected(f"{where}: this key is already on file for the contact ({duplicate})")
    try:
        dek_version, cipher = ContactWriter(session, ring, now=now, source="keys").cipher(
            contact_id
        )
    except KeyError:
        raise KeyNotFound(f"contact {contact_id} has no data key (crypto-shredded)") from None
    key_id = new_id()
    session.add(
        ContactEncryptionKey(
            id=key_id,
            contact_id=contact_id,
            kind=parsed.kind,
            fingerprint=parsed.fingerprint,
            not_after=parsed.not_after,
            added_at=now,
            actor=actor.id,
            dek_version=dek_version,
            material=seal(cipher, parsed.material, material_aad(key_id, dek_version)),
        )
    )
    audit.append(
        session,
        actor=actor,
        action="contacts.key_added",
        subjects=[contact_id, key_id],
        details={
            "kind": parsed.kind,
            "fingerprint": parsed.fingerprint,
            "not_after": isoformat_utc(parsed.not_after) if parsed.not_after else None,
        },
        clock=clock,
    )
    return KeyListing(key_id, contact_id, parsed.kind, parsed.fingerprint, parsed.not_after, now)


def _check_addresses(
    session: Session, ring: KeyRing, contact_id: str, parsed: ParsedKey, where: str
) -> None:
    theirs = {blind_index(ring, "email", e) for e in parsed.emails}
    ours = set(
        session.execute(
            select(ContactLookup.value_bi).where(
                ContactLookup.contact_id == contact_id, ContactLookup.kind == "email"
            )
        ).scalars()
    )
    if not theirs & ours:
        raise KeyRejected(f"{where}: the key names none of the contact's email addresses")


def list_keys(session: Session, contact_id: str) -> list[KeyListing]:
    if session.get(Contact, contact_id) is None:
        raise KeyNotFound(f"no contact with id {contact_id}")
    rows = session.execute(
        select(ContactEncryptionKey)
        .where(ContactEncryptionKey.contact_id == contact_id)
        .order_by(ContactEncryptionKey.added_at, ContactEncryptionKey.id)
    ).scalars()
    return [
        KeyListing(r.id, r.contact_id, r.kind, r.fingerprint, r.not_after, r.added_at) for r in rows
    ]


def remove_key(
    session: Session,
    *,
    contact_id: str,
    key: str,
    actor: Actor,
    clock: Clock = system_clock,
) -> KeyListing:
    """Remove one key, named by its id or its fingerprint."""
    _require_contact(session, contact_id)
    row = session.execute(
        select(ContactEncryptionKey).where(
            ContactEncryptionKey.contact_id == contact_id,
            (ContactEncryptionKey.id == key) | (ContactEncryptionKey.fingerprint == key.lower()),
        )
    ).scalar_one_or_none()
    if row is None:
        raise KeyNotFound(f"contact {contact_id} has no key {key}")
    listing = KeyListing(row.id, contact_id, row.kind, row.fingerprint, row.not_after, row.added_at)
    session.execute(delete(ContactEncryptionKey).where(ContactEncryptionKey.id == row.id))
    audit.append(
        session,
        actor=actor,
        action="contacts.key_removed",
        subjects=[contact_id, row.id],
        details={"kind": row.kind, "fingerprint": row.fingerprint},
        clock=clock,
    )
    return listing
