"""The byte-template builder against Python's own email parser (the slow, careful one),
the header-injection guard, and DKIM over what it builds."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import html as html_module
import time

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.content.mime import (
    HeaderInjection,
    MimeLayout,
    b64_body,
    build,
    check_header_value,
    encode_words,
    format_address,
    header_line,
    headers_block,
    html_body,
    qp_body,
    qp_known_lines,
)
from carepost.delivery.dkim import DkimSigner, dns_record_value, generate_key

LAYOUT = MimeLayout.alternative()


def _parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _message(subject: str = "Your visit", text: str = "Hello", html: str = "<p>Hello</p>") -> bytes:
    head = headers_block(
        [
            ("From", format_address("Clinic Café", "news@clinic.example")),
            ("To", "patient@example.org"),
            ("Subject", subject),
            ("Date", "Tue, 24 Nov 2026 10:00:00 +0000"),
            ("Message-ID", "<m1@clinic.example>"),
        ]
    )
    return build(LAYOUT, head, text, html)


def test_parses_back_to_what_went_in() -> None:
    text = "Dear patient,\n\nyour results are ready. Ünïcödé ✓\n" + "long line " * 40
    html = "<html><body><p>Résultats prêts</p>" + "<a href='https://x.example'>x</a>" * 30
    msg = _parse(_message("Résumé of your visit ✓", text, html))
    assert msg["Subject"] == "Résumé of your visit ✓"
    assert msg["From"].addresses[0].display_name == "Clinic Café"
    assert msg["From"].addresses[0].addr_spec == "news@clinic.example"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == text.rstrip("\n")
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html
    assert not msg.defects


def test_lines_are_short_and_crlf_only() -> None:
    raw = _message("x" * 300, "y" * 5000, "<p>" + "z " * 5000 + "</p>")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize(
    "value",
    [
        "hi\r\nBcc: victim@example.org",
        "hi\nBcc: x",
        "hi\rBcc: x",
        "hi\x00",
        "hi\u2028Bcc: x",
        "hi\x85x",
        "hi%0d%0aBcc: x",
        "hi%0ABcc: x",
        "=?utf-8?b?aGkNCkJjYzogeA==?=",  # "hi\r\nBcc: x"
        "=?utf-8?q?hi=0D=0ABcc:_x?=",
        "=?utf-8?b?!!!notbase64?=",
    ],
)
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        header_line("Subject", value)
    assert value not in str(info.value)  # the error names the header, never the value


def test_bad_names_and_addresses_are_refused() -> None:
    with pytest.raises(HeaderInjection):
        check_header_value("Bad Name", "x")
    with pytest.raises(HeaderInjection):
        format_address("x", "a@b.example>\r\nBcc: y")
    with pytest.raises(HeaderInjection):
        format_address("x", "no-at-sign")
    with pytest.raises(HeaderInjection):
        format_address("x", "ünï@example.org")


def test_display_names_are_quoted() -> None:
    assert format_address('Dr. "Who"', "a@b.example") == '"Dr. \\"Who\\"" <a@b.example>'
    assert format_address("", "a@b.example") == "a@b.example"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=300))
def test_any_printable_subject_round_trips(subject: str) -> None:
    try:
        check_header_value("Subject", subject)
    except HeaderInjection:
        return  # e.g. a literal "%0a" in the text: refused, never passed through
    msg = _parse(_message(subject=subject))
    assert msg["Subject"] == subject.strip() or " ".join(msg["Subject"].split()) == " ".join(
        subject.split()
    )


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=2000))
def test_any_body_round_trips(text: str) -> None:
    body = qp_body(text)
    assert max((len(line) for line in body.split(b"\r\n")), default=0) <= 76
    msg = _parse(_message(text=text))
    plain = msg.get_body(("plain",))
    assert plain is not None
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    got = plain.get_content().replace("\r\n", "\n")
    assert got.rstrip("\n") == expected.rstrip("\n")


def test_boundary_never_appears_in_encoded_content() -> None:
    hostile = "--" + LAYOUT.boundary.decode() + "\n--" + LAYOUT.boundary.decode() + "--\n"
    raw = _message(text=hostile, html=hostile)
    assert raw.count(b"--" + LAYOUT.boundary + b"\r\n") == 2
    assert raw.count(b"--" + LAYOUT.boundary + b"--") == 1


def test_built_message_signs_and_verifies() -> None:
    key = generate_key("rsa-sha256")
    record = dns_record_value(key).encode()
    signed = DkimSigner("clinic.example", "s1", key).sign(_message("Café ✓", "a" * 9000))
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


def test_encoded_words_stay_within_75_characters() -> None:
    words = encode_words("é" * 200).split(" ")
    assert all(len(w) <= 75 for w in words)


def test_builds_fast_enough_for_the_hot_path() -> None:
    """Not a benchmark: a guard that nobody swaps in email.message (about 1.8 ms)."""
    text, html = "t" * 5000, "<p>" + "h " * 10000 + "</p>"
    head = headers_block([("To", "p@example.org"), ("Subject", "s")])
    started = time.perf_counter()
    for _ in range(200):
        build(LAYOUT, head, text, html)
    assert (time.perf_counter() - started) / 200 < 0.0015


def test_long_unbroken_non_ascii_subject_folds_into_short_words() -> None:
    subject = "ü" * 150 + "x" * 100
    raw = _message(subject=subject)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert _parse(raw)["Subject"] == subject


# Characters where quoted-printable has a rule: "=", a "." alone on a line, spaces and tabs
# at a line end, controls, 8-bit text, and CRs that are not part of a CRLF.
_QP_TRICKY = st.lists(
    st.sampled_from([*"ab .=\t\r\n\x00\x7f~", "é", "✓", "\u2028", "a" * 74, "b" * 75]),
    max_size=300,
).map("".join)


def _stdlib_qp(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode()
    return binascii.b2a_qp(data if data.endswith(b"\r\n") else data + b"\r\n", istext=True)


@settings(max_examples=400, deadline=None)
@given(_QP_TRICKY | st.text(max_size=600), st.integers(1, 3))
def test_known_lines_encode_exactly_as_the_whole_text(text: str, every: int) -> None:
    """Encoding line by line, some lines looked up, gives the bytes binascii gives for the
    whole text at once."""
    known = qp_known_lines(text.split("\n")[::every])
    assert qp_body(text, known) == qp_body(text) == _stdlib_qp(text)
    assert qp_body(text, {}) == _stdlib_qp(text)


def test_known_lines_cover_the_edges() -> None:
    for text in ("", "\n", "a", "a\n", "\n\n", ".", " ", "x" * 76, "x" * 151 + "\n", "é\n" * 3):
        assert qp_body(text, qp_known_lines(text.split("\n"))) == _stdlib_qp(text), text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000) | _QP_TRICKY)
def test_base64_lines_match_the_stdlib(text: str) -> None:
    data = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode()
    assert b64_body(text) == base64.encodebytes(data).replace(b"\n", b"\r\n")


def test_base64_around_whole_lines() -> None:
    for size in range(250):
        text = "".join(chr(c) for c in range(0x20, 0x17F))[:size]
        expected = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
        assert b64_body(text) == expected


def test_a_long_unbroken_header_value_stays_on_one_line() -> None:
    url = "<https://mail.clinic.example/u/" + "A" * 90 + ">"
    assert header_line("List-Unsubscribe", url) == f"List-Unsubscribe: {url}\r\n".encode()
    with pytest.raises(HeaderInjection):
        header_line("List-Unsubscribe", "<https://x.example/" + "A" * 1000 + ">")
    with pytest.raises(HeaderInjection):
        header_line("List-Unsubscribe", "<https://x.example/%0d%0aBcc:x@evil.example>")


def _html_of(raw: bytes) -> tuple[str, str]:
    """The HTML part's transfer encoding and its text as a browser reads it."""
    part = _parse(raw).get_body(("html",))
    assert part is not None
    text = part.get_content().replace("\r\n", "\n")
    return part["Content-Transfer-Encoding"], text


