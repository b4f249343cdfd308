"""One recipient's message, from a campaign kit prepared once and a decrypted contact.

Everything fixed for a campaign is made once in `CampaignKit`: the compiled template,
the MIME layout, the From/Reply-To header lines, the DKIM signer. Per message, only the
merge fields, the tokens, the Message-ID, the MIME bytes and the signature are made.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from carepost.consent.headers import preferences_url, unsubscribe_headers, unsubscribe_url
from carepost.consent.tokens import make_token
from carepost.content import mime
from carepost.content.fields import phi_context
from carepost.content.template import CompiledTemplate
from carepost.content.tokens import TokenSigner
from carepost.crypto.keyring import KeyRing
from carepost.delivery import e2e
from carepost.delivery.dkim import DkimSigner, PendingSignature

FACT_FIELDS = frozenset({"next_appointment_date", "last_visit_date"})


@dataclass(frozen=True)
class CampaignKit:
    campaign_id: str
    campaign_name: str
    message_class: str
    channel: str
    topic: str
    sender_id: str
    from_address: str
    return_path: str
    postal_address: str
    organization_name: str
    sender_name: str
    message_id_domain: str
    template: CompiledTemplate
    layout: mime.MimeLayout
    fixed_headers: bytes  # From, Reply-To
    signer: DkimSigner | None
    public_url: str
    track: bool
    e2e_mode: str = e2e.OFF  # the sender profile's end-to-end mode (delivery/e2e.py)

    @property
    def needs_facts(self) -> bool:
        return bool(FACT_FIELDS & set(self.template.spec.phi_fields))

    @functools.cached_property
    def known_text(self) -> dict[str, bytes]:
        """The template's fixed text lines, quoted-printable: encoded once per campaign."""
        return mime.qp_known_lines(self.template.fixed_text_lines)


@dataclass(frozen=True)
class Draft:
    """A message before its signature: everything Python has to do is done."""

    outbox_id: str
    rcpt: str
    message_id: str
    body: bytes
    pending: PendingSignature | None


@dataclass(frozen=True)
class Composed:
    outbox_id: str
    rcpt: str
    message_id: str
    data: bytes
    sha256: str
    dkim: str | None


def finish(draft: Draft, signer: DkimSigner | None) -> Composed:
    """The DKIM body hash, the private-key signature and the message hash: C work that
    releases the GIL, so workers run it on a helper thread while they build the next
    draft."""
    data = draft.body
    dkim_header = None
    if draft.pending is not None and signer is not None:
        header = signer.complete(draft.pending)
        data = header + data
        dkim_header = header.decode("ascii").split(":", 1)[1].strip()
    return Composed(
        draft.outbox_id,
        draft.rcpt,
        draft.message_id,
        data,
        hashlib.sha256(data).hexdigest(),
        dkim_header,
    )


def recipient_of(record: dict[str, Any]) -> str | None:
    emails = record.get("emails") or []
    return str(emails[0]) if emails else None


def compose(
    kit: CampaignKit,
    ring: KeyRing,
    tokens: TokenSigner,
    outbox_id: str,
    contact_id: str,
    record: dict[str, Any],
    facts: list[dict[str, Any]],
    at: datetime,
    key: e2e.KeyLike | None = None,
    message_data: Mapping[str, Any] | None = None,
) -> Draft | None:
    """One recipient's message, ready to sign; None when the contact has no address.
    With `key`, the body is encrypted to it (e2e.py) and the real Subject goes inside
    (E2eError if the key will not encrypt). `message_data` is a one-off message's opened data,
    for its template's `data_<name>` fields."""
    rcpt = recipient_of(record)
    if rcpt is None:
        return None
    # One token for the unsubscribe and preferences links: the same contact, channel and
    # topic, and one AES-GCM seal a message fewer.
    token = make_token(ring, contact_id, kit.channel, kit.topic)
    unsubscribe = unsubscribe_headers(kit.public_url, token)
    context = phi_context(kit.template.spec.phi_fields, record, facts, at, message_data)
    context.update(
        unsubscribe_url=unsubscribe_url(kit.public_url, token),
        preferences_url=preferences_url(kit.public_url, token),
        sender_name=kit.sender_name,
        sender_postal_address=kit.postal_address,
        organization_name=kit.organization_name,
        campaign_name=kit.campaign_name,
        current_year=str(at.year),
        portal_url=kit.public_url,
    )
    if kit.track:
        # One click token more than the template has links: index len(links) is the
        # honeypot's (tracking/ingest.py reads it so).
        clicks, opened = tokens.message_tokens(outbox_id, len(kit.template.links) + 1)
        click_base = f"{kit.public_url}/t/c/"
        links = [click_base + token for token in clicks]
        honeypot: str | None = links.pop()
        pixel: str | None = f"{kit.public_url}/t/o/{opened}"
    else:
        links, pixel, honeypot = list(kit.template.links), None, None
    rendered = kit.template.render_parts(
        context, links, pixel, honeypot, kit.layout.boundary, kit.known_text
    )
    message_id = f"<{outbox_id}@{kit.message_id_domain}>"
    to_line = mime.header_line("To", rcpt)
    id_line = mime.header_line("Message-ID", message_id)
    subject = rendered.subject if key is None else e2e.NEUTRAL_SUBJECT
    head = (
        kit.fixed_headers
        + to_line
        + mime.header_line("Subject", subject)
        + _date_line(at)
        + id_line
        + mime.header_line("List-Unsubscribe", unsubscribe["List-Unsubscribe"])
        + mime.header_line("List-Unsubscribe-Post", unsubscribe["List-Unsubscribe-Post"])
    )
    if key is None:
        data = mime.build_parts(kit.layout, head, rendered.text_part, rendered.html_part)
    else:
        protected = (
            kit.fixed_headers
            + to_line
            + mime.header_line("Subject", rendered.subject)
            + _date_line(at)
            + id_line
        )
        # The protected layout keeps the campaign's boundary, so the same HTML part fits.
        inner = mime.build_parts(
            e2e.protected_layout(kit.layout),
            protected,
            rendered.text_part,
            rendered.html_part,
        )
        data = head + e2e.encrypt_entity(key.kind, inner, key.material)
    pending = kit.signer.prepare(data, int(at.timestamp())) if kit.signer is not None else None
    return Draft(outbox_id, rcpt, message_id, data, pending)


def _date_line(at: datetime) -> bytes:
    # A worker batch shares one `at`: the Date header is the same for hundreds of messages.
    # The offset is part of the key because equal instants in two zones print differently.
    return _date_line_in(at, at.utcoffset())


@functools.lru_cache(maxsize=8)
def _date_line_in(at: datetime, offset: timedelta | None) -> bytes:
    return mime.header_line("Date", format_datetime(at))
