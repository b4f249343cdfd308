"""Break-glass: emergency PHI access for a signed-in user who lacks `phi:read`.

The user gives a reason and a fresh TOTP code (a step never used before, like at login)
and gets `phi:read` for a limited time (default 60 minutes, the setting
`staff_break_glass_minutes`, which is also the most a request may ask for). The grant is
audited as `staff.break_glass_granted` with the reason as its purpose, every PHI read
under it carries `break_glass: <grant id>` in its audit details, and an alert row (kind
`break_glass`) waits for compliance (`breakglass:review`) to acknowledge it. The grant
ends by itself; the user or compliance can end it sooner. API keys cannot break glass.
Services never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.clock import Clock, system_clock
from carepost.contacts.store import new_id
from carepost.crypto.keyring import KeyRing
from carepost.staff import mfa
from carepost.staff.models import StaffAlert, StaffBreakGlass, StaffSession, StaffUser
from carepost.staff.principal import PermissionDenied, Principal

DEFAULT_MINUTES = 60
MIN_REASON = 10
WRONG_CODES_ALLOWED = 5  # per session: then the session ends (a stolen session cannot grind)


class BreakGlassRefused(ValueError):
    """Why a request was refused (never echoing the reason or the code)."""


@dataclass(frozen=True)
class Grant:
    id: str
    user_id: str
    granted_at: datetime
    expires_at: datetime


def live_grant(session: Session, user_id: str, at: datetime) -> StaffBreakGlass | None:
    """The user's grant in force at `at`, if any."""
    return session.scalar(
        select(StaffBreakGlass)
        .where(
            StaffBreakGlass.user_id == user_id,
            StaffBreakGlass.granted_at <= at,
            StaffBreakGlass.expires_at > at,
            StaffBreakGlass.ended_at.is_(None),
        )
        .order_by(StaffBreakGlass.expires_at.desc())
        .limit(1)
    )


def do_request_break_glass(
    session: Session,
    ring: KeyRing,
    principal: Principal,
    *,
    reason: str,
    code: str,
    minutes: int | None = None,
    max_minutes: int = DEFAULT_MINUTES,
    web_session: StaffSession | None = None,
    clock: Clock = system_clock,
) -> Grant:
    """Grant emergency PHI access, or raise BreakGlassRefused / PermissionDenied."""
    if principal.kind != "user" or principal.user_id is None:
        raise PermissionDenied("breakglass:request", "only a signed-in user can break glass")
    principal.require("breakglass:request")
    at = clock()
    if principal.has("phi:read"):
        raise BreakGlassRefused("you already have phi:read; break-glass is not needed")
    text = " ".join(reason.split())
    if len(text) < MIN_REASON:
        raise BreakGlassRefused(f"reason: say why, in at least {MIN_REASON} characters")
    length = max_minutes if minutes is None else minutes
    if not 1 <= length <= max_minutes:
        raise BreakGlassRefused(f"minutes: 1 to {max_minutes}")
    if live_grant(session, principal.user_id, at) is not None:
        raise BreakGlassRefused("you already have a live break-glass grant")
    user = session.get(StaffUser, principal.user_id)
    if user is None or user.status != "active":
        raise PermissionDenied("breakglass:request", "the user is disabled")
    if not mfa.check_code(session, ring, user.id, code, at):
        audit.append(
            session,
            actor=principal.actor,
            action="staff.break_glass_refused",
            details={"user": user.id, "reason": "bad_totp"},
            clock=lambda: at,
        )
        if web_session is not None:
            web_session.mfa_failures += 1
            if web_session.mfa_failures >= WRONG_CODES_ALLOWED:
                web_session.ended_at, web_session.end_reason = at, "mfa_failures"
        session.flush()
        raise BreakGlassRefused("the code is not right (or was already used)")
    grant = StaffBreakGlass(
        id=new_id(),
        user_id=user.id,
        reason=text,
        granted_at=at,
        expires_at=at + timedelta(minutes=length),
    )
    session.add(grant)
    session.add(
        StaffAlert(id=new_id(), kind="break_glass", ref=grant.id, user_id=user.id, created_at=at)
    )
    audit.append(
        session,
        actor=principal.actor,
        action="staff.break_glass_granted",
        purpose=text,
        details={
            "break_glass": grant.id,
            "user": user.id,
            "minutes": length,
            "expires_at": grant.expires_at.isoformat(),
        },
        clock=lambda: at,
    )
    session.flush()
    return Grant(grant.id, user.id, at, grant.expires_at)


def do_end_break_glass(
    session: Session, principal: Principal, grant_id: str, *, clock: Clock = system_clock
) -> bool:
    """End a grant early: its own user, or a reviewer. False if it was already over."""
    at = clock()
    grant = session.get(StaffBreakGlass, grant_id)
    if grant is None:
        raise BreakGlassRefused(f"no break-glass grant {grant_id!r}")
    if grant.user_id != principal.user_id:
        principal.require("breakglass:review")
    if grant.ended_at is not None or grant.expires_at <= at:
        return False
    grant.ended_at = at
    audit.append(
        session,
        actor=principal.actor,
        action="staff.break_glass_ended",
        details={"break_glass": grant.id, "user": grant.user_id},
        clock=lambda: at,
    )
    session.flush()
    return True


@dataclass(frozen=True)
class AlertInfo:
    id: str
    kind: str
    grant_id: str
    user_id: str
    user_email: str
    reason: str
    created_at: datetime
    expires_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "grant": self.grant_id,
            "user": self.user_id,
            "user_email": self.user_email,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
        }


def list_alerts(
    session: Session, principal: Principal, *, include_acknowledged: bool = False
) -> list[AlertInfo]:
    principal.require("breakglass:review")
    query = (
        select(StaffAlert, StaffBreakGlass, StaffUser.email)
        .join(StaffBreakGlass, StaffBreakGlass.id == StaffAlert.ref)
        .join(StaffUser, StaffUser.id == StaffAlert.user_id)
        .where(StaffAlert.kind == "break_glass")
        .order_by(StaffAlert.created_at, StaffAlert.id)
    )
    if not include_acknowledged:
        query = query.where(StaffAlert.acknowledged_at.is_(None))
    return [
        AlertInfo(
            a.id,
            a.kind,
            g.id,
            a.user_id,
            email,
            g.reason,
            a.created_at,
            g.expires_at,
            a.acknowledged_at,
            a.acknowledged_by,
        )
        for a, g, email in session.execute(query)
    ]


def do_acknowledge_alert(
    session: Session,
    principal: Principal,
    alert_id: str,
    *,
    note: str = "",
    clock: Clock = system_clock,
) -> bool:
    """Compliance has looked at the alert; False if it already had been."""
    principal.require("breakglass:review")
    at = clock()
    alert = session.get(StaffAlert, alert_id)
    if alert is None:
        raise BreakGlassRefused(f"no alert {alert_id!r}")
    if alert.acknowledged_at is not None:
        return False
    alert.acknowledged_at, alert.acknowledged_by = at, principal.actor.id
    alert.note = note.strip()[:2000] or None
    audit.append(
        session,
        actor=principal.actor,
        action="staff.alert_acknowledged",
        details={"alert": alert.id, "kind": alert.kind, "ref": alert.ref},
        clock=lambda: at,
    )
    session.flush()
    return True
