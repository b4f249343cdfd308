"""Key operations on stored data: rotation (re-wrap data keys, never rewrite plaintext)
and crypto-shredding (destroy one contact's data key)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import ContactKey
from carepost.crypto.envelope import unwrap_dek, wrap_dek
from carepost.crypto.keyring import KeyRing


@dataclass(frozen=True)
class RotationResult:
    to_version: int
    rewrapped: int
    from_versions: dict[int, int]


def kek_usage(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(ContactKey.kek_version, func.count()).group_by(ContactKey.kek_version)
    )
    return {int(v): int(n) for v, n in rows}


def rewrap_data_keys(
    session: Session, ring: KeyRing, *, actor: Actor, batch: int = 5000, clock: Clock = system_clock
) -> RotationResult:
    """Re-wrap every data key not under the ring's primary KEK. The caller has already
    saved `ring` (with the old versions still in it) to the key file, so a crash at any
    point leaves every key readable; running this again finishes the job."""
    before = kek_usage(session)
    target = ring.primary_version
    done = 0
    while True:
        rows = session.execute(
            select(ContactKey.contact_id, ContactKey.kek_version, ContactKey.wrapped_dek)
            .where(ContactKey.kek_version != target)
            .order_by(ContactKey.contact_id)
            .limit(batch)
        ).all()
        if not rows:
            break
        updates = []
        for cid, version, wrapped in rows:
            dek = unwrap_dek(ring, bytes(wrapped), version, cid)
            new_version, new_wrapped = wrap_dek(ring, dek, cid)
            updates.append(
                {"contact_id": cid, "kek_version": new_version, "wrapped_dek": new_wrapped}
            )
        session.execute(update(ContactKey), updates)
        done += len(updates)
    from_versions = {v: n for v, n in before.items() if v != target}
    audit.append(
        session,
        actor=actor,
        action="keys.rotate",
        subjects=[f"kek:{target}"],
        purpose="key rotation",
        details={
            "to_version": target,
            "rewrapped": done,
            "from_versions": {str(k): v for k, v in from_versions.items()},
        },
        clock=clock,
    )
    return RotationResult(target, done, from_versions)


def shred_contact(
    session: Session, contact_id: str, *, actor: Actor, reason: str, clock: Clock = system_clock
) -> bool:
    """Destroy the contact's data key: every copy of its PHI, backups included, becomes
    unreadable. The rows stay (retention will delete them on its own schedule)."""
    result = session.execute(delete(ContactKey).where(ContactKey.contact_id == contact_id))
    destroyed = bool(getattr(result, "rowcount", 0))
    if destroyed:
        audit.append(
            session,
            actor=actor,
            action="keys.shred_contact",
            subjects=[contact_id],
            purpose=reason,
            clock=clock,
        )
    return destroyed
