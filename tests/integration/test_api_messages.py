"""POST /api/v1/messages and GET /api/v1/messages/{id} over real HTTPS with real API
keys, then the real worker and SMTP server, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api_support import ApiSite, serve
from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.staff import apikeys
from carepost.staff.access import phi_basis
from carepost.staff.principal import PermissionDenied
from carepost.workspace import Workspace
from message_support import setup_one_off, worker_for

SECRET = "Potassium-5521-marker"


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[ApiSite]:
    with serve(workspace, tmp_path) as s:
        yield s


def _body(contact_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contact_id": contact_id,
        "template": "lab-result",
        "message_class": "treatment",
        "data": {"test_name": SECRET, "reference": 42},
    }
    body.update(over)
    return body


def test_care_team_key_sends_and_follows_a_message(
    site: ApiSite, actor: Actor, smtp_sink_factory: Any
) -> None:
    ids = setup_one_off(site.ws, actor, ["pat@patients.example"])
    token = site.key("care_team")
    with site.client(token) as c:
        answer = c.post("/messages", json=_body(ids[0]), headers={"Idempotency-Key": "k1"})
        assert answer.status_code == 202, answer.text
        queued = answer.json()
        assert queued["status"] == "queued"
        assert answer.headers["location"] == f"/api/v1/messages/{queued['id']}"
        sink = smtp_sink_factory()
        assert worker_for(site.ws, sink).run().results == {"sent": 1}
        state = c.get(f"/messages/{queued['id']}")
    assert state.status_code == 200, state.text
    follow = state.json()
    assert follow["status"] == "sent"
    assert [s["state"] for s in follow["timeline"]][-1] == "sent"
    assert SECRET not in state.text
    assert f"<{queued['id']}@clinic.example>".encode() in sink.state.received[0].data


def test_key_without_messages_send_gets_403(site: ApiSite, actor: Actor) -> None:
    ids = setup_one_off(site.ws, actor, ["pat@patients.example"])
    with site.client(site.key("marketer")) as c:
        answer = c.post("/messages", json=_body(ids[0]))
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["permission"] == "messages:send"


def test_errors_are_problems_that_never_echo_the_data(site: ApiSite, actor: Actor) -> None:
    ids = setup_one_off(site.ws, actor, ["pat@patients.example"])
    with site.client(site.key("care_team")) as c:
        undeclared = c.post(
            "/messages",
            json=_body(ids[0], data={"test_name": "a", "reference": "b", "diagnosis": SECRET}),
        )
        nested = c.post(
            "/messages", json=_body(ids[0], data={"test_name": {"x": SECRET}, "reference": 1})
        )
        marketing = c.post("/messages", json=_body(ids[0], message_class="marketing"))
        unknown = c.post("/messages", json=_body("f" * 32))
        missing = c.get(f"/messages/{'e' * 32}")
    assert undeclared.status_code == 422
    assert undeclared.json()["errors"][0]["pointer"] == "/body/data/diagnosis"
    assert nested.status_code == 422
    assert marketing.status_code == 422
    assert marketing.json()["errors"][0]["pointer"] == "/body/message_class"
    assert unknown.status_code == 404
    assert missing.status_code == 404
    for answer in (undeclared, nested, marketing, unknown, missing):
        assert answer.headers["content-type"] == "application/problem+json"
        assert SECRET not in answer.text


def test_openapi_names_the_routes_and_their_permission(site: ApiSite) -> None:
    with site.client() as c:
        doc = c.get("/openapi.json").json()
    post = doc["paths"]["/messages"]["post"]
    assert post["x-permissions"] == ["messages:send"]
    assert "202" in post["responses"]
    assert doc["paths"]["/messages/{message_id}"]["get"]["x-permissions"] == ["messages:send"]


def test_only_the_sender_may_read_its_recipients_phi(site: ApiSite, actor: Actor) -> None:
    """`phi:read_recipients` rests on campaigns.actor: each sender gets its own hidden
    campaign, so sending a one-off never opens another sender's recipients."""
    ids = setup_one_off(site.ws, actor, ["pat@patients.example", "kim@patients.example"])
    alice, bob = site.key("care_team"), site.key("care_team")
    with site.client(alice) as c:
        assert c.post("/messages", json=_body(ids[0])).status_code == 202
    with site.client(bob) as c:
        assert c.post("/messages", json=_body(ids[1])).status_code == 202
    with transaction(site.ws.engine) as s:
        as_alice = apikeys.authenticate(s, alice, network="127.0.0.0/24", at=site.clock())
        as_bob = apikeys.authenticate(s, bob, network="127.0.0.0/24", at=site.clock())
        assert as_alice is not None
        assert as_bob is not None
        assert phi_basis(s, as_alice, [ids[0]], site.clock()) == {"basis": "phi:read_recipients"}
        with pytest.raises(PermissionDenied):
            phi_basis(s, as_alice, [ids[1]], site.clock())
        assert phi_basis(s, as_bob, [ids[1]], site.clock()) == {"basis": "phi:read_recipients"}
