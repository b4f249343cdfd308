"""Writing engagement events: the tracking endpoints' ingestor (tracking/ingest.py) writes
opens and clicks with their verdicts; `carepost demo-data`, forms and API events come
through here too. Services never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from carepost.db import bulk_insert, driver_value
from carepost.tracking.models import EVENT_KINDS, VERDICTS, EngagementEvent

COLUMNS = ("contact_id", "message_id", "kind", "name", "verdict", "reason", "at")
TRACKED_COLUMNS = (*COLUMNS, "campaign_id", "link_index", "confidence", "network")


@dataclass(frozen=True)
class TrackedEvent:
    """An open or click as the tracking endpoints saw it, with its verdict. `network` is
    the source as a network (tracking.classifier's /24 or /48), never the raw address."""

    contact_id: str
    message_id: str
    campaign_id: str | None
    kind: str  # open | click
    link_index: int | None
    verdict: str
    reason: str
    confidence: float
    network: str | None
    at: datetime


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


def record_tracked(session: Session, events: Sequence[TrackedEvent]) -> int:
    """Bulk insert of opens and clicks with their verdicts, in the caller's transaction."""
    col = EngagementEvent.__table__.c.at
    rows = []
    for e in events:
        if e.kind not in ("open", "click"):
            raise InvalidEvent(f"a tracked event is an open or a click, not {e.kind!r}")
        _check(e.kind, e.verdict, None)
        rows.append(
            (
                e.contact_id,
                e.message_id,
                e.kind,
                None,
                e.verdict,
                e.reason,
                driver_value(session, col, e.at),
                e.campaign_id,
                e.link_index,
                e.confidence,
                e.network,
            )
        )
    bulk_insert(session, EngagementEvent.__table__, TRACKED_COLUMNS, rows)
    return len(rows)
