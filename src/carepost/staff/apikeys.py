"""API keys: per user or service account, with scopes and an optional expiry.

A key reads `cpk_<id>_<secret>`: the id (16 hex characters) finds the row without a
scan and is what the audit log names; the secret (256 random bits) is stored only as its
SHA-256. The whole key is returned once, by `do_create_api_key`, and never again. A key
acts with its scopes intersected with its owner's permissions *now*: when the owner loses
a role the key loses it too, and a disabled owner's keys stop working. Every successful
use appends `staff.api_key_used` naming the key, and the principal's actor is
`apikey:<id>`, so whatever the key then does is attributed to it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.staff.models import StaffApiKey, StaffUser
from carepost.staff.permissions import check_known
from carepost.staff.principal import Principal
from carepost.staff.service import may_act_on, may_grant
from carepost.staff.users import InvalidInput, find_user, permissions_of

PREFIX = "cpk"
_TOKEN = re.compile(r"^cpk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    id: str
    token: str  # the whole key: shown once
    user_id: str
    scopes: list[str]
    expires_at: datetime | None


def do_create_api_key(
    session: Session,
    principal: Principal,
    *,
    owner: str,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    clock: Clock = system_clock,
) -> CreatedKey:
    """A key for `owner` (a user or service account, by id or address). Its scopes must
    be permissions the owner has, and ones the creator may hand out."""
    principal.require("apikeys:write")
    at = clock()
    user = find_user(session, owner)
    if user.status != "active":
        raise InvalidInput("owner: the user is disabled")
    if user.id != principal.user_id:
        may_act_on(session, principal, user)
    label = name.strip()
    if not 1 <= len(label) <= 128:
        raise InvalidInput("name: 1 to 128 characters")
    try:
        chosen = check_known(scopes)
    except ValueError as exc:
        raise InvalidInput(f"scope: {exc}") from None
    if not chosen:
        raise InvalidInput("scope: a key needs at least one scope")
    beyond = sorted(chosen - permissions_of(session, user.id))
    if beyond:
        raise InvalidInput(
            f"scope: {', '.join(beyond)} not among the owner's permissions "
            "(a key's scopes are a subset of its owner's)"
        )
    may_grant(principal, chosen)
    if expires_at is not None and expires_at <= at:
        raise InvalidInput("expires: the expiry must be in the future")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(
        StaffApiKey(
            id=key_id,
            user_id=user.id,
            name=label,
            secret_hash=_digest(secret),
            scopes=" ".join(sorted(chosen)),
            created_at=at,
            created_by=principal.actor.id,
            expires_at=expires_at,
        )
    )
    audit.append(
        session,
        actor=principal.actor,
        action="staff.api_key_created",
        details={
            "key": key_id,
            "user": user.id,
            "scopes": sorted(chosen),
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
        clock=lambda: at,
    )
    session.flush()
    return CreatedKey(key_id, f"{PREFIX}_{key_id}_{secret}", user.id, sorted(chosen), expires_at)


def do_revoke_api_key(
    session: Session, principal: Principal, key_id: str, *, clock: Clock = system_clock
) -> bool:
    """Revoke a key at once; False if it was already revoked."""
    principal.require("apikeys:write")
    at = clock()
    row = session.get(StaffApiKey, key_id)
    if row is None:
        raise InvalidInput(f"key: no API key {key_id!r}")
    owner = session.get(StaffUser, row.user_id)
    if owner is not None and owner.id != principal.user_id:
        may_act_on(session, principal, owner)
    if row.revoked_at is not None:
        return False
    row.revoked_at = at
    audit.append(
        session,
        actor=principal.actor,
        action="staff.api_key_revoked",
        details={"key": key_id, "user": row.user_id},
        clock=lambda: at,
    )
    session.flush()
    return True


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    user_id: str
    user_email: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, at: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and at >= self.expires_at:
            return "expired"
        return "active"

    def as_dict(self, at: datetime) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "id": self.id,
            "name": self.name,
            "user": self.user_id,
            "user_email": self.user_email,
            "scopes": self.scopes,
            "state": self.state(at),
            "created_at": self.created_at.isoformat(),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def list_api_keys(
    session: Session, principal: Principal, owner: str | None = None
) -> list[KeyInfo]:
    """Keys (never their secrets), optionally of one user."""
    principal.require("apikeys:read")
    query = select(StaffApiKey, StaffUser.email).join(
        StaffUser, StaffUser.id == StaffApiKey.user_id
    )
    if owner is not None:
        query = query.where(StaffApiKey.user_id == find_user(session, owner).id)
    return [
        KeyInfo(
            k.id,
            k.name,
            k.user_id,
            email,
            k.scopes.split(),
            k.created_at,
            k.expires_at,
            k.revoked_at,
            k.last_used_at,
        )
        for k, email in session.execute(query.order_by(StaffApiKey.created_at, StaffApiKey.id))
    ]


def authenticate(session: Session, token: str, *, network: str, at: datetime) -> Principal | None:
    """The principal of a presented key, or None (malformed, unknown, wrong secret,
    revoked, expired, owner disabled). A use is audited in the caller's transaction."""
    match = _TOKEN.match(token.strip())
    if match is None:
        return None
    key_id, secret = match.groups()
    row = session.get(StaffApiKey, key_id)
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and at >= row.expires_at):
        return None
    owner = session.get(StaffUser, row.user_id)
    if owner is None or owner.status != "active":
        return None
    permissions = frozenset(row.scopes.split()) & permissions_of(session, owner.id)
    row.last_used_at, row.last_used_network = at, network
    actor = Actor(f"apikey:{key_id}", "api", network)
    audit.append(
        session,
        actor=actor,
        action="staff.api_key_used",
        details={"key": key_id, "user": owner.id},
        clock=lambda: at,
    )
    session.flush()
    return Principal("api_key", actor, permissions, user_id=owner.id, api_key_id=key_id)