def test_html_goes_as_7bit_with_other_characters_as_references() -> None:
    html = "<p>Résultats prêts · ✓ 😀</p>\n<p>Dr. Ünal &amp; team</p>"
    raw = _message(html=html)
    encoding, got = _html_of(raw)
    assert encoding == "7bit"
    assert "&#233;" in got
    assert "&#128512;" in got
    assert html_module.unescape(got).rstrip("\n") == html_module.unescape(html)
    assert raw.isascii()


@pytest.mark.parametrize(
    ("html", "why"),
    [
        ("<style>p::before { content: '✓' }</style><p>x</p>", "references are not read in style"),
        ("<SCRIPT type='x'>var a = 'é';</script ><p>x</p>", "nor in script"),
        ("<p>\x91quoted\x92</p>", "HTML reads &#145; as a Windows-1252 quote"),
        ("<p>" + "x" * 999 + "</p>", "a line longer than 998 octets"),
        ("<p>a\x00b</p>", "a NUL"),
        ("<p>x</p>\nFrom here on</p>", "a line a mailbox writer would turn into >From"),
        ("From the clinic", "the same on the first line"),
    ],
)
def test_html_that_7bit_would_change_goes_as_base64(html: str, why: str) -> None:
    raw = _message(html=html)
    encoding, got = _html_of(raw)
    assert encoding == "base64", why
    assert got.rstrip("\n") == html


def test_html_holding_the_boundary_goes_as_base64() -> None:
    hostile = "<p>x</p>\n--" + LAYOUT.boundary.decode() + "--\n<p>y</p>"
    raw = _message(html=hostile)
    assert _html_of(raw) == ("base64", hostile)
    assert raw.count(b"--" + LAYOUT.boundary + b"--") == 1


def test_non_ascii_outside_script_and_style_still_goes_as_7bit() -> None:
    html = "<style>p { color: red }</style><p>Café</p><script>var a = 1;</script>"
    assert html_body(html, LAYOUT.boundary) == (
        True,
        b"<style>p { color: red }</style><p>Caf&#233;</p><script>var a = 1;</script>\r\n",
    )


def test_html_line_ends_become_crlf_and_a_line_may_fill_998_octets() -> None:
    html = "<p>a</p>\r\n<p>b</p>\r<p>" + "c" * 991 + "</p>"
    seven_bit, data = html_body(html, LAYOUT.boundary)
    assert seven_bit
    assert data == b"<p>a</p>\r\n<p>b</p>\r\n<p>" + b"c" * 991 + b"</p>\r\n"
    assert max(len(line) for line in data.split(b"\r\n")) == 998


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["<p>", "</p>", " ", "  ", "\t", "\n", "\r", ".", "From ", "é", "✓", "&"])
        | st.text(max_size=40),
        max_size=80,
    ).map("".join)
)
def test_any_html_reads_back_the_same_and_signs(html: str) -> None:
    """Whichever encoding the part takes, a reader gets the same document back, every
    line fits, and the signature over it verifies."""
    raw = _message(html=html)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    encoding, got = _html_of(raw)
    expected = html.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    if encoding == "7bit":
        assert html_module.unescape(got).rstrip("\n") == html_module.unescape(expected)
    else:
        assert got.rstrip("\n") == expected
    signed = DkimSigner("clinic.example", "s1", _KEY).sign(raw)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: _RECORD)


_KEY = generate_key("ed25519-sha256")
_RECORD = dns_record_value(_KEY).encode()
