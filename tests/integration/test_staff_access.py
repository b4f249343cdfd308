"""Permissions at the service layer, on both engines: the role matrix (every permission
against every built-in role), the PHI door, escalation refused, break-glass (MFA, expiry
on a frozen clock, the compliance alert, flagged audit entries) and API key scopes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.contacts import phi
from carepost.db import transaction
from carepost.staff import apikeys, breakglass, service
from carepost.staff.models import StaffApiKey, StaffUser
from carepost.staff.permissions import ALL
from carepost.staff.principal import PermissionDenied, Principal
from carepost.staff.users import InvalidInput
from carepost.workspace import Workspace
from portal_support import scenario
from staff_support import SYSTEM, Clock, add, code_for, contacts, principal_of

# The roles, cell by cell: what each built-in role may do. Written out here from
# issue 9's wording, not read from staff/permissions.py, so the two are checked against
# each other.
SPEC: dict[str, set[str]] = {
    "owner": set(ALL),
    "admin": {
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
    },
    "compliance": {
        "audit:read",
        "authorizations:read",
        "authorizations:write",
        "consent:read",
        "consent:write",
        "evidence:read",
        "breakglass:review",
        "breakglass:request",
        "users:read",
    },
    "marketer": {
        "segments:read",
        "segments:write",
        "templates:read",
        "templates:write",
        "campaigns:read",
        "campaigns:write",
        "journeys:read",
        "journeys:write",
        "reports:read",
    },
    "care_team": {
        "messages:send",
        "phi:read_recipients",
        "contacts:read",
        "templates:read",
        "evidence:read",
        "breakglass:request",
    },
    "analyst": {"reports:read"},
    "auditor": {"audit:read", "evidence:read"},
}
NEVER_PHI = {"admin", "compliance", "marketer", "analyst", "auditor"}


def _denied(call: Callable[[], object]) -> bool:
    try:
        call()
    except PermissionDenied:
        return True
    return False


Probe = Callable[[Session, Workspace, Principal, dict[str, str]], object]


def _probe_phi(s: Session, ws: Workspace, p: Principal, ctx: dict[str, str]) -> object:
    return phi.read_contact(
        s, ws.keyring, ctx["contact"], actor=p.actor, purpose="matrix test", principal=p
    )


def _probe_users_write(s: Session, ws: Workspace, p: Principal, ctx: dict[str, str]) -> object:
    return service.do_disable_user(s, p, ctx["plain_user"])


def _probe_roles_write(s: Session, ws: Workspace, p: Principal, ctx: dict[str, str]) -> object:
    return service.do_create_role(s, p, "probe_role", ["roles:write"])


def _probe_apikeys_write(s: Session, ws: Workspace, p: Principal, ctx: dict[str, str]) -> object:
    assert p.user_id is not None
    return apikeys.do_create_api_key(s, p, owner=p.user_id, name="probe", scopes=["apikeys:write"])


# Permissions whose service paths exist in this part of issue 9 (the REST API task adds
# the rest as it wraps each capability): each is called for real.
PROBES: dict[str, Probe] = {
    "phi:read": _probe_phi,
    "users:read": lambda s, ws, p, ctx: service.list_users(s, p),
    "users:write": _probe_users_write,
    "roles:write": _probe_roles_write,
    "apikeys:read": lambda s, ws, p, ctx: apikeys.list_api_keys(s, p),
    "apikeys:write": _probe_apikeys_write,
    "breakglass:review": lambda s, ws, p, ctx: breakglass.list_alerts(s, p),
}


def test_role_matrix(workspace: Workspace) -> None:
    contact = contacts(workspace, "matrix@example.org")[0]
    users = {role: add(workspace, f"{role}@clinic.example", role).id for role in SPEC}
    assert set(SPEC) == {r.name for r in _builtin_roles(workspace)}
    for role, user_id in users.items():
        principal = principal_of(workspace, user_id)
        # every cell: the principal the service layer builds from the database
        for permission in sorted(ALL):
            expected = permission in SPEC[role]
            assert principal.has(permission) == expected, (role, permission)
            assert _denied(lambda p=permission, who=principal: who.require(p)) != expected
        # every wired service, called: refused exactly where the matrix says no
        for permission, probe in PROBES.items():
            target = add(workspace, f"target-{role}-{permission}@clinic.example").id
            ctx = {"contact": contact, "plain_user": target}
            with transaction(workspace.engine) as s:
                denied = _denied(
                    lambda s=s, pr=probe, c=ctx, who=principal: pr(s, workspace, who, c)
                )
                s.rollback()
            assert denied != (permission in SPEC[role]), (role, permission)
    for role in NEVER_PHI:
        assert not principal_of(workspace, users[role]).has("phi:read")


def _builtin_roles(ws: Workspace) -> list[object]:
    from carepost.staff.users import list_roles

    with transaction(ws.engine) as s:
        return [r for r in list_roles(s) if r.builtin]


def test_the_phi_door_refuses_without_phi_read_and_writes_nothing(workspace: Workspace) -> None:
    contact = contacts(workspace, "door@example.org")[0]
    marketer = principal_of(workspace, add(workspace, "m@clinic.example", "marketer").id)
    owner = principal_of(workspace, add(workspace, "o@clinic.example", "owner").id)
    before = len(_audit(workspace, "contacts.phi_read"))
    with (
        pytest.raises(PermissionDenied, match=r"phi:read is required"),
        transaction(workspace.engine) as s,
    ):
        phi.read_contact(
            s, workspace.keyring, contact, actor=marketer.actor, purpose="x", principal=marketer
        )
    with pytest.raises(PermissionDenied), transaction(workspace.engine) as s:
        phi.read_contacts(
            s,
            workspace.keyring,
            [contact],
            actor=marketer.actor,
            purpose="x",
            principal=marketer,
        )
    assert len(_audit(workspace, "contacts.phi_read")) == before
    with transaction(workspace.engine) as s:
        view = phi.read_contact(
            s, workspace.keyring, contact, actor=owner.actor, purpose="care", principal=owner
        )
    assert view.record["emails"] == ["door@example.org"]
    entry = _audit(workspace, "contacts.phi_read")[-1]
    assert entry.actor == owner.actor.id
    assert orjson.loads(entry.details) == {"basis": "phi:read"}
    with pytest.raises(ValueError, match="actor"), transaction(workspace.engine) as s:
        phi.read_contact(
            s, workspace.keyring, contact, actor=SYSTEM.actor, purpose="x", principal=owner
        )


def test_care_team_reads_only_the_contacts_it_sent_to(workspace: Workspace) -> None:
    care = add(workspace, "nurse@clinic.example", "care_team")
    principal = principal_of(workspace, care.id)
    sent = scenario(workspace, principal.actor, ["patient@example.org"])
    other = contacts(workspace, "stranger@example.org")[0]
    with transaction(workspace.engine) as s:
        view = phi.read_contact(
            s,
            workspace.keyring,
            sent.contact_ids[0],
            actor=principal.actor,
            purpose="follow-up",
            principal=principal,
        )
    assert view.record["emails"] == ["patient@example.org"]
    assert orjson.loads(_audit(workspace, "contacts.phi_read")[-1].details) == {
        "basis": "phi:read_recipients"
    }
    for ids in ([other], [sent.contact_ids[0], other]):
        with pytest.raises(PermissionDenied, match="phi:read"), transaction(workspace.engine) as s:
            phi.read_contacts(
                s, workspace.keyring, ids, actor=principal.actor, purpose="x", principal=principal
            )


def _audit(ws: Workspace, action: str) -> list[AuditEntry]:
    with transaction(ws.engine) as s:
        rows = list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )
        s.expunge_all()
    return rows


# --- escalation -------------------------------------------------------------------------------
def test_nobody_hands_out_what_they_lack(workspace: Workspace) -> None:
    owner = add(workspace, "owner@clinic.example", "owner")
    admin = principal_of(workspace, add(workspace, "admin@clinic.example", "admin").id)
    nurse = add(workspace, "nurse@clinic.example", "care_team")
    with transaction(workspace.engine) as s:
        with pytest.raises(PermissionDenied, match="phi:read"):
            service.do_create_role(s, admin, "peeker", ["phi:read"])
        with pytest.raises(PermissionDenied, match="audit:read"):
            service.do_set_roles(s, admin, admin.user_id or "", ["admin", "owner"])
        # an admin cannot take over an owner or act on a user with PHI rights
        with pytest.raises(PermissionDenied):
            service.do_reset_mfa(s, workspace.keyring, admin, owner.id)
        with pytest.raises(PermissionDenied):
            service.do_set_password(s, admin, owner.id, "a brand new passphrase")
        with pytest.raises(PermissionDenied, match="contacts:read"):
            service.do_reset_mfa(s, workspace.keyring, admin, nurse.id)
        # ... but can take access away, and manage what it holds
        assert service.do_set_roles(s, admin, nurse.id, []) == (["care_team"], [])
        assert service.do_disable_user(s, admin, nurse.id) == 0
        with pytest.raises(PermissionDenied, match=r"contacts:read|phi"):
            service.do_set_roles(s, admin, nurse.id, ["care_team"])
        assert service.do_create_role(s, admin, "helpdesk", ["users:read"]) == ["users:read"]
    with transaction(workspace.engine) as s:
        helper = add(workspace, "helper@clinic.example").id
        assert service.do_set_roles(s, admin, helper, ["helpdesk"]) == ([], ["helpdesk"])


def test_the_last_owner_stays(workspace: Workspace) -> None:
    only = add(workspace, "owner@clinic.example", "owner")
    with transaction(workspace.engine) as s, pytest.raises(InvalidInput, match="last active owner"):
        service.do_disable_user(s, SYSTEM, only.id)
    with transaction(workspace.engine) as s, pytest.raises(InvalidInput, match="last active owner"):
        service.do_set_roles(s, SYSTEM, only.id, ["admin"])
    second = add(workspace, "owner2@clinic.example", "owner")
    with transaction(workspace.engine) as s:
        assert service.do_disable_user(s, SYSTEM, only.id) == 0
    with transaction(workspace.engine) as s, pytest.raises(InvalidInput, match="last active owner"):
        service.do_set_roles(s, SYSTEM, second.id, [])


def test_bad_input_names_the_field_and_writes_nothing(workspace: Workspace) -> None:
    cases = [
        ({"email": "not-an-address"}, "email:"),
        ({"display_name": "\x07bell"}, "name:"),
        ({"roles": ["wizard"]}, "role: no role named 'wizard'"),
        ({"password": "short"}, "at least 12"),
    ]
    for change, message in cases:
        kwargs: dict[str, object] = {
            "email": "ok@clinic.example",
            "display_name": "Ok",
            "roles": ["analyst"],
            "password": "a perfectly fine passphrase",
            **change,
        }
        with pytest.raises(ValueError, match=message), transaction(workspace.engine) as s:
            service.do_add_user(s, workspace.keyring, SYSTEM, **kwargs)  # type: ignore[arg-type]
    with transaction(workspace.engine) as s:
        assert s.scalars(select(StaffUser)).all() == []


# --- break-glass ------------------------------------------------------------------------------
def test_break_glass_needs_mfa_expires_and_alerts_compliance(workspace: Workspace) -> None:
    clock = Clock()
    contact = contacts(workspace, "emergency@example.org")[0]
    nurse = add(workspace, "nurse@clinic.example", "care_team", clock=clock)
    reviewer = principal_of(workspace, add(workspace, "cmp@clinic.example", "compliance").id)
    p = principal_of(workspace, nurse.id, "web")

    def read() -> object:
        with transaction(workspace.engine) as s:
            return phi.read_contact(
                s,
                workspace.keyring,
                contact,
                actor=p.actor,
                purpose="ER admission",
                principal=p,
                clock=clock,
            )

    with pytest.raises(PermissionDenied):
        read()
    reason = "Patient unconscious in ER, allergy check"
    with transaction(workspace.engine) as s:
        with pytest.raises(breakglass.BreakGlassRefused, match="code"):
            breakglass.do_request_break_glass(
                s, workspace.keyring, p, reason=reason, code="000000", clock=clock
            )
        with pytest.raises(breakglass.BreakGlassRefused, match="reason"):
            breakglass.do_request_break_glass(
                s, workspace.keyring, p, reason="because", code="123456", clock=clock
            )
    code = code_for(workspace, nurse.id, clock())
    with transaction(workspace.engine) as s:
        grant = breakglass.do_request_break_glass(
            s, workspace.keyring, p, reason=reason, code=code, minutes=30, clock=clock
        )
    assert grant.expires_at == clock() + timedelta(minutes=30)
    # the same code cannot be used again for a second grant (replay)
    with transaction(workspace.engine) as s, pytest.raises(breakglass.BreakGlassRefused):
        breakglass.do_request_break_glass(
            s, workspace.keyring, p, reason=reason, code=code, clock=clock
        )
    clock.advance(minutes=29, seconds=59)
    read()
    entry = _audit(workspace, "contacts.phi_read")[-1]
    assert orjson.loads(entry.details) == {"basis": "break_glass", "break_glass": grant.id}
    granted = _audit(workspace, "staff.break_glass_granted")[-1]
    assert granted.purpose == reason
    assert orjson.loads(granted.details)["break_glass"] == grant.id
    clock.advance(seconds=1)  # 30 minutes: over
    with pytest.raises(PermissionDenied):
        read()
    with transaction(workspace.engine) as s:
        alerts = breakglass.list_alerts(s, reviewer)
        assert [(a.grant_id, a.user_id, a.reason) for a in alerts] == [(grant.id, nurse.id, reason)]
        with pytest.raises(PermissionDenied, match="breakglass:review"):
            breakglass.list_alerts(s, p)
        assert breakglass.do_acknowledge_alert(
            s, reviewer, alerts[0].id, note="reviewed", clock=clock
        )
        assert breakglass.list_alerts(s, reviewer) == []
        assert len(breakglass.list_alerts(s, reviewer, include_acknowledged=True)) == 1


def test_break_glass_is_for_signed_in_users_without_phi_read(workspace: Workspace) -> None:
    clock = Clock()
    owner = add(workspace, "owner@clinic.example", "owner", clock=clock)
    analyst = add(workspace, "analyst@clinic.example", "analyst", clock=clock)
    nurse = add(workspace, "nurse@clinic.example", "care_team", clock=clock)
    reason = "Urgent medication reconciliation needed"
    as_owner, as_analyst, as_nurse = (
        principal_of(workspace, u.id) for u in (owner, analyst, nurse)
    )
    codes = {u.id: code_for(workspace, u.id, clock()) for u in (owner, analyst, nurse)}

    def ask(p: Principal, code: str, minutes: int | None = None) -> object:
        with transaction(workspace.engine) as s:
            return breakglass.do_request_break_glass(
                s, workspace.keyring, p, reason=reason, code=code, minutes=minutes, clock=clock
            )

    with pytest.raises(breakglass.BreakGlassRefused, match="already have phi:read"):
        ask(as_owner, codes[owner.id])
    with pytest.raises(PermissionDenied, match="breakglass:request"):
        ask(as_analyst, codes[analyst.id])
    with transaction(workspace.engine) as s:
        key = apikeys.do_create_api_key(
            s, SYSTEM, owner=nurse.id, name="ehr", scopes=["breakglass:request"], clock=clock
        )
        as_key = apikeys.authenticate(s, key.token, network="n", at=clock())
    assert as_key is not None
    with pytest.raises(PermissionDenied, match="signed-in user"):
        ask(as_key, codes[nurse.id])
    with pytest.raises(breakglass.BreakGlassRefused, match="minutes"):
        ask(as_nurse, codes[nurse.id], minutes=61)


# --- API keys ---------------------------------------------------------------------------------
def test_api_key_scopes_cannot_exceed_the_owner(workspace: Workspace) -> None:
    marketer = add(workspace, "m@clinic.example", "marketer")
    admin = principal_of(workspace, add(workspace, "a@clinic.example", "admin").id)
    with transaction(workspace.engine) as s:
        with pytest.raises(InvalidInput, match="phi:read not among the owner's permissions"):
            apikeys.do_create_api_key(
                s, SYSTEM, owner=marketer.id, name="k", scopes=["segments:read", "phi:read"]
            )
        with pytest.raises(InvalidInput, match="unknown permission"):
            apikeys.do_create_api_key(s, SYSTEM, owner=marketer.id, name="k", scopes=["root"])
        # an admin cannot mint a marketer's key: it lacks the marketer's permissions
        with pytest.raises(PermissionDenied):
            apikeys.do_create_api_key(
                s, admin, owner=marketer.id, name="k", scopes=["segments:read"]
            )


def test_api_key_is_shown_once_stored_hashed_and_every_use_audited(workspace: Workspace) -> None:
    clock = Clock()
    svc = add(workspace, "etl@clinic.example", "marketer", kind="service", clock=clock)
    with transaction(workspace.engine) as s:
        key = apikeys.do_create_api_key(
            s,
            SYSTEM,
            owner=svc.id,
            name="nightly",
            scopes=["segments:read", "reports:read"],
            expires_at=clock() + timedelta(days=1),
            clock=clock,
        )
    secret = key.token.split("_", 2)[2]
    with transaction(workspace.engine) as s:
        row = s.get(StaffApiKey, key.id)
        assert row is not None
        assert secret not in repr([getattr(row, c.name) for c in StaffApiKey.__table__.columns])
        listed = apikeys.list_api_keys(s, SYSTEM)
    assert secret not in repr([k.as_dict(clock()) for k in listed])
    for _ in range(2):
        with transaction(workspace.engine) as s:
            p = apikeys.authenticate(s, key.token, network="203.0.113.0/24", at=clock())
            assert p is not None
            assert p.permissions == {"segments:read", "reports:read"}
            assert p.actor.id == f"apikey:{key.id}"
            assert p.api_key_id == key.id
    used = _audit(workspace, "staff.api_key_used")
    assert [orjson.loads(e.details)["key"] for e in used] == [key.id, key.id]
    assert all(e.actor == f"apikey:{key.id}" for e in used)
    with transaction(workspace.engine) as s:
        # a wrong secret with the right id, a mangled key: nothing
        # (the last character changed to another: "A" when it was "A" was the same key)
        wrong = key.token[:-1] + ("B" if key.token.endswith("A") else "A")
        assert apikeys.authenticate(s, wrong, network="n", at=clock()) is None
        assert apikeys.authenticate(s, "cpk_" + key.id, network="n", at=clock()) is None
        # the owner loses a role: the key loses it too
        service.do_set_roles(s, SYSTEM, svc.id, ["analyst"])
        p = apikeys.authenticate(s, key.token, network="n", at=clock())
        assert p is not None
        assert p.permissions == {"reports:read"}
    clock.advance(days=1)
    with transaction(workspace.engine) as s:
        assert apikeys.authenticate(s, key.token, network="n", at=clock()) is None  # expired
        again = apikeys.do_create_api_key(
            s, SYSTEM, owner=svc.id, name="second", scopes=["reports:read"], clock=clock
        )
        assert apikeys.authenticate(s, again.token, network="n", at=clock()) is not None
        assert apikeys.do_revoke_api_key(s, SYSTEM, again.id, clock=clock)
        assert apikeys.authenticate(s, again.token, network="n", at=clock()) is None
        third = apikeys.do_create_api_key(
            s, SYSTEM, owner=svc.id, name="third", scopes=["reports:read"], clock=clock
        )
        service.do_disable_user(s, SYSTEM, svc.id, clock=clock)
        assert apikeys.authenticate(s, third.token, network="n", at=clock()) is None


def test_the_principal_of_a_disabled_user_is_not_built_by_the_web(workspace: Workspace) -> None:
    """(A disabled user's sessions end: test_staff_login covers it.) Actors are stable."""
    user = add(workspace, "a@clinic.example", "analyst")
    p = principal_of(workspace, user.id)
    assert p.actor == Actor(f"user:{user.id}", "api", p.actor.source_address)
