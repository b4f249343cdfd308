"""The journey routes over real HTTPS on both engines: publish (YAML text or a JSON
object) and versions, list in pages, read one, pause and resume, manual enrolment with
the re-entry policy, the report as the CLI's JSON, definition problems naming the step
and field, each route's refusal for a role without its permission, and no PHI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from api_resources_support import SENDER, SYSTEM, is_problem, no_phi, people
from api_support import ApiSite, serve
from carepost.db import transaction
from carepost.journeys import report
from carepost.workspace import Workspace
from journey_support import EXAMPLES, setup


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


WELCOME = (EXAMPLES / "welcome-series.yaml").read_text()


def test_publish_read_pause_resume_enrol_and_report(site: ApiSite) -> None:
    setup(site.ws, SYSTEM, 0)
    ids, canary = people(site.ws, ["MA", "NH"])
    with site.client(site.key("marketer")) as c:
        first = c.post("/journeys", json={"definition": WELCOME, "sender": SENDER})
        assert first.status_code == 201, first.text
        assert first.json() == {"name": "welcome-series", "version": 1, "warnings": []}
        as_object = {"definition": yaml.safe_load(WELCOME), "sender": SENDER, "topic": "news"}
        assert c.post("/journeys", json=as_object).json()["version"] == 2
        survey = (EXAMPLES / "post-visit-survey.yaml").read_text()
        assert c.post("/journeys", json={"definition": survey, "sender": SENDER}).status_code == 201

        got = c.get("/journeys/welcome-series")
        assert got.status_code == 200, got.text
        body = got.json()
        assert [v["version"] for v in body["versions"]] == [2, 1]
        assert body["versions"][0]["topic"] == "news"
        assert body["definition"]["name"] == "welcome-series"
        assert (body["status"], body["trigger"]) == ("active", "event")

        page = c.get("/journeys", params={"limit": 1}).json()
        rest = c.get("/journeys", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        names = [j["name"] for j in page["items"] + rest["items"]]
        assert names == ["welcome-series", "post-visit-survey"]

        enrolled = c.post(
            "/journeys/welcome-series/enrolments", json={"contact_ids": [*ids, canary]}
        )
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json() == {"enrolled": 3, "refused": {}}
        again = c.post("/journeys/welcome-series/enrolments", json={"contact_ids": [ids[0]]})
        assert again.json() == {"enrolled": 0, "refused": {"already_enrolled": 1}}

        paused = c.post("/journeys/welcome-series/pause")
        assert paused.json() == {"name": "welcome-series", "status": "paused", "versions": 2}
        assert c.get("/journeys/welcome-series").json()["status"] == "paused"
        assert c.post("/journeys/welcome-series/resume").json()["status"] == "active"

        listed = c.get("/journeys/welcome-series")
        assert listed.json()["enrolments"] == {"active": 3, "waiting": 0, "exited": 0}
        answer = c.get("/journeys/welcome-series/report")
        assert answer.status_code == 200, answer.text
        for a in (got, listed, answer, enrolled):
            no_phi(a)
    with transaction(site.ws.engine) as s:
        assert answer.json() == report.journey_report(s, "welcome-series").as_dict()


def test_definition_problems_name_the_step_and_field(site: ApiSite) -> None:
    setup(site.ws, SYSTEM, 0)
    with site.client(site.key("marketer")) as c:
        bad_class = WELCOME.replace(
            "send: {template: welcome, class: marketing}",
            "send: {template: welcome, class: bogus}",
        )
        answer = c.post("/journeys", json={"definition": bad_class, "sender": SENDER})
        body = is_problem(answer, 422)
        assert body["type"].endswith("/invalid-journey")  # type: ignore[union-attr]
        ats = [e["at"] for e in body["errors"]]  # type: ignore[union-attr]
        assert "steps[0] (welcome).send.class" in ats
        assert {e["pointer"] for e in body["errors"]} == {"/body/definition"}  # type: ignore[union-attr]

        wrong_template = WELCOME.replace("template: welcome,", "template: nowhere,")
        missing = is_problem(
            c.post("/journeys", json={"definition": wrong_template, "sender": SENDER}), 422
        )
        assert missing["errors"] == [
            {
                "pointer": "/body/definition",
                "at": "steps[0] (welcome).send.template",
                "detail": "no template 'nowhere'",
            }
        ]
        syntax = is_problem(
            c.post("/journeys", json={"definition": "name: x\n  steps: [", "sender": SENDER}), 422
        )
        assert syntax["errors"][0]["at"].startswith("line 2, column")  # type: ignore[index]
        no_sender = is_problem(
            c.post("/journeys", json={"definition": WELCOME, "sender": "x"}), 422
        )
        assert no_sender["detail"] == "no sender profile 'x'"
        assert (
            c.post("/journeys", json={"definition": WELCOME, "sender": SENDER}).status_code == 201
        )
        unknown_contact = is_problem(
            c.post("/journeys/welcome-series/enrolments", json={"contact_ids": ["nobody"]}), 422
        )
        assert unknown_contact["detail"] == "no contact 'nobody'"
        empty = is_problem(
            c.post("/journeys/welcome-series/enrolments", json={"contact_ids": []}), 422
        )
        assert empty["errors"][0]["pointer"] == "/body/contact_ids"  # type: ignore[index]
        for method, path in (
            ("GET", "/journeys/nothing"),
            ("GET", "/journeys/nothing/report"),
            ("POST", "/journeys/nothing/pause"),
        ):
            assert is_problem(c.request(method, path), 404)["detail"] == "no journey 'nothing'"


@pytest.mark.parametrize(
    ("method", "path", "role", "permission"),
    [
        ("GET", "/journeys", "analyst", "journeys:read"),
        ("GET", "/journeys/x", "analyst", "journeys:read"),
        ("POST", "/journeys", "analyst", "journeys:write"),
        ("POST", "/journeys/x/pause", "analyst", "journeys:write"),
        ("POST", "/journeys/x/resume", "analyst", "journeys:write"),
        ("POST", "/journeys/x/enrolments", "analyst", "journeys:write"),
        ("GET", "/journeys/x/report", "care_team", "reports:read"),
    ],
)
def test_each_route_refuses_a_role_without_its_permission(
    site: ApiSite, method: str, path: str, role: str, permission: str
) -> None:
    with site.client(site.key(role)) as c:
        answer = c.request(method, path, json={"contact_ids": ["x"]} if method == "POST" else None)
    assert is_problem(answer, 403)["permission"] == permission
