"""A real SMTP server for tests: aiosmtpd on loopback with STARTTLS (trustme certificates),
implicit TLS, no TLS, or an untrusted certificate, and faults chosen per recipient.

The recipient's local part picks what the server does, so one campaign can exercise the
whole fault matrix and the outcome of each message is known in advance:

    ok@...              250 at DATA (the default for any other local part)
    (anything after a dot in the local part is ignored: data-451.17@... is data-451)
    rcpt-550@...        550 5.1.1 at RCPT          data-451@...  451 4.3.0 at DATA
    mail-421@...        421 at MAIL FROM            data-552@...  552 at DATA
    drop@...            closes the connection after the body, before replying
    hang@...            never replies to the body (the client must time out)
    hang-ehlo@...       (any) the server stalls EHLO for every client while `stall_ehlo`

Registered for every test by `pytest_plugins` in tests/conftest.py: use `smtp_sink_factory`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

TlsMode = Literal["starttls", "implicit", "none", "untrusted"]

# The reply timeout for workers that talk to this sink and test no timeout. The sink
# answers from a thread of the test's own process, so a worker's busy main thread and a
# loaded CI machine can delay a reply past one second (seen: a journey message deferred
# with 1.0). Tests of the timeout itself set their own, short one.
RELAY_TIMEOUT = 10.0


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool


@dataclass
class SinkState:
    received: list[Received] = field(default_factory=list)
    # Every MAIL FROM the server saw, with whether the session was encrypted then: the
    # proof that nothing left the client in plaintext.
    mail_commands: list[bool] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    stall_ehlo: float = 0.0
    # Announce PIPELINING (RFC 2920) as Postfix does; aiosmtpd reads commands one line at a
    # time either way, so a client may pipeline only when it is announced.
    pipelining: bool = True
    # Seconds the sink takes to answer each message's end of DATA, like a busy relay:
    # the crash test uses it so that a campaign outlives all of its kills.
    data_delay: float = 0.0
    ehlo_names: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sessions(self) -> int:
        """Connections that got as far as EHLO."""
        return len(self.peers)

    def message_ids(self) -> list[str]:
        ids = []
        for r in self.received:
            for line in r.data.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    ids.append(line.split(b":", 1)[1].strip().decode())
                    break
                if not line:
                    break
        return ids


def _encrypted(server: SMTP, session: Session) -> bool:
    """STARTTLS sets session.ssl; under implicit TLS only the transport knows."""
    transport = server.transport
    return session.ssl is not None or (
        transport is not None and transport.get_extra_info("ssl_object") is not None
    )


def _local(address: str) -> str:
    """The fault a recipient asks for: its local part up to the first dot, so that
    `data-451.17@sink.test` is a distinct address with the data-451 fault."""
    return address.split("@", 1)[0].lower().split(".", 1)[0]


class FaultHandler:
    def __init__(self, state: SinkState) -> None:
        self.state = state

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        if self.state.stall_ehlo:
            await asyncio.sleep(self.state.stall_ehlo)
        session.host_name = hostname
        if self.state.pipelining and isinstance(responses, list) and responses:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        with self.state.lock:
            self.state.ehlo_names.append(hostname)
            # EHLO comes twice on a STARTTLS connection; the client's port names it once.
            self.state.peers.add(tuple(session.peer))  # type: ignore[arg-type]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.state.lock:
            self.state.mail_commands.append(_encrypted(server, session))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        local = _local(address)
        if local == "rcpt-550":
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        if local == "rcpt-450":
            return "450 4.2.0 <" + address + ">: Recipient address rejected: Greylisted"
        if local == "mail-421":
            return "421 4.7.0 Too many connections, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        local = _local(envelope.rcpt_tos[0]) if envelope.rcpt_tos else ""
        if local.startswith("data-"):
            code = local.removeprefix("data-")
            text = {
                "421": "421 4.3.2 Service shutting down",
                "450": "450 4.2.1 Mailbox busy",
                "451": "451 4.3.0 Local error in processing",
                "452": "452 4.3.1 Insufficient system storage",
                "550": "550 5.7.1 Message rejected",
                "552": "552 5.2.2 Mailbox full",
                "554": "554 5.7.1 Transaction failed: spam content",
            }.get(code, "451 4.3.0 try again")
            return text
        if local == "drop":
            # The body arrived, then the line went dead: the client cannot know whether
            # the message was accepted. It is stored, as a real server might have.
            self._store(server, session, envelope)
            assert server.transport is not None
            server.transport.abort()
            return "250 never seen"
        if local == "hang":
            self._store(server, session, envelope)
            await asyncio.sleep(3600)
        self._store(server, session, envelope)
        if self.state.data_delay:
            await asyncio.sleep(self.state.data_delay)
        return "250 2.0.0 Ok: queued as CP" + str(len(self.state.received))

    def _store(self, server: SMTP, session: Session, envelope: Envelope) -> None:
        content = envelope.original_content or b""
        with self.state.lock:
            self.state.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(content),
                    _encrypted(server, session),
                )
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpSink:
    host: str
    port: int
    mode: TlsMode
    state: SinkState
    client_context: ssl.SSLContext  # trusts the sink's CA (except in "untrusted" mode)
    controller: Controller

    def stop(self) -> None:
        self.controller.stop()


class _ImplicitTlsController(Controller):
    def _trigger_server(self) -> None:  # the readiness probe must speak TLS too
        assert self.ssl_context is not None
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((self.hostname, self.port), 1.0) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            tls.recv(1024)


def start_sink(
    ca: trustme.CA,
    mode: TlsMode = "starttls",
    cert_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> SmtpSink:
    """A running sink whose certificate `ca` issued (another CA in "untrusted" mode)."""
    state = SinkState()
    issuer = trustme.CA() if mode == "untrusted" else ca
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issuer.issue_cert(*cert_names).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.configure_trust(client_ctx)
    port = free_port()
    handler = FaultHandler(state)
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
    controller: Controller
    if mode == "implicit":
        controller = _ImplicitTlsController(
            handler, ssl_context=server_ctx, server_hostname="sink.test", **kwargs
        )
    elif mode == "none":
        controller = Controller(handler, server_hostname="sink.test", **kwargs)
    else:
        controller = Controller(
            handler,
            tls_context=server_ctx,
            require_starttls=True,
            server_hostname="sink.test",
            **kwargs,
        )
    controller.start()
    return SmtpSink("127.0.0.1", port, mode, state, client_ctx, controller)


@pytest.fixture(scope="session")
def sink_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp_sink_factory(sink_ca: trustme.CA) -> Iterator[Any]:
    started: list[SmtpSink] = []

    def start(
        mode: TlsMode = "starttls", cert_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> SmtpSink:
        sink = start_sink(sink_ca, mode, cert_names)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()
