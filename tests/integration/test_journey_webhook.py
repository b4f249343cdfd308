"""Webhook steps against a real HTTP server on loopback (allowed by configuration, as
only a test does): signed requests of ids, the idempotency key kept across retries,
backoff on the engine's clock, on_failure after the last attempt, redirects not
followed, loopback refused without the allow-list, no call without a secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.journeys import service
from carepost.journeys.engine import JourneyEngine
from carepost.journeys.models import JourneyEnrolment, JourneyMessage, JourneyTransition
from carepost.journeys.webhook import WebhookConfig, parse_networks
from carepost.workspace import Workspace
from journey_support import SENDER, StepClock, setup

SECRET = b"test-webhook-secret"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.failures: Counter[str] = Counter()  # path -> 500s still to answer


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, dict(self.headers), body))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok")
            elif self.path == "/down" or state.failures[self.path] > 0:
                state.failures[self.path] -= 1
                self.send_response(503)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _hook(name: str, url: str) -> bytes:
    return f"""
name: {name}
trigger: {{manual: {{}}}}
steps:
  - id: call
    webhook: {{url: "{url}", timeout: 2s, on_failure: failed}}
  - id: notify
    send: {{template: lab-result-ready, class: treatment}}
    next: done
  - id: failed
    exit: {{}}
  - id: done
    exit: {{}}
