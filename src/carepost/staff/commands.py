"""`carepost user|apikey|role|breakglass ...`: staff administration from the server's
command line. The command line acts as the system principal (whoever runs it holds the
key file and the database, so could read everything anyway) and is audited under
CAREPOST_ACTOR like every other command. Secrets (a TOTP enrolment, recovery codes, an
API key) are printed once and are never stored in a form that can be shown again."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import segno
import typer
from rich.table import Table

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, fail, out, workspace
from carepost.clock import system_clock
from carepost.db import transaction
from carepost.staff import apikeys, breakglass, service
from carepost.staff.mfa import Enrolment
from carepost.staff.passwords import PasswordRejected
from carepost.staff.permissions import PERMISSIONS
from carepost.staff.principal import PermissionDenied, Principal
from carepost.staff.users import InvalidInput, UserNotFound, find_user, list_roles, roles_of
from carepost.workspace import Workspace

user_app = typer.Typer(no_args_is_help=True, help="Staff users: add, disable, roles, MFA.")
apikey_app = typer.Typer(no_args_is_help=True, help="API keys (shown once, stored hashed).")
role_app = typer.Typer(no_args_is_help=True, help="Roles and the permissions they carry.")
breakglass_app = typer.Typer(no_args_is_help=True, help="Break-glass grants and their alerts.")

Who = Annotated[str, typer.Argument(help="The user's email address or id.")]


@contextmanager
def _admin(data_dir: DataDir) -> Iterator[tuple[Workspace, Principal]]:
    with workspace(data_dir) as ws:
        try:
            yield ws, Principal.system(actor_of(ws))
        except (
            InvalidInput,
            UserNotFound,
            PasswordRejected,
            PermissionDenied,
            breakglass.BreakGlassRefused,
        ) as exc:
            fail(str(exc), 2)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        fail("give the password on standard input with --password-stdin", 2)
    first: str = typer.prompt("Password (12 to 128 characters)", hide_input=True)
    again: str = typer.prompt("Password again", hide_input=True)
    if first != again:
        fail("the two passwords differ", 2)
    return first


def _print_enrolment(enrolment: Enrolment, email: str) -> None:
    out.print(f"Enrol {email}'s authenticator app (shown once): scan this code")
    qr = segno.make(enrolment.uri, error="m")
    qr.terminal(out=sys.stdout, compact=True)
    sys.stdout.flush()
    out.print(f"or open: {enrolment.uri}")
    out.print(f"or type the secret: {enrolment.secret}")
    out.print("Recovery codes (each works once; keep them somewhere safe, offline):")
    for code in enrolment.recovery_codes:
        out.print(f"  {code}")


def _enrolment_dict(enrolment: Enrolment) -> dict[str, object]:
    return {
        "otpauth_uri": enrolment.uri,
        "secret": enrolment.secret,
        "recovery_codes": enrolment.recovery_codes,
    }


# --- users ----------------------------------------------------------------------------------
@user_app.command("add")
def user_add(
    email: Annotated[str, typer.Argument(help="The user's email address (their sign-in name).")],
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role (repeat for more).")
    ] = None,
    service_account: Annotated[
        bool, typer.Option("--service", help="A service account: API keys only, no sign-in.")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Add a staff user. A person gets a password and a TOTP enrolment (printed once,
    with a QR code, and recovery codes). The first owner: `--role owner`."""
    password = None if service_account else _read_password(password_stdin)
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        added = service.do_add_user(
            session,
            ws.keyring,
            principal,
            email=email,
            display_name=name,
            roles=role or [],
            password=password,
            kind="service" if service_account else "person",
        )
    if json_out:
        emit_json(
            {
                "id": added.id,
                "email": added.email,
                "mfa": _enrolment_dict(added.enrolment) if added.enrolment else None,
            }
        )
        return
    out.print(f"added {added.email} ({added.id})")
    if added.enrolment is not None:
        _print_enrolment(added.enrolment, added.email)


