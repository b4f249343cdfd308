"""The campaign routes over real HTTPS on both engines: create, list in pages, start
(the segment frozen over the API's snapshot, the outbox queued), status by outbox
state, pause and resume with conflicts as 409, the report as the CLI's JSON, each
route's refusal for a role without its permission, bad input, and no PHI anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api_resources_support import SENDER, SYSTEM, is_problem, no_phi, people, sender_and_template
from api_support import ApiSite, serve
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.reports import service as reports
from carepost.workspace import Workspace


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def draft(name: str = "Flu 2026", **changes: object) -> dict[str, object]:
    return {
        "name": name,
        "segment": "ma",
        "template": "flu",
        "sender": SENDER,
        "topic": "flu",
        **changes,
    }


def test_create_start_pause_resume_status_and_report(site: ApiSite) -> None:
    people(site.ws, ["MA", "NH", "MA"])
    sender_and_template(site.ws)
    with site.client(site.key("marketer")) as c:
        assert c.put("/segments/ma", json={"rule": 'state == "MA"'}).status_code == 200
        created = c.post("/campaigns", json=draft(message_class="marketing", rate_per_minute=60))
        assert created.status_code == 201, created.text
        campaign = created.json()
        assert campaign["status"] == "draft"
        assert campaign["message_class"] == "marketing"
        cid = campaign["id"]

        started = c.post(f"/campaigns/{cid}/start")
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "running"
        assert started.json()["recipients"] == 3
        assert started.json()["membership_ref"]
        again = is_problem(c.post(f"/campaigns/{cid}/start"), 409)
        assert again["detail"] == "cannot start a campaign that is running"

        status = c.get(f"/campaigns/{cid}")
        assert status.status_code == 200, status.text
        assert status.json()["states"] == {"queued": 3}
        no_phi(status)

        assert c.post(f"/campaigns/{cid}/pause").json()["status"] == "paused"
        assert is_problem(c.post(f"/campaigns/{cid}/pause"), 409)["type"].endswith("/conflict")  # type: ignore[union-attr]
        assert c.post(f"/campaigns/{cid}/resume").json()["status"] == "running"

        listed = c.get("/campaigns")
        assert [x["id"] for x in listed.json()["items"]] == [cid]
        no_phi(listed)

        answer = c.get(f"/campaigns/{cid}/report")
        assert answer.status_code == 200, answer.text
        no_phi(answer)
        me = c.get("/me").json()
    got = answer.json()
    # The same document the CLI prints (the site's clock is frozen: same generated_at).
    cli = reports.campaign_report(
        site.ws.engine, site.ws.keyring, cid, actor=SYSTEM, clock=site.clock
    )
    assert got == _json(cli.as_dict())
    assert got["delivery"]["recipients"] == 3
    assert got["splits"]["clauses"]["available"] is True
    with transaction(site.ws.engine) as s:
        actors = dict(
            s.execute(
                select(AuditEntry.action, AuditEntry.actor).where(
                    AuditEntry.action.in_(
                        [
                            "campaigns.created",
                            "campaigns.started",
                            "campaigns.paused",
                            "segments.membership_frozen",
                            reports.VIEWED,
                        ]
                    )
                )
            ).all()
        )
    assert set(actors.values()) == {f"apikey:{me['api_key_id']}"}
    assert len(actors) == 5


def _json(value: object) -> object:
    import orjson

    return orjson.loads(orjson.dumps(value))


def test_pages_of_campaigns_newest_first(site: ApiSite) -> None:
    sender_and_template(site.ws)
    with site.client(site.key("marketer")) as c:
        c.put("/segments/ma", json={"rule": 'state == "MA"'})
        ids = [c.post("/campaigns", json=draft(f"c{i}")).json()["id"] for i in range(3)]
        first = c.get("/campaigns", params={"limit": 2}).json()
        rest = c.get("/campaigns", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [x["id"] for x in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None


def test_bad_input_is_named(site: ApiSite) -> None:
    sender_and_template(site.ws)
    with site.client(site.key("marketer")) as c:
        c.put("/segments/ma", json={"rule": 'state == "MA"'})
        no_template = is_problem(c.post("/campaigns", json=draft(template="nope")), 422)
        assert no_template["detail"] == "no template named 'nope'"
        no_segment = is_problem(c.post("/campaigns", json=draft(segment="nope")), 422)
        assert str(no_segment["detail"]).startswith("no segment named 'nope'")
        wrong_class = is_problem(c.post("/campaigns", json=draft(message_class="treatment")), 422)
        assert wrong_class["detail"] == "template 'flu' is of class marketing"
        no_sender = is_problem(c.post("/campaigns", json=draft(sender="nobody")), 422)
        assert no_sender["detail"] == "no such sender profile"
        fields = is_problem(
            c.post(
                "/campaigns",
                json=draft(schedule_at="2027-01-01T09:00:00", rate_per_minute=0, topic="Bad Topic"),
            ),
            422,
        )
        assert {e["pointer"] for e in fields["errors"]} == {  # type: ignore[union-attr]
            "/body/schedule_at",
            "/body/rate_per_minute",
        }
        bad_topic = is_problem(c.post("/campaigns", json=draft(topic="Bad Topic")), 422)
        assert "topic" in str(bad_topic["detail"])
        for path in ("/campaigns/nope", "/campaigns/nope/report"):
            assert is_problem(c.get(path), 404)["detail"] == "no campaign nope"
        assert is_problem(c.post("/campaigns/nope/start"), 404)["type"].endswith("/not-found")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("method", "path", "role", "permission"),
    [
        ("POST", "/campaigns", "analyst", "campaigns:write"),
        ("GET", "/campaigns", "analyst", "campaigns:read"),
        ("GET", "/campaigns/x", "analyst", "campaigns:read"),
        ("POST", "/campaigns/x/start", "analyst", "campaigns:write"),
        ("POST", "/campaigns/x/pause", "analyst", "campaigns:write"),
        ("POST", "/campaigns/x/resume", "analyst", "campaigns:write"),
        ("GET", "/campaigns/x/report", "care_team", "reports:read"),
    ],
)
def test_each_route_refuses_a_role_without_its_permission(
    site: ApiSite, method: str, path: str, role: str, permission: str
) -> None:
    with site.client(site.key(role)) as c:
        answer = c.request(method, path, json=draft() if method == "POST" else None)
    assert is_problem(answer, 403)["permission"] == permission
