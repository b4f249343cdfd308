"""Which TLS each of a recipient domain's MX hosts must give: the pure core of direct delivery.

Inputs are plain data: the message's own policy (`Envelope.tls`), the domain's MTA-STS
policy (RFC 8461) if it publishes one, and the operator's override for the domain. The
answer is a plan: per MX host, in preference order, `verified` (certificate chain to a
trusted root, the certificate names the MX host, TLS >= 1.2, or nothing is sent),
`opportunistic` (STARTTLS when offered, without verification; plaintext when it is not
offered or the handshake fails, RFC 7435) or `skip` (never connect).

What can only tighten a message's policy, never loosen it:
- a `required` message (anything with PHI) needs verified TLS on every host;
- an operator override `required` makes the domain's opportunistic messages verified too;
- MTA-STS `enforce` makes every message verified and skips hosts the policy does not list;
- MTA-STS `testing` changes nothing but is noted (with a note when a host does not match),
  so the evidence says the domain asked to be watched; `none` is as if no policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from carepost.delivery.mta_sts import StsPolicy

MessageTls = Literal["required", "opportunistic"]
Override = Literal["required"]
Requirement = Literal["verified", "opportunistic", "skip"]

# Why a host got its requirement; stable codes, never host or domain names (a personal
# domain can name a patient).
WHY = {
    "message_required": "the message requires verified TLS",
    "operator_required": "the operator requires verified TLS for this domain",
    "sts_enforce": "the domain's MTA-STS policy (enforce) requires verified TLS",
    "sts_mismatch": "the domain's MTA-STS policy (enforce) does not list this MX host",
    "opportunistic": "the message allows opportunistic TLS",
}
NOTES = {
    "sts_testing": "the domain's MTA-STS policy is in testing mode",
    "sts_testing_mismatch": "an MX host is not listed by the domain's MTA-STS testing policy",
}


@dataclass(frozen=True)
class HostPlan:
    host: str
    requirement: Requirement
    why: str


@dataclass(frozen=True)
class DomainPlan:
    hosts: tuple[HostPlan, ...]
    notes: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[HostPlan, ...]:
        """Hosts to try, in preference order."""
        return tuple(h for h in self.hosts if h.requirement != "skip")

    @property
    def verified(self) -> bool:
        """Every host tried must give verified TLS: nothing goes out in plaintext."""
        return all(h.requirement == "verified" for h in self.candidates)


def plan(
    message_tls: MessageTls,
    mx_hosts: Sequence[str],
    sts: StsPolicy | None,
    override: Override | None = None,
) -> DomainPlan:
    """`mx_hosts` in preference order (the domain itself when it has no MX record)."""
    if message_tls not in ("required", "opportunistic"):
        raise ValueError(f"unknown message TLS policy {message_tls!r}")
    if override not in (None, "required"):
        raise ValueError(f"unknown TLS override {override!r}")
    mode = sts.mode if sts is not None else "none"
    if message_tls == "required":
        base: Requirement = "verified"
        why = "message_required"
    elif override == "required":
        base, why = "verified", "operator_required"
    else:
        base, why = "opportunistic", "opportunistic"
    notes: list[str] = []
    hosts: list[HostPlan] = []
    if mode == "enforce":
        assert sts is not None
        for host in mx_hosts:
            if not sts.allows(host):
                hosts.append(HostPlan(host, "skip", "sts_mismatch"))
            else:
                strict_why = why if base == "verified" else "sts_enforce"
                hosts.append(HostPlan(host, "verified", strict_why))
        return DomainPlan(tuple(hosts))
    if mode == "testing":
        assert sts is not None
        notes.append("sts_testing")
        if any(not sts.allows(h) for h in mx_hosts):
            notes.append("sts_testing_mismatch")
    return DomainPlan(tuple(HostPlan(h, base, why) for h in mx_hosts), tuple(notes))
