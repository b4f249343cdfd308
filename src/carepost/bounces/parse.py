"""Email bytes → a `Report`: what kind of machine message it is and, per recipient, the
fields the classifier decides on. Standard reports (RFC 3464 DSN, RFC 5965 ARF) are read
from their machine-readable parts; other MTAs' bounces are read from their prose, which is
why the text extractors are regexes over well-known phrasings rather than per-MTA code."""

from __future__ import annotations

import email
import email.header
import email.message
import json
import re
from dataclasses import dataclass, field
from email.policy import compat32
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
    notes: tuple[str, ...] = field(default=())


class ParseError(ValueError):
    """The bytes are not a readable email message. The text never quotes the content."""


def parse_message(data: bytes) -> Report:
    if not data.strip():
        raise ParseError("empty message")
    try:
        return _parse(data)
    except ParseError:
        raise
    except Exception as exc:
        # Malformed mail can trip the stdlib parser in many ways; callers need one error
        # type, and its text must not carry the message (exception texts may quote it).
        raise ParseError(f"unreadable message ({type(exc).__name__})") from None


def _parse(data: bytes) -> Report:
    # compat32: the modern policy raises on some malformed headers real bounces carry.
    msg = email.message_from_bytes(data, policy=compat32)
    if not msg.keys():
        raise ParseError("no email headers found")
    subject = _header(msg, "Subject")
    text = _human_text(msg)
    arf = _find_part(msg, "message/feedback-report")
    if arf is not None:
        return _arf_report(msg, arf, subject, text)
    dsn = _find_part(msg, "message/delivery-status")
    blocks = _fields(dsn) if dsn is not None else []
    if not blocks and msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        # Boundaries that do not match their declaration (mangled by a relay or an
        # anonymiser) leave the report unsplit; its fields are still there to read.
        blocks = _blocks_from_text(_own_body(msg))
    recipients = [_with_prose(r, text) for r in _dsn_recipients(blocks)]
    if recipients:
        return Report("dsn", tuple(recipients), subject=subject, text=text)
    ses = _ses_notification(text)
    if ses is not None:
        return Report(ses[0], ses[1], subject=subject, text=text)
    if _looks_like_bounce(msg, subject, text):
        return Report("text-bounce", _text_recipients(msg, text), subject=subject, text=text)
    if _is_auto_reply(msg, subject):
        return Report("auto-reply", subject=subject, text=text)
    return Report("none", subject=subject, text=text)


def _header(msg: email.message.Message, name: str) -> str:
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


