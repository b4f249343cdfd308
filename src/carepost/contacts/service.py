"""Contact use cases that show no PHI, and the bookkeeping every import shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import ClinicalFact, Contact, ContactKey, ContactLookup, ImportRun
from carepost.contacts.store import Counts, new_id
from carepost.crypto.service import shred_contact
from carepost.staff.principal import Principal


@dataclass(frozen=True)
class ContactSummary:
    id: str
    source: str
    created_at: datetime
    updated_at: datetime
    facts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "facts": self.facts,
        }


def list_contacts(
    session: Session,
    *,
    limit: int = 100,
    after: str | None = None,
    principal: Principal | None = None,
) -> list[ContactSummary]:
    """Keyset page ordered by (created_at, id): ids, times and counts only, never PHI."""
    if principal is not None:
        principal.require("contacts:read")
    query = select(Contact.id, Contact.source, Contact.created_at, Contact.updated_at)
    if after is not None:
        anchor = session.get(Contact, after)
        if anchor is not None:
            query = query.where(
                (Contact.created_at > anchor.created_at)
                | ((Contact.created_at == anchor.created_at) & (Contact.id > anchor.id))
            )
    rows = session.execute(query.order_by(Contact.created_at, Contact.id).limit(limit)).all()
    ids = [r.id for r in rows]
    counts: dict[str, dict[str, int]] = {}
    if ids:
        for cid, kind, n in session.execute(
            select(ClinicalFact.contact_id, ClinicalFact.kind, func.count())
            .where(ClinicalFact.contact_id.in_(ids))
            .group_by(ClinicalFact.contact_id, ClinicalFact.kind)
        ):
            counts.setdefault(cid, {})[kind] = n
    return [
        ContactSummary(r.id, r.source, r.created_at, r.updated_at, counts.get(r.id, {}))
        for r in rows
    ]


class NoSuchContact(LookupError):
    pass


def delete_contact(
    session: Session,
    contact_id: str,
    *,
    actor: Actor,
    reason: str,
    principal: Principal | None = None,
    clock: Clock = system_clock,
) -> bool:
    """Erase a contact: its data key is destroyed (crypto-shredding: every copy of its
    PHI, backups and archive included, becomes unreadable; keys.shred_contact audited)
    and its blind-index lookups are removed, so no address or identifier finds it again
    and a later import of the same person makes a new contact. The id's rows stay for
    the evidence that refers to them; retention removes them on its schedule. False when
    it was erased already."""
    if principal is not None:
        principal.require("contacts:write")
    if session.get(Contact, contact_id) is None:
        raise NoSuchContact(f"no contact with id {contact_id}")
    session.execute(delete(ContactLookup).where(ContactLookup.contact_id == contact_id))
    return shred_contact(session, contact_id, actor=actor, reason=reason, clock=clock)


def require_live(session: Session, contact_id: str) -> None:
    """Raise unless the contact exists and is not erased: what an API call on one of
    its sub-resources (consents, authorizations) checks first, so an erased contact
    answers 410 everywhere, not only where its PHI is read."""
    from carepost.contacts.phi import ContactNotFound, ContactShredded

    if session.get(Contact, contact_id) is None:
        raise ContactNotFound(f"no contact with id {contact_id}")
    if session.get(ContactKey, contact_id) is None:
        raise ContactShredded(f"contact {contact_id} was crypto-shredded")


def count_contacts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)) or 0


def record_import(
    session: Session,
    *,
    kind: str,
    counts: Counts,
    started_at: datetime,
    actor: Actor,
    inputs: Sequence[str],
    ignored: dict[str, int] | None = None,
    clock: Clock = system_clock,
) -> str:
    """The import's run row and audit entry, in the import's own transaction.

    `inputs` are SHA-256 digests of the files read, never their names: export tools name
    files after patients (Synthea does), and a digest still proves which file went in.
    """
    run_id = new_id()
    summary = orjson.dumps(
        {"counts": counts.by_type, "ignored": ignored or {}}, option=orjson.OPT_SORT_KEYS
    ).decode()
    session.add(
        ImportRun(
            id=run_id,
            kind=kind,
            actor=actor.id,
            started_at=started_at,
            finished_at=clock(),
            summary=summary,
        )
    )
    audit.append(
        session,
        actor=actor,
        action=f"contacts.import_{kind}",
        subjects=[run_id],
        purpose="import",
        details={"counts": counts.by_type, "ignored": ignored or {}, "inputs": list(inputs)},
        clock=clock,
    )
    return run_id
