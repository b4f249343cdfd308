"""Signing in: the password step, then the second factor, throttled (staff/throttle.py)
and audited, saying nothing about which accounts exist.

The password step is two short transactions around the argon2id check, so no database
lock is held while it runs (on SQLite a write transaction holds the database's only
write lock): the first checks the throttle and counts the attempt as a failure before
the password is known, so parallel guesses are all counted; the second records the
outcome. `password_step` is that unit of work; the web handler calls it. An unknown
address, a disabled account, a service account and a wrong password all cost one
argon2id verification (passwords.verify uses a dummy hash when there is no account) and
all get the same answer.

Every failure is audited (`staff.login_failed`, with the stage and the reason; for an
unknown address the actor is `anonymous` and the address is not recorded), and so is
every login (`staff.login`, with the factor used). Services never commit.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.crypto.keyring import KeyRing
from carepost.db import transaction
from carepost.staff import mfa, passwords, sessions, throttle, totp
from carepost.staff.models import StaffLoginThrottle, StaffMfa, StaffSession, StaffUser
from carepost.staff.sessions import SessionPolicy

ACCOUNT_PURPOSE = "carepost staff login account v1"
DEVICE_PURPOSE = "carepost staff device v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- keys and device cookies ------------------------------------------------------------
def account_key(ring: KeyRing, email: str) -> str:
    """The throttle's name for an address, whether or not an account has it."""
    return ring.hmac_hex(ACCOUNT_PURPOSE, email.strip().lower().encode("utf-8"))[:32]


def new_device_cookie(ring: KeyRing, user_id: str) -> str:
    nonce = secrets.token_hex(8)
    mac = ring.hmac_hex(DEVICE_PURPOSE, f"{user_id}|{nonce}".encode("ascii"))[:32]
    return f"{user_id}.{nonce}.{mac}"


def device_of(ring: KeyRing, cookie: str | None, user_id: str | None) -> str | None:
    """The device id of a valid device cookie for this user, else None."""
    if not cookie or user_id is None:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or parts[0] != user_id or len(parts[1]) != 16:
        return None
    try:
        raw = f"{user_id}|{parts[1]}".encode("ascii")
    except UnicodeEncodeError:
        return None
    expected = ring.hmac_hex(DEVICE_PURPOSE, raw)[:32]
    return parts[1] if hmac.compare_digest(parts[2], expected) else None


