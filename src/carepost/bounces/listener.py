"""The inbound SMTP listener for bounces and complaints (aiosmtpd), like the capture server.

It accepts mail only for the bounce domains (the return paths' domains, or the configured
list), offers STARTTLS (not required: remote MTAs returning a bounce may not speak TLS, and
refusing them would lose the bounce while the original already left under TLS), limits the
size, and hands each message to `inbound.receive` in one transaction on a worker thread.

Replies: 250 once the message is recorded, counted as unlinkable, or known already; 451
when the database failed, so the sending MTA retries (receive is idempotent). Nothing of a
message reaches a log or a reply: only the outcome and an exception's type.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from carepost.audit.actor import Actor
from carepost.bounces.inbound import Received, receive
from carepost.bounces.rates import RatePolicy
from carepost.campaigns.models import SenderProfile
from carepost.clock import Clock, system_clock
from carepost.crypto.keyring import KeyRing
from carepost.db import transaction

log = logging.getLogger(__name__)
SERVER_NAME = "localhost"


@dataclass
class ListenerStats:
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class BounceDomains:
    """The domains mail is accepted for. Without a fixed list, the sender profiles' return
    path domains, read again (at most every `ttl` seconds) when an unknown one arrives, so
    a sender added while the listener runs is served."""

    def __init__(self, engine: Engine, fixed: Iterable[str] = (), ttl: float = 30.0) -> None:
        self.engine = engine
        self.fixed = {d.strip().lower() for d in fixed if d.strip()}
        self.ttl = ttl
        self._known: set[str] = set()
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _load(self) -> None:
        with transaction(self.engine) as session:
            paths = session.execute(select(SenderProfile.return_path)).scalars()
            self._known = {p.rsplit("@", 1)[-1].lower() for p in paths if "@" in p}
        self._loaded = time.monotonic()

    def accepts(self, domain: str) -> bool:
        domain = domain.lower()
        if self.fixed:
            return domain in self.fixed
        with self._lock:
            if domain not in self._known and time.monotonic() - self._loaded > self.ttl:
                self._load()
            return domain in self._known


class _Handler:
    def __init__(self, listener: BounceListener) -> None:
        self.listener = listener

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rsplit("@", 1)[-1] if "@" in address else ""
        loop = asyncio.get_running_loop()
        accepted = await loop.run_in_executor(None, self.listener.domains.accepts, domain)
        if not accepted:
            return "550 5.1.2 not a bounce domain of this server"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = bytes(envelope.original_content or b"")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                None, self.listener.handle, data, list(envelope.rcpt_tos)
            )
        except Exception as exc:  # the database, not the message: let the sender retry
            log.warning("bounce listener: could not record a message (%s)", type(exc).__name__)
            self.listener.stats.add("error")
            return "451 4.3.0 temporary failure, try again later"
        return f"250 2.0.0 {result.status}"


class BounceListener:
    def __init__(
        self,
        engine: Engine,
        ring: KeyRing,
        *,
        host: str,
        port: int,
        tls_context: ssl.SSLContext | None,
        domains: BounceDomains,
        max_bytes: int,
        policy: RatePolicy | None = None,
        clock: Clock = system_clock,
        on_received: Callable[[Received], None] | None = None,
    ) -> None:
        self.engine = engine
        self.ring = ring
        self.domains = domains
        self.policy = policy or RatePolicy()
        self.clock = clock
        self.stats = ListenerStats()
        self.on_received = on_received
        self.host, self.port = host, port
        self.actor = Actor("bounce-listener", "system", socket.gethostname()[:128])
        params: dict[str, Any] = {"data_size_limit": max_bytes}
        if tls_context is not None:
            params.update(tls_context=tls_context, require_starttls=False)
        self.controller = Controller(
            _Handler(self),
            hostname=host,
            port=port,
            server_hostname=SERVER_NAME,
            ready_timeout=10.0,
            **params,
        )

    def handle(self, data: bytes, rcpt_tos: list[str]) -> Received:
        """One message, one transaction. A concurrent copy of the same report that won
        the race on the unique key makes this one a duplicate on the second try."""
        for attempt in (1, 2):
            try:
                with transaction(self.engine) as session:
                    result = receive(
                        session,
                        self.ring,
                        data,
                        rcpt_tos=rcpt_tos,
                        actor=self.actor,
                        clock=self.clock,
                        policy=self.policy,
                    )
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        key = result.status if result.status != "unlinked" else f"unlinked:{result.reason}"
        self.stats.add(key)
        if self.on_received is not None:
            self.on_received(result)
        return result

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def listener_for(
    ws: Any, *, port: int | None = None, on_received: Callable[[Received], None] | None = None
) -> BounceListener:
    """The listener as the workspace's settings describe it. Without a certificate of its
    own it uses the workspace CA's loopback certificate, as `carepost serve` does."""
    from carepost.delivery.capture import ensure_tls
    from carepost.delivery.factory import capture_folder

    s = ws.settings
    if bool(s.bounce_tls_cert_file) != bool(s.bounce_tls_key_file):
        raise ValueError(
            "set both CAREPOST_BOUNCE_TLS_CERT_FILE and CAREPOST_BOUNCE_TLS_KEY_FILE, or neither"
        )
    if s.bounce_tls_cert_file:
        cert, key = Path(s.bounce_tls_cert_file), Path(s.bounce_tls_key_file)
    else:
        files = ensure_tls(capture_folder(ws))
        cert, key = files.cert, files.key
    return BounceListener(
        ws.engine,
        ws.keyring,
        host=s.bounce_host,
        port=port or s.bounce_port,
        tls_context=server_context(cert, key),
        domains=BounceDomains(ws.engine, s.bounce_domains.split(",")),
        max_bytes=s.bounce_max_bytes,
        policy=RatePolicy(min_delivered=s.bounce_complaint_min_delivered),
        on_received=on_received,
    )
