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
(pure); why carepost speaks it itself is said there.
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


class SmtpTransport:
    name = "smtp"
    method = "tls_relay"

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._ctx = config.context()
        self._idle: list[SmtpSession] = []
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
        except TimeoutError:
            return classify_error("connect", "timeout")
        except SessionLost as exc:
            return classify_error("tls" if _is_tls_failure(exc) else "connect", "lost")
        except OSError as exc:  # ssl.SSLError is an OSError: check the chain first
            if _is_tls_failure(exc):
                return classify_error("tls", "tls")
            return classify_error("connect", "connect")
        if session.tls_version is None:  # cannot happen after STARTTLS or implicit TLS
            session.abort()
            return tls_unavailable()
        return session

    async def send(self, envelope: Envelope) -> Attempt:
        async with self._slots:
            while self._idle:
                session = self._idle.pop()
                if not session.usable:
                    session.abort()
                    continue
                attempt, reusable = await self._transact(session, envelope)
                # A relay closes idle connections whenever it likes; a pooled connection
                # found dead before MAIL was answered is no news about the message.
                if attempt.outcome.reason != "lost_before_data" or attempt.outcome.phase != "mail":
                    return await self._release(session, attempt, reusable)
            opened = await self._open()
            if isinstance(opened, Outcome):
                return Attempt(opened)
            attempt, reusable = await self._transact(opened, envelope)
            return await self._release(opened, attempt, reusable)

    async def _release(self, session: SmtpSession, attempt: Attempt, reusable: bool) -> Attempt:
        if reusable and session.sent < self.config.max_messages_per_connection:
            self._idle.append(session)
        elif reusable:
            await session.quit()
        else:
            session.abort()
        return attempt

    async def _transact(self, session: SmtpSession, env: Envelope) -> tuple[Attempt, bool]:
        try:
            result = await session.transaction(
                env.mail_from, env.rcpt_to, env.data, crlf_clean=env.crlf_clean
            )
        except ValueError:
            return Attempt(invalid_address(), "", session.tls_version, session.tls_cipher), True
        if result.reply is None:
            assert result.error is not None
            outcome = classify_error(result.phase, result.error)
            return Attempt(outcome, "", session.tls_version, session.tls_cipher), False
        reply = result.reply
        phase = "data" if result.phase == "after_data" else result.phase
        outcome = classify_reply(phase, reply.code, reply.text)
        text = redact_reply(str(reply), (env.rcpt_to, env.mail_from))
        return Attempt(outcome, text, session.tls_version, session.tls_cipher), result.reusable

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(session.quit() for session in idle))


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
