"""Who is asking, and with which permissions: the value every permission-checked service
function takes. A principal is a signed-in user, an API key (its scopes intersected with
its owner's current permissions), or the system (the command line on the server, which
holds the key file and so could read everything anyway)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carepost.audit.actor import Actor
from carepost.staff.permissions import ALL

PrincipalKind = Literal["user", "api_key", "system"]


class PermissionDenied(PermissionError):
    """The principal lacks a permission. The message names it (never any data)."""

    def __init__(self, permission: str, who: str = "") -> None:
        self.permission = permission
        super().__init__(
            f"permission denied: {permission} is required" + (f" ({who})" if who else "")
        )


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    actor: Actor  # what the audit log records
    permissions: frozenset[str]
    user_id: str | None = None  # the user, or the API key's owner
    api_key_id: str | None = None

    @classmethod
    def system(cls, actor: Actor) -> Principal:
        return cls("system", actor, ALL)

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, *permissions: str) -> None:
        """Raise PermissionDenied naming the first missing permission."""
        for permission in permissions:
            if permission not in self.permissions:
                raise PermissionDenied(permission, self.actor.id)
