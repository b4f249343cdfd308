"""The SMTP transport against a real aiosmtpd server on loopback: the fault matrix, TLS
enforcement and connection reuse."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from carepost.delivery.smtp import Envelope, RelayConfig, SmtpTransport

MESSAGE = (
    b"From: news@clinic.example\r\nTo: x@sink.test\r\nSubject: t\r\n"
    b"Message-ID: <%s@clinic.example>\r\n\r\nbody\r\n"
)


@pytest.fixture(params=["pipelined", "lockstep"])
def smtp_sink_factory(smtp_sink_factory: Any, request: pytest.FixtureRequest) -> Any:
    """Every test here twice: against a relay that announces PIPELINING (as Postfix does)
    and one that does not, so both ways through the client meet the fault matrix."""

    def start(*args: Any, **kw: Any) -> Any:
        sink = smtp_sink_factory(*args, **kw)
        sink.state.pipelining = request.param == "pipelined"
        return sink

    return start


def _relay(sink: Any, **kw: Any) -> RelayConfig:
    tls = "implicit" if sink.mode == "implicit" else "starttls"
    return RelayConfig(
        sink.host, sink.port, tls=tls, tls_context=sink.client_context, **{"timeout": 2.0, **kw}
    )


def _send(config: RelayConfig, rcpts: list[str]) -> list[Any]:
    async def go() -> list[Any]:
        transport = SmtpTransport(config)
        try:
            return [
                await transport.send(
                    Envelope("bounce@clinic.example", r, MESSAGE % str(i).encode())
                )
                for i, r in enumerate(rcpts)
            ]
        finally:
            await transport.close()

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_accepted_over_tls_with_evidence(smtp_sink_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory(mode)
    [attempt] = _send(_relay(sink), ["ok@sink.test"])
    assert attempt.outcome.status == "sent"
    assert attempt.reply.startswith("250 2.0.0 Ok: queued as")
    assert attempt.tls_version in ("TLSv1.2", "TLSv1.3")
    assert attempt.tls_cipher
    assert [r.tls for r in sink.state.received] == [True]


@pytest.mark.parametrize(
    ("rcpt", "status", "code", "bounce"),
    [
        ("data-421@sink.test", "deferred", 421, "soft"),
        ("data-450@sink.test", "deferred", 450, "soft"),
        ("data-451@sink.test", "deferred", 451, "soft"),
        ("data-452@sink.test", "deferred", 452, "soft"),
        ("rcpt-450@sink.test", "deferred", 450, "soft"),
        ("mail-421@sink.test", "deferred", 421, "soft"),
        ("rcpt-550@sink.test", "failed", 550, "hard"),
        ("data-550@sink.test", "failed", 550, "policy"),
        ("data-552@sink.test", "failed", 552, "soft"),
        ("data-554@sink.test", "failed", 554, "policy"),
    ],
)
def test_reply_fault_matrix(smtp_sink_factory, rcpt, status, code, bounce) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("starttls")
    [attempt] = _send(_relay(sink), [rcpt])
    assert (attempt.outcome.status, attempt.outcome.code, attempt.outcome.bounce) == (
        status,
        code,
        bounce,
    )
    assert rcpt not in attempt.reply  # relays echo the address; evidence must not keep it


def test_drop_after_data_is_unknown(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    drop, after = _send(_relay(sink), ["drop@sink.test", "ok@sink.test"])
    assert (drop.outcome.status, drop.outcome.reason) == ("unknown", "lost_after_data")
    assert after.outcome.status == "sent"  # a fresh connection took over


def test_hang_after_data_times_out_as_unknown(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    [attempt] = _send(_relay(sink, timeout=0.5), ["hang@sink.test"])
    assert (attempt.outcome.status, attempt.outcome.reason) == ("unknown", "timeout_after_data")


def test_hang_before_data_times_out_as_deferred(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    sink.state.stall_ehlo = 3.0
    [attempt] = _send(_relay(sink, timeout=0.5), ["ok@sink.test"])
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "timeout")
    assert sink.state.mail_commands == []


def test_no_starttls_means_no_plaintext_byte(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("none")
    attempts = _send(_relay(sink), ["ok@sink.test", "ok@sink.test"])
    assert [(a.outcome.status, a.outcome.reason) for a in attempts] == [
        ("deferred", "tls_unavailable")
    ] * 2
    assert all(a.outcome.tls_alert for a in attempts)
    assert sink.state.mail_commands == []
    assert sink.state.received == []


@pytest.mark.parametrize("mode", ["untrusted"])
def test_untrusted_certificate_means_no_plaintext_byte(smtp_sink_factory, mode) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory(mode)
    [attempt] = _send(_relay(sink), ["ok@sink.test"])
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "tls_failed")
    assert sink.state.mail_commands == []
    assert sink.state.received == []


def test_wrong_host_name_is_a_tls_failure(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("starttls", cert_names=("other.example",))
    [attempt] = _send(_relay(sink), ["ok@sink.test"])
    assert attempt.outcome.reason == "tls_failed"
    assert sink.state.received == []


def test_verification_cannot_be_switched_off() -> None:
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verify"):
        SmtpTransport(RelayConfig("127.0.0.1", 1, tls_context=lax))


def test_connection_refused_is_deferred() -> None:
    from smtp_sink import free_port

    [attempt] = _send(RelayConfig("127.0.0.1", free_port(), timeout=1.0), ["ok@sink.test"])
    assert (attempt.outcome.status, attempt.outcome.reason) == ("deferred", "connect_failed")


def test_connections_are_reused_up_to_the_cap(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    attempts = _send(_relay(sink, max_messages_per_connection=3), ["ok@sink.test"] * 7)
    assert all(a.outcome.status == "sent" for a in attempts)
    assert len(sink.state.received) == 7
    assert sink.state.sessions == 3  # 3 + 3 + 1


def test_rejected_recipient_leaves_connection_usable(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    attempts = _send(
        _relay(sink), ["rcpt-550@sink.test", "ok@sink.test", "data-451@sink.test", "ok@sink.test"]
    )
    assert [a.outcome.status for a in attempts] == ["failed", "sent", "deferred", "sent"]
    assert sink.state.sessions == 1


def test_concurrent_sends_share_the_pool(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    config = _relay(sink, pool_size=4)

    async def go() -> list[Any]:
        transport = SmtpTransport(config)
        try:
            return await asyncio.gather(
                *(
                    transport.send(
                        Envelope("b@clinic.example", "ok@sink.test", MESSAGE % str(i).encode())
                    )
                    for i in range(40)
                )
            )
        finally:
            await transport.close()

    attempts = asyncio.run(go())
    assert all(a.outcome.status == "sent" for a in attempts)
    assert sorted(sink.state.message_ids()) == sorted(f"<{i}@clinic.example>" for i in range(40))
    assert sink.state.sessions <= 4


def test_dots_and_size_reach_the_relay_intact(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    body = b"From: a@clinic.example\r\nTo: ok@sink.test\r\nSubject: d\r\n\r\n"
    body += b".leading dot\r\n.\r\n..two\r\n" + b"x" * 70 + b"\r\n"
    big = body + (b"line of a long attachment, base64-like padding ABCDEFGHIJ\r\n" * 20000)

    async def go() -> list[Any]:
        transport = SmtpTransport(_relay(sink))
        try:
            return [
                await transport.send(Envelope("b@clinic.example", "ok@sink.test", data))
                for data in (body, big)
            ]
        finally:
            await transport.close()

    attempts = asyncio.run(go())
    assert [a.outcome.status for a in attempts] == ["sent", "sent"]
    assert [r.data for r in sink.state.received] == [body, big]  # unstuffed by the relay
    assert all(r.tls for r in sink.state.received)


def test_ehlo_name_is_a_plain_host_name(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    _send(_relay(sink, local_hostname="mta1.clinic.example"), ["ok@sink.test"])
    assert set(sink.state.ehlo_names) == {"mta1.clinic.example"}


def test_an_address_that_would_inject_a_command_fails_alone(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    bad, good = _send(_relay(sink), ["x@sink.test>\r\nRCPT TO:<ok@sink.test", "ok@sink.test"])
    assert (bad.outcome.status, bad.outcome.reason, bad.outcome.bounce) == (
        "failed",
        "invalid_address",
        None,
    )
    assert good.outcome.status == "sent"
    assert len(sink.state.received) == 1


def _send_batch(config: RelayConfig, rcpts: list[str]) -> list[Any]:
    async def go() -> list[Any]:
        transport = SmtpTransport(config)
        try:
            return await transport.send_batch(
                [
                    Envelope("bounce@clinic.example", r, MESSAGE % str(i).encode())
                    for i, r in enumerate(rcpts)
                ]
            )
        finally:
            await transport.close()

    return asyncio.run(go())


# A batch through every fault the sink can inject, with good messages on either side of
# each: a fault must settle its own message and no other.
_BATCH = [
    ("ok.0@sink.test", "sent", None),
    ("rcpt-550@sink.test", "failed", 550),
    ("ok.1@sink.test", "sent", None),
    ("data-451@sink.test", "deferred", 451),
    ("ok.2@sink.test", "sent", None),
    ("drop@sink.test", "unknown", None),
    ("ok.3@sink.test", "sent", None),
    ("mail-421@sink.test", "deferred", 421),
    ("ok.4@sink.test", "sent", None),
    ("data-421@sink.test", "deferred", 421),
    ("ok.5@sink.test", "sent", None),
    ("data-552@sink.test", "failed", 552),
    ("rcpt-450@sink.test", "deferred", 450),
    ("ok.6@sink.test", "sent", None),
]


@pytest.mark.parametrize("sessions", [1, 3])
def test_a_batch_settles_each_fault_on_its_own_message(smtp_sink_factory, sessions) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    rcpts = [r for r, _, _ in _BATCH]
    attempts = _send_batch(_relay(sink, pool_size=sessions), rcpts)
    assert [(a.outcome.status, a.outcome.code) for a in attempts] == [
        (status, code if code is not None else a.outcome.code)
        for (_, status, code), a in zip(_BATCH, attempts, strict=True)
    ]
    assert attempts[5].outcome.reason == "lost_after_data"
    assert all(a.tls_version in ("TLSv1.2", "TLSv1.3") for a in attempts if a.outcome.code)
    # Every message the sink took (the dropped one too: it stored the body before it hung
    # up) arrived once: a message handed to another session after a break was never
    # sent twice.
    expected = [f"<{i}@clinic.example>" for i, (_, s, _) in enumerate(_BATCH) if s == "sent"]
    expected.append("<5@clinic.example>")
    assert sorted(sink.state.message_ids()) == sorted(expected)
    assert all(r.tls for r in sink.state.received)


def test_a_batch_reuses_connections_up_to_the_cap(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    attempts = _send_batch(
        _relay(sink, pool_size=1, max_messages_per_connection=3), ["ok@sink.test"] * 7
    )
    assert [a.outcome.status for a in attempts] == ["sent"] * 7
    assert sorted(sink.state.message_ids()) == sorted(f"<{i}@clinic.example>" for i in range(7))
    assert sink.state.sessions == 3  # 3 + 3 + 1


def test_a_batch_without_tls_sends_no_plaintext_byte(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory("none")
    attempts = _send_batch(_relay(sink, pool_size=2), ["ok@sink.test"] * 4)
    assert [(a.outcome.status, a.outcome.reason) for a in attempts] == [
        ("deferred", "tls_unavailable")
    ] * 4
    assert sink.state.mail_commands == []


def test_a_batch_meets_a_hang_with_a_timeout_and_goes_on(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    attempts = _send_batch(
        _relay(sink, pool_size=1, timeout=0.5),
        ["ok.0@sink.test", "hang@sink.test", "ok.1@sink.test"],
    )
    assert [(a.outcome.status, a.outcome.reason) for a in attempts] == [
        ("sent", attempts[0].outcome.reason),
        ("unknown", "timeout_after_data"),
        ("sent", attempts[2].outcome.reason),
    ]
    # The message behind the hung one went out on a new connection.
    assert sink.state.sessions == 2


def test_a_batch_fails_an_address_that_would_inject_a_command_alone(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    attempts = _send_batch(
        _relay(sink, pool_size=1),
        ["ok.0@sink.test", "x@sink.test>\r\nRCPT TO:<evil@sink.test", "ok.1@sink.test"],
    )
    assert [a.outcome.status for a in attempts] == ["sent", "failed", "sent"]
    assert attempts[1].outcome.reason == "invalid_address"
    assert sorted(sink.state.message_ids()) == ["<0@clinic.example>", "<2@clinic.example>"]


def test_a_batch_not_across_messages_settles_the_same(smtp_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink_factory()
    rcpts = [r for r, _, _ in _BATCH]
    attempts = _send_batch(_relay(sink, pool_size=2, pipeline_messages=False), rcpts)
    assert [a.outcome.status for a in attempts] == [status for _, status, _ in _BATCH]
    expected = [f"<{i}@clinic.example>" for i, (_, s, _) in enumerate(_BATCH) if s == "sent"]
    assert sorted(sink.state.message_ids()) == sorted([*expected, "<5@clinic.example>"])


def test_the_setting_reaches_the_relay_transport(workspace) -> None:  # type: ignore[no-untyped-def]
    from carepost.delivery.factory import transport_for
    from carepost.workspace import Workspace

    for transport_name in ("smtp", "capture"):
        settings = workspace.settings.model_copy(
            update={
                "transport": transport_name,
                "smtp_host": "relay.clinic.example",
                "smtp_pipeline_messages": False,
            }
        )
        transport = transport_for(Workspace(settings))
        assert isinstance(transport, SmtpTransport)
        assert transport.config.pipeline_messages is False
