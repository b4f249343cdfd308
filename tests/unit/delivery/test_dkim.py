"""Every signature carepost makes must verify with dkimpy, the reference implementation
most receivers' tooling is checked against."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.delivery.dkim import (
    DkimError,
    DkimSigner,
    canon_body_relaxed,
    canon_body_simple,
    canon_header_relaxed,
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


# --- fast paths against the plain reading of RFC 6376 section 3.4 ----------------------
def _reference_relaxed_body(body: bytes) -> bytes:
    body = re.sub(rb"[ \t]+", b" ", body)
    body = re.sub(rb" \r\n", b"\r\n", body).rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _reference_relaxed_header(name: bytes, value: bytes) -> bytes:
    value = re.sub(rb"\r\n(?=[ \t])", b"", value)
    value = re.sub(rb"[ \t]+", b" ", value).strip(b" \t\r\n")
    return name.strip().lower() + b":" + value + b"\r\n"


# A text part, where spaces and tabs can be anywhere, then a base64 part, where there are
# none: the shape of every message carepost builds, and where the fast path cuts.
_TEXT_LINE = st.lists(
    st.sampled_from([b"a", b"b c", b" ", b"  ", b"\t", b"d \t e", b"=20"]), max_size=6
)
_BASE64_LINE = st.sampled_from([b"QUJD", b"ZGVm" * 19, b"", b"--=_b--"])


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(_TEXT_LINE.map(b"".join), max_size=12),
    tail=st.lists(_BASE64_LINE, max_size=8),
    ending=st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b" \r\n", b"\t", b"\n"]),
)
def test_relaxed_body_matches_the_rfc_rules(
    text: list[bytes], tail: list[bytes], ending: bytes
) -> None:
    body = b"\r\n".join(text + tail) + ending
    assert canon_body_relaxed(body) == _reference_relaxed_body(body)
    assert canon_body_simple(body) == body.rstrip(b"\r\n") + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([b"Subject", b"SUBJECT ", b"to"]),
    value=st.lists(
        st.sampled_from(
            [b"a", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b"=?utf-8?b?QQ==?=", b"\r"]
        ),
        max_size=10,
    ).map(b"".join),
)
def test_relaxed_header_matches_the_rfc_rules(name: bytes, value: bytes) -> None:
    value += b"\r\n"
    assert canon_header_relaxed(name, value) == _reference_relaxed_header(name, value)


@pytest.mark.parametrize(
    "text",
    [
        b"Plain text, single spaces only.\r\n",
        b"Double  spaces,\ta tab and a trailing space \r\n",
        b"Last text line has a trailing tab\t\r\n",
    ],
    ids=["fast", "runs-and-trailing", "trailing-tab"],
)
@pytest.mark.parametrize("bc", ["relaxed", "simple"])
def test_text_then_base64_bodies_verify(text: bytes, bc: str) -> None:
    body = (
        b"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + text * 50
        + b"\r\n--=_b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"PGh0bWw+" * 9
        + b"\r\n" * 300
        + b"--=_b--\r\n"
    )
    for key in (RSA, ED):
        signer = DkimSigner("clinic.example", "s1", key, body_canon=bc)  # type: ignore[arg-type]
        assert dkim.verify(signer.sign(_message(body)), dnsfunc=_dns_for(key))


def test_one_signer_keeps_header_sets_and_timestamps_apart() -> None:
    """A signer lays its header out once per set of signed names and t= width; messages
    with other headers or other timestamps must still get their own, right, header."""
    signer = DkimSigner("clinic.example", "s1", RSA)
    with_reply = _message().replace(b"To:", b"Reply-To: desk@clinic.example\r\nTo:")
    folded = _message().replace(b"Subject: Your visit", b"Subject: Your\r\n\tvisit  today")
    for message in (_message(), with_reply, folded, _message(b"")):
        for timestamp in (None, 0, 999_999_999, 1_790_000_000, 1_790_000_001):
            signed = signer.sign(message, timestamp=timestamp)
            assert dkim.verify(signed, dnsfunc=_dns_for(RSA))
            assert (b"t=" in signed.split(b"From:", 1)[0]) == (timestamp is not None)
    assert b"reply-to" in signer.sign(with_reply).split(b"From:", 1)[0]
    assert b"reply-to" not in signer.sign(_message()).split(b"From:", 1)[0]


def test_prepared_on_one_thread_completed_on_another() -> None:
    signer = DkimSigner("clinic.example", "s1", RSA)
    messages = [_message(b"body %d\r\n" % i) for i in range(20)]
    pending = [signer.prepare(m, 1_790_000_000 + i) for i, m in enumerate(messages)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        headers = list(pool.map(signer.complete, pending))
    for header, message in zip(headers, messages, strict=True):
        assert dkim.verify(header + message, dnsfunc=_dns_for(RSA))


def test_signed_header_names_are_field_names() -> None:
    for bad in ("from\x00", "subject:", "to x", ""):
        with pytest.raises(DkimError):
            DkimSigner("clinic.example", "s1", RSA, signed_headers=("from", bad))
