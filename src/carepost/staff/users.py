"""Reading staff users and roles, and turning a user into a Principal (no writes here:
the audited changes are in service.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.staff.models import StaffRole, StaffRolePermission, StaffUser, StaffUserRole
from carepost.staff.permissions import BUILTIN_ROLES, union_of
from carepost.staff.principal import Principal

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,62}$")


class UserNotFound(LookupError):
    pass


class InvalidInput(ValueError):
    """Bad input to a staff service: the message names the field."""


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidInput("email: not a valid email address")
    return value


def find_user(session: Session, who: str) -> StaffUser:
    """A user by id or email address."""
    user = session.get(StaffUser, who)
    if user is None and "@" in who:
        user = session.scalar(select(StaffUser).where(StaffUser.email == who.strip().lower()))
    if user is None:
        raise UserNotFound(f"no staff user {who!r}")
    return user


def roles_of(session: Session, user_id: str) -> list[str]:
    return sorted(
        session.scalars(select(StaffUserRole.role).where(StaffUserRole.user_id == user_id))
    )


def role_permissions(session: Session, role: str) -> frozenset[str] | None:
    """A built-in or custom role's permissions; None if there is no such role."""
    builtin = BUILTIN_ROLES.get(role)
    if builtin is not None:
        return builtin[1]
    if session.get(StaffRole, role) is None:
        return None
    return frozenset(
        session.scalars(
            select(StaffRolePermission.permission).where(StaffRolePermission.role == role)
        )
    )


def permissions_of(session: Session, user_id: str) -> frozenset[str]:
    return union_of(role_permissions(session, r) or frozenset() for r in roles_of(session, user_id))


def principal_for(
    session: Session, user: StaffUser, *, source_kind: str, network: str
) -> Principal:
    """The principal of an active user acting from `network` (permissions as of now)."""
    return Principal(
        "user",
        Actor(f"user:{user.id}", source_kind, network),
        permissions_of(session, user.id),
        user_id=user.id,
    )


@dataclass(frozen=True)
class RoleInfo:
    name: str
    description: str
    builtin: bool
    permissions: list[str]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "builtin": self.builtin,
            "permissions": self.permissions,
        }


def list_roles(session: Session) -> list[RoleInfo]:
    roles = [
        RoleInfo(name, description, True, sorted(perms))
        for name, (description, perms) in BUILTIN_ROLES.items()
    ]
    for role in session.scalars(select(StaffRole).order_by(StaffRole.name)):
        perms = role_permissions(session, role.name) or frozenset()
        roles.append(RoleInfo(role.name, role.description, False, sorted(perms)))
    return roles
