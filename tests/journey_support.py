"""Set-up for journey engine tests: a sender, the example journeys' templates, the
`dormant` static list and contacts, all through the real services; a test clock; opens
and clicks of the journeys' messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.journeys import service
from carepost.journeys.models import JourneyMessage
from carepost.segments.service import save_static_list
from carepost.tracking.service import TrackedEvent, record_tracked
from carepost.workspace import Workspace
from delivery_support import SENDER, add_contacts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "journeys"
START = datetime(2027, 3, 1, 8, tzinfo=UTC)
HTML = (
    "<html><body><p>Dear {{ first_name }},</p>"
    '<p><a href="https://clinic.example/a">first</a> '
    '<a href="https://clinic.example/b">second</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ sender_postal_address }}</p>'
    "</body></html>"
)
TEMPLATES = {
    "welcome": "marketing",
    "healthy-habits": "marketing",
    "book-checkup": "marketing",
    "refill-reminder": "treatment",
    "refill-fallback": "treatment",
    "lab-result-ready": "treatment",
    "lab-result-reminder": "treatment",
    "we-miss-you": "marketing",
    "birthday-greeting": "marketing",
    "visit-survey": "operations",
}


@dataclass
class StepClock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def setup(ws: Workspace, actor: Actor, contacts: int) -> list[str]:
    ids = add_contacts(ws, [f"p{i}@patients.example" for i in range(contacts)])
    with transaction(ws.engine) as session:
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="care@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            actor=actor,
        )
        for name, cls in TEMPLATES.items():
            add_template(
                session,
                TemplateSpec(name, f"About {name}", HTML, cls, ("first_name",)),
                actor=actor,
            )
        save_static_list(session, "dormant", [], actor=actor)
    return ids


def publish(ws: Workspace, actor: Actor, name: str, clock: StepClock) -> service.Published:
    with transaction(ws.engine) as session:
        return service.do_publish_journey(
            session,
            (EXAMPLES / f"{name}.yaml").read_bytes(),
            sender_id=SENDER,
            actor=actor,
            clock=clock,
        )


def add_people(
    ws: Workspace,
    people: list[dict[str, object]],
    visits: dict[int, list[str]] | None = None,
    appointments: dict[int, list[str]] | None = None,
) -> list[str]:
    """Contacts with full records (`people[i]` merged into a minimal one, e.g.
    birth_date or attributes), and encounter / booked appointment facts by index."""
    from carepost.contacts.store import ContactInput, ContactWriter, FactInput

    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=START, source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"person:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                        "emails": [f"person{i}@patients.example"],
                        **extra,
                    },
                    [("email", f"person{i}@patients.example")],
                )
                for i, extra in enumerate(people)
            ]
        )
        ids = [str(o.contact_id) for o in outcomes]
        facts = []
        for kind, by_index, status in (
            ("encounter", visits or {}, "finished"),
            ("appointment", appointments or {}, "booked"),
        ):
            for i, dates in by_index.items():
                for n, when in enumerate(dates):
                    facts.append(
                        FactInput(
                            ids[i],
                            kind,
                            f"{kind}:{i}:{n}",
                            {"kind": kind, "status": status, "date": when},
                            kind.capitalize(),
                        )
                    )
        writer.upsert_facts(facts)
    return ids


def engage(ws: Workspace, *args: Any, **kwargs: Any) -> None:
    """`track` in a transaction of its own."""
    with transaction(ws.engine) as session:
        track(session, *args, **kwargs)


def track(
    session: Session,
    step: str,
    contacts: list[str],
    kind: str,
    clock: StepClock,
    link: int | None = None,
    verdict: str = "human",
) -> None:
    """Human (or machine) opens/clicks of each contact's message of `step`, in the
    caller's transaction (flushed: the events have their ids)."""
    rows = session.execute(
        select(JourneyMessage.outbox_id, OutboxMessage.contact_id, OutboxMessage.campaign_id)
        .join(OutboxMessage, OutboxMessage.id == JourneyMessage.outbox_id)
        .where(JourneyMessage.step == step, OutboxMessage.contact_id.in_(contacts))
    ).all()
    assert len(rows) == len(contacts)
    record_tracked(
        session,
        [
            TrackedEvent(c, oid, camp, kind, link, verdict, "test", 0.9, None, clock.now)
            for oid, c, camp in rows
        ],
    )
    session.flush()
