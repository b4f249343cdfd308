"""The pure checks of `doctor dns` over plain DNS answers: good and bad records each."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery import dkim as signing
from carepost.delivery.resolver import Address, MxHost
from carepost.doctor import dkim, dmarc, mx, spf, sts
from carepost.doctor.result import Check, Failed, exit_code, org_domain, parse_tags, worst

D = "example.org"


# --- SPF -------------------------------------------------------------------------------
def spf_check(records: dict[str, list[str] | Failed]) -> Check:
    return spf.check_spf(D, records)


def test_spf_good() -> None:
    c = spf_check(
        {
            D: ["v=spf1 include:_spf.relay.net ip4:192.0.2.1 -all", "other=x"],
            "_spf.relay.net": ["v=spf1 ip4:198.51.100.0/24 ~all"],
        }
    )
    assert c.status == "ok"
    assert "-all" in c.summary
    assert "DNS lookups: 1 of 10" in c.details


def test_spf_soft_fail_is_ok() -> None:
    assert spf_check({D: ["v=spf1 mx ~all"]}).status == "ok"


@pytest.mark.parametrize(
    ("records", "status", "words"),
    [
        ({D: []}, "fail", "no SPF record"),
        ({D: ["v=spf1 -all", "v=spf1 mx -all"]}, "fail", "2 SPF records"),
        ({D: ["v=spf1 +all"]}, "fail", "every server on the internet"),
        ({D: ["v=spf1 mx all"]}, "fail", "every server on the internet"),
        ({D: ["v=spf1 mx ?all"]}, "warn", "neutral"),
        ({D: ["v=spf1 mx"]}, "warn", "no all at the end"),
        ({D: ["v=spf1 -all mx"]}, "warn", "never reached"),
        ({D: ["v=spf1 foo:bar -all"]}, "fail", "term 2 .* is not an SPF mechanism"),
        ({D: ["v=spf1 include: -all"]}, "fail", "include needs a domain"),
        ({D: ["v=spf1 include:gone.net -all"], "gone.net": []}, "fail", "gone.net has no SPF"),
        (
            {D: ["v=spf1 include:loop.net -all"], "loop.net": ["v=spf1 include:example.org -all"]},
            "fail",
            "in a loop",
        ),
        ({D: Failed("timeout")}, "error", "could not look up"),
        ({D: ["v=spf1 include:x.net -all"], "x.net": Failed("SERVFAIL")}, "error", "SERVFAIL"),
    ],
)
def test_spf_problems(records: dict[str, list[str] | Failed], status: str, words: str) -> None:
    c = spf_check(records)
    assert c.status == status
    assert re.search(words, c.summary), c.summary


def test_spf_fix_replaces_plus_all() -> None:
    c = spf_check({D: ["v=spf1 ip4:192.0.2.1 +all"]})
    assert c.fix == 'publish "v=spf1 ip4:192.0.2.1 -all"'


def test_spf_counts_lookups_recursively_through_include_and_redirect() -> None:
    answers: dict[str, list[str] | Failed] = {
        D: ["v=spf1 include:a.net include:b.net mx -all"],  # 3
        "a.net": ["v=spf1 a mx include:c.net ~all"],  # 3
        "b.net": ["v=spf1 redirect=r.net"],  # 1
        "r.net": ["v=spf1 a mx exists:%{i}.x.net ptr -all"],  # 4
        "c.net": ["v=spf1 ip4:10.0.0.1 -all"],
    }
    c = spf_check(answers)
    assert c.status == "fail"
    assert "11 DNS lookups, over the limit of 10" in c.summary
    assert any("ptr" in d for d in c.details)
    del answers["r.net"]
    assert spf.names_to_fetch(D, answers) == {"r.net"}


def test_spf_names_to_fetch_walks_round_by_round() -> None:
    answers: dict[str, list[str] | Failed] = {}
    assert spf.names_to_fetch(D, answers) == {D}
    answers[D] = ["v=spf1 include:a.net include:%{d}.macro.net -all"]
    assert spf.names_to_fetch(D, answers) == {"a.net"}
    answers["a.net"] = ["v=spf1 -all"]
    assert spf.names_to_fetch(D, answers) == set()


@given(st.text(max_size=120))
def test_spf_parser_raises_only_its_own_error(text: str) -> None:
    try:
        record = spf.parse_spf("v=spf1 " + text)
    except spf.SpfSyntaxError:
        return
    assert all(
        t.mechanism in {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
        for t in record.terms
    )


# --- DKIM ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> signing.PrivateKey:
    return signing.generate_key("rsa-sha256")


def test_dkim_matching_key(rsa_key: signing.PrivateKey) -> None:
    value = signing.dns_record_value(rsa_key)
    c = dkim.check_dkim(D, "s1", [value], value)
    assert c.status == "ok"
    assert c.domain == "s1._domainkey.example.org"
    assert "matches" in " ".join(c.details)


def test_dkim_ed25519_split_strings() -> None:
    key = signing.generate_key("ed25519-sha256")
    value = signing.dns_record_value(key)
    published = value.replace("p=", "p= ")  # whitespace inside p= is allowed
    assert dkim.check_dkim(D, "s1", [published], value).status == "ok"


def test_dkim_other_key(rsa_key: signing.PrivateKey) -> None:
    other = signing.dns_record_value(signing.generate_key("rsa-sha256"))
    c = dkim.check_dkim(D, "s1", [other], signing.dns_record_value(rsa_key))
    assert c.status == "fail"
    assert "not the public half" in c.summary
    assert c.fix.startswith('publish a TXT record at s1._domainkey.example.org: "v=DKIM1; k=rsa')


def test_dkim_small_key_and_testing_flag() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    value = signing.dns_record_value(small)
    c = dkim.check_dkim(D, "s1", [value.replace("v=DKIM1;", "v=DKIM1; t=y;")], value)
    assert c.status == "warn"
    assert "1024 bits" in c.summary
    assert any("t=y" in d for d in c.details)
    # OpenSSL will not make a 512-bit key any more; a public one is enough here.
    tiny = rsa.RSAPublicNumbers(65537, (1 << 511) | 0x1F).public_key()
    der = tiny.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    c = dkim.check_dkim(D, "s1", [record], None)
    assert (c.status, "under 1024 bits" in c.summary) == ("fail", True)


@pytest.mark.parametrize(
    ("records", "status", "words"),
    [
        ([], "fail", "no DKIM key published"),
        (["v=spf1 -all"], "fail", "no DKIM key published"),
        (["v=DKIM1; p="], "fail", "revoked"),
        (["v=DKIM1; k=rsa; p=!!notbase64"], "fail", "not valid base64"),
        (["v=DKIM1; k=dsa; p=AAAA"], "fail", "not a key type"),
        (["v=DKIM1; k=ed25519; p=AAAA"], "fail", "32-byte"),
        (["v=DKIM1; k=rsa; p=AAAA"], "fail", "not an RSA public key"),
        (["k=rsa; v=DKIM1; p=AAAA"], "fail", "must be the first tag"),
        (["v=DKIM1; p=AAAA", "v=DKIM1; p=BBBB"], "fail", "2 DKIM records"),
        (Failed("timeout"), "error", "could not look up"),
    ],
)
def test_dkim_bad_records(records: list[str] | Failed, status: str, words: str) -> None:
    c = dkim.check_dkim(D, "s1", records, None)
    assert (c.status, words in c.summary) == (status, True), c.summary


def test_dkim_hash_and_service_restrictions(rsa_key: signing.PrivateKey) -> None:
    value = signing.dns_record_value(rsa_key)
    sha1_only = value.replace("k=rsa;", "k=rsa; h=sha1;")
    assert "sha256" in dkim.check_dkim(D, "s1", [sha1_only], value).summary
    not_mail = value.replace("k=rsa;", "k=rsa; s=other;")
    assert "s= does not include email" in dkim.check_dkim(D, "s1", [not_mail], value).summary


def test_dkim_without_selector_or_key(rsa_key: signing.PrivateKey) -> None:
    assert dkim.check_dkim(D, None, None, None).status == "warn"
    c = dkim.check_dkim(D, "s1", [signing.dns_record_value(rsa_key)], None)
    assert (c.status, "give --sender" in c.summary) == ("warn", True)


# --- DMARC -----------------------------------------------------------------------------
def dmarc_check(
    own: list[str] | Failed, org: list[str] | Failed | None = None, domain: str = D
) -> Check:
    answers: dict[str, list[str] | Failed] = {f"_dmarc.{domain}": own}
    if org is not None:
        answers[f"_dmarc.{org_domain(domain)}"] = org
    return dmarc.check_dmarc(domain, answers)[0]


@pytest.mark.parametrize(
    ("record", "status", "words"),
    [
        ("v=DMARC1; p=reject; rua=mailto:d@example.org", "ok", "refused"),
        ("v=DMARC1; p=quarantine; rua=mailto:d@example.org", "ok", "spam"),
        ("v=DMARC1; p=none; rua=mailto:d@example.org", "warn", "monitoring only"),
        ("v=DMARC1; p=reject; pct=50; rua=mailto:d@example.org", "warn", "only 50%"),
        ("v=DMARC1; p=reject", "warn", "no rua="),
        ("v=DMARC1; p=block", "fail", "p= must be none"),
        ("v=DMARC1; rua=mailto:d@example.org", "fail", "no p="),
        ("v=DMARC1; p=reject; pct=150", "fail", "pct="),
        ("v=DMARC1; p=reject; adkim=x", "fail", "adkim="),
        ("v=DMARC1; p=reject; rua=https://x", "fail", "mailto:"),
        ("v=DMARC1; p=reject; p=none", "fail", "twice"),
    ],
)
def test_dmarc_records(record: str, status: str, words: str) -> None:
    c = dmarc_check([record])
    assert (c.status, words in c.summary) == (status, True), c.summary


def test_dmarc_missing_multiple_and_failed() -> None:
    c = dmarc_check(["v=spf1 -all"])
    assert c.status == "fail"
    assert c.fix.startswith('publish a TXT record at _dmarc.example.org: "v=DMARC1; p=none')
    assert dmarc_check(["v=DMARC1; p=none", "v=DMARC1; p=reject"]).status == "fail"
    assert dmarc_check(Failed("timeout")).status == "error"


def test_dmarc_falls_back_to_the_organizational_domain() -> None:
    c = dmarc_check(
        [],
        ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.org"],
        domain="news.example.org",
    )
    assert (c.status, c.domain) == ("ok", "_dmarc.example.org")
    assert "p=quarantine" in c.summary
    assert dmarc_check([], [], domain="news.example.org").status == "fail"


@pytest.mark.parametrize(
    ("adkim", "aspf", "dkim_d", "rp", "status"),
    [
        ("r", "r", "example.org", "bounces.example.org", "ok"),
        ("r", "r", "mail.example.org", None, "ok"),
        ("s", "r", "mail.example.org", "bounce.example.org", "warn"),
        ("s", "s", "mail.example.org", "bounce.example.org", "fail"),
        ("r", "r", "relay.net", "relay.net", "fail"),
        ("r", "r", None, "example.org", "warn"),
    ],
)
def test_alignment(adkim: str, aspf: str, dkim_d: str | None, rp: str | None, status: str) -> None:
    record = dmarc.parse_dmarc(f"v=DMARC1; p=reject; adkim={adkim}; aspf={aspf}")
    c = dmarc.check_alignment(D, dkim_d, rp, record)
    assert c.status == status, c.details


def test_alignment_not_checked_without_sender() -> None:
    assert dmarc.check_alignment(D, None, None, None).status == "warn"


def test_org_domain_and_tags() -> None:
    assert org_domain("a.b.example.org") == "example.org"
    assert org_domain("mail.nhs.example.co.uk") == "example.co.uk"
    assert parse_tags(" v = DKIM1 ;p=AB CD; ") == {"v": "DKIM1", "p": "AB CD"}
    with pytest.raises(ValueError, match="entry 2 is not tag=value"):
        parse_tags("v=DKIM1; broken")


# --- MX --------------------------------------------------------------------------------
def test_mx_good_and_broken_hosts() -> None:
    hosts = [MxHost(10, "mx1.example.org"), MxHost(20, "mx2.example.org")]
    good = {"mx1.example.org": [Address("192.0.2.1")], "mx2.example.org": [Address("192.0.2.2")]}
    assert mx.check_mx(D, hosts, good, receives_bounces=True).status == "ok"
    bad = mx.check_mx(D, hosts, {**good, "mx2.example.org": []}, receives_bounces=True)
    assert (bad.status, "mx2.example.org has no A or AAAA" in bad.summary) == ("fail", True)
    failed = mx.check_mx(D, hosts, {**good, "mx2.example.org": Failed("x")}, receives_bounces=True)
    assert failed.status == "error"


def test_mx_missing_null_and_failed() -> None:
    assert mx.check_mx(D, [], {}, receives_bounces=True).status == "warn"
    null = [MxHost(0, "")]
    bounced = mx.check_mx(D, null, {}, receives_bounces=True)
    assert (bounced.status, "bounces" in bounced.summary) == ("fail", True)
    assert mx.check_mx(D, null, {}, receives_bounces=False).status == "warn"
    assert mx.check_mx(D, Failed("timeout"), {}, receives_bounces=True).status == "error"


# --- MTA-STS ---------------------------------------------------------------------------
POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmax_age: 1209600\n"
MX = [MxHost(10, "mx1.example.org")]


def test_sts_enforce_matching() -> None:
    c = sts.check_mta_sts(D, ["v=STSv1; id=1"], POLICY, MX)
    assert c.status == "ok"


@pytest.mark.parametrize(
    ("txt", "text", "hosts", "status", "words"),
    [
        ([], None, MX, "warn", "no MTA-STS policy"),
        (["v=STSv1; id=1", "v=STSv1; id=2"], None, MX, "fail", "exactly one"),
        (["v=STSv1"], None, MX, "fail", "no id="),
        (["v=STSv1; id=1"], Failed("HTTP status 404"), MX, "fail", "could not be fetched"),
        (["v=STSv1; id=1"], "mode: enforce", MX, "fail", "invalid"),
        (["v=STSv1; id=1"], POLICY, [MxHost(10, "mx9.example.org")], "fail", "refuse to deliver"),
        (["v=STSv1; id=1"], POLICY.replace("enforce", "testing"), MX, "warn", "mode testing"),
        (["v=STSv1; id=1"], POLICY.replace("enforce", "none"), MX, "warn", "mode none"),
        (["v=STSv1; id=1"], POLICY.replace("1209600", "3600"), MX, "warn", "is short"),
        (Failed("timeout"), None, MX, "error", "could not look up"),
        (["v=STSv1; id=1"], POLICY, Failed("timeout"), "error", "could not look up MX"),
    ],
)
def test_sts_problems(
    txt: list[str] | Failed,
    text: str | Failed | None,
    hosts: list[MxHost] | Failed,
    status: str,
    words: str,
) -> None:
    c = sts.check_mta_sts(D, txt, text, hosts)
    assert (c.status, words in c.summary) == (status, True), c.summary


# --- results ---------------------------------------------------------------------------
def test_worst_and_exit_code() -> None:
    ok, warn = Check("x", D, "ok", ""), Check("x", D, "warn", "")
    error, failed = Check("x", D, "error", ""), Check("x", D, "fail", "")
    assert worst(c.status for c in (ok, warn)) == "warn"
    assert worst(c.status for c in (warn, error, ok)) == "error"
    assert worst([]) == "ok"
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, error]) == 2
    assert exit_code([error, failed]) == 1
