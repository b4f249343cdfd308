"""Set-up for the resource routes' tests (segments, templates, campaigns, journeys):
contacts with a few attributes and one canary whose name and address must never appear
in a count, list, report or error; a sender and templates; all through the real
services."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import httpx

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.workspace import Workspace

SYSTEM = Actor("cli:api-tests", "cli", "test-host")
SENDER = "example-clinic"
CANARY_GIVEN = "Quillonette"
CANARY_FAMILY = "Zephyrwald"
CANARY_EMAIL = "quillonette.zephyrwald@canary.example"
CANARY_BIRTH = "1951-07-13"
CANARY = (CANARY_GIVEN, CANARY_FAMILY, CANARY_EMAIL, CANARY_BIRTH)
HTML = (
    "<html><body><p>Dear {{ first_name }},</p>"
    '<p><a href="https://clinic.example/flu">Book</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ sender_postal_address }}</p>'
    "</body></html>"
)


def people(ws: Workspace, states: Iterable[str]) -> tuple[list[str], str]:
    """Contacts in these states (one each), and the canary (in MA): (ids, canary id)."""
    rows = [
        ContactInput(
            f"api:{i}",
            {
                "v": 1,
                "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                "emails": [f"p{i}@patients.example"],
                "birth_date": "1980-02-02",
                "sex": "female",
                "address": {"state": state},
            },
            [("email", f"p{i}@patients.example")],
        )
        for i, state in enumerate(states)
    ]
    rows.append(
        ContactInput(
            "api:canary",
            {
                "v": 1,
                "name": {"given": [CANARY_GIVEN], "family": CANARY_FAMILY},
                "emails": [CANARY_EMAIL],
                "birth_date": CANARY_BIRTH,
                "sex": "female",
                "address": {"state": "MA"},
            },
            [("email", CANARY_EMAIL)],
        )
    )
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        ids = [o.contact_id for o in writer.upsert_contacts(rows) if o.contact_id]
    return ids[:-1], ids[-1]


def sender_and_template(ws: Workspace, name: str = "flu", cls: str = "marketing") -> str:
    """The sender profile and a template; the template's id."""
    with transaction(ws.engine) as session:
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="news@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            actor=SYSTEM,
        )
        row = add_template(
            session, TemplateSpec(name, "Flu shots", HTML, cls, ("first_name",)), actor=SYSTEM
        )
        return row.id


def no_phi(answer: httpx.Response) -> None:
    """The canary's data is nowhere in the answer (body or headers)."""
    text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
    for value in CANARY:
        assert value not in text, f"PHI in the answer to {answer.request.url.path}"


def is_problem(answer: httpx.Response, status: int) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = answer.json()
    assert body["status"] == status
    no_phi(answer)
    return body
