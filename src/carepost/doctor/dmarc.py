"""DMARC (RFC 7489): the policy at `_dmarc.<domain>` and whether our mail aligns with it.

A message passes DMARC when SPF or DKIM passes for a domain aligned with the From
domain: the same domain (strict, `s`) or the same organizational domain (relaxed, `r`,
the default). The organizational domain is approximated (`result.org_domain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from carepost.doctor.result import Check, Failed, Status, TxtAnswers, org_domain, parse_tags

_POLICIES = {
    "none": "monitoring only: receivers deliver mail that fails DMARC as usual, so anyone "
    "can still send as you",
    "quarantine": "mail that fails DMARC goes to spam",
    "reject": "mail that fails DMARC is refused",
}


class DmarcRecordError(ValueError):
    pass


@dataclass(frozen=True)
class DmarcRecord:
    policy: str
    subdomain_policy: str
    pct: int
    rua: tuple[str, ...]
    adkim: str  # r | s
    aspf: str  # r | s


def record_name(domain: str) -> str:
    return f"_dmarc.{domain}"


def is_dmarc(record: str) -> bool:
    return record.replace(" ", "").replace("\t", "").startswith("v=DMARC1")


def parse_dmarc(record: str) -> DmarcRecord:
    try:
        tags = parse_tags(record)
    except ValueError as exc:
        raise DmarcRecordError(str(exc)) from None
    if next(iter(tags), None) != "v" or tags["v"] != "DMARC1":
        raise DmarcRecordError("the record must start with v=DMARC1")
    if "p" not in tags:
        raise DmarcRecordError("the record has no p= (none, quarantine or reject)")
    policy = tags["p"].lower()
    if policy not in _POLICIES:
        raise DmarcRecordError("p= must be none, quarantine or reject")
    sp = tags.get("sp", policy).lower()
    if sp not in _POLICIES:
        raise DmarcRecordError("sp= must be none, quarantine or reject")
    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise DmarcRecordError("pct= must be a whole number from 0 to 100")
    modes = {}
    for tag in ("adkim", "aspf"):
        modes[tag] = tags.get(tag, "r").lower()
        if modes[tag] not in ("r", "s"):
            raise DmarcRecordError(f"{tag}= must be r (relaxed) or s (strict)")
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    for uri in rua:
        if not uri.lower().startswith("mailto:"):
            raise DmarcRecordError("rua= addresses must be mailto: URIs")
    return DmarcRecord(policy, sp, int(pct_text), rua, modes["adkim"], modes["aspf"])


def dmarc_names(domain: str) -> list[str]:
    """Where a receiver looks: the domain's own record, then its organizational
    domain's (RFC 7489 6.6.3)."""
    names = [record_name(domain)]
    org = org_domain(domain)
    if org != domain:
        names.append(record_name(org))
    return names


def check_dmarc(domain: str, answers: TxtAnswers) -> tuple[Check, DmarcRecord | None]:
    """`answers` holds the TXT answers for `dmarc_names(domain)`."""
    names = dmarc_names(domain)
    found_at: str | None = None
    records: list[str] = []
    for name in names:
        answer = answers.get(name, Failed("not looked up"))
        if isinstance(answer, Failed):
            return Check("dmarc", name, "error", f"could not look up {name}: {answer.reason}"), None
        records = [r for r in answer if is_dmarc(r)]
        if records:
            found_at = name
            break
    own = names[0]
    if found_at is None:
        return (
            Check(
                "dmarc",
                own,
                "fail",
                "no DMARC record: Gmail and Yahoo require one from bulk senders, and nothing "
                "tells receivers what to do with mail forged in your name",
                (),
                f'publish a TXT record at {own}: "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"'
                ", read the reports, then move to p=quarantine and p=reject",
            ),
            None,
        )

    def result(status: Status, summary: str, details: list[str], fix: str = "") -> Check:
        return Check("dmarc", found_at or own, status, summary, tuple(details), fix)

    if len(records) > 1:
        return result("fail", f"{len(records)} DMARC records: receivers ignore them all", []), None
    try:
        record = parse_dmarc(records[0])
    except DmarcRecordError as exc:
        return result("fail", f"the DMARC record is unusable: {exc}", [records[0]]), None
    applied = record.policy if found_at == own else record.subdomain_policy
    details = [f"record: {records[0]}", f"p={applied}: {_POLICIES[applied]}"]
    if found_at != own:
        details.append(f"{domain} has no record of its own; {found_at} applies (sp=)")
    warns: list[str] = []
    if applied == "none":
        warns.append(f"p=none is {_POLICIES['none']}")
    if record.pct < 100:
        warns.append(f"pct={record.pct}: the policy applies to only {record.pct}% of failing mail")
    if not record.rua:
        warns.append("no rua=: you get no aggregate reports of who sends mail as you")
    if warns:
        fix = "after a few weeks of clean reports, publish p=quarantine, then p=reject"
        if not record.rua:
            fix = f"add rua=mailto:dmarc@{domain} (or a report service's address)"
        return result("warn", warns[0], details + warns[1:], fix), record
    return result("ok", f"p={applied}: {_POLICIES[applied]}", details), record


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


def check_alignment(
    from_domain: str,
    dkim_domain: str | None,
    return_path_domain: str | None,
    record: DmarcRecord | None,
) -> Check:
    """DKIM alignment is what counts most: it survives forwarding, SPF does not."""
    adkim = record.adkim if record else "r"
    aspf = record.aspf if record else "r"
    if return_path_domain is None and dkim_domain is None:
        return Check(
            "alignment",
            from_domain,
            "warn",
            "not checked: give --sender to compare its DKIM and return-path domains",
        )
    details: list[str] = []
    dkim_ok = dkim_domain is not None and aligned(dkim_domain, from_domain, adkim)
    spf_ok = return_path_domain is not None and aligned(return_path_domain, from_domain, aspf)
    names = {"r": "relaxed", "s": "strict"}
    if dkim_domain is None:
        details.append("the sender profile does not sign with DKIM")
    else:
        details.append(
            f"DKIM d={dkim_domain} {'aligns' if dkim_ok else 'does not align'} with From "
            f"{from_domain} ({names[adkim]})"
        )
    if return_path_domain is not None:
        details.append(
            f"return path {return_path_domain} {'aligns' if spf_ok else 'does not align'} "
            f"with From {from_domain} ({names[aspf]})"
        )
    if dkim_ok and spf_ok:
        return Check("alignment", from_domain, "ok", "DKIM and SPF both align", tuple(details))
    if dkim_ok:
        return Check("alignment", from_domain, "ok", "DKIM aligns", tuple(details))
    if spf_ok:
        return Check(
            "alignment",
            from_domain,
            "warn",
            "only SPF aligns: forwarded mail will fail DMARC",
            tuple(details),
            f"sign with DKIM as d={from_domain} (or a subdomain, under relaxed alignment)",
        )
    return Check(
        "alignment",
        from_domain,
        "fail",
        "neither DKIM nor SPF aligns with the From domain: every message fails DMARC",
        tuple(details),
        f"sign with DKIM as d={from_domain} and use a return path under {from_domain}",
    )
