"""carepost's SMTP session against scripted servers on loopback: the protocol cases a
well-behaved aiosmtpd never produces (pipelining proof, replies injected before TLS,
a 354 after a refused recipient, a 421 and hang-up in the middle of a pipelined group,
malformed replies, AUTH).

Each server is a real TLS server (trustme certificates) that follows a script written in
the test, so what the client must have sent is asserted from the server's side.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme

from carepost.delivery.smtp import Envelope, RelayConfig, SmtpTransport
from carepost.delivery.smtp_session import Outgoing, SessionLost, SmtpSession

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
EHLO_PIPE = b"250-scripted.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n"
MESSAGE = b"From: a@clinic.example\r\nTo: p@x.test\r\nSubject: s\r\n\r\nbody\r\n"


class Scripted:
    """A TLS-capable server whose handler is the test's script."""

    def __init__(self, ca: trustme.CA) -> None:
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.server_ctx)
        self.client_ctx = ssl.create_default_context()
        ca.configure_trust(self.client_ctx)
        self.seen: list[bytes] = []
        self.errors: list[BaseException] = []

    async def line(self, reader: asyncio.StreamReader) -> bytes:
        data = await asyncio.wait_for(reader.readline(), 5)
        self.seen.append(data)
        return data

    async def starttls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Greeting, EHLO, STARTTLS, EHLO again: the session up to its first MAIL."""
        writer.write(b"220 scripted.test ESMTP\r\n")
        assert (await self.line(reader)).startswith(b"EHLO ")
        writer.write(EHLO_PIPE)
        assert await self.line(reader) == b"STARTTLS\r\n"
        writer.write(b"220 2.0.0 go ahead\r\n")
        await writer.drain()
        await writer.start_tls(self.server_ctx)
        assert (await self.line(reader)).startswith(b"EHLO ")
        writer.write(EHLO_PIPE.replace(b"250 STARTTLS", b"250 AUTH PLAIN LOGIN"))


def run(scripted: Scripted, handler: Handler, client: Callable[[int], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except Exception as exc:  # surfaced by the test, not lost in the loop
                scripted.errors.append(exc)
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await client(port)

    result = asyncio.run(main())
    assert scripted.errors == []
    return result


@pytest.fixture
def scripted(sink_ca: trustme.CA) -> Scripted:
    return Scripted(sink_ca)


async def _send_one(scripted: Scripted, port: int, **relay: Any) -> Any:
    """One message through the whole transport (pool, outcome, redaction)."""
    config = RelayConfig("127.0.0.1", port, tls_context=scripted.client_ctx, timeout=3.0, **relay)
    transport = SmtpTransport(config)
    try:
        return await transport.send(Envelope("a@clinic.example", "p@x.test", MESSAGE))
    finally:
        await transport.close()


async def _open(scripted: Scripted, port: int, **kw: Any) -> SmtpSession:
    return await SmtpSession.open(
        "127.0.0.1", port, tls="starttls", context=scripted.client_ctx, timeout=3.0, **kw
    )


def test_pipelined_group_arrives_before_any_reply(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        # Read all three before answering any: a client that waits for MAIL's reply
        # before sending RCPT would leave this read hanging until the timeout.
        group = [await scripted.line(reader) for _ in range(3)]
        assert group[0] == b"MAIL FROM:<a@clinic.example> SIZE=%d\r\n" % len(MESSAGE)
        assert group[1:] == [b"RCPT TO:<p@x.test>\r\n", b"DATA\r\n"]
        writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
        body = b""
        while not body.endswith(b"\r\n.\r\n"):
            body += await scripted.line(reader)
        assert body == MESSAGE + b".\r\n"
        writer.write(b"250 2.0.0 Ok: queued as X1\r\n")
        assert await scripted.line(reader) == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        assert session.pipelining
        assert session.tls_version in ("TLSv1.2", "TLSv1.3")
        result = await session.transaction("a@clinic.example", "p@x.test", MESSAGE)
        await session.quit()
        return result

    result = run(scripted, server, client)
    assert (result.phase, result.reply.code, result.reusable) == ("data", 250, True)


def test_lockstep_without_pipelining(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 old.test\r\n")
        await scripted.line(reader)
        writer.write(b"250-old.test\r\n250 STARTTLS\r\n")
        await scripted.line(reader)
        writer.write(b"220 go\r\n")
        await writer.drain()
        await writer.start_tls(scripted.server_ctx)
        await scripted.line(reader)
        writer.write(b"250 old.test\r\n")  # no PIPELINING, no SIZE
        for expected, reply in (
            (b"MAIL FROM:<a@clinic.example>\r\n", b"250 ok\r\n"),
            (b"RCPT TO:<p@x.test>\r\n", b"250 ok\r\n"),
        ):
            assert await scripted.line(reader) == expected
            with pytest.raises(TimeoutError):  # nothing more until we answer
                await asyncio.wait_for(reader.readline(), 0.2)
            writer.write(reply)
        assert await scripted.line(reader) == b"DATA\r\n"
        writer.write(b"354 go\r\n")
        while await scripted.line(reader) != b".\r\n":
            pass
        writer.write(b"250 queued\r\n")

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        result = await session.transaction("a@clinic.example", "p@x.test", MESSAGE)
        session.abort()
        return result

    assert run(scripted, server, client).reply.code == 250


def test_reply_injected_before_the_tls_handshake_is_a_tls_failure(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 evil.test\r\n")
        await scripted.line(reader)
        writer.write(b"250-evil.test\r\n250 STARTTLS\r\n")
        await scripted.line(reader)
        # The forged 250 would otherwise be read, under TLS, as the answer to EHLO.
        writer.write(b"220 go\r\n250 forged\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    attempt = run(scripted, server, lambda port: _send_one(scripted, port))
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "tls_failed")
    assert not any(line.startswith(b"MAIL") for line in scripted.seen)


def test_354_after_a_refused_recipient_ends_with_an_empty_body(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for _ in range(3):
            await scripted.line(reader)
        writer.write(b"250 ok\r\n550 5.1.1 <p@x.test> unknown\r\n354 go anyway\r\n")
        assert await scripted.line(reader) == b".\r\n"  # the lone dot, no body
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        assert await scripted.line(reader) == b"RSET\r\n"
        writer.write(b"250 reset\r\n")
        await reader.read()  # the line stays open until the client has looked at it

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        result = await session.transaction("a@clinic.example", "p@x.test", MESSAGE)
        usable = session.usable
        session.abort()
        return result, usable

    result, usable = run(scripted, server, client)
    assert (result.phase, result.reply.code, result.reusable, usable) == ("rcpt", 550, True, True)
    assert b"body\r\n" not in scripted.seen


def test_421_then_hang_up_mid_group_keeps_the_421(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        await scripted.line(reader)
        writer.write(b"421 4.7.0 too many connections\r\n")
        await writer.drain()

    attempt = run(scripted, server, lambda port: _send_one(scripted, port))
    assert (attempt.outcome.status, attempt.outcome.code, attempt.outcome.phase) == (
        "deferred",
        421,
        "mail",
    )


def test_malformed_reply_loses_the_session_not_the_message(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for _ in range(3):
            await scripted.line(reader)
        writer.write(b"this is not smtp\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        return await session.transaction("a@clinic.example", "p@x.test", MESSAGE)

    result = run(scripted, server, client)
    assert (result.phase, result.error, result.reusable) == ("mail", "lost", False)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_after_tls(scripted: Scripted, mechanism: str) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 auth.test\r\n")
        await scripted.line(reader)
        writer.write(b"250-auth.test\r\n250 STARTTLS\r\n")  # no AUTH offered in plaintext
        await scripted.line(reader)
        writer.write(b"220 go\r\n")
        await writer.drain()
        await writer.start_tls(scripted.server_ctx)
        await scripted.line(reader)
        writer.write(b"250-auth.test\r\n250 AUTH " + mechanism.encode() + b"\r\n")
        if mechanism == "PLAIN":
            assert await scripted.line(reader) == b"AUTH PLAIN AHJlbGF5AHNlY3JldA==\r\n"
        else:
            assert await scripted.line(reader) == b"AUTH LOGIN\r\n"
            writer.write(b"334 VXNlcm5hbWU6\r\n")
            assert await scripted.line(reader) == b"cmVsYXk=\r\n"
            writer.write(b"334 UGFzc3dvcmQ6\r\n")
            assert await scripted.line(reader) == b"c2VjcmV0\r\n"
        writer.write(b"235 2.7.0 ok\r\n")
        await scripted.line(reader)

    async def client(port: int) -> Any:
        session = await _open(scripted, port, username="relay", password="secret")
        session.abort()
        return session.tls_version

    assert run(scripted, server, client) in ("TLSv1.2", "TLSv1.3")


def test_refused_credentials_defer_with_an_alert(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        await scripted.line(reader)
        writer.write(b"535 5.7.8 authentication failed\r\n")
        await writer.drain()

    attempt = run(
        scripted,
        server,
        lambda port: _send_one(scripted, port, username="relay", password="wrong"),
    )
    # The relay's refusal is not the message's fault: deferred, never a bounce.
    assert (attempt.outcome.status, attempt.outcome.reason, attempt.outcome.bounce) == (
        "deferred",
        "auth_failed",
        None,
    )
    assert attempt.outcome.alert is not None


def test_lost_session_is_an_exception_when_opening(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 bye.test\r\n")
        await scripted.line(reader)

    async def client(port: int) -> Any:
        with pytest.raises(SessionLost):
            await _open(scripted, port)

    run(scripted, server, client)


def test_a_2xx_answer_to_data_is_never_taken_for_delivery(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for _ in range(3):
            await scripted.line(reader)
        writer.write(b"250 ok\r\n250 ok\r\n250 2.0.0 Ok: queued as NOTHING\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)

    attempt = run(scripted, server, lambda port: _send_one(scripted, port))
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "lost_before_data")
    assert b"body\r\n" not in scripted.seen


async def _body(scripted: Scripted, reader: asyncio.StreamReader) -> bytes:
    body = b""
    while not body.endswith(b"\r\n.\r\n"):
        body += await scripted.line(reader)
    return body


def _stream(session: SmtpSession, count: int, limit: int = 100) -> Any:
    """`count` messages through `session.stream`: (results by tag, messages handed back)."""
    items = [Outgoing("a@clinic.example", f"p{i}@x.test", MESSAGE, tag=i) for i in range(count)]
    queue = list(items)
    results: dict[int, Any] = {}

    def done(item: Outgoing, result: Any) -> None:
        results[item.tag] = result

    async def go() -> Any:
        back = await session.stream(lambda: queue.pop(0) if queue else None, done, limit=limit)
        return results, [b.tag for b in back]

    return go()


def test_a_stream_sends_each_body_with_the_next_message_s_commands(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for _ in range(3):
            await scripted.line(reader)
        writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
        for i in range(2):
            assert await _body(scripted, reader) == MESSAGE + b".\r\n"
            # The next message's group came before this body was answered: a client that
            # waited for the answer first would leave these reads hanging.
            group = [await scripted.line(reader) for _ in range(3)]
            assert group[1] == b"RCPT TO:<p%d@x.test>\r\n" % (i + 1)
            assert group[2] == b"DATA\r\n"
            writer.write(b"250 2.0.0 Ok: queued as Q%d\r\n250 Ok\r\n250 Ok\r\n354 go\r\n" % i)
        assert await _body(scripted, reader) == MESSAGE + b".\r\n"
        writer.write(b"250 2.0.0 Ok: queued as Q2\r\n")
        assert await scripted.line(reader) == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        outcome = await _stream(session, 3)
        usable, sent = session.usable, session.sent
        await session.quit()
        return outcome, usable, sent

    (results, back), usable, sent = run(scripted, server, client)
    assert back == []
    assert [(results[i].phase, str(results[i].reply)) for i in range(3)] == [
        ("data", f"250 2.0.0 Ok: queued as Q{i}") for i in range(3)
    ]
    assert (usable, sent) == (True, 3)


def test_a_stream_hands_back_the_message_behind_a_dropped_body(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for _ in range(3):
            await scripted.line(reader)
        writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
        await _body(scripted, reader)
        for _ in range(3):  # the second message's group, never answered
            await scripted.line(reader)
        writer.transport.abort()

    async def client(port: int) -> Any:
        return await _stream(await _open(scripted, port), 3)

    results, back = run(scripted, server, client)
    # The first body may have been taken: unknown. The second message's MAIL was never
    # answered and its body never sent: it goes to another session. The third was never
    # taken from the queue.
    assert (results[0].phase, results[0].error) == ("after_data", "lost")
    assert sorted(results) == [0]
    assert back == [1]


def test_a_stream_stops_at_the_session_s_cap(scripted: Scripted) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for i in range(2):
            for _ in range(3):
                await scripted.line(reader)
            writer.write(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
            await _body(scripted, reader)
            writer.write(b"250 2.0.0 Ok: queued as Q%d\r\n" % i)
        assert await scripted.line(reader) == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        outcome = await _stream(session, 3, limit=2)
        await session.quit()
        return outcome

    results, back = run(scripted, server, client)
    # The cap is known before the second body goes, so nothing of the third is written.
    assert sorted(results) == [0, 1]
    assert back == []


def test_a_stream_not_across_messages_waits_for_each_body_s_answer(scripted: Scripted) -> None:
    """For a relay that drops what follows a body's final dot
    (`CAREPOST_SMTP_PIPELINE_MESSAGES=false`): nothing of the next message is written
    before the body is answered; MAIL, RCPT and DATA still go as one group."""

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.starttls(reader, writer)
        for i in range(2):
            group = [await scripted.line(reader) for _ in range(3)]
            assert group[1] == b"RCPT TO:<p%d@x.test>\r\n" % i
            writer.write(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
            assert await _body(scripted, reader) == MESSAGE + b".\r\n"
            with pytest.raises(TimeoutError):  # the client waits for this body's answer
                await asyncio.wait_for(reader.read(1), 0.3)
            writer.write(b"250 2.0.0 Ok: queued as Q%d\r\n" % i)
        assert await scripted.line(reader) == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")

    async def client(port: int) -> Any:
        session = await _open(scripted, port)
        items = [Outgoing("a@clinic.example", f"p{i}@x.test", MESSAGE, tag=i) for i in range(2)]
        results: dict[int, Any] = {}

        def done(item: Outgoing, result: Any) -> None:
            results[item.tag] = result

        back = await session.stream(
            lambda: items.pop(0) if items else None, done, limit=100, across=False
        )
        await session.quit()
        return results, back

    results, back = run(scripted, server, client)
    assert back == []
    assert [str(results[i].reply) for i in range(2)] == [
        f"250 2.0.0 Ok: queued as Q{i}" for i in range(2)
    ]
