"""DNS for direct delivery and `doctor dns`: one injected interface, two implementations.

Direct delivery and the sender-health checks never call a DNS library themselves; they
take a `Resolver`. Production uses `DnsResolver` (dnspython's async resolver). Tests and
local development use `StaticResolver`, which answers from a table and maps host names
onto loopback addresses and ports, so a test domain's MX can be a loopback SMTP server
with whatever TLS behaviour the test needs. Nothing here patches a global.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

SMTP_PORT = 25


class DnsError(Exception):
    """The lookup failed for a reason other than "no such record" (timeout, SERVFAIL).

    Callers treat it as temporary: a message is deferred, a health check says "could not
    be checked", never "missing"."""


@dataclass(frozen=True, order=True)
class MxHost:
    preference: int
    host: str  # lower case, no trailing dot


@dataclass(frozen=True)
class Address:
    """Where to connect: an IP literal and a port (25 except in tests)."""

    ip: str
    port: int = SMTP_PORT


class Resolver(Protocol):
    async def mx(self, domain: str) -> list[MxHost]:
        """MX hosts by preference; [] when the domain has none (RFC 5321 5.1: the caller
        then falls back to the domain itself). A null MX (RFC 7505) comes back as a
        single host "" with preference 0."""
        ...

    async def txt(self, name: str) -> list[str]:
        """TXT records, each record's strings joined; [] when there are none."""
        ...

    async def addresses(self, host: str) -> list[Address]:
        """A and AAAA for a host, as connectable addresses; [] when there are none."""
        ...


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class StaticResolver:
    """Answers from tables. `hosts` maps a host name to its addresses (loopback ports in
    tests); names absent from a table have no such record."""

    mx_records: Mapping[str, Sequence[tuple[int, str]]] = field(default_factory=dict)
    txt_records: Mapping[str, Sequence[str]] = field(default_factory=dict)
    hosts: Mapping[str, Sequence[Address]] = field(default_factory=dict)
    failing: frozenset[str] = frozenset()  # names whose lookups raise DnsError

    def _check(self, name: str) -> str:
        name = _norm(name)
        if name in self.failing:
            raise DnsError(f"lookup failed for {name}")
        return name

    async def mx(self, domain: str) -> list[MxHost]:
        domain = self._check(domain)
        return sorted(MxHost(p, _norm(h)) for p, h in self.mx_records.get(domain, ()))

    async def txt(self, name: str) -> list[str]:
        return list(self.txt_records.get(self._check(name), ()))

    async def addresses(self, host: str) -> list[Address]:
        return list(self.hosts.get(self._check(host), ()))


class DnsResolver:
    """dnspython's async resolver with the system's configuration."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        import dns.asyncresolver

        self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout

    async def _query(self, name: str, rdtype: str) -> list[object]:
        import dns.exception
        import dns.resolver

        try:
            answer = await self._resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsError(f"{rdtype} lookup failed for {name}: {type(exc).__name__}") from None
        return list(answer)

    async def mx(self, domain: str) -> list[MxHost]:
        rows = await self._query(domain, "MX")
        return sorted(
            MxHost(int(r.preference), _norm(r.exchange.to_text()))  # type: ignore[attr-defined]
            for r in rows
        )

    async def txt(self, name: str) -> list[str]:
        rows = await self._query(name, "TXT")
        return [
            b"".join(r.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
            for r in rows
        ]

    async def addresses(self, host: str) -> list[Address]:
        found: list[Address] = []
        for rdtype in ("A", "AAAA"):
            found += [Address(r.to_text()) for r in await self._query(host, rdtype)]  # type: ignore[attr-defined]
        return found
