"""The two mails the portal sends, byte-built like content.mime: the notice that a
secure message is waiting, and the one-time code. Neither holds PHI: no name, nothing from
the template, not even the original subject; only the organization's name, the link (an
opaque token) and, in the code mail, the code. Both may travel with opportunistic TLS,
which is the point: the recipient's server could not do the TLS the message needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from carepost.content import mime
from carepost.delivery.dkim import DkimSigner

_LAYOUT = (
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)


@dataclass(frozen=True)
class PortalSender:
    """What the portal's mails need of a sender profile, PHI-free."""

    from_name: str
    from_address: str
    return_path: str
    organization: str
    signer: DkimSigner | None = None

    @property
    def message_id_domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]


@dataclass(frozen=True)
class BuiltMail:
    message_id: str
    data: bytes
    sha256: str


def portal_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/s/{token}"


def notice(
    sender: PortalSender,
    *,
    outbox_id: str,
    attempt: int,
    rcpt: str,
    link: str,
    at: datetime,
) -> BuiltMail:
    org = sender.organization
    text = (
        f"You have a secure message from {org}.\n\n"
        "To read it, open this link and follow the steps to confirm it is you:\n\n"
        f"{link}\n\n"
        "The message is kept on a secure site because it could not be delivered to\n"
        "your mailbox with the encryption it needs.\n\n"
        f"If you were not expecting a message from {org}, you can ignore this email.\n"
    )
    message_id = f"<{outbox_id}.portal{attempt}@{sender.message_id_domain}>"
    return _build(sender, rcpt, f"You have a secure message from {org}", text, message_id, at)


def code_mail(
    sender: PortalSender,
    *,
    code_id: str,
    rcpt: str,
    code: str,
    minutes: int,
    at: datetime,
) -> BuiltMail:
    org = sender.organization
    text = (
        f"Your one-time code for the secure message from {org} is:\n\n"
        f"    {code}\n\n"
        f"It works once and expires in {minutes} minutes.\n"
        "If you did not ask for a code, you can ignore this email.\n"
    )
    message_id = f"<{code_id}.code@{sender.message_id_domain}>"
    return _build(sender, rcpt, f"Your code for a secure message from {org}", text, message_id, at)


def _build(
    sender: PortalSender, rcpt: str, subject: str, text: str, message_id: str, at: datetime
) -> BuiltMail:
    head = (
        mime.header_line("From", mime.format_address(sender.from_name, sender.from_address))
        + mime.header_line("To", rcpt)
        + mime.header_line("Subject", subject)
        + mime.header_line("Date", format_datetime(at))
        + mime.header_line("Message-ID", message_id)
        + mime.header_line("Auto-Submitted", "auto-generated")
    )
    data = head + _LAYOUT + mime.qp_body(text)
    if sender.signer is not None:
        data = sender.signer.sign(data, int(at.timestamp()))
    return BuiltMail(message_id, data, hashlib.sha256(data).hexdigest())
