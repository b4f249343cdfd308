"""Contacts' time zones (IANA names, not PHI): where a journey's "09:00" falls for each
contact. A contact without its own zone takes the account's `journeys.default_time_zone`
(default UTC). Setting zones is audited in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from carepost.account import settings as account
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts.models import Contact


class ZoneError(ValueError):
    pass


def zone(name: str) -> tzinfo:
    problem = account.zone_problem(name)
    if problem:
        raise ZoneError(f"time_zone: {problem}")
    return ZoneInfo(name)


def do_set_time_zone(
    session: Session,
    contact_ids: Sequence[str],
    name: str | None,
    *,
    actor: Actor,
    clock: Clock = system_clock,
) -> int:
    """Set (or with None clear) the time zone of these contacts; all exist or none change."""
    if name is not None:
        zone(name)
    ids = list(dict.fromkeys(contact_ids))
    found = set(session.scalars(select(Contact.id).where(Contact.id.in_(ids))))
    missing = [c for c in ids if c not in found]
    if missing:
        raise ZoneError(f"no contact {missing[0]!r}")
    for start in range(0, len(ids), 1000):
        session.execute(
            update(Contact)
            .where(Contact.id.in_(ids[start : start + 1000]))
            .values(time_zone=name)
            .execution_options(synchronize_session=False)
        )
    audit.append(
        session,
        actor=actor,
        action="contacts.time_zone_set",
        subjects=ids,
        details={"time_zone": name},
        clock=clock,
    )
    return len(ids)


def zones_of(session: Session, contact_ids: Sequence[str]) -> dict[str, tzinfo]:
    """Each contact's zone (its own, else the account default); one query per 1000."""
    default = ZoneInfo(account.get_str(session, account.DEFAULT_TIME_ZONE))
    cache: dict[str, tzinfo] = {}
    out: dict[str, tzinfo] = {}
    ids = list(dict.fromkeys(contact_ids))
    for start in range(0, len(ids), 1000):
        for cid, name in session.execute(
            select(Contact.id, Contact.time_zone).where(
                Contact.id.in_(ids[start : start + 1000]), Contact.time_zone.is_not(None)
            )
        ):
            if name is None:
                continue
            if name not in cache:
                # A stored name was checked when it was set; one removed from the system's
                # zone data since then falls back to the default rather than failing a batch.
                cache[name] = default if account.zone_problem(name) else ZoneInfo(name)
            out[cid] = cache[name]
    for cid in ids:
        out.setdefault(cid, default)
    return out
