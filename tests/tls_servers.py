"""Loopback SMTP servers (aiosmtpd), one per TLS behaviour of a recipient's mail server,
and a `StaticResolver` that makes test domains' MX hosts point at them.

    behaviour     domain            MX host               what it does
    good          good.test         mx.good.test          STARTTLS, certificate from the test CA
    selfsigned    selfsigned.test   mx.selfsigned.test    STARTTLS, self-signed certificate
    expired       expired.test      mx.expired.test       STARTTLS, expired certificate (test CA)
    wrongname     wrongname.test    mx.wrongname.test     STARTTLS, certificate for another name
    nostarttls    nostarttls.test   mx.nostarttls.test    no STARTTLS offered, plaintext only
    starttls454   starttls454.test  mx.starttls454.test   STARTTLS offered, answered 454
    brokentls     brokentls.test    mx.brokentls.test     STARTTLS offered, 220, then not TLS
    tls10         tls10.test        mx.tls10.test         STARTTLS, TLS 1.0 only

Every server keeps every byte it received before TLS started (`TlsServer.plaintext`):
the proof that a message needing TLS never reached a server in the clear. Servers that
accept plaintext take mail without STARTTLS (as real MX hosts do). Recipient local parts
pick faults as in `smtp_sink` (rcpt-550@..., data-451@...).

More names, for routing tests: `good` also answers for nomx.test (no MX: the domain's own
address), mx2.failover.test (failover.test's second MX; its first, mx1.failover.test, is
a closed port) and mx.sts.test (sts.test). nullmx.test has a null MX; dnsfail.test's
lookups fail.

Use the `tls_servers` fixture (registered in tests/conftest.py): it yields a `TlsMatrix`
with the servers, the CA, a verifying client context and a ready resolver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from carepost.delivery.resolver import Address, StaticResolver
from smtp_sink import FaultHandler, SinkState, free_port

BEHAVIOURS = (
    "good",
    "selfsigned",
    "expired",
    "wrongname",
    "nostarttls",
    "starttls454",
    "brokentls",
    "tls10",
)
GOOD_ALIASES = ("nomx.test", "mx2.failover.test", "mx.sts.test")


@dataclass
class TlsServer:
    behaviour: str
    domain: str
    mx: str
    port: int
    state: SinkState
    controller: Controller
    _plaintext: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def plaintext(self) -> bytes:
        """Every byte any client sent this server before TLS started (or ever, when no
        TLS started)."""
        with self._lock:
            return bytes(self._plaintext)

    def record(self, data: bytes) -> None:
        with self._lock:
            self._plaintext += data


class _RecordingSmtp(SMTP):
    """aiosmtpd's server, keeping every byte that arrives before the STARTTLS handshake
    (afterwards the TLS layer hands this protocol decrypted data and `_tls_protocol` is
    set)."""

    def __init__(self, *args: Any, server: TlsServer, behaviour: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._server = server
        self._behaviour = behaviour

    def data_received(self, data: bytes) -> None:
        if self._tls_protocol is None:
            self._server.record(data)
        super().data_received(data)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._behaviour == "starttls454":
            await self.push("454 4.7.0 TLS not available due to temporary reason")
            return
        if self._behaviour == "brokentls":
            await self.push("220 Ready to start TLS")
            assert self.transport is not None
            # Not a TLS record: the client's handshake fails on it.
            self.transport.write(b"this is not a TLS server hello\r\n")
            await asyncio.sleep(0.05)
            self.transport.close()
            return
        await super().smtp_STARTTLS(arg)


class _Controller(Controller):
    def __init__(self, handler: Any, *, server: TlsServer, behaviour: str, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._tls_server = server
        self._behaviour = behaviour

    def factory(self) -> SMTP:
        return _RecordingSmtp(
            self.handler, server=self._tls_server, behaviour=self._behaviour, **self.SMTP_kwargs
        )


def _self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context(ca: trustme.CA, behaviour: str, mx: str, tmp: Any) -> ssl.SSLContext | None:
    if behaviour in ("nostarttls",):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if behaviour == "selfsigned":
        cert_pem, key_pem = _self_signed(mx)
        cert_file, key_file = tmp / f"{behaviour}.crt", tmp / f"{behaviour}.key"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
        return ctx
    if behaviour == "expired":
        now = dt.datetime.now(dt.UTC)
        leaf = ca.issue_cert(
            mx, not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1)
        )
    elif behaviour == "wrongname":
        leaf = ca.issue_cert("mail.somewhere-else.test")
    elif behaviour == "good":
        leaf = ca.issue_cert(mx, *GOOD_ALIASES)
    else:
        leaf = ca.issue_cert(mx)
    leaf.configure_cert(ctx)
    if behaviour == "tls10":
        with warnings.catch_warnings():  # deprecated: that is the point of this server
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@dataclass
class TlsMatrix:
    ca: trustme.CA
    servers: dict[str, TlsServer]
    resolver: StaticResolver
    closed_port: int  # mx1.failover.test: nothing listens here

    def client_context(self) -> ssl.SSLContext:
        """Verifying, trusting the test CA only (the system store knows none of these)."""
        ctx = ssl.create_default_context(cafile=None, capath=None, cadata=None)
        ctx.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode())
        return ctx

    def plaintext(self) -> bytes:
        return b"".join(s.plaintext for s in self.servers.values())

    def stop(self) -> None:
        for server in self.servers.values():
            server.controller.stop()


def start_tls_servers(ca: trustme.CA, tmp: Any) -> TlsMatrix:
    servers: dict[str, TlsServer] = {}
    try:
        for behaviour in BEHAVIOURS:
            domain, mx = f"{behaviour}.test", f"mx.{behaviour}.test"
            state = SinkState()
            port = free_port()
            ctx = _server_context(ca, behaviour, mx, tmp)
            server = TlsServer(behaviour, domain, mx, port, state, None)  # type: ignore[arg-type]
            kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
            if ctx is not None:
                kwargs["tls_context"] = ctx
            controller = _Controller(
                FaultHandler(state),
                server=server,
                behaviour=behaviour,
                server_hostname=mx,
                **kwargs,
            )
            server.controller = controller
            controller.start()
            servers[behaviour] = server
    except BaseException:
        for server in servers.values():
            server.controller.stop()
        raise
    closed_port = free_port()
    good = Address("127.0.0.1", servers["good"].port)
    mx_records: dict[str, list[tuple[int, str]]] = {
        s.domain: [(10, s.mx)] for s in servers.values()
    }
    mx_records["failover.test"] = [(20, "mx2.failover.test"), (10, "mx1.failover.test")]
    mx_records["sts.test"] = [(10, "mx.sts.test")]
    mx_records["nullmx.test"] = [(0, "")]
    hosts: dict[str, list[Address]] = {
        s.mx: [Address("127.0.0.1", s.port)] for s in servers.values()
    }
    hosts.update({name: [good] for name in GOOD_ALIASES})
    hosts["mx1.failover.test"] = [Address("127.0.0.1", closed_port)]
    resolver = StaticResolver(
        mx_records=mx_records, hosts=hosts, failing=frozenset({"dnsfail.test"})
    )
    return TlsMatrix(ca, servers, resolver, closed_port)


@pytest.fixture
def tls_servers(sink_ca: trustme.CA, tmp_path: Any) -> Iterator[TlsMatrix]:
    matrix = start_tls_servers(sink_ca, tmp_path)
    yield matrix
    matrix.stop()