@user_app.command("list")
def user_list(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Staff users, their roles and status."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        users = service.list_users(session, principal)
    if json_out:
        emit_json([u.as_dict() for u in users])
        return
    table = Table("id", "email", "name", "kind", "status", "roles", "last login")
    for u in users:
        table.add_row(
            u.id,
            u.email,
            u.display_name,
            u.kind,
            u.status,
            ", ".join(u.roles) or "-",
            u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-",
        )
    out.print(table)


@user_app.command("disable")
def user_disable(who: Who, data_dir: DataDir = None) -> None:
    """Disable a user: every session ends and their API keys stop working."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        ended = service.do_disable_user(session, principal, who)
    out.print(f"disabled {who}; {ended} session(s) ended")


@user_app.command("enable")
def user_enable(who: Who, data_dir: DataDir = None) -> None:
    """Enable a disabled user again."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        service.do_enable_user(session, principal, who)
    out.print(f"enabled {who}")


@user_app.command("roles")
def user_roles(
    who: Who,
    set_roles: Annotated[
        list[str] | None, typer.Option("--set", help="Replace the roles (repeat).")
    ] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Add a role (repeat).")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Remove a role (repeat).")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Show a user's roles, or change them (audited)."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        current = roles_of(session, find_user(session, who).id)
        if set_roles is None and not add and not remove:
            before = after = current
        else:
            wanted = set(set_roles if set_roles is not None else current)
            wanted |= set(add or [])
            wanted -= set(remove or [])
            before, after = service.do_set_roles(session, principal, who, sorted(wanted))
    if json_out:
        emit_json({"user": who, "before": before, "roles": after})
        return
    if before != after:
        out.print(f"{who}: {', '.join(before) or '-'} -> {', '.join(after) or '-'}")
    else:
        out.print(f"{who}: {', '.join(after) or '-'}")


@user_app.command("reset-mfa")
def user_reset_mfa(who: Who, json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """A new TOTP secret and recovery codes (printed once); the old ones stop working and
    every session of the user ends."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        enrolment = service.do_reset_mfa(session, ws.keyring, principal, who)
    if json_out:
        emit_json({"user": who, "mfa": _enrolment_dict(enrolment)})
        return
    _print_enrolment(enrolment, who)


@user_app.command("password")
def user_password(
    who: Who,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Set a user's password; every session of the user ends."""
    password = _read_password(password_stdin)
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        ended = service.do_set_password(session, principal, who, password)
    out.print(f"password set for {who}; {ended} session(s) ended")


# --- roles ----------------------------------------------------------------------------------
@role_app.command("list")
def role_list(
    permissions: Annotated[
        bool, typer.Option("--permissions", help="List the permission vocabulary instead.")
    ] = False,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Built-in and custom roles with their permissions."""
    if permissions:
        if json_out:
            emit_json(dict(PERMISSIONS))
            return
        for name, meaning in PERMISSIONS.items():
            out.print(f"{name:22} {meaning}")
        return
    with _admin(data_dir) as (ws, _principal), transaction(ws.engine) as session:
        roles = list_roles(session)
    if json_out:
        emit_json([r.as_dict() for r in roles])
        return
    for r in roles:
        kind = "built-in" if r.builtin else "custom"
        out.print(f"[bold]{r.name}[/] ({kind}): {r.description}")
        out.print(f"  {' '.join(r.permissions)}")


@role_app.command("create")
def role_create(
    name: Annotated[str, typer.Argument(help="a-z, 0-9 and _.")],
    permission: Annotated[list[str], typer.Option("--permission", help="A permission (repeat).")],
    description: Annotated[str, typer.Option(help="What the role is for.")] = "",
    data_dir: DataDir = None,
) -> None:
    """A custom role from the permission vocabulary (`role list --permissions`)."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        chosen = service.do_create_role(
            session, principal, name, permission, description=description
        )
    out.print(f"role {name}: {' '.join(chosen)}")


# --- API keys -------------------------------------------------------------------------------
@apikey_app.command("create")
def apikey_create(
    user: Annotated[str, typer.Option("--user", help="Owner: a user or service account.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    scope: Annotated[list[str], typer.Option("--scope", help="A permission (repeat).")],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, help="Expire after N days.")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Create an API key. It is printed once and cannot be shown again."""
    at = system_clock()
    expires = at + timedelta(days=expires_in_days) if expires_in_days else None
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        key = apikeys.do_create_api_key(
            session, principal, owner=user, name=name, scopes=scope, expires_at=expires
        )
    if json_out:
        emit_json(
            {
                "id": key.id,
                "key": key.token,
                "user": key.user_id,
                "scopes": key.scopes,
                "expires_at": key.expires_at.isoformat() if key.expires_at else None,
            }
        )
        return
    out.print(f"API key {key.id} for {user} (scopes: {' '.join(key.scopes)})")
    out.print("The key (shown once; carepost keeps only its hash):")
    out.print(key.token)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (after cpk_).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key at once."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        changed = apikeys.do_revoke_api_key(session, principal, key_id)
    out.print(f"revoked {key_id}" if changed else f"{key_id} was already revoked")


@apikey_app.command("list")
def apikey_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Keys with owner, scopes, state and last use (never the secret)."""
    at = datetime.now(UTC)
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        keys = apikeys.list_api_keys(session, principal, user)
    if json_out:
        emit_json([k.as_dict(at) for k in keys])
        return
    table = Table("id", "name", "user", "scopes", "state", "expires", "last used")
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.user_email,
            " ".join(k.scopes),
            k.state(at),
            k.expires_at.strftime("%Y-%m-%d") if k.expires_at else "-",
            k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
        )
    out.print(table)


# --- break-glass ----------------------------------------------------------------------------
@breakglass_app.command("list")
def breakglass_list(
    all_alerts: Annotated[bool, typer.Option("--all", help="Include acknowledged alerts.")] = False,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Break-glass alerts waiting for compliance (with --all, every one)."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        alerts = breakglass.list_alerts(session, principal, include_acknowledged=all_alerts)
    if json_out:
        emit_json([a.as_dict() for a in alerts])
        return
    table = Table("alert", "user", "granted", "until", "reason", "acknowledged")
    for a in alerts:
        table.add_row(
            a.id,
            a.user_email,
            a.created_at.strftime("%Y-%m-%d %H:%M"),
            a.expires_at.strftime("%H:%M"),
            a.reason,
            a.acknowledged_by or "-",
        )
    out.print(table)


@breakglass_app.command("ack")
def breakglass_ack(
    alert_id: Annotated[str, typer.Argument()],
    note: Annotated[str, typer.Option(help="What the review found.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Acknowledge a break-glass alert after reviewing it (audited)."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        changed = breakglass.do_acknowledge_alert(session, principal, alert_id, note=note)
    out.print(f"acknowledged {alert_id}" if changed else f"{alert_id} was already acknowledged")


@breakglass_app.command("end")
def breakglass_end(grant_id: Annotated[str, typer.Argument()], data_dir: DataDir = None) -> None:
    """End a break-glass grant before its time."""
    with _admin(data_dir) as (ws, principal), transaction(ws.engine) as session:
        changed = breakglass.do_end_break_glass(session, principal, grant_id)
    out.print(f"ended {grant_id}" if changed else f"{grant_id} was already over")
