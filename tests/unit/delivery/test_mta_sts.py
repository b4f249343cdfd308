"""MTA-STS parsers (RFC 8461 3.1 and 3.2): good and bad TXT records and policy files;
the policy parser raises nothing but its own error for any text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery.mta_sts import (
    PolicyError,
    StsPolicy,
    StsRecordError,
    parse_policy,
    parse_txt_record,
    parse_txt_records,
    policy_url,
    txt_name,
)

GOOD_POLICY = (
    "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmx: *.mail.example.org\nmax_age: 604800\n"
)


# --- TXT -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "policy_id"),
    [
        ("v=STSv1; id=20260101T000000", "20260101T000000"),
        ("v=STSv1;id=abc", "abc"),
        ("v=STSv1; id=abc;", "abc"),
        ("v=STSv1;  id=abc ;  ext_1=val", "abc"),
        ("v=STSv1; id=" + "a" * 32, "a" * 32),
    ],
)
def test_txt_record_good(record: str, policy_id: str) -> None:
    assert parse_txt_record(record).policy_id == policy_id


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=STSv1", "no id="),
        ("v=STSv1; id=", "1 to 32"),
        ("v=STSv1; id=" + "a" * 33, "1 to 32"),
        ("v=STSv1; id=ab-c", "1 to 32"),
        ("v=STSv1; id=a; id=b", "more than once"),
        ("v=STSv1; id=a; v=STSv1", "more than once"),
        ("v=STSv1; id", "no '='"),
        ("v=STSv1; id=a; -bad=1", "invalid name"),
        ("v=STSv1; id=a; x=a=b", "invalid value"),
        ("id=abc; v=STSv1", "start with v=STSv1"),
        ("v=STSv2; id=a", "start with v=STSv1"),
    ],
)
def test_txt_record_bad(record: str, words: str) -> None:
    with pytest.raises(StsRecordError, match=words):
        parse_txt_record(record)


def test_txt_records_pick_exactly_one() -> None:
    assert parse_txt_records([]) is None
    assert parse_txt_records(["v=spf1 -all", "google-site-verification=x"]) is None
    found = parse_txt_records(["v=spf1 -all", "v=STSv1; id=one"])
    assert found is not None
    assert found.policy_id == "one"
    with pytest.raises(StsRecordError, match="2 TXT records start with v=STSv1"):
        parse_txt_records(["v=STSv1; id=one", "v=STSv1; id=two"])


def test_names() -> None:
    assert txt_name("Example.ORG.") == "_mta-sts.example.org"
    assert policy_url("example.org") == "https://mta-sts.example.org/.well-known/mta-sts.txt"


# --- policy file -----------------------------------------------------------------------
def test_policy_good_lf_and_crlf() -> None:
    lf = parse_policy(GOOD_POLICY, policy_id="x1")
    crlf = parse_policy(GOOD_POLICY.replace("\n", "\r\n"), policy_id="x1")
    assert (
        lf == crlf == StsPolicy("enforce", ("mx1.example.org", "*.mail.example.org"), 604800, "x1")
    )


def test_policy_tolerates_blank_lines_spaces_unknown_keys_and_no_final_newline() -> None:
    text = (
        "\nversion:STSv1\n  mode :  testing  \nmx: MX.Example.org.\nfuture_key: anything\n"
        "max_age: 0"
    )
    policy = parse_policy(text)
    assert policy.mode == "testing"
    assert policy.mx == ("mx.example.org",)
    assert policy.max_age == 0


def test_policy_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").mx == ()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", "no version line"),
        ("version: STSv1\nmx: a.example\nmax_age: 1\n", "no mode line"),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age line"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "needs at least one mx"),
        ("version: STSv2\nmode: enforce\n", "line 1: version must be STSv1"),
        ("version: STSv1\nmode: strict\n", "line 2: mode must be"),
        ("version: STSv1\nmode: enforce\nmax_age: 31557601\n", "line 3: max_age is over"),
        ("version: STSv1\nmode: enforce\nmax_age: -5\n", "line 3: max_age must be a whole"),
        ("version: STSv1\nmode: enforce\nmax_age: 1e5\n", "line 3: max_age must be a whole"),
        ("version: STSv1\nmode: enforce\nmx: *.*.example.org\n", "line 3: mx must be"),
        ("version: STSv1\nmode: enforce\nmx: mx*.example.org\n", "line 3: mx must be"),
        ("version: STSv1\nmode: enforce\nmx: -bad.example.org\n", "line 3: mx must be"),
        ("version: STSv1\nmode: enforce\nmx: localhost\n", "line 3: mx must be"),
        ("version: STSv1\n\nmode enforce\n", "line 3: expected 'key: value'"),
        ("version: STSv1\nmode: enforce\nmode: testing\n", "line 3: mode repeats line 2"),
        ("version: STSv1\r\nmo\rde: enforce\r\n", "line 2: a bare carriage return"),
        ("version: STSv1\n: enforce\n", "line 2: invalid key"),
    ],
)
def test_policy_bad(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        parse_policy(text)


def test_policy_error_does_not_quote_the_line() -> None:
    secret = "version: STSv1\nmode: enforce\nmx: not a host name with-a-marker-XYZZY\n"
    with pytest.raises(PolicyError) as info:
        parse_policy(secret)
    assert "XYZZY" not in str(info.value)


@given(st.text(max_size=400))
def test_policy_parser_raises_only_its_own_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= 31_557_600


_LINE = st.sampled_from(
    [
        "version: STSv1",
        "mode: enforce",
        "mode: testing",
        "mode: none",
        "mx: a.example.org",
        "mx: *.example.org",
        "max_age: 86400",
        "max_age: 99999999999",
        "x: y",
        "",
        "junk",
    ]
)


@given(st.lists(_LINE, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_policy_parser_on_near_valid_files(lines: list[str], eol: str) -> None:
    result: StsPolicy | str
    try:
        result = parse_policy(eol.join(lines))
    except PolicyError as exc:
        result = str(exc)
    if isinstance(result, str):
        assert result.startswith(("line ", "the policy has no", "a policy in mode"))
    else:
        assert "version: STSv1" in lines
        assert f"max_age: {result.max_age}" in lines


@given(st.text(max_size=200))
def test_txt_parser_raises_only_its_own_error(text: str) -> None:
    try:
        record = parse_txt_records(["v=STSv1; " + text])
    except StsRecordError:
        return
    assert record is not None
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", record.policy_id)


@pytest.mark.parametrize(
    ("pattern", "host", "allowed"),
    [
        ("mx.example.org", "MX.example.org.", True),
        ("*.example.org", "mx1.example.org", True),
        ("*.example.org", "a.b.example.org", False),
        ("*.example.org", "example.org", False),
        ("mx.example.org", "mx.example.org.evil", False),
    ],
)
def test_allows(pattern: str, host: str, allowed: bool) -> None:
    assert StsPolicy("enforce", (pattern,), 1).allows(host) is allowed
