"""Unsubscribe tokens and the List-Unsubscribe headers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from carepost.config import Settings
from carepost.consent.headers import (
    DKIM_SIGNED_HEADERS,
    PublicUrlError,
    list_unsubscribe_headers,
    public_base_url,
)
from carepost.consent.tokens import BadToken, make_token, read_token
from carepost.crypto.keyring import KeyRing

CID = "0123456789abcdef0123456789abcdef"


def test_round_trip_and_opacity() -> None:
    ring = KeyRing.generate()
    token = make_token(ring, CID, "email", "diabetes-education")
    parsed = read_token(ring, token)
    assert (parsed.contact_id, parsed.channel, parsed.topic) == (CID, "email", "diabetes-education")
    # Opaque: neither the topic nor the id appears in the token or its decoded bytes.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"diabetes" not in raw
    assert bytes.fromhex(CID) not in raw
    assert "diabetes" not in token
    assert token.replace("-", "").replace("_", "").isalnum()
    # Two tokens for the same thing differ (random nonce), both valid.
    assert make_token(ring, CID, "email", "diabetes-education") != token


def test_tampering_forgery_and_other_keys_fail() -> None:
    ring = KeyRing.generate()
    token = make_token(ring, CID, "sms", "newsletter")
    for i in (5, len(token) // 2, len(token) - 2):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(BadToken):
            read_token(ring, flipped)
    with pytest.raises(BadToken):
        read_token(KeyRing.generate(), token)
    for junk in ("", "x", "!!!!", "a" * 300, token[:-4], "é" * 40):
        with pytest.raises(BadToken):
            read_token(ring, junk)


def test_tokens_refuse_bad_input() -> None:
    ring = KeyRing.generate()
    with pytest.raises(ValueError, match="channel"):
        make_token(ring, CID, "fax", "x")
    with pytest.raises(ValueError, match="topic"):
        make_token(ring, CID, "email", "Jane Doe")
    with pytest.raises(ValueError, match="hex"):
        make_token(ring, "not-an-id", "email", "x")


def test_headers_for_one_click_and_mailto() -> None:
    ring = KeyRing.generate()
    headers = list_unsubscribe_headers(
        ring, "https://mail.example.org", CID, "email", "newsletter", mailto="unsub@example.org"
    )
    assert set(headers) == set(DKIM_SIGNED_HEADERS)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_uri, mailto_uri = headers["List-Unsubscribe"].split(", ")
    assert https_uri.startswith("<https://mail.example.org/u/")
    token = https_uri.removeprefix("<https://mail.example.org/u/").removesuffix(">")
    assert read_token(ring, token).topic == "newsletter"
    assert mailto_uri.startswith("<mailto:unsub@example.org?subject=unsubscribe%20")
    assert "\r" not in headers["List-Unsubscribe"]
    assert "\n" not in headers["List-Unsubscribe"]
    with pytest.raises(ValueError, match="bare address"):
        list_unsubscribe_headers(ring, "https://x", CID, "email", "n", mailto="a@b>\r\nBcc: c")


def test_public_url_must_be_https_unless_dev_insecure(tmp_path: Path) -> None:
    def base(**kw: object) -> str:
        return public_base_url(Settings(data_dir=tmp_path, **kw))  # type: ignore[arg-type]

    with pytest.raises(PublicUrlError, match="not set"):
        base()
    assert base(public_url="https://mail.example.org/") == "https://mail.example.org"
    with pytest.raises(PublicUrlError, match="must be https"):
        base(public_url="http://mail.example.org")
    assert base(public_url="http://localhost:8025", dev_insecure=True) == "http://localhost:8025"
    with pytest.raises(PublicUrlError):
        base(public_url="ftp://x")
    with pytest.raises(PublicUrlError):
        base(public_url="https://x/?a=1")