""".encode()


def _start(
    ws: Workspace, actor: Actor, name: str, url: str, ids: list[str], clock: StepClock
) -> None:
    with transaction(ws.engine) as session:
        service.do_publish_journey(
            session, _hook(name, url), sender_id=SENDER, actor=actor, clock=clock
        )
        service.do_enrol(session, name, ids, actor=actor, clock=clock)


def _engine(ws: Workspace, clock: StepClock, **kw: Any) -> JourneyEngine:
    config = WebhookConfig(
        **{"secret": SECRET, "allow": parse_networks("127.0.0.0/8, ::1/128"), **kw}
    )
    return JourneyEngine(ws.engine, clock, ring=ws.keyring, webhooks=config)


def _path(ws: Workspace, name: str) -> dict[str, list[tuple[str, str, str]]]:
    with transaction(ws.engine) as session:
        out: dict[str, list[tuple[str, str, str]]] = {}
        for contact, step, outcome, detail in session.execute(
            select(
                JourneyEnrolment.contact_id,
                JourneyTransition.step,
                JourneyTransition.outcome,
                JourneyTransition.detail,
            )
            .join(JourneyEnrolment, JourneyEnrolment.id == JourneyTransition.enrolment_id)
            .where(JourneyEnrolment.journey_name == name)
            .order_by(JourneyTransition.seq)
        ):
            out.setdefault(contact, []).append((step, outcome, detail))
        return out


def test_signed_call_of_ids_then_on(
    workspace: Workspace, actor: Actor, receiver: tuple[Receiver, int]
) -> None:
    state, port = receiver
    clock = StepClock()
    ids = setup(workspace, actor, 2)
    _start(workspace, actor, "hook", f"http://localhost:{port}/ok", ids, clock)
    report = _engine(workspace, clock).run_until_idle()
    assert report.calls == 2
    assert report.sends == 2
    assert len(state.requests) == 2
    with transaction(workspace.engine) as session:
        enrolments = dict(
            session.execute(select(JourneyEnrolment.contact_id, JourneyEnrolment.id)).all()
        )
        sent = set(session.scalars(select(JourneyMessage.step)))
    assert sent == {"notify"}
    for path, headers, body in state.requests:
        assert path == "/ok"
        stamp = headers["X-Carepost-Timestamp"]
        mac = hmac.new(SECRET, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Carepost-Signature"] == f"v1={mac}"
        assert headers["Host"] == f"localhost:{port}"
        ids_sent = json.loads(body)
        assert set(ids_sent) == {"contact", "enrolment", "journey", "step", "version", "visit"}
        assert ids_sent["enrolment"] == enrolments[ids_sent["contact"]]
        assert headers["Idempotency-Key"] == f"{ids_sent['enrolment']}:1"
        assert b"@" not in body
        assert b"Pat" not in body
    for steps in _path(workspace, "hook").values():
        assert steps[1:] == [
            ("call", "calling", ""),
            ("call", "called", "http 200"),
            ("notify", "sent", ""),
            ("done", "exited", "exit_step"),
        ]


def test_retries_with_backoff_then_on_failure(
    workspace: Workspace, actor: Actor, receiver: tuple[Receiver, int]
) -> None:
    state, port = receiver
    clock = StepClock()
    ids = setup(workspace, actor, 2)
    state.failures["/flaky"] = 2
    _start(workspace, actor, "flaky", f"http://127.0.0.1:{port}/flaky", ids[:1], clock)
    _start(workspace, actor, "down", f"http://127.0.0.1:{port}/down", ids[1:], clock)
    engine = _engine(workspace, clock, max_attempts=3, backoff=timedelta(seconds=30))
    engine.run_until_idle()
    assert len(state.requests) == 2  # one attempt each; the retries wait for the clock
    clock.advance(seconds=30)
    engine.run_until_idle()
    clock.advance(seconds=59)
    engine.run_until_idle()
    assert len(state.requests) == 4  # the third attempts are due after 60 s
    clock.advance(seconds=1)
    engine.run_until_idle()
    assert len(state.requests) == 6
    keys = Counter((p, h["Idempotency-Key"]) for p, h, _ in state.requests)
    assert sorted(keys.values()) == [3, 3]  # one key per (enrolment, visit), every retry
    flaky = _path(workspace, "flaky")[ids[0]]
    assert [o for _, o, _ in flaky] == [
        "enrolled", "calling", "call_failed", "call_failed", "called", "sent", "exited",
    ]  # fmt: skip
    assert flaky[2][2] == "attempt 1: http 503; will retry"
    down = _path(workspace, "down")[ids[1]]
    assert down[-2:] == [
        ("call", "call_failed", "attempt 3: http 503"),
        ("failed", "exited", "exit_step"),
    ]


def test_refusals_are_final(
    workspace: Workspace, actor: Actor, receiver: tuple[Receiver, int]
) -> None:
    state, port = receiver
    clock = StepClock()
    ids = setup(workspace, actor, 3)
    _start(workspace, actor, "loop", f"http://127.0.0.1:{port}/ok", ids[:1], clock)
    _start(workspace, actor, "moved", f"http://127.0.0.1:{port}/redirect", ids[1:2], clock)
    _start(workspace, actor, "secretless", f"http://127.0.0.1:{port}/ok", ids[2:], clock)
    # Without the allow-list loopback is refused before any connection. (A paused
    # journey's enrolments do not move, calls included.)
    strict = WebhookConfig(secret=SECRET)
    with transaction(workspace.engine) as session:
        service.do_set_status(session, "moved", "paused", actor=actor)
        service.do_set_status(session, "secretless", "paused", actor=actor)
    JourneyEngine(workspace.engine, clock, ring=workspace.keyring, webhooks=strict).run_until_idle()
    assert _path(workspace, "loop")[ids[0]][-2:] == [
        ("call", "call_failed", "attempt 1: address refused: loopback"),
        ("failed", "exited", "exit_step"),
    ]
    assert state.requests == []
    with transaction(workspace.engine) as session:
        service.do_set_status(session, "moved", "active", actor=actor)
    _engine(workspace, clock).run_until_idle()
    assert [p for p, _, _ in state.requests] == ["/redirect"]  # not followed to /ok
    assert _path(workspace, "moved")[ids[1]][-2] == ("call", "call_failed", "attempt 1: http 302")
    with transaction(workspace.engine) as session:
        service.do_set_status(session, "secretless", "active", actor=actor)
    _engine(workspace, clock, secret=b"").run_until_idle()
    assert len(state.requests) == 1
    assert _path(workspace, "secretless")[ids[2]][-2] == (
        "call",
        "call_failed",
        "attempt 1: no signing secret configured",
    )


def test_a_crashed_callers_lease_runs_out_then_the_call_is_made_again(
    workspace: Workspace, actor: Actor, receiver: tuple[Receiver, int]
) -> None:
    state, port = receiver
    clock = StepClock()
    ids = setup(workspace, actor, 1)
    _start(workspace, actor, "hook", f"http://127.0.0.1:{port}/ok", ids, clock)
    engine = _engine(workspace, clock)
    engine.run_until_idle()
    assert len(state.requests) == 1
    # As if another engine had claimed the same call and died after making it.
    t = JourneyEnrolment
    with transaction(workspace.engine) as session:
        row = session.scalars(select(t)).one()
        row.status, row.step, row.seq = "calling", "call", row.seq - 3
        row.wake_at, row.exit_reason, row.exit_step = clock.now, None, None
        row.visits, row.visited, row.sent = 1, '["call"]', "[]"
        row.lease_owner, row.lease_until = "dead-engine", clock.now + timedelta(seconds=40)
        session.execute(
            JourneyTransition.__table__.delete().where(JourneyTransition.seq >= row.seq)
        )
    engine.run_until_idle()
    assert len(state.requests) == 1  # the lease still holds
    clock.advance(seconds=41)
    engine.run_until_idle()
    assert len(state.requests) == 2
    keys = {h["Idempotency-Key"] for _, h, _ in state.requests}
    assert len(keys) == 1  # the receiver sees the same call twice and can deduplicate
    with transaction(workspace.engine) as session:
        assert list(session.scalars(select(JourneyMessage.step))) == ["notify"]  # once
    assert [o for _, o, _ in _path(workspace, "hook")[ids[0]]] == [
        "enrolled", "calling", "called", "sent", "exited",
    ]  # fmt: skip


@pytest.fixture
def tls_receiver(sink_ca: trustme.CA) -> Iterator[tuple[Receiver, int]]:
    """An HTTPS receiver on loopback with a certificate for hooks.example only."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sink_ca.issue_cert("hooks.example").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_https_goes_to_the_checked_address_with_the_name_for_tls(
    workspace: Workspace, actor: Actor, tls_receiver: tuple[Receiver, int], sink_ca: trustme.CA
) -> None:
    """The name is resolved once (here to loopback, allowed), the connection goes to that
    address, and TLS is verified against the name, not the address."""
    state, port = tls_receiver
    clock = StepClock()
    ids = setup(workspace, actor, 2)
    trust = ssl.create_default_context()
    sink_ca.configure_trust(trust)
    asked: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    _start(workspace, actor, "good", f"https://hooks.example:{port}/in", ids[:1], clock)
    _engine(workspace, clock, resolver=resolver, verify=trust).run_until_idle()
    assert asked == ["hooks.example"]
    assert [(p, h["Host"]) for p, h, _ in state.requests] == [("/in", f"hooks.example:{port}")]
    # A name the certificate does not hold fails verification, whatever the address.
    _start(workspace, actor, "wrong", f"https://other.example:{port}/in", ids[1:], clock)
    _engine(workspace, clock, resolver=resolver, verify=trust, max_attempts=1).run_until_idle()
    assert len(state.requests) == 1
    assert _path(workspace, "wrong")[ids[1]][-2] == (
        "call",
        "call_failed",
        "attempt 1: connection failed (ConnectError)",
    )