def _find_part(msg: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
        if part is not msg and part.get_content_type() == "message/rfc822":
            # The returned original may itself be a report; it is not ours to read.
            break
    return None


def _walk_own_parts(msg: email.message.Message) -> list[email.message.Message]:
    """Parts of the notice itself, not of the original message it returns."""
    found: list[email.message.Message] = []

    def visit(part: email.message.Message) -> None:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            return
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                for sub in payload:
                    if isinstance(sub, email.message.Message):
                        visit(sub)
            return
        found.append(part)

    visit(msg)
    return found


def _decoded(part: email.message.Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


_ORIGINAL_MARKERS = re.compile(
    r"^(?:-+ ?(?:This is a copy of the message|Original message|Below this line is a copy)"
    r"|-+ ?Original message follows|Original message headers:|-+ ?The header of the original"
    r"|--- Below this line is a copy)",
    re.IGNORECASE | re.MULTILINE,
)


_EMBEDDED_PART = re.compile(
    r"^Content-Type:\s*(?:message/|text/rfc822-headers)", re.IGNORECASE | re.MULTILINE
)


def _own_body(msg: email.message.Message) -> str:
    """The body of a multipart message that failed to split, up to the first embedded
    message or header part (which belongs to the original, not to the notice)."""
    payload = msg.get_payload()
    body = payload if isinstance(payload, str) else ""
    cut = _EMBEDDED_PART.search(body)
    if cut and "message/delivery-status" in body[cut.start() : cut.end() + 30].lower():
        nxt = _EMBEDDED_PART.search(body, cut.end())
        return body[: nxt.start()] if nxt else body
    return body[: cut.start()] if cut else body


def _human_text(msg: email.message.Message) -> str:
    texts: list[str] = []
    if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        texts.append(_own_body(msg))
    for part in _walk_own_parts(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain" or (ctype == "text/html" and not texts):
            body = _decoded(part)
            if ctype == "text/html":
                body = re.sub(r"<[^>]+>", " ", body)
            texts.append(body)
    text = "\n".join(texts)
    # Bounces that inline the original message carry its words too; cut them off so
    # the patterns only see what the reporting server wrote.
    cut = _ORIGINAL_MARKERS.search(text)
    return text[: cut.start()] if cut else text


# --- RFC 5965 feedback reports ------------------------------------------------------------


def _fields(part: email.message.Message) -> list[dict[str, str]]:
    """Header blocks of a report part (message/delivery-status, message/feedback-report)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [
            {k.lower(): _unfold(str(v)) for k, v in sub.items()}
            for sub in payload
            if isinstance(sub, email.message.Message)
        ]
        return [b for b in blocks if b]
    return _blocks_from_text(_decoded(part))


def _blocks_from_text(body: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\r?\n\s*\r?\n", body):
        if not re.search(r"^[A-Za-z-]+:", chunk.strip(), re.MULTILINE):
            continue
        block = email.message_from_string(chunk.strip() + "\n\n", policy=compat32)
        fields = {k.lower(): _unfold(str(v)) for k, v in block.items()}
        if fields:
            blocks.append(fields)
    return blocks


def _unfold(value: str) -> str:
    return re.sub(r"\s*\r?\n\s+", " ", value).strip()


def _original_to(msg: email.message.Message) -> str:
    """The To header of the returned original, which ARF reports carry as their third part."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                inner = payload[0]
                if isinstance(inner, email.message.Message):
                    return _header(inner, "To")
        if ctype == "text/rfc822-headers":
            headers = email.message_from_string(_decoded(part), policy=compat32)
            return _header(headers, "To")
    return ""


def _arf_report(
    msg: email.message.Message, part: email.message.Message, subject: str, text: str
) -> Report:
    merged: dict[str, str] = {}
    for block in _fields(part):
        merged.update(block)
    recipients: tuple[Recipient, ...] = ()
    # RFC 5965 makes Original-Rcpt-To optional; the original's To is the next best witness
    # of whom the complaint is about.
    rcpt = merged.get("original-rcpt-to", "") or _original_to(msg)
    if m := ADDRESS_RE.search(rcpt):
        recipients = (Recipient(address=m.group(0).lower()),)
    return Report(
        "arf",
        recipients,
        feedback_type=merged.get("feedback-type", "").strip().lower(),
        subject=subject,
        text=text,
    )


# --- RFC 3464 delivery status notifications ------------------------------------------------


def _dsn_recipients(blocks: list[dict[str, str]]) -> list[Recipient]:
    recipients = []
    for block in blocks:
        address = ""
        # Final-Recipient first; Original-Recipient when the final one is not an address.
        for name in ("final-recipient", "original-recipient", "x-actual-recipient"):
            if m := ADDRESS_RE.search(block.get(name, "")):
                address = m.group(0)
                break
        if not address or not block.get("action", block.get("status")):
            continue
        diagnostic = block.get("diagnostic-code", "")
        diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic else diagnostic
        status_m = STATUS_RE.search(block.get("status", ""))
        diag_status = STATUS_RE.search(diagnostic)
        status = status_m.group(0) if status_m else ""
        # Some MTAs write a vaguer Status than the remote server's own code (5.0.0 for a
        # 5.1.1 reply); the more specific one of the same class is the better evidence.
        if diag_status and (
            not status or (status.endswith(".0.0") and diag_status.group(0)[0] == status[0])
        ):
            status = diag_status.group(0)
        reply = REPLY_RE.search(diagnostic)
        recipients.append(
            Recipient(
                address=address.lower(),
                action=block.get("action", "").strip().lower(),
                status=status,
                reply_code=reply.group(1) if reply else "",
                diagnostic=diagnostic,
            )
        )
    return recipients


def _with_prose(rcpt: Recipient, text: str) -> Recipient:
    """A DSN without Diagnostic-Code often has the remote reply in its prose part, next to
    the address (Sendmail's transcript, Postfix's "host ... said:")."""
    if rcpt.diagnostic:
        return rcpt
    at = text.lower().find(rcpt.address)
    if at < 0:
        return rcpt
    nearby = _unfold(text[at : at + 600])
    reply = REPLY_RE.search(nearby)
    status = rcpt.status or (m.group(0) if (m := STATUS_RE.search(nearby)) else "")
    return Recipient(
        address=rcpt.address,
        action=rcpt.action,
        status=status,
        reply_code=reply.group(1) if reply else "",
        diagnostic=nearby,
    )


# --- Amazon SES / SNS JSON notifications --------------------------------------------------

_SES_KIND = {"Bounce": "dsn", "Complaint": "arf", "Delivery": "dsn"}


def _ses_notification(text: str) -> tuple[Kind, tuple[Recipient, ...]] | None:
    """SES posts its bounce, complaint and delivery events as JSON, often mailed via SNS."""
    start = text.find('{"notificationType"')
    if start < 0:
        return None
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    kind = doc.get("notificationType") if isinstance(doc, dict) else None
    if kind not in _SES_KIND:
        return None
    out: list[Recipient] = []
    if kind == "Delivery":
        delivery = doc.get("delivery") or {}
        reply = str(delivery.get("smtpResponse", ""))
        for addr in delivery.get("recipients") or []:
            out.append(_ses_recipient(str(addr), "delivered", reply))
    elif kind == "Bounce":
        bounce = doc.get("bounce") or {}
        for item in bounce.get("bouncedRecipients") or []:
            out.append(
                _ses_recipient(
                    str(item.get("emailAddress", "")),
                    "failed",
                    str(item.get("diagnosticCode", "")),
                    str(item.get("status", "")),
                )
            )
    else:
        for item in (doc.get("complaint") or {}).get("complainedRecipients") or []:
            out.append(Recipient(address=str(item.get("emailAddress", "")).lower()))
    return _SES_KIND[kind], tuple(r for r in out if r.address)  # type: ignore[return-value]


def _ses_recipient(address: str, action: str, diagnostic: str, status: str = "") -> Recipient:
    found = STATUS_RE.search(status) or STATUS_RE.search(diagnostic)
    reply = REPLY_RE.search(diagnostic)
    return Recipient(
        address=address.lower(),
        action=action,
        status=found.group(0) if found else "",
        reply_code=reply.group(1) if reply else "",
        diagnostic=diagnostic,
    )


# --- non-standard bounces and auto-replies --------------------------------------------------

_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|fail|has failed|problem)"
    r"|returned mail|mail delivery failed|failure notice|delivery failure"
    r"|could not be delivered|non[- ]?delivery|returning message to sender"
    r"|postmaster notify|mail system error",
    re.I,
)


_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|permanent (?:fatal )?error|delivery "
    r"(?:has )?failed|undeliverable|wasn't able to deliver|was not delivered|returned to "
    r"sender|following address(?:es)? failed|delivery to the following recipients? failed",
    re.I,
)


