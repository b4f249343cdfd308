"""The plain data a parsed message becomes, and the patterns every reader shares: RFC 3463
enhanced status codes, SMTP reply codes, addresses."""

from __future__ import annotations

import email.header
import email.message
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["dsn", "arf", "auto-reply", "text-bounce", "none"]

# RFC 3463: class.subject.detail; detail may run to three digits (5.7.606, 5.7.26).
STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
REPLY_RE = re.compile(r"(?<![\d.-])([245][0-5]\d)(?=[ -]|$)", re.MULTILINE)
ADDRESS_RE = re.compile(r"[A-Za-z0-9._%+='!#$&*?^`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True)
class Recipient:
    address: str
    action: str = ""  # RFC 3464 Action: failed / delayed / delivered / relayed / expanded
    status: str = ""  # RFC 3463 enhanced status code, e.g. "5.1.1"
    reply_code: str = ""  # SMTP reply code, e.g. "550"
    diagnostic: str = ""  # remote server's words; used for patterns, never logged


@dataclass(frozen=True)
class Report:
    kind: Kind
    recipients: tuple[Recipient, ...] = ()
    feedback_type: str = ""
    subject: str = ""
    text: str = ""  # the human-readable part; only matched against patterns


class ParseError(ValueError):
    """The bytes are not a readable email message. The text never quotes the content."""


def header(msg: email.message.Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(str(value))
        return "".join(
            p.decode(c or "ascii", "replace") if isinstance(p, bytes) else p for p, c in parts
        ).strip()
    except (LookupError, ValueError):
        return str(value).strip()


def unfold(value: str) -> str:
    return re.sub(r"\s*\r?\n\s+", " ", value).strip()
