"""The archived message, taken apart for the portal page: pure (bytes in, parts out).

The archive holds the exact bytes that were built for the recipient (delivery.archive);
this finds the subject, the first text/plain and text/html bodies and every other leaf
part as an attachment. Nothing here is logged or raised with content in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

MAX_ATTACHMENTS = 100


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class PortalMessage:
    subject: str
    sender: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]


class UnreadableMessage(ValueError):
    pass


def parse(data: bytes) -> PortalMessage:
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as exc:  # the parser is lenient; anything it raises is our bug
        raise UnreadableMessage("the archived message could not be parsed") from exc
    assert isinstance(message, EmailMessage)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        payload = part.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        if disposition != "attachment" and content_type == "text/plain" and text is None:
            text = _decode(part, body)
        elif disposition != "attachment" and content_type == "text/html" and html is None:
            html = _decode(part, body)
        elif len(attachments) < MAX_ATTACHMENTS:
            name = part.get_filename() or f"attachment-{len(attachments) + 1}"
            attachments.append(Attachment(_safe_name(name), content_type, body))
    return PortalMessage(
        subject=str(message.get("Subject", "")),
        sender=str(message.get("From", "")),
        text=text,
        html=html,
        attachments=tuple(attachments),
    )


def _decode(part: EmailMessage, body: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def _safe_name(name: str) -> str:
    """A file name without path parts or control characters, for Content-Disposition."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable() and ch not in '"')
    return cleaned.strip(". ")[:200] or "attachment"
