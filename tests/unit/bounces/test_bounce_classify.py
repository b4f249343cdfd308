"""The pure parser and classifier on one hand-written message per shape."""

from __future__ import annotations

import contextlib

import pytest
from bounce_messages import (
    ARF,
    AUTO_REPLY,
    DELAYED,
    DELIVERED,
    EXCHANGE_PROSE,
    EXIM_PROSE,
    GENERIC_STATUS_FULL,
    GMAIL_PROSE,
    MIXED,
    NOT_A_BOUNCE,
    POLICY,
    QMAIL,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from carepost.bounces.classify import classify, recipient_severity
from carepost.bounces.parse import ParseError, Recipient, parse_message


def _classify(raw: bytes):  # type: ignore[no-untyped-def]
    return classify(parse_message(raw))


def test_mixed_dsn_says_which_recipient_is_hard_and_which_soft() -> None:
    result = _classify(MIXED)
    assert result.category == "bounce-hard"
    assert result.mixed
    by_address = {v.address: v for v in result.recipients}
    assert by_address["gone@patients.example"].severity == "hard"
    assert by_address["gone@patients.example"].status == "5.1.1"
    assert by_address["gone@patients.example"].reply_code == "550"
    assert by_address["full@patients.example"].severity == "soft"
    assert by_address["full@patients.example"].status == "5.2.2"


def test_arf_abuse_report_is_a_complaint_for_the_original_recipient() -> None:
    result = _classify(ARF)
    assert result.category == "complaint"
    assert result.feedback_type == "abuse"
    assert [v.address for v in result.recipients] == ["annoyed@patients.example"]


def test_auto_reply_is_ignored() -> None:
    assert _classify(AUTO_REPLY).category == "auto-reply"


def test_delayed_dsn_is_a_delay_not_a_bounce() -> None:
    result = _classify(DELAYED)
    assert result.category == "delayed"
    assert all(v.severity is None for v in result.recipients)


def test_delivered_dsn() -> None:
    assert _classify(DELIVERED).category == "delivered"


def test_policy_rejection_is_soft_because_the_address_is_fine() -> None:
    result = _classify(POLICY)
    assert result.category == "bounce-soft"


def test_generic_status_falls_back_to_the_servers_words() -> None:
    result = _classify(GENERIC_STATUS_FULL)
    assert result.category == "bounce-soft"
    assert result.recipients[0].reason == "mailbox full"


def test_qmail_prose_bounce_names_recipient_and_code() -> None:
    result = _classify(QMAIL)
    assert result.category == "bounce-hard"
    [rcpt] = result.recipients
    assert rcpt.address == "nobody@patients.example"
    assert rcpt.status == "5.1.1"


def test_ordinary_mail_is_not_a_bounce() -> None:
    result = _classify(NOT_A_BOUNCE)
    assert result.category == "not-bounce"
    assert result.recipients == ()


@pytest.mark.parametrize(
    ("raw", "category", "address", "status", "reply"),
    [
        (EXIM_PROSE, "bounce-hard", "someone@patients.example", "5.1.1", "550"),
        (GMAIL_PROSE, "bounce-soft", "nobody@patients.example", "5.2.2", "550"),
        (EXCHANGE_PROSE, "bounce-hard", "pat@patients.example", "5.1.10", "550"),
    ],
)
def test_prose_bounces_from_common_mtas(
    raw: bytes, category: str, address: str, status: str, reply: str
) -> None:
    result = _classify(raw)
    assert result.category == category
    assert [(v.address, v.status, v.reply_code) for v in result.recipients] == [
        (address, status, reply)
    ]


@pytest.mark.parametrize("raw", [b"", b"   \n", b"just some words without headers\n"])
def test_unreadable_input_raises_without_quoting_it(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(raw)
    if raw.strip():
        assert raw.decode().strip() not in str(info.value)


@pytest.mark.parametrize(
    ("status", "reply", "words", "expected"),
    [
        ("5.1.1", "550", "", "hard"),
        ("5.1.2", "", "", "hard"),
        ("5.2.2", "552", "", "soft"),
        ("4.2.2", "450", "user unknown", "soft"),
        ("5.7.1", "550", "blocked by policy", "soft"),
        ("5.0.0", "550", "No such user here", "hard"),
        ("5.0.0", "", "Host not found", "hard"),
        ("", "550", "Unknown user", "hard"),
        ("", "552", "", "soft"),
        ("", "", "retry timeout exceeded", "soft"),
        ("5.5.0", "554", "", "hard"),
    ],
)
def test_severity_table(status: str, reply: str, words: str, expected: str) -> None:
    rcpt = Recipient("a@patients.example", "failed", status, reply, words)
    assert recipient_severity(rcpt)[0] == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_report_or_a_parse_error(raw: bytes) -> None:
    try:
        report = parse_message(raw)
    except ParseError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        # Fixed texts only: nothing from the input can reach an exception message.
        assert problem in ("empty message", "no email headers found") or (
            problem.startswith("unreadable message (")
        )
        return
    assert classify(report).category in {
        "bounce-hard",
        "bounce-soft",
        "complaint",
        "auto-reply",
        "delayed",
        "delivered",
        "not-bounce",
    }


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([MIXED, ARF, QMAIL, EXIM_PROSE, DELAYED]), st.data())
def test_truncated_messages_never_crash(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    with contextlib.suppress(ParseError):
        classify(parse_message(raw[:cut]))


def test_arf_without_original_rcpt_to_names_the_originals_recipient() -> None:
    raw = ARF.replace(b"Original-Rcpt-To: <annoyed@patients.example>\n", b"")
    result = _classify(raw)
    assert result.category == "complaint"
    assert [v.address for v in result.recipients] == ["annoyed@patients.example"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("550 Requested action not taken: mailbox unavailable", "hard"),
        ("554 delivery error: dd This user doesn't have a example.com account", "hard"),
        ("550 Recipient not found by SMTP address lookup", "hard"),
        ("550 No such user here", "hard"),
        ("550 <news@clinic.example>: Sender address rejected: Domain not found", "soft"),
        ("all relevant MX records point to non-existent hosts", "hard"),
        ("This account has been disabled or discontinued", "hard"),
        ("552 Mailbox quota usage exceeded", "soft"),
        ("550 Requested action not taken: mailbox unavailable (mailbox full)", "soft"),
        ("554 Message rejected: virus found in attachment", "soft"),
        ("550 Account temporarily disabled", "soft"),
        ("550 address kitty@patients.example has been replaced by tom@patients.example", "hard"),
    ],
)
def test_widely_used_phrasings_without_an_enhanced_code(words: str, expected: str) -> None:
    reply = words[:3] if words[:3].isdigit() else ""
    rcpt = Recipient("a@patients.example", "failed", "", reply, words)
    assert recipient_severity(rcpt)[0] == expected
