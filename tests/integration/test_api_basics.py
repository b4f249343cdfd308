"""The API's frame over real HTTPS: the OpenAPI document, authentication by API key or
by a staff session (with CSRF for state changes), and RFC 9457 problems for every error,
on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api_support import ApiSite, serve
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.workspace import Workspace


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def test_openapi_document_describes_the_api(site: ApiSite) -> None:
    with site.client() as c:
        doc = c.get("/openapi.json")
    assert doc.status_code == 200
    body = doc.json()
    assert body["openapi"].startswith("3.")
    assert "/me" in body["paths"]
    assert "HTTPBearer" in body["components"]["securitySchemes"]


def test_a_key_is_who_it_says_and_each_use_is_audited(site: ApiSite) -> None:
    token = site.key("marketer")
    with site.client(token) as c:
        first = c.get("/me")
        c.get("/me")
    assert first.status_code == 200, first.text
    me = first.json()
    assert me["kind"] == "api_key"
    assert "campaigns:write" in me["permissions"]
    assert "phi:read" not in me["permissions"]
    with transaction(site.ws.engine) as s:
        uses = s.scalars(
            select(AuditEntry.actor).where(AuditEntry.action == "staff.api_key_used")
        ).all()
    assert uses == [f"apikey:{me['api_key_id']}"] * 2


@pytest.mark.parametrize("header", [None, "Bearer cpk_nothing", "Bearer x", "Basic abc"])
def test_no_or_bad_credentials_get_a_401_problem(site: ApiSite, header: str | None) -> None:
    with site.client() as c:
        answer = c.get("/me", headers={"Authorization": header} if header else {})
    assert answer.status_code in (401, 403)
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == answer.status_code
    assert body["type"].startswith("https://carepost.dev/problems/")
    assert body["instance"] == "/api/v1/me"


def test_unknown_route_is_a_404_problem(site: ApiSite) -> None:
    with site.client(site.key("auditor")) as c:
        answer = c.get("/nothing-here")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "Not found"


def test_a_nul_character_is_refused_where_it_is_and_nothing_is_written(site: ApiSite) -> None:
    # PostgreSQL's text cannot hold U+0000; the API refuses it on both engines alike.
    with site.client(site.key("marketer")) as c:
        body = c.post(
            "/campaigns",
            content=b'{"name": "n", "segment": "s", "template": "a\\u0000b", "sender": "x",'
            b' "topic": "t", "tags": {"k\\u0000": 1}}',
            headers={"Content-Type": "application/json"},
        )
        path = c.get("/templates/a%00b")
        query = c.get("/campaigns", params={"cursor": "\x00"})
        listed = c.get("/campaigns")
    for answer, pointers in (
        (body, {"/body/template", "/body/tags/k\\u0000"}),
        (path, {"/path/name"}),
        (query, {"/query/cursor"}),
    ):
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert {e["pointer"] for e in problem["errors"]} == pointers
        assert all("NUL" in e["detail"] for e in problem["errors"])
        assert "\x00" not in answer.text
    assert listed.json()["items"] == []
