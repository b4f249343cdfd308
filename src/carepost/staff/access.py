"""May this principal read these contacts' decrypted PHI? The check `contacts.phi` (the
one door) makes before it audits and decrypts anything.

Bases, in order: the `phi:read` permission; a live break-glass grant of the user (the
audit entry then names the grant); `phi:read_recipients` when every contact asked for
was a recipient of a campaign the user (or one of the user's API keys) created. Anything
else is PermissionDenied naming `phi:read`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.campaigns.models import Campaign
from carepost.delivery.models import OutboxMessage
from carepost.staff.breakglass import live_grant
from carepost.staff.models import StaffApiKey
from carepost.staff.principal import PermissionDenied, Principal


def phi_basis(
    session: Session, principal: Principal, contact_ids: Sequence[str], at: datetime
) -> dict[str, object]:
    """What the read rests on, for the audit entry's details; raises PermissionDenied."""
    if principal.has("phi:read"):
        return {} if principal.kind == "system" else {"basis": "phi:read"}
    if principal.kind == "user" and principal.user_id is not None:
        grant = live_grant(session, principal.user_id, at)
        if grant is not None:
            return {"basis": "break_glass", "break_glass": grant.id}
    if principal.has("phi:read_recipients") and principal.user_id is not None:
        wanted = set(contact_ids)
        if wanted and wanted <= recipients_of(session, principal.user_id, wanted):
            return {"basis": "phi:read_recipients"}
    raise PermissionDenied("phi:read", principal.actor.id)


def recipients_of(session: Session, user_id: str, contact_ids: set[str]) -> set[str]:
    """Which of these contacts were sent to by a campaign this user or its keys made."""
    actors = [f"user:{user_id}"] + [
        f"apikey:{k}"
        for k in session.scalars(select(StaffApiKey.id).where(StaffApiKey.user_id == user_id))
    ]
    found: set[str] = set()
    ids = sorted(contact_ids)
    for start in range(0, len(ids), 1000):
        found.update(
            session.scalars(
                select(OutboxMessage.contact_id)
                .join(Campaign, Campaign.id == OutboxMessage.campaign_id)
                .where(
                    Campaign.actor.in_(actors),
                    OutboxMessage.contact_id.in_(ids[start : start + 1000]),
                )
                .distinct()
            )
        )
    return found
