"""Contact use cases that show no PHI, and the bookkeeping every import shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import ClinicalFact, Contact, ImportRun
from carepost.contacts.store import Counts, new_id


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
    session: Session, *, limit: int = 100, after: str | None = None
) -> list[ContactSummary]:
    """Keyset page ordered by (created_at, id): ids, times and counts only, never PHI."""
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
