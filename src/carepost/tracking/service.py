"""Writing engagement events. The tracking endpoints and classifier will call this; for
now tests and `carepost demo-data` do. Services never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from carepost.db import bulk_insert, driver_value
from carepost.tracking.models import EVENT_KINDS, VERDICTS, EngagementEvent

COLUMNS = ("contact_id", "message_id", "kind", "name", "verdict", "reason", "at")


class InvalidEvent(ValueError):
    pass


def _check(kind: str, verdict: str, name: str | None) -> None:
    if kind not in EVENT_KINDS:
        raise InvalidEvent(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    if verdict not in VERDICTS:
        raise InvalidEvent(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    if kind in ("form_submitted", "api_event") and not name:
        raise InvalidEvent(f"a {kind} event needs a name")


def record_event(
    session: Session,
    *,
    contact_id: str,
    kind: str,
    at: datetime,
    verdict: str = "unknown",
    name: str | None = None,
    message_id: str | None = None,
    reason: str | None = None,
) -> EngagementEvent:
    _check(kind, verdict, name)
    event = EngagementEvent(
        contact_id=contact_id,
        message_id=message_id,
        kind=kind,
        name=name,
        verdict=verdict,
        reason=reason,
        at=at,
    )
    session.add(event)
    session.flush()
    return event


def record_events(
    session: Session,
    events: Sequence[tuple[str, str | None, str, str | None, str, str | None, datetime]],
) -> int:
    """Bulk form of record_event: (contact_id, message_id, kind, name, verdict, reason, at)."""
    col = EngagementEvent.__table__.c.at
    rows = []
    for contact_id, message_id, kind, name, verdict, reason, at in events:
        _check(kind, verdict, name)
        rows.append(
            (contact_id, message_id, kind, name, verdict, reason, driver_value(session, col, at))
        )
    bulk_insert(session, EngagementEvent.__table__, COLUMNS, rows)
    return len(rows)
