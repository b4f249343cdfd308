"""The PHI-side resources over real HTTPS on both engines: contacts (bulk upsert all or
nothing, list by cursor, PHI reads with X-Purpose, audited with the key, and erase),
facts, consents, authorizations, suppressions, events, message evidence and the audit
query."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from api_support import ApiSite, serve
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.staff import apikeys
from carepost.staff.permissions import BUILTIN_ROLES
from carepost.workspace import Workspace
from delivery_support import authorization, campaign_scenario
from staff_support import SYSTEM, add

PHI = {"X-Purpose": "treatment"}
ROWS = [
    {"external_id": "p-1", "first_name": "Ada", "last_name": "Byron", "email": "ada@x.example"},
    {"external_id": "p-2", "first_name": "Alan", "birth_date": "1912-06-23", "sex": "M"},
    {"email": "grace@x.example", "state": "MA", "attributes": {"plan": "gold"}},
]


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def _entries(ws: Workspace, action: str) -> list[AuditEntry]:
    with transaction(ws.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _bulk(c: Any, rows: list[dict[str, Any]]) -> Any:
    return c.post("/contacts:bulk", json={"rows": rows})


def test_bulk_upsert_then_list_by_cursor_and_read_with_purpose(site: ApiSite) -> None:
    with site.client(site.key("owner")) as c:
        me = c.get("/me").json()
        first = _bulk(c, ROWS)
        again = _bulk(c, ROWS)
        pages, cursor = [], None
        while True:
            got = c.get("/contacts", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert got.status_code == 200, got.text
            pages.append([i["id"] for i in got.json()["items"]])
            cursor = got.json()["next_cursor"]
            if cursor is None:
                break
        ids = [o["contact_id"] for o in first.json()["rows"]]
        record = c.get(f"/contacts/{ids[1]}", headers=PHI)
        no_purpose = c.get(f"/contacts/{ids[1]}")
        odd_purpose = c.get(f"/contacts/{ids[1]}", headers={"X-Purpose": "curiosity"})
    assert first.status_code == 200, first.text
    assert [o["status"] for o in first.json()["rows"]] == ["created"] * 3
    assert [o["status"] for o in again.json()["rows"]] == ["unchanged"] * 3
    assert pages == [ids[:2], ids[2:]]
    assert record.status_code == 200, record.text
    assert record.json()["record"]["birth_date"] == "1912-06-23"
    assert record.json()["record"]["sex"] == "male"
    for refused in (no_purpose, odd_purpose):
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["pointer"] == "/header/X-Purpose"
    (read,) = _entries(site.ws, "contacts.phi_read")
    assert read.actor == me["actor"]
    assert read.purpose == "treatment"
    assert orjson.loads(read.subjects) == [ids[1]]


def test_bulk_upsert_is_all_or_nothing_and_echoes_no_value(site: ApiSite) -> None:
    bad = [
        {"external_id": "p-1", "email": "ada@x.example"},
        {"external_id": "p-2", "email": "not-an-address", "birth_date": "3000-01-01"},
        {"first_name": "Nobody"},
    ]
    with site.client(site.key("owner")) as c:
        answer = _bulk(c, bad)
        listed = c.get("/contacts")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    errors = answer.json()["errors"]
    assert {(e["row"], e["pointer"]) for e in errors} == {
        (1, "/rows/1/email"),
        (1, "/rows/1/birth_date"),
        (2, "/rows/2"),
    }
    assert "not-an-address" not in answer.text
    assert "Nobody" not in answer.text
    assert listed.json()["items"] == []


def test_marketer_and_others_cannot_read_phi(site: ApiSite) -> None:
    with site.client(site.key("owner")) as c:
        contact = _bulk(c, ROWS[:1]).json()["rows"][0]["contact_id"]
    for role in ("marketer", "analyst", "auditor", "compliance", "admin", "care_team"):
        with site.client(site.key(role)) as c:
            got = c.get(f"/contacts/{contact}", headers=PHI)
        assert got.status_code == 403, role
        assert got.json()["permission"] == "phi:read"
        assert "Ada" not in got.text
    assert _entries(site.ws, "contacts.phi_read") == []


def test_care_team_reads_the_contacts_its_own_messages_went_to(site: ApiSite) -> None:
    nurse = add(site.ws, "nurse@clinic.example", "care_team")
    mine = campaign_scenario(
        site.ws, Actor(f"user:{nurse.id}", "api", "test"), ["a@p.example", "b@p.example"], []
    )
    with transaction(site.ws.engine) as s:
        token = apikeys.do_create_api_key(
            s,
            SYSTEM,
            owner=nurse.id,
            name="nurse key",
            scopes=sorted(BUILTIN_ROLES["care_team"][1]),
        ).token
    with site.client(site.key("owner")) as c:
        stranger = _bulk(c, ROWS[:1]).json()["rows"][0]["contact_id"]
    with site.client(token) as c:
        own = c.get(f"/contacts/{mine.contact_ids[0]}", headers=PHI)
        other = c.get(f"/contacts/{stranger}", headers=PHI)
    assert own.status_code == 200, own.text
    assert other.status_code == 403
    (read,) = _entries(site.ws, "contacts.phi_read")
    assert orjson.loads(read.details)["basis"] == "phi:read_recipients"


def test_facts_added_then_read_and_contact_erased(site: ApiSite) -> None:
    with site.client(site.key("owner")) as c:
        contact = _bulk(c, ROWS[:1]).json()["rows"][0]["contact_id"]
        fact = {
            "source_id": "obs-1",
            "kind": "observation",
            "code": {"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"},
            "value": 7.1,
            "unit": "%",
            "date": "2026-10-01",
        }
        added = c.post(f"/contacts/{contact}/facts", json={"facts": [fact]})
        repeat = c.post(f"/contacts/{contact}/facts", json={"facts": [fact]})
        facts = c.get(f"/contacts/{contact}/facts", headers=PHI)
        erased = c.delete(f"/contacts/{contact}")
        after = c.get(f"/contacts/{contact}", headers=PHI)
        erased_again = c.delete(f"/contacts/{contact}")
        missing = c.delete(f"/contacts/{'0' * 32}")
        reimport = _bulk(c, ROWS[:1])
    assert added.json() == {"created": 1, "updated": 0, "unchanged": 0}
    assert repeat.json() == {"created": 0, "updated": 0, "unchanged": 1}
    assert facts.json()["items"][0]["value"] == 7.1
    assert erased.status_code == 204
    assert after.status_code == 410
    assert erased_again.status_code == 204
    assert missing.status_code == 404
    # Its lookups went with its key: the same person imported again is a new contact.
    assert reimport.json()["rows"][0]["status"] == "created"
    assert reimport.json()["rows"][0]["contact_id"] != contact
    assert len(_entries(site.ws, "keys.shred_contact")) == 1


def test_consents_authorizations_and_suppressions(site: ApiSite) -> None:
    with site.client(site.key("owner")) as c:
        contact = _bulk(c, ROWS[:1]).json()["rows"][0]["contact_id"]
    with site.client(site.key("compliance")) as c:
        consent = c.post(
            f"/contacts/{contact}/consents",
            json={"channel": "email", "topic": "flu", "status": "opted_in"},
        )
        history = c.get(f"/contacts/{contact}/consents")
        auth = c.post(f"/contacts/{contact}/authorizations", json=authorization())
        incomplete = c.post(f"/contacts/{contact}/authorizations", json={"purposes": []})
        revoked = c.post(f"/authorizations/{auth.json()['id']}/revoke", json={})
        auths = c.get(f"/contacts/{contact}/authorizations")
        sup = c.post("/suppressions", json={"channel": "email", "contact_id": contact})
        by_address = c.post(
            "/suppressions", json={"channel": "email", "address": "someone@x.example"}
        )
        both = c.post(
            "/suppressions",
            json={"channel": "email", "address": "a@x.example", "contact_id": contact},
        )
        listed = c.get("/suppressions", params={"limit": 1})
        lifted = c.delete(f"/suppressions/{sup.json()['ids'][0]}")
        lifted_again = c.delete(f"/suppressions/{sup.json()['ids'][0]}")
    assert consent.status_code == 201, consent.text
    assert [h["status"] for h in history.json()["items"]] == ["opted_in"]
    assert auth.status_code == 201, auth.text
    assert incomplete.status_code == 422
    assert incomplete.json()["type"].endswith("/invalid-authorization")
    assert "missing" in incomplete.json()
    assert revoked.status_code == 200, revoked.text
    assert auths.json()["items"][0]["revoked_at"] is not None
    assert sup.status_code == 201
    assert len(sup.json()["ids"]) == 1
    assert by_address.status_code == 201
    assert both.status_code == 422
    assert len(listed.json()["items"]) == 1
    assert listed.json()["next_cursor"]
    assert "someone" not in listed.text
    assert lifted.status_code == 204
    assert lifted_again.status_code == 422
    actors = {e.actor for e in _entries(site.ws, "consent.set")}
    assert len(actors) == 1
    assert next(iter(actors)).startswith("apikey:")


def test_events_evidence_and_audit_query(site: ApiSite) -> None:
    scenario = campaign_scenario(site.ws, SYSTEM.actor, ["a@p.example"], [0])
    with transaction(site.ws.engine) as s:
        message = s.scalars(select(OutboxMessage.id)).first()
    with site.client(site.key("owner")) as c:
        event = c.post("/events", json={"name": "signup", "contact_id": scenario.contact_ids[0]})
        unknown = c.post("/events", json={"name": "signup", "contact_id": "f" * 32})
    with site.client(site.key("auditor")) as c:
        proof = c.get(f"/messages/{message}/evidence")
        none = c.get(f"/messages/{'0' * 32}/evidence")
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "action": "consent."}
            if cursor:
                params["cursor"] = cursor
            got = c.get("/audit", params=params)
            assert got.status_code == 200, got.text
            seen += [e["seq"] for e in got.json()["items"]]
            cursor = got.json()["next_cursor"]
            if not cursor:
                break
        by_subject = c.get("/audit", params={"subject": scenario.contact_ids[0]})
        bad_cursor = c.get("/audit", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert event.status_code == 202, event.text
    assert unknown.status_code == 404
    assert proof.status_code == 200, proof.text
    assert none.status_code == 404
    consent_entries = [
        e.seq
        for e in _entries(site.ws, "consent.set") + _entries(site.ws, "consent.authorization_added")
    ]
    assert seen == sorted(consent_entries)
    actions = {e["action"] for e in by_subject.json()["items"]}
    assert {"consent.set", "journeys.event_received"} <= actions
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["errors"][0]["pointer"] == "/query/cursor"
