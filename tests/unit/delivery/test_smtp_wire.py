"""The pure half of carepost's SMTP client: reply parsing, commands, DATA payloads."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery import smtp_wire
from carepost.delivery.smtp_wire import ProtocolError, Reply, ReplyParser

STREAM = (
    b"250-mail.example Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n"
    b"250 2.1.0 Ok\r\n550 5.1.1 <x@y.example>: Recipient address rejected\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
)
EXPECTED = [
    Reply(250, ("mail.example Hello", "PIPELINING", "SIZE 10240000", "STARTTLS")),
    Reply(250, ("2.1.0 Ok",)),
    Reply(550, ("5.1.1 <x@y.example>: Recipient address rejected",)),
    Reply(354, ("End data with <CR><LF>.<CR><LF>",)),
]


def test_pipelined_replies_in_one_read() -> None:
    assert ReplyParser().feed(STREAM) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_replies_split_anywhere_parse_the_same(cuts: list[int]) -> None:
    parser = ReplyParser()
    got: list[Reply] = []
    edges = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(edges):
        got += parser.feed(STREAM[a:b])
    assert got == EXPECTED
    assert not parser.pending


def test_partial_reply_is_pending_until_complete() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250 sec") == []
    assert parser.pending
    assert parser.feed(b"ond\r\n") == [Reply(250, ("first", "second"))]


def test_bare_lf_and_code_only_lines() -> None:
    assert ReplyParser().feed(b"220\n250 ok\n") == [Reply(220, ("",)), Reply(250, ("ok",))]


@pytest.mark.parametrize(
    "stream",
    [
        b"hello there\r\n",
        b"25 short\r\n",
        b"250x bad separator\r\n",
        b"250-one\r\n251 other code\r\n",
        b"250 " + b"a" * 5000,
        b"250-a\r\n" * 101 + b"250 b\r\n",
    ],
)
def test_what_is_not_smtp_is_refused(stream: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(stream)
    assert b"a" * 20 not in str(caught.value).encode()  # the server's text is not echoed


def test_extensions_from_ehlo() -> None:
    ext = smtp_wire.extensions(EXPECTED[0])
    assert ext == {"PIPELINING": "", "SIZE": "10240000", "STARTTLS": ""}


@pytest.mark.parametrize(
    "address",
    [
        "a@b.example\r\nRCPT TO:<evil@x.example>",
        "a@b.example>\r\n",
        "a b@c.example",
        "<a@b.example>",
        "a\x00@b.example",
        "no-at-sign",
        "",
        "é@b.example",
        "a" * 250 + "@b.example",
    ],
)
def test_addresses_that_would_break_a_command(address: str) -> None:
    with pytest.raises(ValueError, match="envelope address") as caught:
        smtp_wire.rcpt_to(address)
    if address:
        assert address not in str(caught.value)  # addresses are PHI


def test_commands() -> None:
    assert smtp_wire.mail_from("b@c.example", None) == b"MAIL FROM:<b@c.example>\r\n"
    assert smtp_wire.mail_from("b@c.example", 123) == b"MAIL FROM:<b@c.example> SIZE=123\r\n"
    assert smtp_wire.mail_from("", None) == b"MAIL FROM:<>\r\n"  # the null reverse path
    assert smtp_wire.rcpt_to("p@d.example") == b"RCPT TO:<p@d.example>\r\n"


def _unstuff(payload: bytes) -> bytes:
    """What a server does with DATA (RFC 5321 4.5.2)."""
    assert payload.endswith(b"\r\n.\r\n") or payload == b".\r\n"
    lines = payload[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_dot_stuffing() -> None:
    message = b".first\r\nmiddle\r\n.\r\n..two\r\nlast"
    payload = smtp_wire.data_payload(message)
    assert payload == b"..first\r\nmiddle\r\n..\r\n...two\r\nlast\r\n.\r\n"
    assert _unstuff(payload) == message + b"\r\n"


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"")))
def test_payload_always_round_trips_to_crlf_text(message: bytes) -> None:
    payload = smtp_wire.data_payload(message)
    # No line of the payload but the last is a lone dot: the message cannot end early.
    assert b"\r\n.\r\n" not in payload[:-3]
    assert not payload[:-3].startswith(b".\r\n")
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", payload) is None
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert _unstuff(payload) == (normalised if message else b"\r\n")


def test_auth_plain_is_rfc_4616() -> None:
    assert smtp_wire.auth_plain("u", "p") == b"AUTH PLAIN AHUAcA==\r\n"


@given(st.lists(st.binary(max_size=40).map(lambda b: b.translate(None, b"\r\n")), max_size=8))
def test_vouched_crlf_clean_payload_is_the_same(lines: list[bytes]) -> None:
    message = b"\r\n".join(lines)
    assert smtp_wire.data_payload(message, crlf_clean=True) == smtp_wire.data_payload(message)
