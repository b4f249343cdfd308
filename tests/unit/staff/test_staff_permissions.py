"""The permission vocabulary and the built-in roles (staff/permissions.py)."""

from __future__ import annotations

import pytest

from carepost.audit.actor import Actor
from carepost.staff import permissions
from carepost.staff.principal import PermissionDenied, Principal


def test_every_builtin_role_uses_known_permissions() -> None:
    for _description, perms in permissions.BUILTIN_ROLES.values():
        assert perms <= permissions.ALL
    assert permissions.BUILTIN_ROLES["owner"][1] == permissions.ALL


def test_only_owner_reads_phi_by_default() -> None:
    readers = {r for r, (_, p) in permissions.BUILTIN_ROLES.items() if "phi:read" in p}
    assert readers == {"owner"}


def test_unknown_permissions_are_named() -> None:
    with pytest.raises(permissions.UnknownPermission, match="phi:write, segments:delete"):
        permissions.check_known(["segments:read", "segments:delete", "phi:write"])


def test_permission_denied_names_the_permission() -> None:
    p = Principal("user", Actor("user:u1", "web", "net"), frozenset({"reports:read"}), "u1")
    p.require("reports:read")
    with pytest.raises(PermissionDenied, match="segments:read") as caught:
        p.require("reports:read", "segments:read")
    assert caught.value.permission == "segments:read"
    assert Principal.system(Actor("cli:x", "cli", "h")).has("keys:manage")
