"""MTA-STS for our own domain: whether mail sent to us (replies, bounces) is protected
from TLS downgrade, and whether our MX hosts match the policy we publish."""

from __future__ import annotations

from collections.abc import Sequence

from carepost.delivery.mta_sts import (
    PolicyError,
    StsRecordError,
    parse_policy,
    parse_txt_records,
    policy_url,
    txt_name,
)
from carepost.delivery.resolver import MxHost
from carepost.doctor.result import Check, Failed, Status, Txt

RECOMMENDED_MAX_AGE = 86_400 * 7


def check_mta_sts(
    domain: str,
    txt: Txt,
    policy_text: str | Failed | None,
    mx: Sequence[MxHost] | Failed,
) -> Check:
    """`policy_text` is the fetched policy, the fetch failure, or None when no fetch was
    made (no TXT record)."""
    name = txt_name(domain)
    url = policy_url(domain)

    def result(status: Status, summary: str, details: list[str], fix: str = "") -> Check:
        return Check("mta-sts", domain, status, summary, tuple(details), fix)

    if isinstance(txt, Failed):
        return result("error", f"could not look up {name}: {txt.reason}", [])
    try:
        record = parse_txt_records(txt)
    except StsRecordError as exc:
        return result("fail", f"the {name} record is invalid: {exc}", [], _publish(domain))
    if record is None:
        return result(
            "warn",
            "no MTA-STS policy: an attacker on the path can strip TLS from mail sent to you",
            [],
            _publish(domain),
        )
    details = [f"{name}: id={record.policy_id}"]
    if policy_text is None or isinstance(policy_text, Failed):
        why = policy_text.reason if isinstance(policy_text, Failed) else "not fetched"
        return result(
            "fail",
            f"the TXT record announces a policy, but {url} could not be fetched: {why}",
            details,
            f"serve the policy at {url} as text/plain with a certificate valid for "
            f"mta-sts.{domain}",
        )
    try:
        policy = parse_policy(policy_text, policy_id=record.policy_id)
    except PolicyError as exc:
        return result("fail", f"the policy at {url} is invalid: {exc}", details, _publish(domain))
    details.append(f"mode {policy.mode}, max_age {policy.max_age} s, mx {', '.join(policy.mx)}")
    fails: list[str] = []
    warns: list[str] = []
    if isinstance(mx, Failed):
        return result("error", f"could not look up MX to compare: {mx.reason}", details)
    unmatched = [m.host for m in mx if m.host and not policy.allows(m.host)]
    if unmatched and policy.mode != "none":
        what = (
            "senders that honour MTA-STS refuse to deliver to"
            if policy.mode == "enforce"
            else "TLS reports will show failures for"
        )
        problem = f"MX host(s) not in the policy: {what} {', '.join(unmatched)}"
        (fails if policy.mode == "enforce" else warns).append(problem)
    if policy.mode == "none":
        warns.append("mode none: the policy is withdrawn and protects nothing")
    elif policy.mode == "testing":
        warns.append("mode testing: failures are reported, not prevented")
    if policy.max_age < RECOMMENDED_MAX_AGE:
        warns.append(
            f"max_age {policy.max_age} s is short: a policy protects only while cached; "
            "RFC 8461 suggests weeks"
        )
    fix = ""
    if unmatched:
        fix = f"add mx: lines for {', '.join(unmatched)} to {url} and change the TXT id"
    elif policy.mode != "enforce":
        fix = f"once TLS reports are clean, set mode: enforce at {url} and change the TXT id"
    if fails:
        return result("fail", fails[0], details + fails[1:] + warns, fix)
    if warns:
        return result("warn", warns[0], details + warns[1:], fix)
    return result("ok", "mode enforce; every MX host matches the policy", details)


def _publish(domain: str) -> str:
    return (
        f'publish TXT at {txt_name(domain)}: "v=STSv1; id=<new id each change>", and at '
        f"{policy_url(domain)} (text/plain): version: STSv1, mode: testing (later "
        "enforce), one mx: line per MX host, max_age: 604800"
    )
