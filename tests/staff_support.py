"""Helpers for the staff account tests: users made through the real services, a clock to
move, and the TOTP code a user's authenticator app would show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carepost.audit.actor import Actor
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.db import transaction
from carepost.staff import mfa, service, totp
from carepost.staff.mfa import Enrolment
from carepost.staff.models import StaffMfa, StaffUser
from carepost.staff.principal import Principal
from carepost.staff.sessions import SessionPolicy
from carepost.staff.users import principal_for
from carepost.workspace import Workspace

PASSWORD = "amber-falcon-lattice-42"
NETWORK = "198.51.100.0/24"
POLICY = SessionPolicy()
SYSTEM = Principal.system(Actor("cli:test-admin", "cli", "test-host"))


class Clock:
    """A frozen clock the test moves by hand."""

    def __init__(self, at: datetime | None = None) -> None:
        self.now = at or datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Staff:
    id: str
    email: str
    enrolment: Enrolment | None


def add(
    ws: Workspace,
    email: str,
    *roles: str,
    clock: Clock | None = None,
    kind: str = "person",
    password: str | None = PASSWORD,
) -> Staff:
    with transaction(ws.engine) as s:
        added = service.do_add_user(
            s,
            ws.keyring,
            SYSTEM,
            email=email,
            display_name=email.split("@")[0].title(),
            roles=list(roles),
            password=password if kind == "person" else None,
            kind=kind,
            clock=clock or Clock(),
        )
    return Staff(added.id, added.email, added.enrolment)


def principal_of(ws: Workspace, user_id: str, source_kind: str = "api") -> Principal:
    with transaction(ws.engine) as s:
        user = s.get(StaffUser, user_id)
        assert user is not None
        return principal_for(s, user, source_kind=source_kind, network=NETWORK)


def code_for(ws: Workspace, user_id: str, at: datetime) -> str:
    """What the user's authenticator shows at `at`."""
    with transaction(ws.engine) as s:
        row = s.get(StaffMfa, user_id)
        assert row is not None
        return totp.code_at(mfa.secret_of(ws.keyring, row), at)


def contacts(ws: Workspace, *emails: str) -> list[str]:
    """Contacts with these addresses (each its own source id, so calls never collide)."""
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"staff:{address}",
                    {"v": 1, "name": {"given": ["Casey"], "family": "Doe"}, "emails": [address]},
                    [("email", address)],
                )
                for address in emails
            ]
        )
    return [o.contact_id for o in outcomes if o.contact_id]
