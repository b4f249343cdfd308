"""Portal tokens and codes, the notice and code mails (PHI-free, well-formed, signed),
and taking an archived message apart."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import dkim as dkimpy

from carepost.crypto.keyring import KeyRing
from carepost.delivery import dkim
from carepost.portal import tokens
from carepost.portal.message import parse
from carepost.portal.notice import PortalSender, code_mail, notice, portal_url

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _ring() -> KeyRing:
    return KeyRing.generate()


def test_link_token_is_stable_opaque_and_keyed() -> None:
    ring, other = _ring(), _ring()
    token = tokens.link_token(ring, "0123456789abcdef0123456789abcdef")
    assert token == tokens.link_token(ring, "0123456789abcdef0123456789abcdef")
    assert token != tokens.link_token(other, "0123456789abcdef0123456789abcdef")
    assert token != tokens.link_token(ring, "0123456789abcdef0123456789abcdee")
    assert tokens.well_formed(token)
    assert "0123456789abcdef" not in token
    assert not tokens.well_formed(token[:-1])
    assert not tokens.well_formed(token + "A")
    assert not tokens.well_formed("../" + token[3:])
    assert len(tokens.lookup_hash(token)) == 64
    assert token not in tokens.lookup_hash(token)


def test_codes() -> None:
    ring = _ring()
    codes = {tokens.new_code() for _ in range(200)}
    assert all(len(c) == 8 and c.isdigit() for c in codes)
    assert len(codes) > 190
    stored = tokens.code_hash(ring, "m1", "c1", "01234567")
    assert tokens.code_matches(ring, "m1", "c1", "01234567", stored)
    assert not tokens.code_matches(ring, "m2", "c1", "01234567", stored)  # another message
    assert not tokens.code_matches(ring, "m1", "c2", "01234567", stored)
    assert not tokens.code_matches(ring, "m1", "c1", "01234568", stored)
    assert tokens.normalize_code(" 0123-4567 ") == "01234567"
    for bad in ("", "1234567", "123456789", "abcdefgh", "1234567\n"):
        assert tokens.normalize_code(bad) is None


def test_notice_and_code_mail_hold_no_phi_and_verify() -> None:
    key = dkim.generate_key("rsa-sha256")
    signer = dkim.DkimSigner("clinic.example", "s1", key)
    sender = PortalSender(
        "Example Clinic", "care@clinic.example", "bounces@clinic.example", "Example Clinic", signer
    )
    link = portal_url("https://mail.clinic.example/", "T" * 43)
    assert link == "https://mail.clinic.example/s/" + "T" * 43
    built = notice(sender, outbox_id="abc", attempt=2, rcpt="qzx@patient.example", link=link, at=AT)
    msg = email.message_from_bytes(built.data, policy=policy.default)
    assert msg["Subject"] == "You have a secure message from Example Clinic"
    assert msg["Message-ID"] == "<abc.portal2@clinic.example>" == built.message_id
    assert msg["To"] == "qzx@patient.example"
    body = msg.get_content()
    assert link in body
    assert "Example Clinic" in body
    assert b"\r\n" in built.data
    assert b"\n" not in built.data.replace(b"\r\n", b"")
    txt = dkim.dns_record_value(key)
    assert dkimpy.verify(built.data, dnsfunc=lambda name, timeout=5: txt.encode())
    code = code_mail(
        sender, code_id="c1", rcpt="qzx@patient.example", code="01234567", minutes=10, at=AT
    )
    cmsg = email.message_from_bytes(code.data, policy=policy.default)
    assert "01234567" in cmsg.get_content()
    assert "01234567" not in str(cmsg["Subject"])
    assert "10 minutes" in cmsg.get_content()


MULTI = (
    b"From: a@b.example\r\nTo: c@d.example\r\nSubject: =?utf-8?b?w4l0w6k=?=\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
    b"--YY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello text\r\n"
    b"--YY\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello html</p>\r\n--YY--\r\n"
    b"--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="../../etc/report.pdf"\r\n\r\n'
    b"JVBERi0xLjQK\r\n"
    b"--XX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nnotes\r\n"
    b"--XX--\r\n"
)


def test_parse_message_parts_and_attachments() -> None:
    parsed = parse(MULTI)
    assert parsed.subject == "Été"
    assert parsed.text is not None
    assert parsed.text.strip() == "Hello text"
    assert parsed.html is not None
    assert "<p>Hello html</p>" in parsed.html
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("report.pdf", "application/pdf"),
        ("attachment-2", "text/plain"),
    ]
    assert parsed.attachments[0].data == b"%PDF-1.4\n"
