"""The I/O half of `doctor dns`: ask the injected resolver (and the MTA-STS fetcher) for
the answers the pure checks need, concurrently, and run the checks in a fixed order.

A lookup that fails becomes `Failed` (the check says "error", could not check); no
exception from DNS or HTTPS escapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from carepost.delivery.mta_sts import StsRecordError, parse_txt_records, txt_name
from carepost.delivery.mta_sts_fetch import FetchError, PolicyFetcher
from carepost.delivery.resolver import Address, DnsError, MxHost, Resolver
from carepost.doctor import dkim, dmarc, mx, spf, sts
from carepost.doctor.result import Check, Failed, Txt

SPF_ROUNDS = spf.MAX_DEPTH + 2


@dataclass(frozen=True)
class SenderFacts:
    """What a sender profile contributes, read by the command (no PHI: domains and the
    public half of the DKIM key)."""

    profile_id: str
    from_domain: str
    return_path_domain: str
    dkim_domain: str | None
    dkim_selector: str | None
    dkim_record: str | None  # the TXT value for the profile's private key
    dkim_problem: str | None = None  # why the key could not be read


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


async def _txt(resolver: Resolver, name: str) -> Txt:
    try:
        return await resolver.txt(name)
    except DnsError as exc:
        return Failed(str(exc))


async def _mx(resolver: Resolver, domain: str) -> list[MxHost] | Failed:
    try:
        return await resolver.mx(domain)
    except DnsError as exc:
        return Failed(str(exc))


async def _addresses(resolver: Resolver, host: str) -> list[Address] | Failed:
    try:
        return await resolver.addresses(host)
    except DnsError as exc:
        return Failed(str(exc))


async def _spf_answers(resolver: Resolver, domain: str) -> dict[str, Txt]:
    answers: dict[str, Txt] = {}
    for _ in range(SPF_ROUNDS):
        wanted = sorted(spf.names_to_fetch(domain, answers))
        if not wanted:
            break
        found = await asyncio.gather(*(_txt(resolver, n) for n in wanted))
        answers.update(zip(wanted, found, strict=True))
    return answers


async def _check_spf(resolver: Resolver, domain: str) -> Check:
    return spf.check_spf(domain, await _spf_answers(resolver, domain))


async def _check_mx(resolver: Resolver, domain: str, *, receives_bounces: bool) -> Check:
    hosts = await _mx(resolver, domain)
    addresses: dict[str, Sequence[Address] | Failed] = {}
    if not isinstance(hosts, Failed):
        named = [h.host for h in hosts if h.host]
        found = await asyncio.gather(*(_addresses(resolver, h) for h in named))
        addresses = dict(zip(named, found, strict=True))
    return mx.check_mx(domain, hosts, addresses, receives_bounces=receives_bounces)


async def _check_dkim(
    resolver: Resolver, domain: str, selector: str | None, sender: SenderFacts | None
) -> Check:
    if sender is not None and sender.dkim_problem is not None:
        return Check(
            "dkim",
            sender.dkim_domain or domain,
            "fail",
            f"the sender profile's DKIM key cannot be used: {sender.dkim_problem}",
            (),
            "set a readable RSA or Ed25519 private key (PEM) on the sender profile",
        )
    if sender is not None and sender.dkim_domain is None and selector is None:
        return Check(
            "dkim",
            domain,
            "fail",
            f"sender profile {sender.profile_id} does not sign with DKIM: receivers see "
            "unauthenticated mail, and Gmail and Yahoo require DKIM from bulk senders",
            (),
            "configure a DKIM domain, selector and key on the sender profile",
        )
    key_domain = (sender.dkim_domain if sender else None) or domain
    chosen = selector or (sender.dkim_selector if sender else None)
    expected = (
        sender.dkim_record if sender is not None and key_domain == sender.dkim_domain else None
    )
    if chosen is None:
        return dkim.check_dkim(key_domain, None, None, None)
    answer = await _txt(resolver, dkim.record_name(chosen, key_domain))
    return dkim.check_dkim(key_domain, chosen, answer, expected)


async def _check_dmarc(resolver: Resolver, domain: str) -> tuple[Check, dmarc.DmarcRecord | None]:
    names = dmarc.dmarc_names(domain)
    found = await asyncio.gather(*(_txt(resolver, n) for n in names))
    return dmarc.check_dmarc(domain, dict(zip(names, found, strict=True)))


async def _check_sts(resolver: Resolver, fetcher: PolicyFetcher, domain: str) -> Check:
    txt, hosts = await asyncio.gather(_txt(resolver, txt_name(domain)), _mx(resolver, domain))
    policy_text: str | Failed | None = None
    if not isinstance(txt, Failed):
        try:
            record = parse_txt_records(txt)
        except StsRecordError:
            record = None
        if record is not None:
            try:
                policy_text = await fetcher.fetch(domain)
            except FetchError as exc:
                policy_text = Failed(str(exc))
    return sts.check_mta_sts(domain, txt, policy_text, hosts)


async def diagnose(
    domain: str,
    *,
    resolver: Resolver,
    fetcher: PolicyFetcher,
    sender: SenderFacts | None = None,
    selector: str | None = None,
) -> list[Check]:
    """Every check for `domain`, in a fixed order: SPF, DKIM, DMARC, alignment, MX,
    MTA-STS; the return-path domain's SPF and MX too when a sender profile uses
    another domain for bounces."""
    domain = domain.rstrip(".").lower()
    bounce_domain = sender.return_path_domain if sender else domain
    extra = bounce_domain != domain
    spf_check, dkim_check, (dmarc_check, record), mx_check, sts_check = await asyncio.gather(
        _check_spf(resolver, domain),
        _check_dkim(resolver, domain, selector, sender),
        _check_dmarc(resolver, domain),
        _check_mx(resolver, domain, receives_bounces=not extra),
        _check_sts(resolver, fetcher, domain),
    )
    checks = [spf_check]
    if extra:
        checks.append(await _check_spf(resolver, bounce_domain))
    checks += [dkim_check, dmarc_check]
    if sender is None:
        checks.append(dmarc.check_alignment(domain, None, None, record))
    else:
        alignment = dmarc.check_alignment(
            domain, sender.dkim_domain, sender.return_path_domain, record
        )
        if sender.from_domain != domain:
            alignment = Check(
                alignment.name,
                alignment.domain,
                "warn" if alignment.status == "ok" else alignment.status,
                alignment.summary
                if alignment.status != "ok"
                else f"the sender profile's From domain is {sender.from_domain}, not {domain}",
                (*alignment.details, f"sender profile From domain: {sender.from_domain}"),
                alignment.fix,
            )
        checks.append(alignment)
    checks.append(mx_check)
    if extra:
        checks.append(await _check_mx(resolver, bounce_domain, receives_bounces=True))
    checks.append(sts_check)
    return checks
