"""Direct delivery: carepost connects to the recipient domain's own mail servers.

For each message: the recipient's domain → its MX hosts (cached for `mx_cache_seconds`;
no MX record means the domain itself, RFC 5321 5.1; a null MX, RFC 7505, fails the
message; a DNS failure defers it) → the TLS plan (`delivery.tls_policy`: the message's
policy, the domain's MTA-STS policy, the operator's override) → the domain's limits
(`delivery.throttle`) → each MX host in preference order and each of its addresses, until
one takes the message or says why not.

A host that must give verified TLS gets `SmtpSession.open(tls="starttls")` with a
verifying context (the system's trust store, TLS >= 1.2) and the MX host's name to match:
the session refuses to go on when STARTTLS is missing, refused, or the handshake or the
certificate fails, before MAIL FROM. Nothing of such a message is ever written in
plaintext. When no host can give it, the outcome is `mx_tls_unavailable` (no host
offered STARTTLS) or `mx_tls_failed` (a host offered it and failed it), which the worker
turns into a portal notice or a failure. An opportunistic host gets STARTTLS without
verification when it offers it, plaintext when it does not, and a plaintext reconnection
when the handshake breaks (RFC 7435).

Connections are pooled per MX host, address and TLS level (`smtp.SessionPool`, shared
with the relay transport), so domains served by the same MX (hosted mail) share them.
`Attempt.method` says how each message went: `tls_direct` (verified), `tls_direct_unverified`
(opportunistic over TLS), `plain_direct` (opportunistic, no TLS).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from carepost.clock import Clock, system_clock
from carepost.delivery import tls_policy
from carepost.delivery.mta_sts import PolicySource
from carepost.delivery.outcome import (
    Outcome,
    dns_failed,
    invalid_address,
    mx_refused,
    mx_tls_failed,
    mx_tls_unavailable,
    no_mail_host,
    null_mx,
)
from carepost.delivery.resolver import Address, DnsError, MxHost, Resolver
from carepost.delivery.smtp import Attempt, Envelope, SessionPool, open_failure
from carepost.delivery.smtp_session import (
    SessionRefused,
    SessionTls,
    SmtpSession,
    StartTlsLost,
    TlsUnavailable,
)
from carepost.delivery.throttle import Throttle, ThrottleConfig, WarmupLedger

METHOD_VERIFIED = "tls_direct"
METHOD_UNVERIFIED = "tls_direct_unverified"
METHOD_PLAIN = "plain_direct"

Level = tls_policy.Requirement  # "verified" | "opportunistic" (never "skip" here)
_TLS_REASONS = ("mx_tls_failed", "mx_tls_unavailable")


@dataclass(frozen=True)
class DirectConfig:
    ehlo_name: str | None = None  # None: the host name (as the relay transport does)
    timeout: float = 60.0
    max_messages_per_connection: int = 100
    mx_cache_seconds: float = 300.0
    tls_overrides: Mapping[str, tls_policy.Override] = field(default_factory=dict)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    # The trust for verified TLS; None: the system's trust store. Tests pass a context
    # trusting their CA. It must verify (checked): verification cannot be turned off.
    verify_context: ssl.SSLContext | None = field(default=None, repr=False)

    def verifying_context(self) -> ssl.SSLContext:
        ctx = self.verify_context or ssl.create_default_context()
        if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
            raise ValueError("direct delivery's TLS context must verify certificates and names")
        if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def opportunistic_context() -> ssl.SSLContext:
    """Encryption without authentication, for messages declared PHI-free (RFC 7435):
    any certificate, the library's default protocol floor (TLS 1.2)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def mail_hosts(domain: str, records: Sequence[MxHost]) -> list[str] | Outcome:
    """Pure: the hosts to try, by preference, or why there are none. No MX: the domain
    itself (RFC 5321 5.1). A lone null MX (RFC 7505): the domain takes no mail. A null MX
    beside real ones is a misconfiguration; the real ones are used."""
    real = [r for r in records if r.host]
    if records and not real:
        return null_mx()
    if not records:
        return [domain]
    return [r.host for r in sorted(real)]


def recipient_domain(address: str) -> str | None:
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or not domain or not domain.isascii():
        return None
    return domain


