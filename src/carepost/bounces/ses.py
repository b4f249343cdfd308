"""Amazon SES event notifications (bounce, complaint, delivery), which SES posts as JSON and
which often arrive by mail through SNS: a `Report` from that JSON."""

from __future__ import annotations

import json

from carepost.bounces.report import REPLY_RE, STATUS_RE, Kind, Recipient

_SES_KIND = {"Bounce": "dsn", "Complaint": "arf", "Delivery": "dsn"}


def ses_notification(text: str) -> tuple[Kind, tuple[Recipient, ...]] | None:
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
