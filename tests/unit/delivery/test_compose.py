"""One campaign message from a kit: the MIME a mail reader parses back, tokens the
tracking endpoints accept, and a DKIM signature dkimpy verifies, whether the text part
takes relaxed canonicalization's fast path (single spaces) or its slow one."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime

import dkim as dkimpy
import pytest

from carepost.consent.tokens import UnsubscribeToken, read_token
from carepost.content import mime
from carepost.content.template import TemplateSpec, compile_template
from carepost.content.tokens import TokenSigner, TrackingRef
from carepost.crypto.keyring import KeyRing
from carepost.delivery import dkim
from carepost.delivery.compose import CampaignKit, compose, finish

RING = KeyRing.generate()
TOKENS = TokenSigner(RING)
KEY = dkim.generate_key("rsa-sha256")
AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
OUTBOX_ID = "0123456789abcdef0123456789abcdef"
CONTACT_ID = "c" * 32
HTML = (
    "<html><body><p>Dear {{ first_name }},</p>"
    "<p>Our clinic is open late on Thursdays.</p>"
    "<p>Walk-in vaccination runs every Saturday morning.</p>"
    "<p><a href='https://clinic.example/flu?a=1&amp;b=2'>Book a flu shot</a></p>"
    "<p><a href='https://clinic.example/hours'>Opening hours</a></p>"
    "<p><a href='{{ unsubscribe_url }}'>Unsubscribe</a> · {{ sender_postal_address }}</p>"
    "<p><a href='{{ preferences_url }}'>Email preferences</a></p>"
    "</body></html>"
)


def _kit() -> CampaignKit:
    spec = TemplateSpec("news", "Clinic news", HTML, "marketing", ("first_name",))
    return CampaignKit(
        campaign_id="a" * 32,
        campaign_name="news",
        message_class="marketing",
        channel="email",
        topic="news",
        sender_id="clinic",
        from_address="news@clinic.example",
        return_path="bounces@clinic.example",
        postal_address="1 Main St, Springfield MA",
        organization_name="Clinic",
        sender_name="Clinic",
        message_id_domain="clinic.example",
        template=compile_template(spec),
        layout=mime.MimeLayout.alternative(),
        fixed_headers=mime.header_line(
            "From", mime.format_address("Clinic", "news@clinic.example")
        ),
        signer=dkim.DkimSigner("clinic.example", "s1", KEY),
        public_url="https://mail.clinic.example",
        track=True,
    )


def _dns(name: bytes, timeout: int = 5) -> bytes:
    return dkim.dns_record_value(KEY).encode()


@pytest.mark.parametrize(
    "given_name",
    ["Ada", "Ada  Marie\tLovelace ", "Zoë ✓"],
    ids=["single-spaces", "runs-tabs-trailing", "non-ascii"],
)
def test_message_parses_verifies_and_carries_good_tokens(given_name: str) -> None:
    kit = _kit()
    record = {"name": {"given": [given_name]}, "emails": ["patient@example.org"]}
    draft = compose(kit, RING, TOKENS, OUTBOX_ID, CONTACT_ID, record, [], AT)
    assert draft is not None
    sent = finish(draft, kit.signer)
    assert dkimpy.verify(sent.data, dnsfunc=_dns)
    msg = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    assert msg["Message-ID"] == f"<{OUTBOX_ID}@clinic.example>"
    assert msg["Date"] == "Tue, 24 Nov 2026 10:00:00 +0000"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None
    assert html is not None
    assert f"Dear {given_name}," in text.get_content()
    assert "Our clinic is open late on Thursdays." in text.get_content()
    unsubscribe = msg["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
    assert read_token(RING, unsubscribe) == UnsubscribeToken(CONTACT_ID, "email", "news")
    # The body's unsubscribe link is the header's; the preferences link carries its token.
    assert f"https://mail.clinic.example/u/{unsubscribe}" in html.get_content()
    assert f"https://mail.clinic.example/p/{unsubscribe}" in text.get_content()
    clicks = re.findall(r"/t/c/([\w.-]+)", html.get_content())
    # The honeypot first (hidden, index after the last link), then the two real links.
    assert [TOKENS.verify(t) for t in clicks] == [
        TrackingRef(OUTBOX_ID, "click", 2),
        TrackingRef(OUTBOX_ID, "click", 0),
        TrackingRef(OUTBOX_ID, "click", 1),
    ]
    hidden = re.findall(r'<a href="[^"]*/t/c/([\w.-]+)"([^>]*)></a>', html.get_content())
    assert hidden == [
        (clicks[0], ' style="display:none" aria-hidden="true" tabindex="-1"'),
    ]
    assert re.findall(r"/t/c/([\w.-]+)", text.get_content()) == clicks[1:]


def test_fixed_text_lines_are_looked_up_and_change_no_byte() -> None:
    kit = _kit()
    rendered = kit.template.render(
        {"first_name": "Ada", "unsubscribe_url": "https://u.example/u/T"},
        ["https://t.example/c/0", "https://t.example/c/1"],
        None,
    )
    lines = rendered.text.split("\n")
    assert "Our clinic is open late on Thursdays." in kit.known_text
    assert sum(line in kit.known_text for line in lines) >= 3
    assert mime.qp_body(rendered.text, kit.known_text) == mime.qp_body(rendered.text)


def test_untracked_message_has_no_pixel_no_honeypot_and_plain_links() -> None:
    kit = dataclasses.replace(_kit(), track=False)
    record = {"name": {"given": ["Ada"]}, "emails": ["patient@example.org"]}
    draft = compose(kit, RING, TOKENS, OUTBOX_ID, CONTACT_ID, record, [], AT)
    assert draft is not None
    msg = email.message_from_bytes(draft.body, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    html = msg.get_body(("html",))
    assert html is not None
    body = html.get_content()
    assert "/t/c/" not in body
    assert "/t/o/" not in body
    assert "display:none" not in body
    assert 'href="https://clinic.example/hours"' in body