class DirectTransport:
    name = "direct"
    method = METHOD_VERIFIED

    def __init__(
        self,
        resolver: Resolver,
        sts: PolicySource | None,
        config: DirectConfig,
        *,
        ledger: WarmupLedger | None = None,
        clock: Clock = system_clock,
        throttle: Throttle | None = None,
    ) -> None:
        self.resolver = resolver
        self.sts = sts
        self.config = config
        self.clock = clock
        self._verify = config.verifying_context()
        self._opportunistic = opportunistic_context()
        self.throttle = throttle or Throttle(config.throttle, ledger, clock=clock)
        self._pools: dict[tuple[str, str, int, Level], SessionPool] = {}
        self._mx: dict[str, tuple[datetime, list[MxHost]]] = {}
        self._addresses: dict[str, tuple[datetime, list[Address]]] = {}

    # --- DNS, cached -----------------------------------------------------------------
    async def _mx_records(self, domain: str) -> list[MxHost]:
        now = self.clock()
        cached = self._mx.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        records = await self.resolver.mx(domain)  # DnsError is not cached
        self._mx[domain] = (now + timedelta(seconds=self.config.mx_cache_seconds), records)
        return records

    async def _host_addresses(self, host: str) -> list[Address]:
        now = self.clock()
        cached = self._addresses.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self.resolver.addresses(host)
        self._addresses[host] = (now + timedelta(seconds=self.config.mx_cache_seconds), found)
        return found

    # --- one message -----------------------------------------------------------------
    async def send(self, envelope: Envelope) -> Attempt:
        domain = recipient_domain(envelope.rcpt_to)
        if domain is None:
            return Attempt(invalid_address())
        try:
            hosts = mail_hosts(domain, await self._mx_records(domain))
        except DnsError:
            return Attempt(dns_failed())
        if isinstance(hosts, Outcome):
            return Attempt(hosts)
        sts = await self.sts.policy(domain) if self.sts is not None else None
        plan = tls_policy.plan(envelope.tls, hosts, sts, self.config.tls_overrides.get(domain))
        if not plan.candidates:
            return Attempt(
                mx_tls_failed(),
                "no MX host is listed by the domain's MTA-STS policy",
                notes=plan.notes,
            )
        held = await self.throttle.admit(domain)
        if held is not None:
            return Attempt(held, notes=plan.notes)
        async with self.throttle.connection(domain):
            attempt = await self._deliver(envelope, plan)
        if plan.notes:
            attempt = dataclasses.replace(attempt, notes=attempt.notes + plan.notes)
        return attempt

    async def _deliver(self, envelope: Envelope, plan: tls_policy.DomainPlan) -> Attempt:
        failures: list[Outcome] = []
        for host in plan.candidates:
            try:
                addresses = await self._host_addresses(host.host)
            except DnsError:
                failures.append(dns_failed())
                continue
            level: Level = host.requirement
            for address in addresses:
                key = (host.host, address.ip, address.port, level)
                pool = self._pools.get(key)
                if pool is not None:
                    reused = await pool.send_reused(envelope)
                    if reused is not None:
                        return reused
                opened = await self._open(host.host, address, level)
                if isinstance(opened, Outcome):
                    failures.append(opened)
                    continue
                if pool is None:
                    pool = SessionPool(self.config.max_messages_per_connection)
                    self._pools[key] = pool
                return await pool.send_on(opened, envelope)
        return Attempt(_give_up(failures))

    async def _open(self, host: str, address: Address, level: Level) -> SmtpSession | Outcome:
        if level == "verified":
            opened = await self._try_open(host, address, "starttls", self._verify)
            if isinstance(opened, SmtpSession):
                if opened.tls_version is None:  # cannot happen in starttls mode
                    opened.abort()
                    return mx_tls_unavailable()
                opened.method = METHOD_VERIFIED
            return opened
        opened = await self._try_open(host, address, "opportunistic", self._opportunistic)
        if isinstance(opened, Outcome) and opened.reason == "mx_tls_failed":
            # The handshake broke: the connection is gone. RFC 7435: reconnect and
            # deliver in plaintext, as if STARTTLS had not been offered.
            opened = await self._try_open(host, address, "plain", self._opportunistic)
        if isinstance(opened, SmtpSession):
            opened.method = METHOD_UNVERIFIED if opened.tls_version else METHOD_PLAIN
        return opened

    async def _try_open(
        self, host: str, address: Address, tls: SessionTls, context: ssl.SSLContext
    ) -> SmtpSession | Outcome:
        try:
            return await SmtpSession.open(
                address.ip,
                address.port,
                tls=tls,
                context=context,
                timeout=self.config.timeout,
                local_hostname=self.config.ehlo_name,
                tls_name=host,
            )
        except TlsUnavailable:
            return mx_tls_unavailable()
        except SessionRefused as exc:
            if exc.step == "starttls":
                return mx_tls_failed()
            return mx_refused(exc.reply.code, exc.reply.text)
        except StartTlsLost:
            return mx_tls_failed()
        except Exception as exc:  # TimeoutError, OSError (ssl.SSLError), SessionLost
            failure = open_failure(exc)
            if failure is None:
                raise
            return mx_tls_failed() if failure.reason == "tls_failed" else failure

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()


def _give_up(failures: Sequence[Outcome]) -> Outcome:
    """Every host and address failed. A TLS failure anywhere says more than a refused
    connection elsewhere: the message could not go out securely, and the worker's portal
    fallback (or failure) is the answer, not an endless retry."""
    for reason in _TLS_REASONS:
        for failure in failures:
            if failure.reason == reason:
                return failure
    return failures[0] if failures else no_mail_host()
