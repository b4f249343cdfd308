"""The direct-delivery TLS plan: exhaustive over message policy, MTA-STS mode and
override, and properties over host lists (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.delivery.mta_sts import StsPolicy
from carepost.delivery.tls_policy import NOTES, WHY, plan

HOSTS = ["mx1.example.org", "mx2.example.org", "backup.other.net"]
LISTED = StsPolicy("enforce", ("*.example.org",), 86400)


def _sts(mode: str | None) -> StsPolicy | None:
    if mode is None:
        return None
    return StsPolicy(mode, LISTED.mx, 86400)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "override", "mode", "expected"),
    [
        # message, override, MTA-STS mode -> requirement per host (listed, listed, not)
        ("required", None, None, ["verified"] * 3),
        ("required", None, "none", ["verified"] * 3),
        ("required", None, "testing", ["verified"] * 3),
        ("required", None, "enforce", ["verified", "verified", "skip"]),
        ("required", "required", None, ["verified"] * 3),
        ("opportunistic", None, None, ["opportunistic"] * 3),
        ("opportunistic", None, "none", ["opportunistic"] * 3),
        ("opportunistic", None, "testing", ["opportunistic"] * 3),
        ("opportunistic", None, "enforce", ["verified", "verified", "skip"]),
        ("opportunistic", "required", None, ["verified"] * 3),
        ("opportunistic", "required", "testing", ["verified"] * 3),
        ("opportunistic", "required", "enforce", ["verified", "verified", "skip"]),
    ],
)
def test_table(message: str, override: str | None, mode: str | None, expected: list[str]) -> None:
    result = plan(message, HOSTS, _sts(mode), override)  # type: ignore[arg-type]
    assert [h.requirement for h in result.hosts] == expected
    assert [h.host for h in result.hosts] == HOSTS
    assert all(h.why in WHY for h in result.hosts)
    assert result.notes == (("sts_testing", "sts_testing_mismatch") if mode == "testing" else ())


def test_reasons_name_the_source_of_the_requirement() -> None:
    assert {h.why for h in plan("required", HOSTS, None).hosts} == {"message_required"}
    assert {h.why for h in plan("opportunistic", HOSTS, None, "required").hosts} == {
        "operator_required"
    }
    enforced = plan("opportunistic", HOSTS, LISTED).hosts
    assert [h.why for h in enforced] == ["sts_enforce", "sts_enforce", "sts_mismatch"]


def test_testing_mode_with_every_host_listed_has_no_mismatch_note() -> None:
    result = plan("opportunistic", HOSTS[:2], _sts("testing"))
    assert result.notes == ("sts_testing",)
    assert set(result.notes) <= set(NOTES)


def test_no_listed_host_leaves_nothing_to_try() -> None:
    result = plan("opportunistic", ["mx.elsewhere.net"], LISTED)
    assert result.candidates == ()


@pytest.mark.parametrize(("message", "override"), [("plain", None), ("required", "none")])
def test_unknown_values_are_refused(message: str, override: str | None) -> None:
    with pytest.raises(ValueError, match="unknown"):
        plan(message, HOSTS, None, override)  # type: ignore[arg-type]


label = st.text("abcxyz", min_size=1, max_size=3)
host = st.builds(lambda a, b: f"{a}.{b}.org", label, st.sampled_from(["example", "other"]))
policy = st.none() | st.builds(
    StsPolicy,
    st.sampled_from(["enforce", "testing", "none"]),
    st.lists(st.sampled_from(["*.example.org", "mx.other.org", "a.example.org"]), max_size=3).map(
        tuple
    ),
    st.just(86400),
)


@given(
    st.sampled_from(["required", "opportunistic"]),
    st.lists(host, max_size=5),
    policy,
    st.sampled_from([None, "required"]),
)
def test_properties(message, hosts, sts, override) -> None:  # type: ignore[no-untyped-def]
    result = plan(message, hosts, sts, override)
    assert [h.host for h in result.hosts] == hosts  # order kept, nothing added or lost
    enforce = sts is not None and sts.mode == "enforce"
    for h in result.hosts:
        # Only MTA-STS enforce skips, and exactly the hosts it does not list.
        assert (h.requirement == "skip") == (enforce and not sts.allows(h.host))
    if message == "required" or override == "required" or enforce:
        assert result.verified  # nothing can go out in plaintext
    else:
        assert all(h.requirement == "opportunistic" for h in result.candidates)
    # Tightening never loosens: an override or a required message gives a superset of
    # verified hosts and the same skipped ones.
    strict = plan("required", hosts, sts, "required")
    for a, b in zip(result.hosts, strict.hosts, strict=True):
        assert (a.requirement == "skip") == (b.requirement == "skip")
        if a.requirement == "verified":
            assert b.requirement == "verified"
