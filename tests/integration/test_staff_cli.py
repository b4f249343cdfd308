"""`carepost user|role|apikey|breakglass` as a process, on both engines: the first owner
with a TOTP enrolment (QR code, URI, recovery codes), roles, disabling, MFA reset,
passwords, custom roles, API keys shown once, and clear errors that change nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import orjson
from sqlalchemy import select

from carepost.config import Settings
from carepost.db import transaction
from carepost.staff import apikeys
from carepost.staff.models import StaffUser
from carepost.workspace import Workspace, open_workspace
from cli_runner import Run

PASSWORD = "quiet-meadow-ledger-7"


def _add(cli: Callable[..., Run], *args: str, password: str = PASSWORD) -> Run:
    return cli("user", "add", *args, "--password-stdin", stdin=password + "\n", check=False)


def test_first_owner_gets_an_enrolment_once(
    carepost: Callable[..., Run], workspace: Workspace
) -> None:
    cli = carepost
    shown = _add(cli, "boss@clinic.example", "--name", "Pat Boss", "--role", "owner")
    assert shown.returncode == 0, shown.stderr
    assert "▄" in shown.stdout or "█" in shown.stdout  # the QR code, in the terminal
    assert "otpauth://totp/carepost:boss%40clinic.example?secret=" in shown.stdout
    assert PASSWORD not in shown.stdout + shown.stderr
    as_json = _add(cli, "ops@clinic.example", "--name", "Ops", "--role", "admin", "--json")
    data = orjson.loads(as_json.stdout)
    uri = urlparse(data["mfa"]["otpauth_uri"])
    assert parse_qs(uri.query)["secret"] == [data["mfa"]["secret"]]
    assert len(data["mfa"]["recovery_codes"]) == 10
    listed = orjson.loads(cli("user", "list", "--json").stdout)
    assert [(u["email"], u["roles"], u["status"]) for u in listed] == [
        ("boss@clinic.example", ["owner"], "active"),
        ("ops@clinic.example", ["admin"], "active"),
    ]
    # nothing secret can be listed again
    assert data["mfa"]["secret"] not in cli("user", "list", "--json").stdout
    with transaction(workspace.engine) as s:
        stored = repr([(u.password_hash, u.email) for u in s.scalars(select(StaffUser))])
    assert PASSWORD not in stored
    assert "$argon2id$" in stored


def test_roles_disable_reset_and_passwords(
    carepost: Callable[..., Run], workspace: Workspace
) -> None:
    cli = carepost
    _add(cli, "boss@clinic.example", "--name", "Boss", "--role", "owner")
    _add(cli, "m@clinic.example", "--name", "Mo", "--role", "marketer")
    shown = orjson.loads(cli("user", "roles", "m@clinic.example", "--json").stdout)
    assert shown["roles"] == ["marketer"]
    changed = orjson.loads(
        cli(
            "user",
            "roles",
            "m@clinic.example",
            "--add",
            "analyst",
            "--remove",
            "marketer",
            "--json",
        ).stdout
    )
    assert (changed["before"], changed["roles"]) == (["marketer"], ["analyst"])
    bad = cli("user", "roles", "m@clinic.example", "--add", "wizard", check=False)
    assert bad.returncode == 2
    assert "no role named 'wizard'" in bad.stderr
    reset = orjson.loads(cli("user", "reset-mfa", "m@clinic.example", "--json").stdout)
    assert reset["mfa"]["otpauth_uri"].startswith("otpauth://totp/")
    weak = _add(cli, "w@clinic.example", "--name", "W", password="qwerty123456")
    assert weak.returncode == 2
    assert "10,000 most common" in weak.stderr
    assert "w@clinic.example" not in cli("user", "list").stdout  # nothing half-written
    assert "1 session(s)" not in cli("user", "disable", "m@clinic.example").stdout
    listed = orjson.loads(cli("user", "list", "--json").stdout)
    assert {u["email"]: u["status"] for u in listed}["m@clinic.example"] == "disabled"
    last = cli("user", "disable", "boss@clinic.example", check=False)
    assert last.returncode == 2
    assert "last active owner" in last.stderr
    cli("user", "enable", "m@clinic.example")
    set_pw = cli(
        "user",
        "password",
        "m@clinic.example",
        "--password-stdin",
        stdin="another fine passphrase\n",
    )
    assert "password set for m@clinic.example; 0 session(s) ended" in set_pw.stdout


def test_custom_roles_and_api_keys(
    carepost: Callable[..., Run], settings: Settings, workspace: Workspace
) -> None:
    cli = carepost
    vocabulary = orjson.loads(cli("role", "list", "--permissions", "--json").stdout)
    assert "phi:read" in vocabulary
    assert "breakglass:request" in vocabulary
    cli(
        "role",
        "create",
        "front_desk",
        "--permission",
        "contacts:read",
        "--permission",
        "templates:read",
    )
    roles = {r["name"]: r for r in orjson.loads(cli("role", "list", "--json").stdout)}
    assert roles["front_desk"] == {
        "name": "front_desk",
        "description": "",
        "builtin": False,
        "permissions": ["contacts:read", "templates:read"],
    }
    assert roles["marketer"]["builtin"] is True
    typo = cli("role", "create", "x_role", "--permission", "contacts:raed", check=False)
    assert typo.returncode == 2
    assert "contacts:raed" in typo.stderr
    cli("user", "add", "etl@clinic.example", "--name", "ETL", "--service", "--role", "front_desk")
    created = orjson.loads(
        cli(
            "apikey",
            "create",
            "--user",
            "etl@clinic.example",
            "--name",
            "nightly",
            "--scope",
            "contacts:read",
            "--expires-in-days",
            "30",
            "--json",
        ).stdout
    )
    token = created["key"]
    assert token.startswith(f"cpk_{created['id']}_")
    listing = cli("apikey", "list", "--json").stdout
    assert token not in listing
    assert token.split("_", 2)[2] not in listing
    keys = orjson.loads(listing)
    assert [(k["id"], k["scopes"], k["state"]) for k in keys] == [
        (created["id"], ["contacts:read"], "active")
    ]
    too_wide = cli(
        "apikey",
        "create",
        "--user",
        "etl@clinic.example",
        "--name",
        "x",
        "--scope",
        "phi:read",
        check=False,
    )
    assert too_wide.returncode == 2
    assert "not among the owner's permissions" in too_wide.stderr
    ws = open_workspace(settings=settings)
    try:
        with transaction(ws.engine) as s:
            principal = apikeys.authenticate(s, token, network="n", at=datetime.now(UTC))
            assert principal is not None
            assert principal.permissions == {"contacts:read"}
        cli("apikey", "revoke", created["id"])
        with transaction(ws.engine) as s:
            assert apikeys.authenticate(s, token, network="n", at=datetime.now(UTC)) is None
    finally:
        ws.close()
    assert orjson.loads(cli("apikey", "list", "--json").stdout)[0]["state"] == "revoked"
    assert orjson.loads(cli("breakglass", "list", "--json").stdout) == []