def _looks_like_bounce(msg: email.message.Message, subject: str, text: str) -> bool:
    if msg.get("X-Failed-Recipients"):
        return True
    sender = _header(msg, "From")
    null_sender = not _header(msg, "Return-Path").strip("<> ")
    machine = (
        bool(_BOUNCE_SENDER.search(sender))
        or null_sender
        or (_header(msg, "Auto-Submitted").lower().startswith("auto-generated"))
    )
    # A bounce says so in its subject or its first words; a vacation reply sent with a
    # null return path does neither.
    return machine and bool(_BOUNCE_SUBJECT.search(subject) or _BOUNCE_BODY.search(text))


_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|away\b|vacation"
    r"|on leave|absence|abwesenheit|r[ée]ponse automatique)",
    re.I,
)


def _is_auto_reply(msg: email.message.Message, subject: str) -> bool:
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return True
    if any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    if _header(msg, "Precedence").lower() == "auto_reply":
        return True
    if _header(msg, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.search(subject):
        return True
    return bool(_AUTO_SUBJECT.search(subject))


# Where bounce prose names a failed recipient: a line that is just the address
# (qmail's "<a@b>:", Postfix's "<a@b>: host ... said:", Exim's indented address),
# or the address after a "to"/"recipient" phrase.
_RCPT_LINE = re.compile(
    r"^\s*<?(" + ADDRESS_RE.pattern + r")>?\s*(?::|$|\n|\s+on\s|\s*\()", re.MULTILINE
)
_RCPT_PHRASE = re.compile(
    r"(?:delivery to|could not be delivered to|failed (?:recipient|to deliver to)|recipient"
    r"(?: address)?:?|undeliverable to|message to|address(?:es)? failed:?)\s*<?("
    + ADDRESS_RE.pattern
    + r")>?",
    re.IGNORECASE,
)


def _text_recipients(msg: email.message.Message, text: str) -> tuple[Recipient, ...]:
    own = {a.lower() for a in ADDRESS_RE.findall(_header(msg, "To") + " " + _header(msg, "From"))}
    spots: dict[str, int] = {}
    failed = _header(msg, "X-Failed-Recipients")
    for addr in ADDRESS_RE.findall(failed):
        found = text.lower().find(addr.lower())
        spots.setdefault(addr.lower(), found if found >= 0 else 0)
    for rx in (_RCPT_LINE, _RCPT_PHRASE):
        for m in rx.finditer(text):
            addr = m.group(1).lower()
            if addr not in own and not _BOUNCE_SENDER.search(addr.split("@")[0]):
                spots.setdefault(addr, m.start(1))
    ordered = sorted(spots.items(), key=lambda kv: kv[1])
    recipients = []
    for i, (addr, start) in enumerate(ordered):
        end = ordered[i + 1][1] if i + 1 < len(ordered) and ordered[i + 1][1] > start else len(text)
        segment = text[start:end]
        if not STATUS_RE.search(segment) and not REPLY_RE.search(segment):
            segment = text  # the reason is written once for everyone, often above the list
        status = STATUS_RE.search(segment)
        reply = REPLY_RE.search(segment)
        recipients.append(
            Recipient(
                address=addr,
                action="failed",
                status=status.group(0) if status else "",
                reply_code=reply.group(1) if reply else "",
                diagnostic=_unfold(segment)[:2000],
            )
        )
    return tuple(recipients)
