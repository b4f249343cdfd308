"""The permission vocabulary and the built-in roles (pure data, no I/O).

A permission is `area:verb`. Roles are sets of permissions; custom roles are built from
the same vocabulary. "Minimum necessary" (45 CFR 164.502(b)) shapes the built-in roles:
only `owner` may read decrypted PHI by default, `care_team` may read the PHI of the
contacts it sends to, and everyone else works with ids, counts and de-identified
statistics. Break-glass (staff/breakglass.py) is the audited way around that in an
emergency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

# permission -> what it allows (shown by `carepost role list --permissions`)
PERMISSIONS: Mapping[str, str] = MappingProxyType(
    {
        "phi:read": "read any contact's decrypted PHI (with a purpose; audited)",
        "phi:read_recipients": "read the decrypted PHI of contacts one's own messages went to",
        "contacts:read": "list contacts by id, with times and counts (no PHI)",
        "contacts:write": "import, update and delete contacts and clinical facts",
        "consent:read": "read consents and suppressions (no PHI)",
        "consent:write": "record consents and opt-outs, add and lift suppressions",
        "authorizations:read": "read HIPAA authorizations' structure (no PHI)",
        "authorizations:write": "record, revoke and end HIPAA authorizations",
        "segments:read": "list segments and count their members",
        "segments:write": "save segments and freeze memberships",
        "templates:read": "read message templates",
        "templates:write": "add and change message templates",
        "campaigns:read": "read campaigns, their status and reports",
        "campaigns:write": "create, start, pause, resume and cancel campaigns",
        "journeys:read": "read journeys",
        "journeys:write": "create and change journeys",
        "messages:send": "send one-to-one messages (treatment, operations, transactional)",
        "events:write": "ingest events that trigger journeys",
        "reports:read": "de-identified statistics and campaign reports",
        "evidence:read": "read proof-of-delivery evidence",
        "audit:read": "query the audit log",
        "breakglass:request": (
            "request emergency PHI access (needs MFA; audited; alerts compliance)"
        ),
        "breakglass:review": "list and acknowledge break-glass alerts",
        "users:read": "list staff users and their roles",
        "users:write": "add, disable and enable users, set roles, reset MFA and passwords",
        "roles:write": "create custom roles",
        "apikeys:read": "list API keys (never their secrets)",
        "apikeys:write": "create and revoke API keys",
        "settings:read": "read account settings",
        "settings:write": "change account settings and sender profiles",
        "keys:manage": "rotate encryption keys",
        "delivery:operate": "run workers and inspect the outbox (no PHI)",
    }
)

ALL: frozenset[str] = frozenset(PERMISSIONS)

# What a break-glass grant adds while it is live: PHI reads, nothing else.
BREAK_GLASS_GRANTS = frozenset({"phi:read"})

BUILTIN_ROLES: Mapping[str, tuple[str, frozenset[str]]] = MappingProxyType(
    {
        "owner": ("everything, including PHI", ALL),
        "admin": (
            "users, settings and keys; no PHI",
            frozenset(
                {
                    "users:read",
                    "users:write",
                    "roles:write",
                    "apikeys:read",
                    "apikeys:write",
                    "settings:read",
                    "settings:write",
                    "keys:manage",
                    "delivery:operate",
                    "breakglass:request",
                }
            ),
        ),
        "compliance": (
            "audit, authorizations, consent, evidence, break-glass review",
            frozenset(
                {
                    "audit:read",
                    "authorizations:read",
                    "authorizations:write",
                    "consent:read",
                    "consent:write",
                    "evidence:read",
                    "breakglass:review",
                    "breakglass:request",
                    "users:read",
                }
            ),
        ),
        "marketer": (
            "segments, templates, campaigns, journeys, reports; counts only, no PHI",
            frozenset(
                {
                    "segments:read",
                    "segments:write",
                    "templates:read",
                    "templates:write",
                    "campaigns:read",
                    "campaigns:write",
                    "journeys:read",
                    "journeys:write",
                    "reports:read",
                }
            ),
        ),
        "care_team": (
            "one-to-one messages; the PHI of the contacts they send to",
            frozenset(
                {
                    "messages:send",
                    "phi:read_recipients",
                    "contacts:read",
                    "templates:read",
                    "evidence:read",
                    "breakglass:request",
                }
            ),
        ),
        "analyst": ("de-identified reports only", frozenset({"reports:read"})),
        "auditor": ("read-only audit and evidence", frozenset({"audit:read", "evidence:read"})),
    }
)


class UnknownPermission(ValueError):
    pass


def check_known(permissions: Iterable[str]) -> frozenset[str]:
    """The permissions as a set; every one must be in the vocabulary (named if not)."""
    chosen = frozenset(p.strip() for p in permissions)
    unknown = sorted(chosen - ALL)
    if unknown:
        raise UnknownPermission(
            f"unknown permission(s) {', '.join(unknown)}; see `carepost role list --permissions`"
        )
    return chosen


def union_of(role_permissions: Iterable[Iterable[str]]) -> frozenset[str]:
    """A user's permissions: the union of their roles' permissions."""
    out: set[str] = set()
    for perms in role_permissions:
        out.update(perms)
    return frozenset(out)
