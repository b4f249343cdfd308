"""SMTP to a configured relay with aiosmtplib: TLS required, a pool of reused connections.

TLS is never optional here. With STARTTLS the client refuses to go on when the relay does
not offer it, and with either mode a certificate that does not verify, or TLS below 1.2,
ends the connection before MAIL FROM: no byte of a message is ever sent in plaintext.
Such a message comes back `deferred` with reason `tls_unavailable` or `tls_failed`, which
the worker records as an alert.

A connection is reused for up to `max_messages_per_connection` messages (handshakes cost
more than messages), with TCP_NODELAY so small commands are not held back by Nagle's
algorithm. Any doubt about a connection's state (a timeout, a dropped line, a 421) closes
it; the next message opens a fresh one.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

from carepost.delivery.outcome import (
    Outcome,
    Phase,
    classify_error,
    classify_reply,
    tls_unavailable,
)

MAX_REPLY = 512


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


@dataclass(frozen=True)
class Attempt:
    """What one try produced: the outcome, the relay's last reply line (recipient
    address removed: relays echo it, and it is PHI), and the TLS it went over."""

    outcome: Outcome
    reply: str = ""
    tls_version: str | None = None
    tls_cipher: str | None = None


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


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.sent = 0
        ssl_object = client.get_transport_info("ssl_object")
        self.tls_version: str | None = ssl_object.version() if ssl_object else None
        cipher = ssl_object.cipher() if ssl_object else None
        self.tls_cipher: str | None = cipher[0] if cipher else None

    async def close(self) -> None:
        try:
            if self.client.is_connected:
                await self.client.quit()
        except (aiosmtplib.SMTPException, OSError):
            self.client.close()


class SmtpTransport:
    name = "smtp"
    method = "tls_relay"

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._ctx = config.context()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.pool_size)

    async def _open(self) -> _Connection | Outcome:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.tls == "implicit",
            start_tls=False,
            tls_context=self._ctx,
            validate_certs=True,
            timeout=c.timeout,
            local_hostname=c.local_hostname,
        )
        phase: Phase = "connect"
        try:
            await client.connect()
            sock = client.get_transport_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if c.tls == "starttls":
                phase = "tls"
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    client.close()
                    return tls_unavailable()
                await client.starttls()
            if c.username is not None:
                await client.login(c.username, c.password or "")
        except ssl.SSLError:
            client.close()
            return classify_error("tls", "tls")
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            return classify_reply(phase, exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            client.close()
            return classify_error(phase, "timeout")
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            client.close()
            if _is_tls_failure(exc):
                return classify_error("tls", "tls")
            return classify_error(phase, "connect" if phase == "connect" else "lost")
        except aiosmtplib.SMTPException:
            client.close()
            return classify_error(phase, "tls" if phase == "tls" else "lost")
        conn = _Connection(client)
        if conn.tls_version is None:  # cannot happen after STARTTLS or implicit TLS
            await conn.close()
            return tls_unavailable()
        return conn

    async def send(self, envelope: Envelope) -> Attempt:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is not None:
                attempt, reusable = await self._transact(conn, envelope)
                # A relay closes idle connections whenever it likes; a pooled connection
                # found dead before MAIL was answered is no news about the message.
                if attempt.outcome.reason != "lost_before_data" or attempt.outcome.phase != "mail":
                    return await self._release(conn, attempt, reusable)
            opened = await self._open()
            if isinstance(opened, Outcome):
                return Attempt(opened)
            attempt, reusable = await self._transact(opened, envelope)
            return await self._release(opened, attempt, reusable)

    async def _release(self, conn: _Connection, attempt: Attempt, reusable: bool) -> Attempt:
        if reusable and conn.sent < self.config.max_messages_per_connection:
            self._idle.append(conn)
        else:
            await conn.close()
        return attempt

    async def _transact(self, conn: _Connection, env: Envelope) -> tuple[Attempt, bool]:
        client = conn.client
        phase: Phase = "mail"
        redact = (env.rcpt_to, env.mail_from)
        try:
            await client.mail(env.mail_from)
            phase = "rcpt"
            await client.rcpt(env.rcpt_to)
            phase = "after_data"
            response = await client.data(env.data)
        except aiosmtplib.SMTPResponseException as exc:
            # A refused MAIL or RCPT leaves a transaction open; DATA's reply ends it.
            reply_phase: Phase = "data" if phase == "after_data" else phase
            outcome = classify_reply(reply_phase, exc.code, exc.message)
            reusable = exc.code != 421
            if reusable and reply_phase != "data":
                try:
                    await client.rset()
                except aiosmtplib.SMTPException:
                    reusable = False
            reply = redact_reply(f"{exc.code} {exc.message}", redact)
            return Attempt(outcome, reply, conn.tls_version, conn.tls_cipher), reusable
        except aiosmtplib.SMTPTimeoutError:
            client.close()
            return Attempt(classify_error(phase, "timeout"), "", conn.tls_version), False
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            return Attempt(classify_error(phase, "lost"), "", conn.tls_version), False
        conn.sent += 1
        outcome = classify_reply("data", response.code, response.message)
        reply = redact_reply(f"{response.code} {response.message}", redact)
        return Attempt(outcome, reply, conn.tls_version, conn.tls_cipher), True

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.close() for conn in idle))


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
