"""Direct delivery under the real worker, on both engines: the delivery method lands in
the evidence, a warm-up cap holds messages back until the next UTC day without spending
their retry budget, and the warm-up count lives in the database (shared, restart-proof)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from random import Random

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.config import DirectDomainLimits, Settings
from carepost.db import transaction
from carepost.delivery.direct import DirectConfig, DirectTransport
from carepost.delivery.factory import transport_for
from carepost.delivery.models import DeliveryAttempt, OutboxMessage
from carepost.delivery.throttle import ThrottleConfig, next_day
from carepost.delivery.warmup import DbLedger
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.workspace import Workspace
from delivery_support import campaign_scenario
from tls_servers import TlsMatrix


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_worker_sends_direct_and_warmup_defers_to_tomorrow(
    workspace: Workspace, actor: Actor, tls_servers: TlsMatrix
) -> None:
    emails = [f"p{i}@good.test" for i in range(3)]
    sc = campaign_scenario(workspace, actor, emails, range(3))
    clock = Clock()
    ledger = DbLedger(workspace.engine)
    throttle = ThrottleConfig(warmup_schedule=(2, 100), warmup_start=clock().date())
    direct = DirectTransport(
        tls_servers.resolver,
        None,
        DirectConfig(verify_context=tls_servers.client_context(), timeout=5.0, throttle=throttle),
        ledger=ledger,
        clock=clock,
    )
    worker = Worker(
        workspace.engine,
        workspace.keyring,
        direct,
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=10),
        name="w1",
        clock=clock,
        rng=Random(3),
    )
    report = worker.run_batch()
    assert report.results == {"sent": 2, "deferred": 1}
    with transaction(workspace.engine) as s:
        rows = s.execute(
            select(OutboxMessage).where(OutboxMessage.campaign_id == sc.campaign_id)
        ).scalars()
        held = [r for r in rows if r.state == "deferred"]
        methods = s.execute(select(DeliveryAttempt.method, DeliveryAttempt.reason)).all()
    [row] = held
    assert (row.last_reason, row.held_back, row.attempts) == ("warmup_cap", 1, 1)
    assert row.next_attempt_at == next_day(clock())
    assert sorted(methods) == [
        ("tls_direct", "accepted"),
        ("tls_direct", "accepted"),
        ("tls_direct", "warmup_cap"),
    ]
    assert ledger.used("default", clock().date()) == 2
    assert len(tls_servers.servers["good"].state.received) == 2

    clock.now = next_day(clock()) + timedelta(minutes=1)
    report = worker.run_batch()
    assert report.results == {"sent": 1}
    with transaction(workspace.engine) as s:
        again = s.get(OutboxMessage, row.id)
        assert again is not None
        assert (again.state, again.attempts, again.held_back) == ("sent", 2, 1)


def test_db_ledger_is_shared_and_survives_a_restart(workspace: Workspace) -> None:
    day = date(2026, 11, 24)
    first = DbLedger(workspace.engine)
    assert first.reserve_now("ip-a", day, 20, 50) == 20
    restarted = DbLedger(workspace.engine)  # a new process: the count is still there
    assert restarted.reserve_now("ip-a", day, 20, 50) == 20
    assert restarted.reserve_now("ip-a", day, 20, 50) == 10
    assert restarted.reserve_now("ip-a", day, 20, 50) == 0
    assert first.reserve_now("ip-b", day, 5, 50) == 5  # per sending IP
    assert first.reserve_now("ip-a", day + timedelta(days=1), 5, 100) == 5  # per day
    assert first.used("ip-a", day) == 50


def test_db_ledger_concurrent_reservations_never_exceed_the_cap(workspace: Workspace) -> None:
    day = date(2026, 11, 25)
    granted: list[int] = []
    lock = threading.Lock()

    def reserve() -> None:
        ledger = DbLedger(workspace.engine)
        for _ in range(10):
            got = ledger.reserve_now("ip-a", day, 7, 100)
            with lock:
                granted.append(got)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100
    assert DbLedger(workspace.engine).used("ip-a", day) == 100


def test_settings_build_the_direct_transport(workspace: Workspace) -> None:
    settings = workspace.settings.model_copy(
        update={
            "transport": "direct",
            "direct_ehlo_name": "mail.clinic.example",
            "direct_max_connections": 3,
            "direct_domain_limits": {
                "Example.ORG": DirectDomainLimits(max_connections=1, per_minute=6)
            },
            "direct_warmup_start": date(2026, 11, 24),
            "direct_warmup_schedule": [10, 20],
            "direct_tls_overrides": {"Partner.example": "required"},
        }
    )
    ws = Workspace(settings)
    ws.__dict__["engine"] = workspace.engine  # the same database, opened once
    transport = transport_for(ws)
    assert isinstance(transport, DirectTransport)
    c = transport.config
    assert c.ehlo_name == "mail.clinic.example"
    assert c.tls_overrides == {"partner.example": "required"}
    assert c.throttle.limits("example.org").per_minute == 6
    assert c.throttle.limits("gmail.com").max_connections == 10  # built in
    assert c.throttle.limits("clinic.example").max_connections == 3
    assert (c.throttle.warmup_start, tuple(c.throttle.warmup_schedule)) == (
        date(2026, 11, 24),
        (10, 20),
    )


def test_bad_direct_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREPOST_DIRECT_TLS_OVERRIDES", '{"partner.example": "none"}')
    with pytest.raises(ValidationError, match="direct_tls_overrides"):
        Settings()
    monkeypatch.setenv("CAREPOST_DIRECT_TLS_OVERRIDES", '{"partner.example": "required"}')
    monkeypatch.setenv("CAREPOST_DIRECT_DOMAIN_LIMITS", '{"gmail.com": {"per_minute": 0}}')
    with pytest.raises(ValidationError, match="direct_domain_limits"):
        Settings()
