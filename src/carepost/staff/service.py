"""Staff administration as `do_` actions: each checks the principal's permissions, makes
its change and appends its audit entry in the caller's transaction (services never
commit).

Two rules keep permissions from growing by themselves: a principal can only hand out
(in a role it creates, a role it adds to a user, an API key's scopes) permissions it
holds, and can only take over a user's access (reset their MFA or password, mint an API
key for them) when it holds all of that user's permissions. So an admin can neither give
itself PHI access nor become an owner or a care-team member by resetting their factors.
Taking access away (disabling, removing a role) is not an escalation and needs only
`users:write`; the last active owner cannot be disabled or lose the role, so an account
cannot end up with nobody able to administer it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.clock import Clock, system_clock
from carepost.contacts.store import new_id
from carepost.crypto.keyring import KeyRing
from carepost.staff import mfa, passwords, sessions
from carepost.staff.mfa import Enrolment
from carepost.staff.models import (
    StaffRole,
    StaffRolePermission,
    StaffUser,
    StaffUserRole,
)
from carepost.staff.permissions import BUILTIN_ROLES, check_known, union_of
from carepost.staff.principal import PermissionDenied, Principal
from carepost.staff.users import (
    ROLE_NAME,
    InvalidInput,
    find_user,
    normalize_email,
    permissions_of,
    role_permissions,
    roles_of,
)

OWNER = "owner"


def _name(display_name: str) -> str:
    name = display_name.strip()
    if not 1 <= len(name) <= 128 or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInput("name: 1 to 128 characters, no control characters")
    return name


def _roles_permissions(session: Session, roles: Iterable[str]) -> frozenset[str]:
    perms: list[frozenset[str]] = []
    for role in roles:
        found = role_permissions(session, role)
        if found is None:
            raise InvalidInput(f"role: no role named {role!r}; see `carepost role list`")
        perms.append(found)
    return union_of(perms)


def may_grant(principal: Principal, permissions: Iterable[str]) -> None:
    """Only what the principal holds may be handed out."""
    for permission in sorted(permissions):
        if not principal.has(permission):
            raise PermissionDenied(permission, f"{principal.actor.id} cannot grant what it lacks")


def may_act_on(session: Session, principal: Principal, user: StaffUser) -> None:
    may_grant(principal, permissions_of(session, user.id))


def _active_owners(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(StaffUserRole)
            .join(StaffUser, StaffUser.id == StaffUserRole.user_id)
            .where(StaffUserRole.role == OWNER, StaffUser.status == "active")
        )
        or 0
    )


def _audit(
    session: Session, principal: Principal, action: str, details: dict[str, object], at: datetime
) -> None:
    audit.append(session, actor=principal.actor, action=action, details=details, clock=lambda: at)


# --- users --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddedUser:
    id: str
    email: str
    enrolment: Enrolment | None  # persons only: shown once


def do_add_user(
    session: Session,
    ring: KeyRing,
    principal: Principal,
    *,
    email: str,
    display_name: str,
    roles: Sequence[str],
    password: str | None = None,
    kind: str = "person",
    clock: Clock = system_clock,
) -> AddedUser:
    """A new user with roles. A person gets a TOTP secret and recovery codes (returned
    once, to show); a service account has neither and signs in only with API keys."""
    principal.require("users:write")
    at = clock()
    address = normalize_email(email)
    name = _name(display_name)
    if kind not in ("person", "service"):
        raise InvalidInput("kind: person or service")
    chosen = sorted(set(roles))
    may_grant(principal, _roles_permissions(session, chosen))
    if session.scalar(select(StaffUser.id).where(StaffUser.email == address)) is not None:
        raise InvalidInput("email: a staff user with this address exists")
    password_hash = None
    if password is not None:
        if kind == "service":
            raise InvalidInput("password: service accounts have no password")
        password_hash = passwords.hash_password(passwords.check_new(password, email=address))
    user = StaffUser(
        id=new_id(),
        email=address,
        display_name=name,
        kind=kind,
        status="active",
        password_hash=password_hash,
        password_changed_at=at if password_hash else None,
        created_at=at,
        updated_at=at,
    )
    session.add(user)
    session.flush()
    for role in chosen:
        session.add(StaffUserRole(user_id=user.id, role=role))
    enrolment = mfa.enrol(session, ring, user.id, address, at) if kind == "person" else None
    _audit(
        session,
        principal,
        "staff.user_added",
        {"user": user.id, "kind": kind, "roles": chosen, "mfa_enrolled": enrolment is not None},
        at,
    )
    session.flush()
    return AddedUser(user.id, address, enrolment)


def do_disable_user(
    session: Session, principal: Principal, who: str, *, clock: Clock = system_clock
) -> int:
    """Disable a user and end all their sessions (returned: how many). Their API keys
    stop working too (a key acts for an active user only)."""
    principal.require("users:write")
    at = clock()
    user = find_user(session, who)
    if user.status == "disabled":
        return 0
    if OWNER in roles_of(session, user.id) and _active_owners(session) <= 1:
        raise InvalidInput("user: the last active owner cannot be disabled")
    user.status, user.disabled_at, user.updated_at = "disabled", at, at
    ended = sessions.end_all(session, user.id, "user_disabled", at)
    _audit(
        session, principal, "staff.user_disabled", {"user": user.id, "sessions_ended": ended}, at
    )
    session.flush()
    return ended


def do_enable_user(
    session: Session, principal: Principal, who: str, *, clock: Clock = system_clock
) -> None:
    principal.require("users:write")
    at = clock()
    user = find_user(session, who)
    if user.status == "active":
        return
    # Enabling gives back access the user had; only someone holding it may.
    may_act_on(session, principal, user)
    user.status, user.disabled_at, user.updated_at = "active", None, at
    _audit(session, principal, "staff.user_enabled", {"user": user.id}, at)
    session.flush()


def do_set_roles(
    session: Session,
    principal: Principal,
    who: str,
    roles: Sequence[str],
    *,
    clock: Clock = system_clock,
) -> tuple[list[str], list[str]]:
    """Replace a user's roles; returns (before, after). Permissions apply at the user's
    next request: they are read per request, never cached in a session."""
    principal.require("users:write")
    at = clock()
    user = find_user(session, who)
    before = roles_of(session, user.id)
    after = sorted(set(roles))
    _roles_permissions(session, after)  # every role must exist
    may_grant(principal, _roles_permissions(session, set(after) - set(before)))
    if before == after:
        return before, after
    if (
        OWNER in before
        and OWNER not in after
        and user.status == "active"
        and _active_owners(session) <= 1
    ):
        raise InvalidInput("role: the last active owner cannot lose the owner role")
    for role in set(before) - set(after):
        row = session.get(StaffUserRole, (user.id, role))
        if row is not None:
            session.delete(row)
    for role in set(after) - set(before):
        session.add(StaffUserRole(user_id=user.id, role=role))
    user.updated_at = at
    _audit(
        session,
        principal,
        "staff.roles_changed",
        {"user": user.id, "from": before, "to": after},
        at,
    )
    session.flush()
    return before, after


def do_reset_mfa(
    session: Session, ring: KeyRing, principal: Principal, who: str, *, clock: Clock = system_clock
) -> Enrolment:
    """A new TOTP secret and recovery codes (the old ones stop working) and every session
    of the user ended: a login factor changed."""
    principal.require("users:write")
    at = clock()
    user = find_user(session, who)
    may_act_on(session, principal, user)
    if user.kind != "person":
        raise InvalidInput("user: service accounts have no MFA")
    enrolment = mfa.enrol(session, ring, user.id, user.email, at)
    ended = sessions.end_all(session, user.id, "mfa_reset", at)
    user.updated_at = at
    _audit(session, principal, "staff.mfa_reset", {"user": user.id, "sessions_ended": ended}, at)
    session.flush()
    return enrolment


def do_set_password(
    session: Session, principal: Principal, who: str, password: str, *, clock: Clock = system_clock
) -> int:
    """Set a new password (the rules of passwords.check_new) and end every session of
    the user: a login factor changed. Returns the sessions ended."""
    principal.require("users:write")
    at = clock()
    user = find_user(session, who)
    may_act_on(session, principal, user)
    if user.kind != "person":
        raise InvalidInput("password: service accounts have no password")
    user.password_hash = passwords.hash_password(passwords.check_new(password, email=user.email))
    user.password_changed_at = user.updated_at = at
    ended = sessions.end_all(session, user.id, "password_changed", at)
    _audit(
        session, principal, "staff.password_changed", {"user": user.id, "sessions_ended": ended}, at
    )
    session.flush()
    return ended


@dataclass(frozen=True)
class UserInfo:
    id: str
    email: str
    display_name: str
    kind: str
    status: str
    roles: list[str]
    created_at: datetime
    last_login_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "kind": self.kind,
            "status": self.status,
            "roles": self.roles,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }


def list_users(session: Session, principal: Principal) -> list[UserInfo]:
    principal.require("users:read")
    return [
        UserInfo(
            u.id,
            u.email,
            u.display_name,
            u.kind,
            u.status,
            roles_of(session, u.id),
            u.created_at,
            u.last_login_at,
        )
        for u in session.scalars(select(StaffUser).order_by(StaffUser.email))
    ]


# --- roles ----------------------------------------------------------------------------------
def do_create_role(
    session: Session,
    principal: Principal,
    name: str,
    permissions: Iterable[str],
    *,
    description: str = "",
    clock: Clock = system_clock,
) -> list[str]:
    """A custom role from the permission vocabulary; returns its permissions."""
    principal.require("roles:write")
    at = clock()
    if not ROLE_NAME.match(name):
        raise InvalidInput("name: a role name is 2-63 characters: a-z, 0-9, _ (a letter first)")
    if name in BUILTIN_ROLES or session.get(StaffRole, name) is not None:
        raise InvalidInput(f"name: a role named {name!r} exists")
    try:
        chosen = check_known(permissions)
    except ValueError as exc:
        raise InvalidInput(f"permission: {exc}") from None
    if not chosen:
        raise InvalidInput("permission: a role needs at least one permission")
    may_grant(principal, chosen)
    session.add(
        StaffRole(
            name=name,
            description=description.strip()[:256],
            created_at=at,
            created_by=principal.actor.id,
        )
    )
    session.flush()
    for permission in sorted(chosen):
        session.add(StaffRolePermission(role=name, permission=permission))
    _audit(
        session, principal, "staff.role_created", {"role": name, "permissions": sorted(chosen)}, at
    )
    session.flush()
    return sorted(chosen)
