"""Recorded events as JSON lines (the replay format of `carepost tracking classify`): one
object per line with message_id, kind, link_index, method, user_agent, ip, headers,
delivered_at, at (ISO 8601 UTC), and optionally message_links and honeypot. Errors name the
field and what is wrong with it, never its value (a line may hold an address)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from carepost.tracking.classifier import Event, Knowledge, Verdict, classify


class BadLine(ValueError):
    """A line that cannot be an event; the text names the field, not its value."""


@dataclass(frozen=True, slots=True)
class Recorded:
    line: int
    message_id: str
    event: Event
    extra: dict[str, Any]  # fields beyond the format (a replay set's label and scenario)


_FIELDS = ("message_id", "kind", "link_index", "method", "user_agent", "ip", "headers")


def _time(doc: dict[str, Any], name: str) -> datetime:
    value = doc.get(name)
    if not isinstance(value, str):
        raise BadLine(f"field {name!r} is missing or not a string")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadLine(f"field {name!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise BadLine(f"field {name!r} has no time zone (expected UTC)")
    return at.astimezone(UTC)


def parse_line(text: str | bytes, line: int) -> Recorded:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadLine("not a JSON object") from None
    if not isinstance(doc, dict):
        raise BadLine("not a JSON object")
    for name in _FIELDS:
        if name not in doc:
            raise BadLine(f"field {name!r} is missing")
    kind = doc["kind"]
    if kind not in ("open", "click"):
        raise BadLine("field 'kind' must be 'open' or 'click'")
    link = doc["link_index"]
    if link is not None and (not isinstance(link, int) or isinstance(link, bool) or link < 0):
        raise BadLine("field 'link_index' must be a whole number >= 0 or null")
    if kind == "click" and link is None:
        raise BadLine("field 'link_index' is needed for a click")
    for name in ("message_id", "method", "user_agent", "ip"):
        if not isinstance(doc[name], str):
            raise BadLine(f"field {name!r} must be a string")
    headers = doc["headers"]
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadLine("field 'headers' must be an object of strings")
    links = doc.get("message_links")
    if links is not None and (not isinstance(links, int) or isinstance(links, bool) or links < 0):
        raise BadLine("field 'message_links' must be a whole number >= 0 or null")
    honeypot = doc.get("honeypot", False)
    if not isinstance(honeypot, bool):
        raise BadLine("field 'honeypot' must be true or false")
    event = Event(
        kind=kind,
        link_index=link,
        method=doc["method"],
        user_agent=doc["user_agent"],
        ip=doc["ip"],
        headers=headers,
        delivered_at=_time(doc, "delivered_at"),
        at=_time(doc, "at"),
        message_links=links,
        honeypot=honeypot,
    )
    known = {*_FIELDS, "delivered_at", "at", "message_links", "honeypot"}
    extra = {k: v for k, v in doc.items() if k not in known}
    return Recorded(line, doc["message_id"], event, extra)


def read_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, Recorded | BadLine]]:
    """Each non-blank line, numbered from 1, parsed or with its error."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, parse_line(text, number)
        except BadLine as exc:
            yield number, exc


def classify_all(records: list[Recorded], knowledge: Knowledge) -> list[Verdict]:
    """Verdicts in input order; each event sees the other events of its message."""
    by_message: dict[str, list[Event]] = defaultdict(list)
    for rec in records:
        by_message[rec.message_id].append(rec.event)
    return [classify(rec.event, by_message[rec.message_id], knowledge) for rec in records]
