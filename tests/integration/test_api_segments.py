"""The segment routes over real HTTPS on both engines: counts from the API's snapshot,
saved versions and static lists, cursor pages, the audited preview (PHI: phi:read and
X-Purpose), each route's refusal for a role without its permission, rule errors with
their position, and no PHI in any count, list or error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from api_resources_support import CANARY_GIVEN, SYSTEM, is_problem, no_phi, people
from api_support import ApiSite, serve
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.segments import service
from carepost.staff.principal import PermissionDenied, Principal
from carepost.workspace import Workspace


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def test_a_marketer_counts_saves_and_reads_segments(site: ApiSite) -> None:
    ids, canary = people(site.ws, ["MA", "NH", "NH", "VT"])
    with site.client(site.key("marketer")) as c:
        counted = c.post("/segments/count", json={"rule": 'state == "MA"'})
        assert counted.status_code == 200, counted.text
        assert counted.json()["count"] == 2
        assert counted.json()["contacts"] == 5
        no_phi(counted)

        first = c.put("/segments/north", json={"rule": 'state in ["NH"]', "description": "x"})
        same = c.put("/segments/north", json={"rule": 'state in ["NH"]'})
        second = c.put("/segments/north", json={"rule": 'state in ["NH", "VT"]'})
        assert (first.json()["version"], first.json()["changed"]) == (1, True)
        assert (same.json()["version"], same.json()["changed"]) == (1, False)
        assert second.json()["version"] == 2

        got = c.get("/segments/north")
        assert got.status_code == 200, got.text
        body = got.json()
        assert [v["version"] for v in body["versions"]] == [2, 1]
        assert body["count"] == 3
        assert body["kind"] == "dynamic"
        assert body["versions"][0]["created_by"].startswith("apikey:")
        no_phi(got)

        listed = c.put("/segments/picked", json={"members": [ids[0], canary]})
        assert listed.status_code == 200, listed.text
        assert listed.json()["static_members"] == 2
        picked = c.get("/segments/picked")
        assert picked.json()["count"] == 2
        assert picked.json()["static_members"] == 2
        no_phi(picked)

        # a committed change shows in the next count (the snapshot refreshes first)
        people(site.ws, ["MA", "MA"])  # the second contact moves from NH to MA
        again = c.post("/segments/count", json={"rule": 'state == "MA"'})
        assert again.json()["count"] == 3
    with transaction(site.ws.engine) as s:
        saved = s.scalars(
            select(AuditEntry.actor).where(AuditEntry.action == "segments.saved")
        ).all()
    assert len(saved) == 2
    assert all(a.startswith("apikey:") for a in saved)


def test_static_list_members_are_added_and_removed(site: ApiSite) -> None:
    ids, canary = people(site.ws, ["MA", "NH", "VT"])
    with site.client(site.key("marketer")) as c:
        c.put("/segments/picked", json={"members": [ids[0]]})
        changed = c.post("/segments/picked/members", json={"add": [ids[1], canary, ids[0]]})
        assert changed.status_code == 200, changed.text
        assert changed.json() == {"added": 2, "removed": 0, "members": 3}
        removed = c.post("/segments/picked/members", json={"remove": [ids[0], ids[2]]})
        assert removed.json() == {"added": 0, "removed": 1, "members": 2}
        assert c.get("/segments/picked").json()["count"] == 2
        unknown = is_problem(c.post("/segments/picked/members", json={"add": ["nobody"]}), 422)
        assert unknown["detail"] == "1 contact id(s) not found, e.g. nobody"
        c.put("/segments/rule", json={"rule": "age > 1"})
        dynamic = is_problem(c.post("/segments/rule/members", json={"add": [ids[0]]}), 422)
        assert "dynamic" in str(dynamic["detail"])
        assert is_problem(c.post("/segments/none/members", json={}), 404)
    with transaction(site.ws.engine) as s:
        entries = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "segments.static_list_changed")
        ).all()
    assert [len(orjson.loads(e.subjects)) for e in entries] == [2, 1]


def test_lists_come_in_cursor_pages(site: ApiSite) -> None:
    with site.client(site.key("marketer")) as c:
        for i in range(5):
            assert c.put(f"/segments/s{i}", json={"rule": f"age >= {i}"}).status_code == 200
        names: list[str] = []
        cursor = None
        while True:
            page = c.get("/segments", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            names += [s["name"] for s in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert names == [f"s{i}" for i in range(5)]
        # Well-formed base64url that this API did not give out, then not base64url at all.
        foreign = is_problem(c.get("/segments", params={"cursor": "bm90LWEtY3Vyc29y"}), 400)
        assert foreign["type"].endswith("invalid-cursor")
        assert foreign["errors"] == [{"pointer": "/query/cursor", "detail": "not a valid cursor"}]
        garbled = is_problem(c.get("/segments", params={"cursor": "not a cursor!"}), 422)
        assert garbled["errors"][0]["pointer"] == "/query/cursor"  # type: ignore[index]
        too_many = is_problem(c.get("/segments", params={"limit": 10_000}), 422)
        assert too_many["errors"][0]["pointer"] == "/query/limit"  # type: ignore[index]


def test_rule_errors_name_the_position_and_echo_nothing(site: ApiSite) -> None:
    people(site.ws, ["MA"])
    with site.client(site.key("marketer")) as c:
        answer = c.post("/segments/count", json={"rule": 'state == "MA" and\n  ' + CANARY_GIVEN})
        body = is_problem(answer, 422)
        assert body["type"].endswith("/invalid-rule")  # type: ignore[union-attr]
        (error,) = body["errors"]  # type: ignore[misc]
        assert error["pointer"] == "/body/rule"
        assert (error["line"], error["column"]) == (2, 3)
        assert CANARY_GIVEN not in answer.text
        saved = is_problem(c.put("/segments/bad", json={"rule": "age >="}), 422)
        assert saved["errors"][0]["line"] == 1  # type: ignore[index]
        both = is_problem(c.put("/segments/bad", json={"rule": "age > 1", "members": []}), 422)
        assert both["errors"][0]["pointer"] == "/body"  # type: ignore[index]
        cycle = is_problem(c.put("/segments/loop", json={"rule": 'in_segment("loop")'}), 422)
        assert "cycle" in str(cycle["errors"])
        missing = is_problem(c.get("/segments/nothing"), 404)
        assert missing["detail"] == "no segment named 'nothing'"
        unknown_member = is_problem(c.put("/segments/l", json={"members": ["c0ffee"]}), 422)
        assert "not found" in str(unknown_member["detail"])


def test_a_marketer_counts_but_is_refused_a_preview(site: ApiSite) -> None:
    ids, canary = people(site.ws, ["MA", "NH"])
    with site.client(site.key("marketer")) as c:
        assert c.put("/segments/ma", json={"rule": 'state == "MA"'}).status_code == 200
        assert c.get("/segments/ma").json()["count"] == 2
        refused = c.post("/segments/ma/preview", headers={"X-Purpose": "operations"})
        assert is_problem(refused, 403)["permission"] == "phi:read"
    with site.client(site.key("owner")) as c:
        no_purpose = is_problem(c.post("/segments/ma/preview"), 400)
        assert no_purpose["errors"] == [{"pointer": "/header/X-Purpose", "detail": "missing"}]
        unknown = c.post("/segments/ma/preview", headers={"X-Purpose": "curiosity"})
        assert is_problem(unknown, 400)["errors"][0]["detail"] == "not a known purpose"
        shown = c.post(
            "/segments/ma/preview", headers={"X-Purpose": "operations"}, json={"limit": 5}
        )
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["members"] == 2
        assert {m["id"] for m in body["shown"]} == {ids[0], canary}
        assert CANARY_GIVEN in shown.text  # the one answer that carries PHI, on purpose
        me = c.get("/me").json()
    with transaction(site.ws.engine) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "segments.preview")).one()
    assert entry.purpose == "operations"
    assert entry.actor == f"apikey:{me['api_key_id']}"


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    [
        ("GET", "/segments", None, "segments:read"),
        ("POST", "/segments/count", {"rule": "age > 1"}, "segments:read"),
        ("PUT", "/segments/x", {"rule": "age > 1"}, "segments:write"),
        ("GET", "/segments/x", None, "segments:read"),
        ("POST", "/segments/x/preview", None, "segments:read"),
        ("POST", "/segments/x/members", {"add": []}, "segments:write"),
    ],
)
def test_each_route_refuses_a_role_without_its_permission(
    site: ApiSite, method: str, path: str, body: object, permission: str
) -> None:
    with site.client(site.key("analyst")) as c:
        answer = c.request(method, path, json=body, headers={"X-Purpose": "operations"})
    assert is_problem(answer, 403)["permission"] == permission


def test_the_services_check_permissions_themselves(workspace: Workspace) -> None:
    analyst = Principal("user", SYSTEM, frozenset({"reports:read"}), user_id="u1")
    with transaction(workspace.engine) as s, pytest.raises(PermissionDenied):
        service.save_segment(s, "x", "age > 1", actor=SYSTEM, principal=analyst)
    with transaction(workspace.engine) as s, pytest.raises(PermissionDenied):
        service.segment_page(s, after=None, limit=5, principal=analyst)
    engine = service.SegmentEngine(workspace.engine, workspace.keyring, actor=SYSTEM)
    with pytest.raises(PermissionDenied):
        engine.count("age > 1", principal=analyst)
