"""Every signature carepost makes must verify with dkimpy, the reference implementation
most receivers' tooling is checked against."""

from __future__ import annotations

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.delivery.dkim import (
    DkimError,
    DkimSigner,
    canon_body_relaxed,
    canon_body_simple,
    dns_record_value,
    dns_txt_strings,
    generate_key,
    split_message,
)

RSA = generate_key("rsa-sha256")
ED = generate_key("ed25519-sha256")


def _dns_for(key):  # type: ignore[no-untyped-def]
    record = dns_record_value(key).encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.clinic.example."
        return record

    return lookup


def _message(body: bytes = b"Hello,\r\n\r\nyour appointment is confirmed.\r\n") -> bytes:
    return (
        b"From: Clinic <news@clinic.example>\r\n"
        b"To: patient@example.org\r\n"
        b"Subject: Your visit\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <abc.123@clinic.example>\r\n"
        b"List-Unsubscribe: <https://clinic.example/u/tok>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n" + body
    )


@pytest.mark.parametrize("key", [RSA, ED], ids=["rsa", "ed25519"])
@pytest.mark.parametrize("hc", ["relaxed", "simple"])
@pytest.mark.parametrize("bc", ["relaxed", "simple"])
def test_signatures_verify_with_dkimpy(key, hc, bc) -> None:  # type: ignore[no-untyped-def]
    signer = DkimSigner("clinic.example", "s1", key, header_canon=hc, body_canon=bc)
    signed = signer.sign(_message(), timestamp=1_790_000_000)
    assert dkim.verify(signed, dnsfunc=_dns_for(key))
    assert all(len(line) <= 78 for line in signed.split(b"\r\n")[:12])


def test_required_headers_are_under_the_signature() -> None:
    signed = DkimSigner("clinic.example", "s1", RSA).sign(_message())
    sig = dkim.DKIM(signed)
    header = signed.split(b"\r\n\r\n", 1)[0]
    h_tag = header.split(b"h=", 1)[1].split(b";", 1)[0].replace(b"\r\n\t", b"")
    names = set(h_tag.split(b":"))
    for required in (
        b"from",
        b"subject",
        b"date",
        b"message-id",
        b"to",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    ):
        assert required in names
    assert sig.verify(dnsfunc=_dns_for(RSA))


@pytest.mark.parametrize("key", [RSA, ED], ids=["rsa", "ed25519"])
def test_tampering_breaks_the_signature(key) -> None:  # type: ignore[no-untyped-def]
    signed = DkimSigner("clinic.example", "s1", key).sign(_message())
    assert not dkim.verify(signed.replace(b"confirmed", b"cancelled"), dnsfunc=_dns_for(key))
    assert not dkim.verify(
        signed.replace(b"Subject: Your visit", b"Subject: Your bill"), dnsfunc=_dns_for(key)
    )
    assert not dkim.verify(signed.replace(b"/u/tok>", b"/u/evil>"), dnsfunc=_dns_for(key))


@pytest.mark.parametrize("hc", ["relaxed", "simple"])
def test_folded_headers_and_long_bodies(hc) -> None:  # type: ignore[no-untyped-def]
    folded = (
        b"From: Clinic <news@clinic.example>\r\n"
        b"To: patient@example.org\r\n"
        b"Subject: =?utf-8?b?WW91ciB2aXNpdCBhdCB0aGUgY2xpbmlj?=\r\n"
        b" =?utf-8?b?IHRvbW9ycm93?=\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <abc.123@clinic.example>\r\n"
        b"List-Unsubscribe: <https://clinic.example/unsubscribe/" + b"x" * 60 + b">,\r\n"
        b"\t<mailto:unsubscribe@clinic.example?subject=unsubscribe>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n boundary="=_b"\r\n'
        b"\r\n"
    )
    body = b"".join(b"line %d with  double  spaces and a tab\t \r\n" % i for i in range(20000))
    body += b"\r\n\r\n\r\n"
    for key in (RSA, ED):
        signed = DkimSigner("clinic.example", "s1", key, header_canon=hc).sign(folded + body)
        assert dkim.verify(signed, dnsfunc=_dns_for(key))


@settings(max_examples=60, deadline=None)
@given(
    body=st.lists(
        st.text(
            alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.just("\t"),
            max_size=120,
        ),
        max_size=30,
    ),
    subject=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=200),
    canon=st.sampled_from(["relaxed", "simple"]),
)
def test_any_body_and_subject_verifies(body: list[str], subject: str, canon: str) -> None:
    raw = "\r\n".join(body).encode() + (b"\r\n" if body else b"")
    message = _message(raw).replace(b"Subject: Your visit", b"Subject: " + subject.encode())
    signer = DkimSigner("clinic.example", "s1", RSA, header_canon=canon, body_canon=canon)  # type: ignore[arg-type]
    assert dkim.verify(signer.sign(message), dnsfunc=_dns_for(RSA))


def test_body_canonicalization_edge_cases() -> None:
    assert canon_body_simple(b"") == b"\r\n"
    assert canon_body_relaxed(b"") == b""
    assert canon_body_relaxed(b"a  b \t\r\n\r\n\r\n") == b"a b\r\n"
    assert canon_body_simple(b"a  b \r\n\r\n") == b"a  b \r\n"


def test_split_message_keeps_folds_and_rejects_garbage() -> None:
    fields, body = split_message(b"A: 1\r\n 2\r\nB:3\r\n\r\nbody")
    assert fields == [(b"A", b" 1\r\n 2\r\n"), (b"B", b"3\r\n")]
    assert body == b"body"
    with pytest.raises(DkimError):
        split_message(b" leading continuation\r\n\r\n")
    with pytest.raises(DkimError):
        split_message(b"no colon here\r\n\r\n")


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(DkimError):
        DkimSigner("not a domain", "s1", RSA)
    with pytest.raises(DkimError):
        DkimSigner("clinic.example", "bad_selector!", RSA)
    with pytest.raises(DkimError):
        DkimSigner("clinic.example", "s1", RSA, signed_headers=("subject",))
    with pytest.raises(DkimError):
        generate_key("rsa-sha256", rsa_bits=1024)


def test_dns_record_forms() -> None:
    rsa_value = dns_record_value(RSA)
    assert rsa_value.startswith("v=DKIM1; k=rsa; p=MII")
    assert dns_record_value(ED).startswith("v=DKIM1; k=ed25519; p=")
    zone = dns_txt_strings(rsa_value)
    assert all(len(part) <= 257 for part in zone.split(" ") if part.startswith('"'))
    assert zone.replace('" "', "").strip('"') == rsa_value
