"""Idempotency-Key with Stripe's semantics, over real HTTPS and on the helper itself:
replay, conflict, release on failure, in-flight refusal from a second thread, the action
and its stored answer in one transaction, and purge after 24 hours on a frozen clock; on
both engines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api_support import ApiSite, serve
from carepost.api import idempotency
from carepost.api.models import ApiIdempotency
from carepost.api.problems import Problem
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.workspace import Workspace
from delivery_support import add_contacts
from staff_support import Clock

POLICY = idempotency.Policy(keep=timedelta(hours=24), lease=timedelta(seconds=60))


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def _events(ws: Workspace) -> int:
    with transaction(ws.engine) as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "journeys.event_received")
            )
            or 0
        )


def test_same_key_same_body_replays_and_acts_once(site: ApiSite) -> None:
    (contact,) = add_contacts(site.ws, ["a@patients.example"])
    body = {"name": "lab_result", "contact_id": contact, "props": {"kind": "a1c"}}
    with site.client(site.key("owner")) as c:
        first = c.post("/events", json=body, headers={"Idempotency-Key": "k-1"})
        # Same JSON in another key order is the same request.
        again = c.post(
            "/events",
            content=b'{"props": {"kind": "a1c"}, "contact_id": "%s", "name": "lab_result"}'
            % contact.encode(),
            headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"},
        )
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _events(site.ws) == 1


def test_same_key_different_body_is_a_conflict(site: ApiSite) -> None:
    a, b = add_contacts(site.ws, ["a@patients.example", "b@patients.example"])
    with site.client(site.key("owner")) as c:
        c.post("/events", json={"name": "x", "contact_id": a}, headers={"Idempotency-Key": "k"})
        other = c.post(
            "/events", json={"name": "x", "contact_id": b}, headers={"Idempotency-Key": "k"}
        )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/idempotency-conflict")
    assert _events(site.ws) == 1


def test_keys_are_per_caller_and_no_key_acts_every_time(site: ApiSite) -> None:
    (contact,) = add_contacts(site.ws, ["a@patients.example"])
    body = {"name": "x", "contact_id": contact}
    for token in (site.key("owner"), site.key("owner")):
        with site.client(token) as c:
            got = c.post("/events", json=body, headers={"Idempotency-Key": "shared"})
            assert "Idempotent-Replayed" not in got.headers
            c.post("/events", json=body)
    assert _events(site.ws) == 4


def test_a_failed_request_releases_its_key(site: ApiSite) -> None:
    (contact,) = add_contacts(site.ws, ["a@patients.example"])
    missing = "0" * 32
    with site.client(site.key("owner")) as c:
        bad = c.post(
            "/events", json={"name": "x", "contact_id": missing}, headers={"Idempotency-Key": "r"}
        )
        good = c.post(
            "/events", json={"name": "x", "contact_id": contact}, headers={"Idempotency-Key": "r"}
        )
        bad_key = c.post(
            "/events", json={"name": "x", "contact_id": contact}, headers={"Idempotency-Key": "a b"}
        )
    assert bad.status_code == 404, bad.text
    assert good.status_code == 202, good.text
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["pointer"] == "/header/Idempotency-Key"


def _run(ws: Workspace, clock: Clock, key: str, action: Any, body: bytes = b"{}") -> Any:
    return idempotency.execute(
        ws,
        owner="apikey:test",
        key=key,
        method="POST",
        path="/things",
        fingerprint=idempotency.request_fingerprint("POST", "/things", body),
        now=clock(),
        policy=POLICY,
        action=action,
        status=201,
    )


def test_a_second_request_while_the_first_runs_gets_409(workspace: Workspace) -> None:
    clock = Clock()
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def slow(session: Session) -> dict[str, str]:
        started.set()
        assert release.wait(20)
        return {"id": "one"}

    def first() -> None:
        outcome["first"] = _run(workspace, clock, "busy", slow)

    def second() -> None:
        try:
            _run(workspace, clock, "busy", lambda s: {"id": "two"})
        except Problem as exc:
            outcome["second"] = exc

    t1 = threading.Thread(target=first)
    t1.start()
    assert started.wait(20)
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(20)
    release.set()
    t1.join(20)
    assert isinstance(outcome["second"], Problem)
    assert outcome["second"].status == 409
    assert outcome["second"].kind == "idempotency-in-flight"
    assert outcome["first"].status_code == 201
    replay = _run(workspace, clock, "busy", lambda s: {"id": "three"})
    assert replay.body == b'{"id":"one"}'
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_the_action_and_its_answer_commit_together(workspace: Workspace) -> None:
    clock = Clock()

    def breaks(session: Session) -> dict[str, str]:
        session.add(
            ApiIdempotency(
                owner="apikey:other",
                key="written-by-the-action",
                method="POST",
                path="/x",
                request_sha256="0" * 64,
                created_at=clock(),
            )
        )
        raise RuntimeError("the action fails after writing")

    with pytest.raises(RuntimeError):
        _run(workspace, clock, "k", breaks)
    with transaction(workspace.engine) as s:
        assert s.scalars(select(ApiIdempotency.key)).all() == []  # neither the write nor the key


def test_a_crashed_reservation_is_taken_over_after_the_lease(workspace: Workspace) -> None:
    clock = Clock()
    with transaction(workspace.engine) as s:  # what a process killed mid-request leaves
        s.add(
            ApiIdempotency(
                owner="apikey:test",
                key="crashed",
                method="POST",
                path="/things",
                request_sha256=idempotency.request_fingerprint("POST", "/things", b"{}"),
                created_at=clock(),
            )
        )
    with pytest.raises(Problem) as refused:
        _run(workspace, clock, "crashed", lambda s: {"id": "x"})
    assert refused.value.status == 409
    clock.advance(seconds=61)
    assert _run(workspace, clock, "crashed", lambda s: {"id": "x"}).status_code == 201


def test_keys_are_kept_24_hours_then_purged(workspace: Workspace) -> None:
    clock = Clock()
    _run(workspace, clock, "old", lambda s: {"n": 1})
    clock.advance(hours=23, minutes=59)
    _run(workspace, clock, "young", lambda s: {"n": 2})
    with transaction(workspace.engine) as s:
        assert idempotency.purge(s, now=clock(), keep=timedelta(hours=24)) == 0
    assert _run(workspace, clock, "old", lambda s: {"n": 3}).body == b'{"n":1}'
    clock.advance(minutes=2)
    with transaction(workspace.engine) as s:
        assert idempotency.purge(s, now=clock(), keep=timedelta(hours=24)) == 1
        assert s.scalars(select(ApiIdempotency.key)).all() == ["young"]
        with pytest.raises(ValueError, match="24 hours"):
            idempotency.purge(s, now=clock(), keep=timedelta(hours=23))


def test_purge_command_keeps_young_keys(workspace: Workspace, carepost: Any) -> None:
    old, young = Clock(), Clock()
    old.now = datetime.now(UTC) - timedelta(hours=25)
    young.now = datetime.now(UTC) - timedelta(hours=1)
    _run(workspace, old, "old", lambda s: {"n": 1})
    _run(workspace, young, "young", lambda s: {"n": 2})
    refused = carepost("api", "purge-idempotency", "--hours", "12", check=False)
    assert refused.returncode == 2
    done = carepost("api", "purge-idempotency", "--json")
    assert orjson.loads(done.stdout) == {"purged": 1}
    with transaction(workspace.engine) as s:
        assert s.scalars(select(ApiIdempotency.key)).all() == ["young"]
