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
from collections import deque
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
    Outgoing,
    SessionLost,
    SessionRefused,
    SmtpSession,
    TlsUnavailable,
    TransactionResult,
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
    # send_batch writes each body with the next message's commands when the relay
    # pipelines; False waits for each body's answer first (a relay that announces
    # PIPELINING but drops what follows a body's final dot).
    pipeline_messages: bool = True
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

    def take_idle(self) -> SmtpSession | None:
        """An idle session still fit to carry a message, or None."""
        while self._idle:
            session = self._idle.pop()
            if session.usable:
                return session
            session.abort()
        return None

    async def keep(self, session: SmtpSession) -> None:
        """A session a stream is done with: kept for the next message when it can be."""
        if session.usable and session.sent < self.max_messages:
            self._idle.append(session)
        elif session.usable:
            await session.quit()
        else:
            session.abort()

    async def send_reused(self, envelope: Envelope) -> Attempt | None:
        """The message over an idle session, or None when no idle session could take it
        (the caller opens a new one)."""
        while (session := self.take_idle()) is not None:
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
    try:
        result = await session.transaction(
            env.mail_from, env.rcpt_to, env.data, crlf_clean=env.crlf_clean
        )
    except ValueError:
        return attempt_of(session, env.mail_from, env.rcpt_to, None), True
    return attempt_of(session, env.mail_from, env.rcpt_to, result), result.reusable


def attempt_of(
    session: SmtpSession, mail_from: str, rcpt_to: str, result: TransactionResult | None
) -> Attempt:
    """What a transaction's result means for the message (None: an address that cannot
    be put in a command), with the relay's reply redacted and the session's TLS."""
    method = session.method
    if result is None:
        return Attempt(invalid_address(), "", session.tls_version, session.tls_cipher, method)
    if result.reply is None:
        assert result.error is not None
        outcome = classify_error(result.phase, result.error)
        return Attempt(outcome, "", session.tls_version, session.tls_cipher, method)
    reply = result.reply
    phase = "data" if result.phase == "after_data" else result.phase
    outcome = classify_reply(phase, reply.code, reply.text)
    text = redact_reply(str(reply), (rcpt_to, mail_from))
    return Attempt(outcome, text, session.tls_version, session.tls_cipher, method)


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

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[Attempt]:
        """Many messages at once, over up to `pool_size` sessions that each stream
        (`SmtpSession.stream`): one round trip a message where the relay pipelines.
        Attempts in the order of `envelopes`. A message a broken session hands back goes
        out on the next session; one that meets a relay it cannot reach gets that
        attempt, as `send` would give it."""
        attempts: list[Attempt | None] = [None] * len(envelopes)
        queue = deque(
            Outgoing(e.mail_from, e.rcpt_to, e.data, e.crlf_clean, i)
            for i, e in enumerate(envelopes)
        )

        def take() -> Outgoing | None:
            return queue.popleft() if queue else None

        async def lane() -> None:
            async with self._slots:
                while queue:
                    session = self._pool.take_idle()
                    if session is None:
                        opened = await self._open()
                        if isinstance(opened, Outcome):
                            item = take()
                            if item is not None:
                                attempts[item.tag] = Attempt(opened)
                            continue
                        session = opened

                    def done(
                        item: Outgoing,
                        result: TransactionResult | None,
                        session: SmtpSession = session,
                    ) -> None:
                        attempts[item.tag] = attempt_of(
                            session, item.mail_from, item.rcpt_to, result
                        )

                    back = await session.stream(
                        take,
                        done,
                        limit=self.config.max_messages_per_connection,
                        across=self.config.pipeline_messages,
                    )
                    queue.extendleft(reversed(back))
                    await self._pool.keep(session)

        await asyncio.gather(*(lane() for _ in range(min(self.config.pool_size, len(queue)))))
        assert all(a is not None for a in attempts)
        return [a for a in attempts if a is not None]

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
