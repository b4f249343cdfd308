"""Role matrix: every permission against every built-in role, across routes and services.

Routes: read from the live OpenAPI document, so a route added later is covered (and one
added without `guard()` fails here). Each operation is called with a key of each role,
dummy ids in the path, an empty JSON body and an X-Purpose: a role lacking a required
permission gets a 403 naming it; a role holding them never gets a 403.

Services: each permission-checked service function is called with a principal of each
role; PermissionDenied names the permission exactly when the role lacks it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from api_support import ApiSite, serve
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.consent import service as consent
from carepost.contacts import phi, service, upsert
from carepost.db import transaction
from carepost.delivery import evidence
from carepost.journeys import events
from carepost.staff.permissions import BUILTIN_ROLES
from carepost.staff.principal import PermissionDenied, Principal
from carepost.workspace import Workspace
from staff_support import Clock

UNGUARDED = {("get", "/me")}
DUMMY_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def _operations(site: ApiSite) -> list[tuple[str, str, list[str]]]:
    with site.client() as c:
        doc = c.get("/openapi.json").json()
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if (method, path) in UNGUARDED:
                continue
            assert "x-permissions" in op, f"{method.upper()} {path} has no guard()"
            assert op["x-permissions"], f"{method.upper()} {path} requires nothing"
            ops.append((method, path, op["x-permissions"]))
    return ops


def test_every_route_against_every_role(site: ApiSite) -> None:
    ops = _operations(site)
    assert len(ops) >= 17
    tokens = {role: site.key(role) for role in BUILTIN_ROLES}
    failures = []
    for role, (_, perms) in BUILTIN_ROLES.items():
        with site.client(tokens[role]) as c:
            for method, path, needed in ops:
                url = re.sub(r"\{[^}]+\}", DUMMY_ID, path)
                kwargs: dict[str, Any] = {"headers": {"X-Purpose": "treatment"}}
                if method in ("post", "put", "patch"):
                    kwargs["json"] = {}
                got = c.request(method.upper(), url, **kwargs)
                lacking = [p for p in needed if p not in perms]
                if lacking:
                    ok = got.status_code == 403 and got.json().get("permission") in lacking
                else:
                    ok = got.status_code != 403 and got.status_code < 500
                if not ok:
                    failures.append((role, method.upper(), path, got.status_code, got.text[:200]))
    assert failures == []


Call = Callable[[Session, Any, Principal], object]

SERVICES: list[tuple[str, Call]] = [
    ("contacts:read", lambda s, ws, p: service.list_contacts(s, principal=p)),
    (
        "contacts:write",
        lambda s, ws, p: service.delete_contact(
            s, DUMMY_ID, actor=p.actor, reason="t", principal=p
        ),
    ),
    (
        "contacts:write",
        lambda s, ws, p: upsert.upsert_contacts(
            s, ws.keyring, [], actor=p.actor, now=Clock()(), principal=p
        ),
    ),
    (
        "contacts:write",
        lambda s, ws, p: upsert.upsert_facts(
            s, ws.keyring, DUMMY_ID, [], actor=p.actor, now=Clock()(), clock=Clock(), principal=p
        ),
    ),
    (
        "phi:read",
        lambda s, ws, p: phi.read_contact(
            s, ws.keyring, DUMMY_ID, actor=p.actor, purpose="treatment", principal=p
        ),
    ),
    (
        "consent:write",
        lambda s, ws, p: consent.set_consent(
            s,
            contact_id=DUMMY_ID,
            channel="email",
            topic="flu",
            status="opted_in",
            source="api",
            actor=p.actor,
            principal=p,
        ),
    ),
    ("consent:read", lambda s, ws, p: consent.consent_history(s, DUMMY_ID, principal=p)),
    (
        "authorizations:write",
        lambda s, ws, p: consent.add_authorization(
            s, ws.keyring, contact_id=DUMMY_ID, document={}, actor=p.actor, principal=p
        ),
    ),
    (
        "authorizations:write",
        lambda s, ws, p: consent.revoke_authorization(
            s, authorization_id=DUMMY_ID, source="api", actor=p.actor, principal=p
        ),
    ),
    ("authorizations:read", lambda s, ws, p: consent.authorizations_of(s, DUMMY_ID, principal=p)),
    (
        "consent:write",
        lambda s, ws, p: consent.add_suppression(
            s,
            channel="email",
            address_bis=["x"],
            reason="manual",
            source="api",
            actor=p.actor,
            principal=p,
        ),
    ),
    (
        "consent:write",
        lambda s, ws, p: consent.remove_suppression(
            s, suppression_id=DUMMY_ID, actor=p.actor, principal=p
        ),
    ),
    ("consent:read", lambda s, ws, p: consent.list_suppressions(s, principal=p)),
    (
        "events:write",
        lambda s, ws, p: events.do_send_event(s, "x", DUMMY_ID, {}, actor=p.actor, principal=p),
    ),
    ("evidence:read", lambda s, ws, p: evidence.evidence(s, DUMMY_ID, principal=p)),
    ("audit:read", lambda s, ws, p: audit.query(s, principal=p)),
]


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_every_service_against_every_role(workspace: Workspace, role: str) -> None:
    perms = BUILTIN_ROLES[role][1]
    principal = Principal("user", Actor(f"user:{role}", "api", "test"), perms, user_id=role)
    for permission, call in SERVICES:
        denied: PermissionDenied | None = None
        try:
            with transaction(workspace.engine) as s:
                call(s, workspace, principal)
                raise _Rollback
        except PermissionDenied as exc:
            denied = exc
        except Exception:  # noqa: S110 - allowed through; the dummy data fails further on
            pass
        if permission in perms:
            assert denied is None, (role, permission)
        else:
            assert denied is not None, (role, permission)
            assert denied.permission == permission


def test_a_marketer_gets_no_phi_but_an_owner_does(workspace: Workspace) -> None:
    marketer = Principal(
        "user", Actor("user:m", "api", "t"), BUILTIN_ROLES["marketer"][1], user_id="m"
    )
    with transaction(workspace.engine) as s, pytest.raises(PermissionDenied) as refused:
        phi.read_contacts(
            s,
            workspace.keyring,
            [DUMMY_ID],
            actor=marketer.actor,
            purpose="operations",
            principal=marketer,
        )
    assert refused.value.permission == "phi:read"
