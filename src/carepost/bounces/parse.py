"""Email bytes → a `Report`: what kind of machine message it is and, per recipient, the
fields the classifier decides on. Standard reports (RFC 3464 DSN, RFC 5965 ARF) are read
from their machine-readable parts; other MTAs' bounces are read from their prose, which is
why the text extractors are regexes over well-known phrasings rather than per-MTA code."""

from __future__ import annotations

import email
import email.message
import re
from email.policy import compat32

from carepost.bounces.prose import (
    is_auto_reply,
    looks_like_bounce,
    text_recipients,
    with_prose,
)
from carepost.bounces.report import (
    ADDRESS_RE,
    REPLY_RE,
    STATUS_RE,
    ParseError,
    Recipient,
    Report,
    header,
    unfold,
)
from carepost.bounces.ses import ses_notification

__all__ = ["ParseError", "Recipient", "Report", "parse_message"]


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
    subject = header(msg, "Subject")
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
    recipients = [with_prose(r, text) for r in _dsn_recipients(blocks)]
    if recipients:
        return Report("dsn", tuple(recipients), subject=subject, text=text)
    ses = ses_notification(text)
    if ses is not None:
        return Report(ses[0], ses[1], subject=subject, text=text)
    if looks_like_bounce(msg, subject, text):
        return Report("text-bounce", text_recipients(msg, text), subject=subject, text=text)
    if is_auto_reply(msg, subject):
        return Report("auto-reply", subject=subject, text=text)
    return Report("none", subject=subject, text=text)


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
            {k.lower(): unfold(str(v)) for k, v in sub.items()}
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
        fields = {k.lower(): unfold(str(v)) for k, v in block.items()}
        if fields:
            blocks.append(fields)
    return blocks


def _original_to(msg: email.message.Message) -> str:
    """The To header of the returned original, which ARF reports carry as their third part."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                inner = payload[0]
                if isinstance(inner, email.message.Message):
                    return header(inner, "To")
        if ctype == "text/rfc822-headers":
            headers = email.message_from_string(_decoded(part), policy=compat32)
            return header(headers, "To")
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