# --- throttle storage -------------------------------------------------------------------
def _lock_counters(session: Session, keys: list[str]) -> dict[str, StaffLoginThrottle]:
    """The scopes' rows, created if missing and locked (FOR UPDATE on PostgreSQL; a
    SQLite write transaction already holds the database lock)."""
    dialect = session.connection().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    for key in keys:
        session.execute(
            make(StaffLoginThrottle)
            .values(key=key, failures=0, last_failure_at=_EPOCH)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    rows = session.scalars(
        select(StaffLoginThrottle)
        .where(StaffLoginThrottle.key.in_(keys))
        .order_by(StaffLoginThrottle.key)
        .with_for_update()
    )
    return {row.key: row for row in rows}


def _counter(row: StaffLoginThrottle | None) -> throttle.Counter | None:
    if row is None or row.failures == 0:
        return None
    return throttle.Counter(row.failures, row.last_failure_at)


def _wait(
    session: Session, scope: list[tuple[str, throttle.Rule]], at: datetime
) -> tuple[timedelta, dict[str, StaffLoginThrottle]]:
    rows = _lock_counters(session, [key for key, _ in scope])
    wait = throttle.decide([(rule, _counter(rows.get(key))) for key, rule in scope], at)
    return wait, rows


def _count_failure(
    scope: list[tuple[str, throttle.Rule]], rows: dict[str, StaffLoginThrottle], at: datetime
) -> None:
    for key, rule in scope:
        row = rows[key]
        after = throttle.after_failure(rule, _counter(row), at)
        row.failures, row.last_failure_at = after.failures, after.last_failure_at


def _clear_account(session: Session, scope: list[tuple[str, throttle.Rule]]) -> None:
    keys = [key for key, _ in scope if not key.startswith("n:")]
    session.execute(delete(StaffLoginThrottle).where(StaffLoginThrottle.key.in_(keys)))


def _failed(
    session: Session, user: StaffUser | None, *, network: str, stage: str, reason: str, at: datetime
) -> None:
    actor = Actor(f"user:{user.id}" if user else "anonymous", "web", network)
    audit.append(
        session,
        actor=actor,
        action="staff.login_failed",
        details={"stage": stage, "reason": reason},
        clock=lambda: at,
    )


# --- the password step --------------------------------------------------------------------
@dataclass(frozen=True)
class Begun:
    """What the first transaction found: whom to check and against what."""

    user_id: str | None
    stored_hash: str | None
    wait: timedelta
    counted: tuple[str, ...] = ()  # the throttle keys the attempt was counted against


@dataclass(frozen=True)
class PasswordResult:
    outcome: str  # "mfa" (go on to the second factor) | "failed" | "throttled"
    pending_token: str = ""  # for "mfa": the short-lived token of the pending login
    retry_after: int = 0  # for "throttled": seconds


def begin_password(
    session: Session, ring: KeyRing, email: str, *, network: str, device: str | None, at: datetime
) -> Begun:
    user = session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))
    usable = user is not None and user.status == "active" and user.kind == "person"
    scope = throttle.scopes(
        account_key(ring, email), network, device_of(ring, device, user.id if user else None)
    )
    wait, rows = _wait(session, scope, at)
    if wait > timedelta(0):
        _failed(session, user, network=network, stage="password", reason="throttled", at=at)
        return Begun(None, None, wait)
    # Counted now, before the password is checked, so parallel guesses cannot slip
    # between the check and the count; a right password takes it back.
    _count_failure(scope, rows, at)
    session.flush()
    return Begun(
        user.id if user is not None and usable else None,
        user.password_hash if user is not None and usable else None,
        timedelta(0),
        tuple(key for key, _ in scope),
    )


def finish_password(
    session: Session,
    begun: Begun,
    ok: bool,
    *,
    email: str,
    network: str,
    at: datetime,
    policy: SessionPolicy,
    rehashed: str | None = None,
) -> PasswordResult:
    """Record the outcome; `rehashed` replaces a hash made with older, weaker
    parameters (computed by the caller outside the transaction)."""
    if not ok or begun.user_id is None:
        user = session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))
        _failed(session, user, network=network, stage="password", reason="bad_credentials", at=at)
        return PasswordResult("failed")
    user = session.get(StaffUser, begun.user_id)
    if user is None or user.status != "active":  # disabled between the two transactions
        _failed(session, user, network=network, stage="password", reason="disabled", at=at)
        return PasswordResult("failed")
    if rehashed is not None:
        user.password_hash = rehashed
    session.execute(
        update(StaffLoginThrottle)
        .where(StaffLoginThrottle.key.in_(begun.counted), StaffLoginThrottle.failures > 0)
        .values(failures=StaffLoginThrottle.failures - 1)
    )
    token = sessions.start(session, user.id, stage="mfa", network=network, at=at, policy=policy)
    return PasswordResult("mfa", pending_token=token)


def password_step(
    engine: Engine,
    ring: KeyRing,
    email: str,
    password: str,
    *,
    network: str,
    device: str | None,
    at: datetime,
    policy: SessionPolicy,
) -> PasswordResult:
    """The password step as a unit of work: check and count, verify (no transaction
    open), record."""
    with transaction(engine) as session:
        begun = begin_password(session, ring, email, network=network, device=device, at=at)
    if begun.wait > timedelta(0):
        return PasswordResult("throttled", retry_after=max(1, int(begun.wait.total_seconds())))
    ok = passwords.verify(begun.stored_hash, password)
    rehashed = None
    if ok and begun.stored_hash is not None and passwords.needs_rehash(begun.stored_hash):
        rehashed = passwords.hash_password(password)
    with transaction(engine) as session:
        return finish_password(
            session,
            begun,
            ok,
            email=email,
            network=network,
            at=at,
            policy=policy,
            rehashed=rehashed,
        )


