"""The template routes over real HTTPS on both engines: versions added and read back,
cursor pages, the save-time checks as 422 problems pointing at the part, field and
line, check without saving, and each route's refusal for a role without its
permission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api_resources_support import HTML, is_problem
from api_support import ApiSite, serve
from carepost.content.models import Template
from carepost.db import transaction
from carepost.workspace import Workspace


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def template(name: str = "flu", **changes: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "message_class": "marketing",
        "subject": "Flu shots are here",
        "html": HTML,
        "phi_fields": ["first_name"],
    }
    return {**body, **changes}


def test_versions_are_added_listed_and_read(site: ApiSite) -> None:
    with site.client(site.key("marketer")) as c:
        first = c.post("/templates", json=template())
        second = c.post("/templates", json=template(subject="Flu shots: book now"))
        other = c.post("/templates", json=template("visit", message_class="operations"))
        assert first.status_code == 201, first.text
        assert [first.json()["version"], second.json()["version"]] == [1, 2]
        assert other.json()["version"] == 1
        got = c.get("/templates/flu")
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["latest"]["subject"] == "Flu shots: book now"
        assert body["latest"]["phi_fields"] == ["first_name"]
        assert [v["version"] for v in body["versions"]] == [2, 1]
        assert body["latest"]["actor"].startswith("apikey:")
        page1 = c.get("/templates", params={"limit": 1}).json()
        page2 = c.get("/templates", params={"limit": 1, "cursor": page1["next_cursor"]}).json()
        assert [(t["name"], t["version"]) for t in page1["items"] + page2["items"]] == [
            ("flu", 2),
            ("visit", 1),
        ]
        assert page2["next_cursor"] is None  # the last page says so; no empty page after it
        assert (
            is_problem(c.get("/templates/nothing"), 404)["detail"] == "no template with that name"
        )


def test_the_checks_answer_with_part_field_and_line(site: ApiSite) -> None:
    undeclared = HTML.replace("</body>", "\n<p>Born {{ birth_date }}</p></body>")
    with site.client(site.key("marketer")) as c:
        answer = c.post("/templates", json=template(html=undeclared))
        body = is_problem(answer, 422)
        assert body["type"].endswith("/template-rejected")  # type: ignore[union-attr]
        assert {
            "pointer": "/body/html",
            "line": 2,
            "field": "birth_date",
            "detail": "'birth_date' is used but not declared in phi_fields",
        } in body["errors"]  # type: ignore[operator]
        subject = is_problem(
            c.post(
                "/templates",
                json=template(subject="Hi {{ first_name }}", html=HTML.replace("first_name", "x")),
            ),
            422,
        )
        pointers = {(e["pointer"], e["field"]) for e in subject["errors"]}  # type: ignore[union-attr]
        assert ("/body/subject", "first_name") in pointers
        no_unsubscribe = HTML.replace("{{ unsubscribe_url }}", "https://clinic.example/u")
        can_spam = is_problem(c.post("/templates/check", json=template(html=no_unsubscribe)), 422)
        assert can_spam["errors"] == [
            {
                "pointer": "/body/html",
                "line": None,
                "field": "unsubscribe_url",
                "detail": "marketing messages must include {{ unsubscribe_url }} (CAN-SPAM)",
            }
        ]
        ok = c.post("/templates/check", json=template())
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"valid": True}
        missing = is_problem(c.post("/templates", json={"name": "x"}), 422)
        assert {e["pointer"] for e in missing["errors"]} == {  # type: ignore[union-attr]
            "/body/message_class",
            "/body/subject",
            "/body/html",
        }
    with transaction(site.ws.engine) as s:
        assert s.scalar(select(func.count()).select_from(Template)) == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    [
        ("GET", "/templates", None, "templates:read"),
        ("GET", "/templates/flu", None, "templates:read"),
        ("POST", "/templates", template(), "templates:write"),
        ("POST", "/templates/check", template(), "templates:read"),
    ],
)
def test_each_route_refuses_a_role_without_its_permission(
    site: ApiSite, method: str, path: str, body: object, permission: str
) -> None:
    role = "care_team" if permission == "templates:write" else "analyst"
    with site.client(site.key(role)) as c:
        answer = c.request(method, path, json=body)
    assert is_problem(answer, 403)["permission"] == permission
