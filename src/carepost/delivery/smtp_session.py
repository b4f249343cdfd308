"""One SMTP client connection on asyncio: TLS first, then pipelined mail transactions.

Why carepost speaks SMTP itself rather than through aiosmtplib (measured, see
docs/architecture.md, "Why carepost speaks SMTP itself"): aiosmtplib has no RFC 2920 pipelining (its
protocol drops replies if commands are written before the previous reply is read), so
every message costs four round trips (MAIL, RCPT, DATA, body), each awaited through its
own timer task, and it runs two regular expressions over every body (line ends and dot
stuffing) that a CRLF-clean 26 KB message does not need. Together that was about half of
a worker's time per message. Here MAIL, RCPT and DATA go out in one write when the relay
announces PIPELINING, a reply costs a deque append, and the body is dot-stuffed with one
`bytes.replace`.

For a relay, TLS is never optional: a session is either implicit TLS (RFC 8314) or
upgrades with STARTTLS before anything but EHLO is said, with the caller's verifying
context. Replies that arrive unasked before the TLS handshake are refused (the STARTTLS
command-injection attack, CVE-2011-0411's class): they could be a forgery.

Two more modes exist for direct delivery of messages declared PHI-free, and only for them
(`delivery.direct` picks the mode from `delivery.tls_policy`; `RelayConfig.tls` cannot name
them): `opportunistic` upgrades when STARTTLS is offered and otherwise, or after a refused
STARTTLS, goes on in plaintext (RFC 7435); `plain` never upgrades, for the reconnection
after a handshake that failed. `starttls` with a verifying context and `tls_name` set to
the MX host is what a PHI-bearing message gets on the recipient's own server.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from carepost.delivery import smtp_wire
from carepost.delivery.smtp_wire import ProtocolError, Reply

_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")

Phase = Literal["mail", "rcpt", "data"]
SessionTls = Literal["starttls", "implicit", "opportunistic", "plain"]
_PHASES: tuple[Phase, Phase, Phase] = ("mail", "rcpt", "data")


def _accepted(phase: Phase, reply: Reply) -> bool:
    return reply.code == 354 if phase == "data" else reply.ok


class SessionLost(Exception):
    """The connection closed or broke."""


class SessionRefused(Exception):
    """The server refused the session (greeting, EHLO, STARTTLS or AUTH)."""

    def __init__(self, step: str, reply: Reply) -> None:
        super().__init__(f"{step} refused with {reply.code}")
        self.step = step
        self.reply = reply


class StartTlsLost(SessionLost):
    """The connection broke between our STARTTLS and the end of the handshake (the server
    hung up, or sent something that is neither a reply nor TLS). Still `SessionLost` for
    the relay; direct delivery reads it as the server failing TLS."""


class TlsUnavailable(Exception):
    """STARTTLS mode, and the server does not offer STARTTLS."""


@dataclass(frozen=True)
class TransactionResult:
    """Where a mail transaction ended and the reply that ended it, if any.

    `phase` follows delivery.outcome: "mail", "rcpt" and "data" (the DATA command itself
    or the reply after the body) carry a reply; "after_data" with `error` set means the
    body's final dot went out and no reply came.
    """

    phase: Phase | Literal["after_data"]
    reply: Reply | None
    error: Literal["timeout", "lost"] | None = None
    reusable: bool = True

    @property
    def no_news(self) -> bool:
        """The session broke before MAIL was answered: nothing is known of the message,
        and its body was never sent, so another session may carry it."""
        return self.phase == "mail" and self.reply is None and self.error == "lost"


@dataclass
class Outgoing:
    """One message of a stream (`SmtpSession.stream`). `tag` is the caller's own index;
    `retried` is set when a broken session handed the message back once already."""

    mail_from: str
    rcpt_to: str
    data: bytes
    crlf_clean: bool = False
    tag: int = 0
    retried: bool = False


# What a stream reports for each message it took: the result, or None when an address
# could not be put in a command (nothing was written for it).
Done = Callable[[Outgoing, TransactionResult | None], None]


class _Wire(asyncio.Protocol):
    """Bytes in, replies queued; waiters woken. No per-reply task or timer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = smtp_wire.ReplyParser()
        self.replies: deque[Reply] = deque()
        self.closed = False
        self.error: ProtocolError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.replies.extend(self.parser.feed(data))
        except ProtocolError as exc:
            self.error = exc
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self) -> Reply:
        while not self.replies:
            if self.error is not None:
                raise SessionLost("the server's reply was not SMTP") from self.error
            if self.closed:
                raise SessionLost("the connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.replies.popleft()

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise SessionLost("the connection closed")
        self.transport.write(data)

    async def drained(self) -> None:
        """Large bodies: wait while the transport's buffer is over its high-water mark."""
        if self._can_write is not None:
            await self._can_write


class SmtpSession:
    """A connected, encrypted, greeted (and, if configured, authenticated) session."""

    def __init__(self, wire: _Wire, ext: dict[str, str], timeout: float) -> None:
        self._wire = wire
        self.extensions = ext
        self.timeout = timeout
        self.pipelining = "PIPELINING" in ext
        self.announces_size = "SIZE" in ext
        self.sent = 0
        # What evidence calls the route this session is (direct delivery sets it when it
        # opens one); None: the transport's own method.
        self.method: str | None = None
        transport = wire.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        self.tls_version: str | None = ssl_object.version() if ssl_object else None
        cipher = ssl_object.cipher() if ssl_object else None
        self.tls_cipher: str | None = cipher[0] if cipher else None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        tls: SessionTls,
        context: ssl.SSLContext,
        timeout: float,
        local_hostname: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_name: str | None = None,
    ) -> SmtpSession:
        """Raises OSError (no connection), ssl.SSLError (TLS failed), TimeoutError,
        TlsUnavailable, SessionRefused or SessionLost. Nothing of a message is sent.

        `tls_name`: the name the certificate must carry (and SNI), when `host` is an
        address: direct delivery connects to an MX host's address and verifies its name."""
        if username is not None and tls not in ("starttls", "implicit"):
            raise ValueError("credentials are only ever sent over required TLS")
        loop = asyncio.get_running_loop()
        wire = _Wire()
        name = local_hostname or _local_name()
        server_name = tls_name or host
        async with asyncio.timeout(timeout):
            if tls == "implicit":
                await loop.create_connection(
                    lambda: wire,
                    host,
                    port,
                    ssl=context,
                    server_hostname=server_name,
                    ssl_handshake_timeout=timeout,
                )
            else:
                await loop.create_connection(lambda: wire, host, port)
        try:
            _nodelay(wire)
            async with asyncio.timeout(timeout):
                await _expect(wire, "greeting", 220)
                ext = await _ehlo(wire, name)
                upgrade = tls in ("starttls", "opportunistic") and "STARTTLS" in ext
                if tls == "starttls" and not upgrade:
                    raise TlsUnavailable
                if upgrade:
                    wire.write(b"STARTTLS\r\n")
                    try:
                        reply = await wire.reply()
                        if reply.code == 220:
                            await _start_tls(wire, context, server_name, timeout)
                    except ssl.SSLError:
                        raise
                    except (SessionLost, ConnectionError) as exc:
                        raise StartTlsLost("the connection broke during STARTTLS") from exc
                    if reply.code == 220:
                        ext = await _ehlo(wire, name)
                    elif tls == "starttls":
                        raise SessionRefused("starttls", reply)
                    # else opportunistic: a refused STARTTLS leaves a plaintext session
                    # the client may go on with (RFC 3207 section 4).
                if username is not None:
                    await _authenticate(wire, ext, username, password or "")
        except BaseException:
            if wire.transport is not None:
                wire.transport.abort()
            raise
        return cls(wire, ext, timeout)

    @property
    def usable(self) -> bool:
        """Still open, and nothing arrived unasked while idle (a relay's 421 before it
        hangs up would otherwise be read as the next message's answer)."""
        wire = self._wire
        return (
            not wire.closed
            # aborted here, before the loop has told the protocol the connection is lost
            and not (wire.transport is None or wire.transport.is_closing())
            and wire.error is None
            and not wire.replies
            and not wire.parser.pending
        )

    async def transaction(
        self, mail_from: str, rcpt_to: str, data: bytes, *, crlf_clean: bool = False
    ) -> TransactionResult:
        """One message. Raises ValueError (before writing anything) for an address that
        cannot be put in a command."""
        commands = self._commands(mail_from, rcpt_to, data)
        payload = smtp_wire.data_payload(data, crlf_clean=crlf_clean)
        wire = self._wire
        replies: list[Reply] = []
        error: Literal["timeout", "lost"] | None = None
        if self.pipelining:
            try:
                wire.write(b"".join(commands))
            except SessionLost:
                return self._broken("mail", "lost")
            replies, error = await self._read(3)
        else:
            for phase, command in zip(_PHASES, commands, strict=True):
                try:
                    wire.write(command)
                except SessionLost:
                    error = "lost"
                    break
                got, error = await self._read(1)
                replies += got
                if error is not None or not _accepted(phase, got[0]):
                    break
        refused = await self._judge(replies, error)
        if refused is not None:
            return refused
        try:
            wire.write(payload)
        except SessionLost:  # closed after 354, before a byte of the body left
            return self._broken("data", "lost")
        return await self._final()

    async def stream(
        self,
        take: Callable[[], Outgoing | None],
        done: Done,
        *,
        limit: int,
        across: bool = True,
    ) -> list[Outgoing]:
        """Messages from `take` until it has none left, this session has sent `limit`,
        or the session breaks; `done` hears each one's result. Returns the messages to
        carry on another session: a message whose fate is no news (its MAIL went
        unanswered because the line broke) comes back once, and so does a message whose
        commands went out behind a body the session did not survive.

        With PIPELINING a message's body, its final dot and the next message's MAIL, RCPT
        and DATA go out in one write (RFC 2920 section 3.1: message content may open a
        group), so a message costs one round trip, not two: half the reads and writes
        here, in a TLS terminator and in the relay. The relay answers the body before it
        reads the next group, so each reply still belongs to one message. With `across`
        False, or without PIPELINING, the messages go one `transaction` after another."""
        back: list[Outgoing] = []
        if not (self.pipelining and across):
            while self.sent < limit and (item := take()) is not None:
                try:
                    result = await self.transaction(
                        item.mail_from, item.rcpt_to, item.data, crlf_clean=item.crlf_clean
                    )
                except ValueError:
                    done(item, None)
                    continue
                if not _report(item, result, done, back):
                    break
            return back
        wire = self._wire
        # `group`: the message's commands while they are still to be written; empty
        # once they went out behind the previous body.
        item, group = self._next_group(take, done)
        while item is not None:
            if group:
                try:
                    wire.write(group)
                except SessionLost:
                    _report(item, self._broken("mail", "lost"), done, back)
                    return back
            replies, error = await self._read(3)
            refused = await self._judge(replies, error)
            if refused is not None:
                if not _report(item, refused, done, back) or self.sent >= limit:
                    return back
                item, group = self._next_group(take, done)
                continue
            following, then = self._next_group(take, done) if self.sent + 1 < limit else (None, b"")
            payload = smtp_wire.data_payload(item.data, crlf_clean=item.crlf_clean, then=then)
            try:
                wire.write(payload)
            except SessionLost:  # closed after 354, before a byte of the body left
                result = self._broken("data", "lost")
            else:
                result = await self._final()
            done(item, result)
            if following is not None and not result.reusable:
                back.append(following)
                return back
            item, group = following, b""
        return back

    def _commands(self, mail_from: str, rcpt_to: str, data: bytes) -> tuple[bytes, bytes, bytes]:
        return (
            smtp_wire.mail_from(mail_from, len(data) if self.announces_size else None),
            smtp_wire.rcpt_to(rcpt_to),
            b"DATA\r\n",
        )

    def _next_group(self, take: Callable[[], Outgoing | None], done: Done) -> _Group:
        """The next message whose addresses can be put in commands, with its pipelined
        MAIL, RCPT and DATA; the others are reported as they are passed over."""
        while (item := take()) is not None:
            try:
                return item, b"".join(self._commands(item.mail_from, item.rcpt_to, item.data))
            except ValueError:
                done(item, None)
        return None, b""

    async def _read(self, count: int) -> tuple[list[Reply], Literal["timeout", "lost"] | None]:
        replies: list[Reply] = []
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(count):
                    replies.append(await self._wire.reply())
        except TimeoutError:
            return replies, "timeout"
        except SessionLost:
            return replies, "lost"
        return replies, None

    async def _judge(
        self, replies: list[Reply], error: Literal["timeout", "lost"] | None
    ) -> TransactionResult | None:
        """None when MAIL, RCPT and DATA were all accepted (the body may follow); else how
        the transaction ended, with the session left clean or closed."""
        for phase, reply in zip(_PHASES, replies, strict=False):
            if phase == "data" and reply.ok:
                # A success code where 354 belongs: the body was never asked for, so it
                # must not read as delivered. The session's state is unknowable.
                return self._broken("data", "lost")
            if not _accepted(phase, reply):
                return await self._end_refused(phase, reply, replies, alive=error is None)
        if error is not None:
            return self._broken(_PHASES[len(replies)], error)
        return None

    async def _final(self) -> TransactionResult:
        """The reply to a body just written."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._wire.drained()
                final = await self._wire.reply()
        except TimeoutError:
            return self._broken("after_data", "timeout")
        except SessionLost:
            return self._broken("after_data", "lost")
        if final.ok:
            self.sent += 1
        reusable = final.code != 421
        if not reusable:
            self.abort()
        return TransactionResult("data", final, reusable=reusable)

    async def _end_refused(
        self, phase: Phase, reply: Reply, replies: list[Reply], *, alive: bool
    ) -> TransactionResult:
        """A refused MAIL, RCPT or DATA: leave the session clean for the next message.
        If a pipelining server still said 354 to DATA, the lone dot ends an empty body
        (no recipient was accepted, so nothing is delivered); then RSET."""
        reusable = alive and reply.code != 421
        if reusable:
            try:
                async with asyncio.timeout(self.timeout):
                    if len(replies) == 3 and replies[2].code == 354:
                        self._wire.write(b".\r\n")
                        await self._wire.reply()
                    self._wire.write(b"RSET\r\n")
                    reusable = (await self._wire.reply()).ok
            except (TimeoutError, SessionLost):
                reusable = False
        if not reusable:
            self.abort()
        return TransactionResult(phase, reply, reusable=reusable)

    def _broken(
        self, phase: Phase | Literal["after_data"], error: Literal["timeout", "lost"]
    ) -> TransactionResult:
        self.abort()
        return TransactionResult(phase, None, error, reusable=False)

    async def quit(self) -> None:
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                self._wire.write(b"QUIT\r\n")
                await self._wire.reply()
        except (TimeoutError, SessionLost, OSError):
            pass
        self.abort()

    def abort(self) -> None:
        if self._wire.transport is not None:
            self._wire.transport.abort()


_Group = tuple[Outgoing, bytes] | tuple[None, bytes]


def _report(item: Outgoing, result: TransactionResult, done: Done, back: list[Outgoing]) -> bool:
    """Hand `result` to `done`, or `item` back for another session when its fate is no
    news for the first time; whether the session can go on."""
    if result.no_news and not item.retried:
        item.retried = True
        back.append(item)
    else:
        done(item, result)
    return result.reusable


async def _start_tls(
    wire: _Wire, context: ssl.SSLContext, server_name: str, timeout: float
) -> None:
    if wire.replies or wire.parser.pending:
        # Anything read now was sent in plaintext and would be taken as an answer once
        # encrypted: a TLS failure, not a lost line.
        raise ssl.SSLError("the server sent data before the TLS handshake")
    assert wire.transport is not None
    upgraded = await asyncio.get_running_loop().start_tls(
        wire.transport,
        wire,
        context,
        server_hostname=server_name,
        ssl_handshake_timeout=timeout,
    )
    if upgraded is None:
        raise SessionLost("the TLS upgrade returned no transport")
    assert isinstance(upgraded, asyncio.Transport)
    wire.transport = upgraded


async def _expect(wire: _Wire, step: str, code: int) -> Reply:
    reply = await wire.reply()
    if reply.code != code:
        raise SessionRefused(step, reply)
    return reply


async def _ehlo(wire: _Wire, name: str) -> dict[str, str]:
    wire.write(f"EHLO {name}\r\n".encode("ascii"))
    reply = await wire.reply()
    if reply.ok:
        return smtp_wire.extensions(reply)
    if reply.code >= 500:  # an old server: HELO, and no extensions (so no STARTTLS)
        wire.write(f"HELO {name}\r\n".encode("ascii"))
        await _expect(wire, "helo", 250)
        return {}
    raise SessionRefused("ehlo", reply)


async def _authenticate(wire: _Wire, ext: dict[str, str], username: str, password: str) -> None:
    mechanisms = set(ext.get("AUTH", "").upper().split())
    if "PLAIN" in mechanisms:
        wire.write(smtp_wire.auth_plain(username, password))
        await _expect(wire, "auth", 235)
    elif "LOGIN" in mechanisms:
        wire.write(b"AUTH LOGIN\r\n")
        await _expect(wire, "auth", 334)
        wire.write(smtp_wire.auth_login_step(username))
        await _expect(wire, "auth", 334)
        wire.write(smtp_wire.auth_login_step(password))
        await _expect(wire, "auth", 235)
    else:
        raise SessionRefused("auth", Reply(504, ("no AUTH PLAIN or LOGIN offered",)))


def _nodelay(wire: _Wire) -> None:
    """Commands are small and pipelined groups are written whole: Nagle would only hold
    them back. (asyncio usually sets this already; being explicit costs nothing.)"""
    sock = wire.transport.get_extra_info("socket") if wire.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _local_name() -> str:
    """EHLO's name: the host name if it is a plausible domain, else an address literal.
    Not getfqdn(): that can wait on DNS for every new connection."""
    name = socket.gethostname()
    return name if _HOST_NAME.match(name) else "[127.0.0.1]"
