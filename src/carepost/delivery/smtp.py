"""SMTP to a configured relay: TLS required, a pool of reused, pipelining connections.

TLS is never optional here. With STARTTLS the client refuses to go on when the relay does
not offer it, and with either mode a certificate that does not verify, or TLS below 1.2,
ends the connection before MAIL FROM: no byte of a message is ever sent in plaintext.
Such a message comes back `deferred` with reason `tls_unavailable` or `tls_failed`, which
the worker records as an alert.

A connection is reused for up to `max_messages_per_connection` messages (handshakes cost
more than messages), with TCP_NODELAY so small commands are not held back by Nagle's
algorithm, and MAIL, RCPT and DATA pipelined (RFC 2920) when the relay offers it. Any
doubt about a connection's state (a timeout, a dropped line, a 421) closes it; the next
message opens a fresh one. The protocol itself is in `smtp_session` (I/O) and `smtp_wire`
(pure); why carepost speaks it itself is said there. `SessionPool`, `transact` and
`open_failure` are shared with direct delivery (`delivery.direct`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from carepost.delivery.outcome import (
    Outcome,
    classify_error,
    classify_reply,
    invalid_address,
    session_refused,
    tls_unavailable,
)
from carepost.delivery.smtp_session import (
    SessionLost,
    SessionRefused,
    SmtpSession,
    TlsUnavailable,
)

MAX_REPLY = 512

TlsPolicy = Literal["required", "opportunistic"]


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int = 587
    tls: Literal["starttls", "implicit"] = "starttls"
    timeout: float = 30.0
    pool_size: int = 8
    max_messages_per_connection: int = 100
    local_hostname: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # None: the system's trust store. Tests and private relays pass their own CA here;
    # verification itself cannot be turned off through this class.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        ctx = self.tls_context or ssl.create_default_context()
        if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
            raise ValueError("the relay's TLS context must verify certificates and host names")
        if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpt_to: str
    data: bytes
    # The producer guarantees CRLF line ends (content.mime builds every message so):
    # the transport then skips scanning 20 KB for stray CR or LF before dot-stuffing.
    crlf_clean: bool = False
    # "required": verified certificate, TLS >= 1.2, or nothing is sent (anything with
    # PHI). "opportunistic": TLS when offered, else plaintext; only for classes declared
    # PHI-free. The relay transport always requires TLS whatever this says.
    tls: TlsPolicy = "required"


@dataclass(frozen=True)
class Attempt:
    """What one try produced: the outcome, the relay's last reply line (recipient
    address removed: relays echo it, and it is PHI), and the TLS it went over."""

    outcome: Outcome
    reply: str = ""
    tls_version: str | None = None
    tls_cipher: str | None = None
    # What the evidence records as the delivery method when it differs from the
    # transport's own (`Transport.method`), e.g. direct delivery's "tls_direct".
    method: str | None = None
    # Codes worth keeping with the evidence (delivery.tls_policy.NOTES), e.g. that the
    # recipient domain's MTA-STS policy is in testing mode. Never names or addresses.
    notes: tuple[str, ...] = ()


def redact_reply(text: str, addresses: Sequence[str]) -> str:
    line = " ".join(text.split())[:MAX_REPLY]
    for address in addresses:
        if not address:
            continue
        # Case-insensitive without compiling a pattern per reply (hot path).
        lower, needle = line.lower(), address.lower()
        at = lower.find(needle)
        while at >= 0:
            line = line[:at] + "<recipient>" + line[at + len(address) :]
            lower = line.lower()
            at = lower.find(needle, at + len("<recipient>"))
    return line


class SessionPool:
    """Idle sessions to one destination, kept for the next message: shared by the relay
    transport and direct delivery (one pool per MX host address and TLS level there).
    The caller owns concurrency (the relay's semaphore, direct delivery's per-domain
    limits); the pool decides whether a session can carry the next message and whether it
    goes back on the list afterwards."""

    def __init__(self, max_messages_per_connection: int) -> None:
        self.max_messages = max_messages_per_connection
        self._idle: list[SmtpSession] = []

    def __len__(self) -> int:
        return len(self._idle)

    async def send_reused(self, envelope: Envelope) -> Attempt | None:
        """The message over an idle session, or None when no idle session could take it
        (the caller opens a new one)."""
        while self._idle:
            session = self._idle.pop()
            if not session.usable:
                session.abort()
                continue
            attempt, reusable = await transact(session, envelope)
            # A server closes idle connections whenever it likes; a pooled connection
            # found dead before MAIL was answered is no news about the message.
            if attempt.outcome.reason != "lost_before_data" or attempt.outcome.phase != "mail":
                return await self.release(session, attempt, reusable)
        return None

    async def send_on(self, session: SmtpSession, envelope: Envelope) -> Attempt:
        """The message over a session just opened; the session is kept when it can be."""
        attempt, reusable = await transact(session, envelope)
        return await self.release(session, attempt, reusable)

    async def release(self, session: SmtpSession, attempt: Attempt, reusable: bool) -> Attempt:
        if reusable and session.sent < self.max_messages:
            self._idle.append(session)
        elif reusable:
            await session.quit()
        else:
            session.abort()
        return attempt

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(session.quit() for session in idle))


async def transact(session: SmtpSession, env: Envelope) -> tuple[Attempt, bool]:
    """One message on an open session: the attempt, and whether the session is reusable."""
    method = session.method
    try:
        result = await session.transaction(
            env.mail_from, env.rcpt_to, env.data, crlf_clean=env.crlf_clean
        )
    except ValueError:
        attempt = Attempt(invalid_address(), "", session.tls_version, session.tls_cipher, method)
        return attempt, True
    if result.reply is None:
        assert result.error is not None
        outcome = classify_error(result.phase, result.error)
        return Attempt(outcome, "", session.tls_version, session.tls_cipher, method), False
    reply = result.reply
    phase = "data" if result.phase == "after_data" else result.phase
    outcome = classify_reply(phase, reply.code, reply.text)
    text = redact_reply(str(reply), (env.rcpt_to, env.mail_from))
    attempt = Attempt(outcome, text, session.tls_version, session.tls_cipher, method)
    return attempt, result.reusable


def open_failure(exc: BaseException) -> Outcome | None:
    """What an exception from `SmtpSession.open` means, for the failures every transport
    reads alike (no connection, a timeout, a TLS failure); None for the rest
    (TlsUnavailable, SessionRefused), which each transport names itself."""
    if isinstance(exc, TimeoutError):
        return classify_error("connect", "timeout")
    if isinstance(exc, SessionLost):
        return classify_error("tls" if is_tls_failure(exc) else "connect", "lost")
    if isinstance(exc, OSError):  # ssl.SSLError is an OSError: check the chain first
        if is_tls_failure(exc):
            return classify_error("tls", "tls")
        return classify_error("connect", "connect")
    return None


class SmtpTransport:
    name = "smtp"
    method = "tls_relay"

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._ctx = config.context()
        self._pool = SessionPool(config.max_messages_per_connection)
        self._slots = asyncio.Semaphore(config.pool_size)

    async def _open(self) -> SmtpSession | Outcome:
        c = self.config
        try:
            session = await SmtpSession.open(
                c.host,
                c.port,
                tls=c.tls,
                context=self._ctx,
                timeout=c.timeout,
                local_hostname=c.local_hostname,
                username=c.username,
                password=c.password,
            )
        except TlsUnavailable:
            return tls_unavailable()
        except SessionRefused as exc:
            return session_refused(exc.step, exc.reply.code, exc.reply.text)
        except (TimeoutError, OSError, SessionLost) as exc:
            failure = open_failure(exc)
            assert failure is not None
            return failure
        if session.tls_version is None:  # cannot happen after STARTTLS or implicit TLS
            session.abort()
            return tls_unavailable()
        return session

    async def send(self, envelope: Envelope) -> Attempt:
        async with self._slots:
            attempt = await self._pool.send_reused(envelope)
            if attempt is not None:
                return attempt
            opened = await self._open()
            if isinstance(opened, Outcome):
                return Attempt(opened)
            return await self._pool.send_on(opened, envelope)

    async def close(self) -> None:
        await self._pool.close()


def is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
