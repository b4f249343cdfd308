"""Idempotency-Key on the resource routes, over real HTTPS on both engines: the document
declares the key on every POST that writes (and the 409 it may answer), and a retry of
each one with the same key replays the first answer without acting twice: one template
version, one campaign, one start (not a 409 "already running"), one journey version,
one enrolment, one member change, one pause."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api_resources_support import HTML, SENDER, SYSTEM, is_problem, people
from api_support import ApiSite, serve
from carepost.campaigns.models import Campaign
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.workspace import Workspace
from journey_support import EXAMPLES, setup

# POSTs that only read: counting a rule, checking a template, previewing members.
READS = {"/segments/count", "/templates/check", "/segments/{name}/preview"}


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def test_every_post_that_writes_declares_the_key(site: ApiSite) -> None:
    with site.client() as c:
        doc = c.get("/openapi.json").json()
    posts = {path: ops["post"] for path, ops in doc["paths"].items() if "post" in ops}
    assert set(posts) >= READS
    for path, op in posts.items():
        headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        if path in READS:
            assert "Idempotency-Key" not in headers, path
            continue
        assert "Idempotency-Key" in headers, path
        assert "409" in op["responses"], path
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "x-permissions" in op:
                assert "403" in op["responses"], (method, path)


def twice(c: httpx.Client, path: str, key: str, body: Any = None) -> dict[str, Any]:
    """POST with `key`, then the same again: the second is the first answer replayed."""
    first = c.post(path, json=body, headers={"Idempotency-Key": key})
    assert first.status_code < 300, first.text
    second = c.post(path, json=body, headers={"Idempotency-Key": key})
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    got: dict[str, Any] = first.json()
    return got


def _count(ws: Workspace, model: Any, *where: Any) -> int:
    with transaction(ws.engine) as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_templates_campaigns_and_starts_act_once(site: ApiSite) -> None:
    setup(site.ws, SYSTEM, 0)
    people(site.ws, ["MA", "MA", "NH"])
    flu = {
        "name": "flu",
        "message_class": "marketing",
        "subject": "Flu shots are here",
        "html": HTML,
        "phi_fields": ["first_name"],
    }
    with site.client(site.key("marketer")) as c:
        assert twice(c, "/templates", "t-1", flu)["version"] == 1
        assert c.get("/templates/flu").json()["latest"]["version"] == 1
        conflict = c.post(
            "/templates", json={**flu, "subject": "Other"}, headers={"Idempotency-Key": "t-1"}
        )
        assert is_problem(conflict, 422)["type"].endswith("/idempotency-conflict")  # type: ignore[union-attr]

        assert c.put("/segments/ma", json={"rule": 'state == "MA"'}).status_code == 200
        draft = {
            "name": "Flu",
            "segment": "ma",
            "template": "flu",
            "sender": SENDER,
            "topic": "flu",
        }
        cid = twice(c, "/campaigns", "c-1", draft)["id"]
        assert _count(site.ws, Campaign, Campaign.kind == "campaign") == 1

        started = twice(c, f"/campaigns/{cid}/start", "s-1")
        assert (started["status"], started["recipients"]) == ("running", 3)  # and the canary, in MA
        assert _count(site.ws, OutboxMessage, OutboxMessage.campaign_id == cid) == 3
        # The same key on another campaign's start is another request.
        other = c.post(f"/campaigns/{cid}x/start", headers={"Idempotency-Key": "s-1"})
        assert is_problem(other, 422)["type"].endswith("/idempotency-conflict")  # type: ignore[union-attr]

        assert twice(c, f"/campaigns/{cid}/pause", "p-1")["status"] == "paused"
        # Without the key, pausing again is the conflict it always was.
        assert is_problem(c.post(f"/campaigns/{cid}/pause"), 409)
        assert twice(c, f"/campaigns/{cid}/resume", "r-1")["status"] == "running"


def test_journeys_enrolments_and_members_act_once(site: ApiSite) -> None:
    setup(site.ws, SYSTEM, 0)
    ids, _ = people(site.ws, ["MA", "NH"])
    welcome = (EXAMPLES / "welcome-series.yaml").read_text()
    with site.client(site.key("marketer")) as c:
        published = twice(c, "/journeys", "j-1", {"definition": welcome, "sender": SENDER})
        assert (published["name"], published["version"]) == ("welcome-series", 1)
        assert [v["version"] for v in c.get("/journeys/welcome-series").json()["versions"]] == [1]

        enrolled = twice(c, "/journeys/welcome-series/enrolments", "e-1", {"contact_ids": ids})
        # Replayed, not "already_enrolled" for both.
        assert enrolled == {"enrolled": 2, "refused": {}}
        assert twice(c, "/journeys/welcome-series/pause", "jp-1")["status"] == "paused"

        assert c.put("/segments/picked", json={"members": [ids[0]]}).status_code == 200
        changed = twice(c, "/segments/picked/members", "m-1", {"add": [ids[1]]})
        assert changed == {"added": 1, "removed": 0, "members": 2}