# --- the second factor ----------------------------------------------------------------------
@dataclass(frozen=True)
class MfaResult:
    outcome: str  # "ok" | "wrong" | "restart" (pending login over) | "throttled"
    session_token: str = ""
    device_cookie: str = ""  # a new device cookie for this browser ("" if it has one)
    retry_after: int = 0
    user_id: str = ""


def looks_like_recovery_code(code: str) -> bool:
    return len(totp.normalize_recovery(code)) == 12


def mfa_step(
    session: Session,
    ring: KeyRing,
    pending_token: str,
    code: str,
    *,
    network: str,
    device: str | None,
    at: datetime,
    policy: SessionPolicy,
) -> MfaResult:
    """Check a TOTP code or a recovery code for a pending login; on success the pending
    token is ended and a new session token made (rotation at login)."""
    pending = sessions.resolve(session, pending_token, stage="mfa", at=at, policy=policy)
    if pending is None:
        return MfaResult("restart")
    user = session.get(StaffUser, pending.user_id)
    if user is None or user.status != "active":
        sessions.end(session, pending, "disabled", at)
        return MfaResult("restart")
    device_id = device_of(ring, device, user.id)
    scope = throttle.scopes(account_key(ring, user.email), network, device_id)
    wait, rows = _wait(session, scope, at)
    if wait > timedelta(0):
        _failed(session, user, network=network, stage="mfa", reason="throttled", at=at)
        return MfaResult("throttled", retry_after=max(1, int(wait.total_seconds())))
    method = "recovery_code" if looks_like_recovery_code(code) else "totp"
    if method == "totp":
        first_use = _unconfirmed(session, user.id)
        ok = mfa.check_code(session, ring, user.id, code, at)
    else:
        first_use = False
        ok = mfa.use_recovery_code(session, ring, user.id, code, at)
    if not ok:
        _count_failure(scope, rows, at)
        pending.mfa_failures += 1
        _failed(session, user, network=network, stage="mfa", reason=f"bad_{method}", at=at)
        if pending.mfa_failures >= policy.mfa_tries:
            sessions.end(session, pending, "mfa_failures", at)
            return MfaResult("restart")
        return MfaResult("wrong")
    sessions.end(session, pending, "rotated", at)
    token = sessions.start(session, user.id, stage="active", network=network, at=at, policy=policy)
    _clear_account(session, scope)
    user.last_login_at = at
    actor = Actor(f"user:{user.id}", "web", network)
    if first_use:
        audit.append(
            session,
            actor=actor,
            action="staff.mfa_confirmed",
            details={"user": user.id},
            clock=lambda: at,
        )
    details: dict[str, object] = {"user": user.id, "factor": method}
    if method == "recovery_code":
        details["recovery_codes_left"] = mfa.recovery_codes_left(session, user.id)
    audit.append(session, actor=actor, action="staff.login", details=details, clock=lambda: at)
    session.flush()
    return MfaResult(
        "ok",
        session_token=token,
        device_cookie="" if device_id else new_device_cookie(ring, user.id),
        user_id=user.id,
    )


def _unconfirmed(session: Session, user_id: str) -> bool:
    row = session.get(StaffMfa, user_id)
    return row is not None and row.confirmed_at is None


def logout(session: Session, row: StaffSession, *, network: str, at: datetime) -> None:
    sessions.end(session, row, "logout", at)
    audit.append(
        session,
        actor=Actor(f"user:{row.user_id}", "web", network),
        action="staff.logout",
        details={"user": row.user_id},
        clock=lambda: at,
    )
