"""Small builders for gate states used by the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carepost.consent.records import (
    AuthorizationState,
    ConsentEvent,
    ContactState,
    SuppressionState,
)

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CID = "0" * 31 + "1"


def auth(
    id: str = "auth-1",
    *,
    purposes: tuple[str, ...] = ("marketing",),
    recipients: tuple[str, ...] = ("self", "acme-pharmacy"),
    signed_at: datetime | None = AT - 30 * DAY,
    expires_at: datetime | None = AT + 365 * DAY,
    expiry_event_at: datetime | None = None,
    revoked_at: datetime | None = None,
    remuneration: bool = False,
    complete: bool = True,
) -> AuthorizationState:
    return AuthorizationState(
        id=id,
        purposes=frozenset(purposes),
        recipients=frozenset(recipients),
        signed_at=signed_at,
        expires_at=expires_at,
        expiry_event_at=expiry_event_at,
        revoked_at=revoked_at,
        remuneration_statement=remuneration,
        complete=complete,
    )


def opt(status: str, at: datetime = AT - 10 * DAY) -> ConsentEvent:
    return ConsentEvent(status, at)


def sup(reason: str, channel: str = "email", at: datetime = AT - DAY, removed_at=None):  # type: ignore[no-untyped-def]
    return SuppressionState(channel, reason, at, removed_at)


def state(
    consents: dict[tuple[str, str], tuple[ConsentEvent, ...]] | None = None,
    auths: tuple[AuthorizationState, ...] = (),
    sups: tuple[SuppressionState, ...] = (),
) -> ContactState:
    return ContactState(CID, consents or {}, auths, sups)


IN = {("email", "newsletter"): (opt("opted_in"),)}
OUT = {("email", "newsletter"): (opt("opted_out"),)}
