"""MX: where mail for the domain (replies, and bounces when it is the return path) goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from carepost.delivery.resolver import Address, MxHost
from carepost.doctor.result import Check, Failed, Status


def check_mx(
    domain: str,
    mx: Sequence[MxHost] | Failed,
    addresses: Mapping[str, Sequence[Address] | Failed],
    *,
    receives_bounces: bool,
) -> Check:
    """`addresses` holds the lookups of the MX hosts; `receives_bounces` says whether the
    domain is the return path, where a lost bounce means a dead address is never
    suppressed."""
    if isinstance(mx, Failed):
        return Check("mx", domain, "error", f"could not look up MX for {domain}: {mx.reason}")
    role = "bounces and replies" if receives_bounces else "replies"
    if not mx:
        return Check(
            "mx",
            domain,
            "warn",
            f"no MX record: senders fall back to {domain}'s own address, which rarely "
            f"runs a mail server, so {role} may be lost",
            (),
            f"publish an MX record for {domain} naming the server that receives its mail",
        )
    if len(mx) == 1 and mx[0].host == "":
        status: Status = "fail" if receives_bounces else "warn"
        return Check(
            "mx",
            domain,
            status,
            f"null MX (RFC 7505): {domain} says it accepts no mail, so {role} to it are refused",
            (),
            f"publish a real MX for {domain}"
            + (", or use a return path on a domain that receives mail" if receives_bounces else ""),
        )
    details = [f"MX {m.preference} {m.host}" for m in mx]
    fails: list[str] = []
    errors: list[str] = []
    for m in mx:
        found = addresses.get(m.host, Failed("not looked up"))
        if isinstance(found, Failed):
            errors.append(f"could not look up {m.host}: {found.reason}")
        elif not found:
            fails.append(f"MX host {m.host} has no A or AAAA record: nothing can connect to it")
    if fails:
        return Check(
            "mx",
            domain,
            "fail",
            fails[0],
            tuple(details + fails[1:] + errors),
            "point each MX at a host name that has an address (not at a CNAME or an IP)",
        )
    if errors:
        return Check("mx", domain, "error", errors[0], tuple(details + errors[1:]))
    hosts = ", ".join(m.host for m in mx)
    return Check(
        "mx", domain, "ok", f"{len(mx)} MX host(s) with addresses: {hosts}", tuple(details)
    )
