"""Bounces that carry their reason only in prose (qmail, Exim, Sendmail, Exchange, Gmail,
Yahoo...) and RFC 3834 auto-replies: recognising them and finding the failed recipients,
their codes and the server's words with regexes over widely used phrasings."""

from __future__ import annotations

import email.message
import re

from carepost.bounces.report import ADDRESS_RE, REPLY_RE, STATUS_RE, Recipient, header, unfold

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


def looks_like_bounce(msg: email.message.Message, subject: str, text: str) -> bool:
    if msg.get("X-Failed-Recipients"):
        return True
    sender = header(msg, "From")
    null_sender = not header(msg, "Return-Path").strip("<> ")
    machine = (
        bool(_BOUNCE_SENDER.search(sender))
        or null_sender
        or (header(msg, "Auto-Submitted").lower().startswith("auto-generated"))
    )
    # A bounce says so in its subject or its first words; a vacation reply sent with a
    # null return path does neither.
    return machine and bool(_BOUNCE_SUBJECT.search(subject) or _BOUNCE_BODY.search(text))


_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|away\b|vacation"
    r"|on leave|absence|abwesenheit|r[ée]ponse automatique)",
    re.I,
)


def is_auto_reply(msg: email.message.Message, subject: str) -> bool:
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return True
    if any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    if header(msg, "Precedence").lower() == "auto_reply":
        return True
    if header(msg, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.search(subject):
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


def text_recipients(msg: email.message.Message, text: str) -> tuple[Recipient, ...]:
    own = {a.lower() for a in ADDRESS_RE.findall(header(msg, "To") + " " + header(msg, "From"))}
    spots: dict[str, int] = {}
    failed = header(msg, "X-Failed-Recipients")
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
                diagnostic=unfold(segment)[:2000],
            )
        )
    return tuple(recipients)


def with_prose(rcpt: Recipient, text: str) -> Recipient:
    """A DSN without Diagnostic-Code often has the remote reply in its prose part, next to
    the address (Sendmail's transcript, Postfix's "host ... said:")."""
    if rcpt.diagnostic:
        return rcpt
    at = text.lower().find(rcpt.address)
    if at < 0:
        return rcpt
    nearby = unfold(text[at : at + 600])
    reply = REPLY_RE.search(nearby)
    status = rcpt.status or (m.group(0) if (m := STATUS_RE.search(nearby)) else "")
    return Recipient(
        address=rcpt.address,
        action=rcpt.action,
        status=status,
        reply_code=reply.group(1) if reply else "",
        diagnostic=nearby,
    )
