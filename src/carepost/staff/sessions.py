"""Staff sessions: 128-bit random tokens, stored as their SHA-256 only.

A token lives in one `__Host-` cookie. Stage "mfa" is a login that passed the password
and waits for the second factor (5 minutes, 5 wrong codes); stage "active" is a signed-in
session, ended by logout, by an idle timeout (default 15 min) or an absolute one (default
12 h), and ended for all of a user's sessions when the user is disabled or a login factor
changes. A new token is made at every login step, so a token planted before login is
worth nothing after it (session fixation). Services never commit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from carepost.config import Settings
from carepost.crypto.keyring import KeyRing
from carepost.staff.models import StaffSession

TOKEN_BYTES = 16  # 128 bits
CSRF_PURPOSE = "carepost staff csrf v1"


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=15)
    absolute: timedelta = timedelta(hours=12)
    mfa_pending: timedelta = timedelta(minutes=5)
    mfa_tries: int = 5


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def csrf_for(ring: KeyRing, session_id: str) -> str:
    """The synchronizer token of a session: an HMAC of its stored id, so it needs no
    storage and changes with every new session."""
    return ring.hmac_hex(CSRF_PURPOSE, session_id.encode("ascii"))


def csrf_ok(ring: KeyRing, session_id: str, sent: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent, csrf_for(ring, session_id))


def start(
    session: Session,
    user_id: str,
    *,
    stage: str,
    network: str,
    at: datetime,
    policy: SessionPolicy,
) -> str:
    """A new session; returns the token (the only time it exists outside the cookie)."""
    token = new_token()
    lifetime = policy.mfa_pending if stage == "mfa" else policy.absolute
    session.add(
        StaffSession(
            id=token_id(token),
            user_id=user_id,
            stage=stage,
            created_at=at,
            last_seen_at=at,
            expires_at=at + lifetime,
            network=network,
            mfa_failures=0,
        )
    )
    session.flush()
    return token


def expiry_reason(row: StaffSession, at: datetime, policy: SessionPolicy) -> str | None:
    """Why the session is over at `at`, or None while it is live (pure)."""
    if row.ended_at is not None:
        return row.end_reason or "ended"
    if at >= row.expires_at:
        return "absolute_timeout" if row.stage == "active" else "login_timeout"
    if row.stage == "active" and at - row.last_seen_at >= policy.idle:
        return "idle_timeout"
    return None


def resolve(
    session: Session, token: str, *, stage: str, at: datetime, policy: SessionPolicy
) -> StaffSession | None:
    """The live session of this token and stage, touched (its idle clock restarts), or
    None. A session found expired is marked ended with the reason."""
    if not token:
        return None
    row = session.get(StaffSession, token_id(token), with_for_update=True)
    if row is None or row.stage != stage:
        return None
    reason = expiry_reason(row, at, policy)
    if reason is not None:
        if row.ended_at is None:
            row.ended_at, row.end_reason = at, reason
            session.flush()
        return None
    row.last_seen_at = at
    session.flush()
    return row


def end(session: Session, row: StaffSession, reason: str, at: datetime) -> None:
    if row.ended_at is None:
        row.ended_at, row.end_reason = at, reason
        session.flush()


def end_all(session: Session, user_id: str, reason: str, at: datetime) -> int:
    """End every open session of the user (both stages); returns how many."""
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.user_id == user_id, StaffSession.ended_at.is_(None))
        .values(ended_at=at, end_reason=reason)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def open_sessions(session: Session, user_id: str, at: datetime, policy: SessionPolicy) -> int:
    rows = session.scalars(
        select(StaffSession).where(
            StaffSession.user_id == user_id,
            StaffSession.ended_at.is_(None),
            StaffSession.stage == "active",
        )
    )
    return sum(1 for r in rows if expiry_reason(r, at, policy) is None)


def policy_of(settings: Settings) -> SessionPolicy:
    return SessionPolicy(
        idle=timedelta(minutes=settings.staff_session_idle_minutes),
        absolute=timedelta(hours=settings.staff_session_absolute_hours),
    )
