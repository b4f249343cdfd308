"""Which of our messages a bounce is about when it did not come back to a VERP address:
the Message-IDs the notice quotes from the original (a `message/rfc822` part, RFC 3462
`text/rfc822-headers`, ARF's third part, or headers inlined after a "copy of the message"
line in a prose bounce). Pure: bytes in, candidate ids out. Only ids shaped like ours
(`<32 hex characters@domain>`) are returned; the caller checks them against what was sent.
"""

from __future__ import annotations

import email
import email.message
import re
from email.policy import compat32

# The notice's own Message-ID is the reporting server's; ours is in the quoted original.
_OURS = re.compile(rb"<([0-9a-f]{32})@([A-Za-z0-9.-]{1,253})>", re.IGNORECASE)
_HEADER = re.compile(rb"^\s*Message-ID:\s*(<[^>\r\n]{1,300}>)", re.IGNORECASE | re.MULTILINE)


def _ours(value: str | bytes) -> str | None:
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    match = _OURS.search(raw)
    if match is None:
        return None
    return f"<{match.group(1).decode().lower()}@{match.group(2).decode().lower()}>"


def _add(found: list[str], value: str | bytes | None) -> None:
    if value is None:
        return
    mid = _ours(value)
    if mid is not None and mid not in found:
        found.append(mid)


def referenced_message_ids(data: bytes) -> list[str]:
    found: list[str] = []
    try:
        msg = email.message_from_bytes(data, policy=compat32)
    except Exception:
        msg = None
    own = _ours(str(msg.get("Message-ID", ""))) if msg is not None else None
    if msg is not None:
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "message/rfc822":
                payload = part.get_payload()
                if isinstance(payload, list) and payload:
                    inner = payload[0]
                    if isinstance(inner, email.message.Message):
                        _add(found, str(inner.get("Message-ID", "")))
            elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "text/plain"):
                body = part.get_payload(decode=True)
                if isinstance(body, bytes):
                    for match in _HEADER.finditer(body):
                        _add(found, match.group(1))
        # Some MTAs answer with In-Reply-To/References naming the original.
        for name in ("In-Reply-To", "References"):
            _add(found, str(msg.get(name, "")))
    # Mail that did not split into parts: every quoted Message-ID line in the raw bytes.
    for match in _HEADER.finditer(data):
        _add(found, match.group(1))
    return [m for m in found if m != own]
