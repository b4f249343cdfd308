"""Direct delivery against loopback MX servers with every TLS behaviour (tests/tls_servers.py):
the TLS matrix for required and opportunistic messages, proof that nothing of a message
needing TLS reached a server in plaintext, MX routing, MTA-STS, and the throttle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from carepost.delivery.direct import DirectConfig, DirectTransport
from carepost.delivery.mta_sts import StsPolicy
from carepost.delivery.resolver import Address, MxHost, StaticResolver
from carepost.delivery.smtp import Attempt, Envelope
from carepost.delivery.throttle import DomainLimits, MemoryLedger, ThrottleConfig
from tls_servers import BEHAVIOURS, TlsMatrix

SENDER = "bounce@clinic.example"


def message(marker: str) -> bytes:
    return (
        f"From: care@clinic.example\r\nTo: patient\r\nSubject: Your results\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@clinic.example>\r\n\r\n"
        f"Your A1C result is 7.2 ({marker}).\r\n"
    ).encode()


@dataclass
class FixedSts:
    policies: dict[str, StsPolicy] = field(default_factory=dict)

    async def policy(self, domain: str) -> StsPolicy | None:
        return self.policies.get(domain)


def transport(matrix: TlsMatrix, resolver: Any = None, **kw: Any) -> DirectTransport:
    sts = kw.pop("sts", None)
    clock = kw.pop("clock", None)
    ledger = kw.pop("ledger", None)
    config = DirectConfig(verify_context=matrix.client_context(), timeout=5.0, **kw)
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return DirectTransport(resolver or matrix.resolver, sts, config, ledger=ledger, **extra)


def send_all(t: DirectTransport, envelopes: Sequence[Envelope]) -> list[Attempt]:
    async def go() -> list[Attempt]:
        try:
            return [await t.send(e) for e in envelopes]
        finally:
            await t.close()

    return asyncio.run(go())


REQUIRED = {
    "good": ("sent", "accepted"),
    "selfsigned": ("deferred", "mx_tls_failed"),
    "expired": ("deferred", "mx_tls_failed"),
    "wrongname": ("deferred", "mx_tls_failed"),
    "nostarttls": ("deferred", "mx_tls_unavailable"),
    "starttls454": ("deferred", "mx_tls_failed"),
    "brokentls": ("deferred", "mx_tls_failed"),
    "tls10": ("deferred", "mx_tls_failed"),
}
OPPORTUNISTIC = {
    "good": "tls_direct_unverified",
    "selfsigned": "tls_direct_unverified",
    "expired": "tls_direct_unverified",
    "wrongname": "tls_direct_unverified",
    "nostarttls": "plain_direct",
    "starttls454": "plain_direct",  # refused STARTTLS: the same session goes on in clear
    "brokentls": "plain_direct",  # broken handshake: reconnect in plaintext (RFC 7435)
    "tls10": "plain_direct",  # below our opportunistic floor (TLS 1.2): as broken
}


def test_required_matrix_never_plaintext(tls_servers: TlsMatrix) -> None:
    assert set(REQUIRED) == set(BEHAVIOURS)
    markers = {b: f"PHI-MARKER-{b}-{uuid.uuid4().hex}" for b in BEHAVIOURS}
    envelopes = [
        Envelope(SENDER, f"patient@{b}.test", message(markers[b]), tls="required")
        for b in BEHAVIOURS
    ]
    attempts = send_all(transport(tls_servers), envelopes)
    for behaviour, attempt in zip(BEHAVIOURS, attempts, strict=True):
        status, reason = REQUIRED[behaviour]
        assert (attempt.outcome.status, attempt.outcome.reason) == (status, reason), behaviour
        if status == "sent":
            assert attempt.method == "tls_direct"
            assert attempt.tls_version in ("TLSv1.2", "TLSv1.3")
        else:
            assert attempt.outcome.recipient_tls_failure
    # Delivered only where verified TLS was had, and over TLS.
    good = tls_servers.servers["good"].state
    assert [r.tls for r in good.received] == [True]
    assert markers["good"].encode() in good.received[0].data
    for behaviour in BEHAVIOURS:
        if behaviour != "good":
            assert tls_servers.servers[behaviour].state.received == []
            assert tls_servers.servers[behaviour].state.mail_commands == []
    # No server ever saw a marker, a MAIL FROM or a RCPT TO before TLS.
    plaintext = tls_servers.plaintext()
    assert b"EHLO" in plaintext  # the recording works
    for marker in markers.values():
        assert marker.encode() not in plaintext
    assert b"MAIL FROM" not in plaintext.upper()
    assert b"RCPT TO" not in plaintext.upper()
    assert SENDER.encode() not in plaintext


def test_opportunistic_matrix_methods(tls_servers: TlsMatrix) -> None:
    assert set(OPPORTUNISTIC) == set(BEHAVIOURS)
    envelopes = [
        Envelope(SENDER, f"reader@{b}.test", message(f"news-{b}"), tls="opportunistic")
        for b in BEHAVIOURS
    ]
    attempts = send_all(transport(tls_servers), envelopes)
    for behaviour, attempt in zip(BEHAVIOURS, attempts, strict=True):
        assert attempt.outcome.status == "sent", (behaviour, attempt)
        assert attempt.method == OPPORTUNISTIC[behaviour], behaviour
        received = tls_servers.servers[behaviour].state.received
        assert len(received) == 1
        assert received[0].tls == (attempt.method == "tls_direct_unverified")
        assert (attempt.tls_version is not None) == received[0].tls


def test_connections_are_reused_per_host(tls_servers: TlsMatrix) -> None:
    envelopes = [
        Envelope(SENDER, f"p{i}@good.test", message(f"m{i}"), tls="required") for i in range(4)
    ]
    attempts = send_all(transport(tls_servers), envelopes)
    assert [a.outcome.status for a in attempts] == ["sent"] * 4
    assert tls_servers.servers["good"].state.sessions == 1


def test_rcpt_refusal_is_the_servers_answer(tls_servers: TlsMatrix) -> None:
    [attempt] = send_all(
        transport(tls_servers), [Envelope(SENDER, "rcpt-550@good.test", message("x"))]
    )
    assert (attempt.outcome.status, attempt.outcome.bounce) == ("failed", "hard")
    assert "rcpt-550@good.test" not in attempt.reply  # redacted


def _with(matrix: TlsMatrix, **changes: Any) -> StaticResolver:
    base = matrix.resolver
    return StaticResolver(
        mx_records={**base.mx_records, **changes.get("mx", {})},
        hosts={**base.hosts, **changes.get("hosts", {})},
        failing=base.failing,
    )


@pytest.mark.parametrize(
    ("good_pref", "plain_pref", "expected"), [(10, 20, "good"), (30, 20, "nostarttls")]
)
def test_mx_preference_order(
    tls_servers: TlsMatrix, good_pref: int, plain_pref: int, expected: str
) -> None:
    resolver = _with(
        tls_servers,
        mx={"order.test": [(good_pref, "mx.good.test"), (plain_pref, "mx.nostarttls.test")]},
    )
    [attempt] = send_all(
        transport(tls_servers, resolver),
        [Envelope(SENDER, "a@order.test", message("o"), tls="opportunistic")],
    )
    assert attempt.outcome.status == "sent"
    assert len(tls_servers.servers[expected].state.received) == 1


def test_failover_to_second_mx_and_second_address(tls_servers: TlsMatrix) -> None:
    # failover.test: MX 10 is a closed port, MX 20 the good server; and a host whose
    # first address refuses connections.
    good = Address("127.0.0.1", tls_servers.servers["good"].port)
    closed = Address("127.0.0.1", tls_servers.closed_port)
    resolver = _with(
        tls_servers,
        mx={"twoaddr.test": [(10, "mx.good.test")]},
        hosts={"mx.good.test": [closed, good]},
    )
    attempts = send_all(
        transport(tls_servers, resolver),
        [
            Envelope(SENDER, "a@failover.test", message("f1"), tls="required"),
            Envelope(SENDER, "b@twoaddr.test", message("f2"), tls="required"),
        ],
    )
    assert [(a.outcome.status, a.method) for a in attempts] == [("sent", "tls_direct")] * 2


def test_every_mx_down_is_deferred(tls_servers: TlsMatrix) -> None:
    resolver = _with(tls_servers, mx={"down.test": [(10, "mx1.failover.test")]})
    [attempt] = send_all(
        transport(tls_servers, resolver), [Envelope(SENDER, "a@down.test", message("d"))]
    )
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "connect_failed")


def test_no_mx_null_mx_and_dns_failure(tls_servers: TlsMatrix) -> None:
    attempts = send_all(
        transport(tls_servers),
        [
            Envelope(SENDER, "a@nomx.test", message("n"), tls="required"),
            Envelope(SENDER, "a@nullmx.test", message("n")),
            Envelope(SENDER, "a@dnsfail.test", message("n")),
            Envelope(SENDER, "a@nowhere.test", message("n")),
        ],
    )
    nomx, null, dnsfail, nowhere = attempts
    # No MX: the domain's own address, verified against the domain's name.
    assert (nomx.outcome.status, nomx.method) == ("sent", "tls_direct")
    assert (null.outcome.status, null.outcome.reason) == ("failed", "null_mx")
    assert (dnsfail.outcome.status, dnsfail.outcome.reason) == ("deferred", "dns_failed")
    assert (nowhere.outcome.status, nowhere.outcome.reason) == ("deferred", "no_mail_host")


def test_mta_sts(tls_servers: TlsMatrix) -> None:
    sts = FixedSts(
        {
            # sts.test's MX is mx.sts.test, which this policy does not list.
            "sts.test": StsPolicy("enforce", ("mx.elsewhere.test",), 86400),
            # Listed, enforce: even an opportunistic message needs verified TLS.
            "selfsigned.test": StsPolicy("enforce", ("*.selfsigned.test",), 86400),
            "good.test": StsPolicy("enforce", ("*.good.test",), 86400),
            # Testing: delivered as the message says, noted.
            "nostarttls.test": StsPolicy("testing", ("mx.other.test",), 86400),
        }
    )
    attempts = send_all(
        transport(tls_servers, sts=sts),
        [
            Envelope(SENDER, "a@sts.test", message("s1"), tls="opportunistic"),
            Envelope(SENDER, "a@selfsigned.test", message("s2"), tls="opportunistic"),
            Envelope(SENDER, "a@good.test", message("s3"), tls="opportunistic"),
            Envelope(SENDER, "a@nostarttls.test", message("s4"), tls="opportunistic"),
        ],
    )
    skipped, selfsigned, good, testing = attempts
    assert skipped.outcome.reason == "mx_tls_failed"
    assert "MTA-STS" in skipped.reply
    assert tls_servers.servers["good"].state.sessions == 1  # only the good.test message
    assert selfsigned.outcome.reason == "mx_tls_failed"
    assert tls_servers.servers["selfsigned"].state.mail_commands == []
    assert (good.outcome.status, good.method) == ("sent", "tls_direct")
    assert (testing.outcome.status, testing.method) == ("sent", "plain_direct")
    assert testing.notes == ("sts_testing", "sts_testing_mismatch")


def test_operator_override_requires_tls(tls_servers: TlsMatrix) -> None:
    t = transport(tls_servers, tls_overrides={"nostarttls.test": "required"})
    [attempt] = send_all(
        t, [Envelope(SENDER, "a@nostarttls.test", message("o"), tls="opportunistic")]
    )
    assert attempt.outcome.reason == "mx_tls_unavailable"
    assert tls_servers.servers["nostarttls"].state.mail_commands == []


class CountingResolver(StaticResolver):
    def __init__(self, base: StaticResolver) -> None:
        super().__init__(base.mx_records, base.txt_records, base.hosts, base.failing)
        self.mx_lookups = 0

    async def mx(self, domain: str) -> list[MxHost]:
        self.mx_lookups += 1
        return await super().mx(domain)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_mx_cache_expires(tls_servers: TlsMatrix) -> None:
    resolver = CountingResolver(tls_servers.resolver)
    clock = Clock(datetime(2026, 11, 24, 12, tzinfo=UTC))
    t = transport(tls_servers, resolver, clock=clock, mx_cache_seconds=300)

    async def go() -> None:
        try:
            await t.send(Envelope(SENDER, "a@good.test", message("c1")))
            await t.send(Envelope(SENDER, "b@good.test", message("c2")))
            assert resolver.mx_lookups == 1
            clock.at += timedelta(seconds=301)
            await t.send(Envelope(SENDER, "c@good.test", message("c3")))
            assert resolver.mx_lookups == 2
        finally:
            await t.close()

    asyncio.run(go())


def test_domain_rate_and_warmup_cap(tls_servers: TlsMatrix) -> None:
    clock = Clock(datetime(2026, 11, 24, 12, tzinfo=UTC))
    throttle = ThrottleConfig(
        default=DomainLimits(max_connections=2, per_minute=60, burst=2),
        domains={},
        max_wait=0.0,
        warmup_schedule=(3, 10),
        warmup_start=date(2026, 11, 24),
    )
    ledger = MemoryLedger()
    t = transport(tls_servers, clock=clock, throttle=throttle, ledger=ledger)

    async def go() -> list[Attempt]:
        out = []
        try:
            for i in range(3):  # burst of 2, then the domain's rate
                out.append(await t.send(Envelope(SENDER, f"r{i}@good.test", message("t"))))
            clock.at += timedelta(seconds=5)  # five turns earned back (1 a second)
            out.append(await t.send(Envelope(SENDER, "w@good.test", message("t"))))
            out.append(await t.send(Envelope(SENDER, "x@good.test", message("t"))))
            clock.at += timedelta(days=1)  # a new day, a larger cap
            out.append(await t.send(Envelope(SENDER, "y@good.test", message("t"))))
        finally:
            await t.close()
        return out

    a0, a1, throttled, a3, capped, next_day = asyncio.run(go())
    assert [a.outcome.status for a in (a0, a1, a3, next_day)] == ["sent"] * 4
    assert throttled.outcome.reason == "domain_throttled"
    assert throttled.outcome.retry_at == datetime(2026, 11, 24, 12, 0, 1, tzinfo=UTC)
    assert capped.outcome.reason == "warmup_cap"
    assert capped.outcome.retry_at == datetime(2026, 11, 25, tzinfo=UTC)
    assert len(tls_servers.servers["good"].state.received) == 4
    assert ledger.used[("default", date(2026, 11, 24))] == 3
