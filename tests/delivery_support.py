"""Set-up for delivery tests: contacts with chosen addresses, consent and authorizations,
a sender, a template and a started campaign, all through the real services."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.consent import service as consent
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.demo import authorization_document
from carepost.workspace import Workspace

SENDER = "example-clinic"


def authorization(sender: str = SENDER) -> dict[str, Any]:
    """A complete 164.508(c) authorization naming `sender` as a recipient (synthetic)."""
    return authorization_document(
        datetime(2026, 1, 5, 9, tzinfo=UTC),
        sender=sender,
        organization="Example Clinic",
        purpose="Seasonal clinic announcements",
    )


HTML = (
    "<html><head><style>p { font-family: sans-serif }</style></head><body>"
    "<p>Dear {{ first_name }},</p><p>Flu shots are in. "
    '<a href="https://clinic.example/flu">Book a visit</a> or '
    '<a href="https://clinic.example/hours">see our hours</a>.</p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ sender_postal_address }}</p>'
    "</body></html>"
)


@dataclass
class Scenario:
    contact_ids: list[str]
    authorized: list[str]
    authorization_ids: dict[str, str]
    campaign_id: str


def add_contacts(ws: Workspace, emails: Sequence[str]) -> list[str]:
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"test:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                        "emails": [email],
                    },
                    [("email", email)],
                )
                for i, email in enumerate(emails)
            ]
        )
    return [o.contact_id for o in outcomes if o.contact_id]


def campaign_scenario(
    ws: Workspace,
    actor: Actor,
    emails: Sequence[str],
    authorized: Sequence[int],
    *,
    dkim_key_file: str | None = None,
    message_class: str = "marketing",
) -> Scenario:
    ids = add_contacts(ws, emails)
    auth_ids: dict[str, str] = {}
    with transaction(ws.engine) as session:
        for i in authorized:
            consent.set_consent(
                session,
                contact_id=ids[i],
                channel="email",
                topic="flu",
                status="opted_in",
                source="form",
                actor=actor,
            )
            auth_ids[ids[i]] = consent.add_authorization(
                session, ws.keyring, contact_id=ids[i], document=authorization(), actor=actor
            )
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="news@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            dkim_domain="clinic.example" if dkim_key_file else None,
            dkim_selector="s1" if dkim_key_file else None,
            dkim_key_file=dkim_key_file,
            actor=actor,
        )
        template = add_template(
            session,
            TemplateSpec("flu", "Flu shots are here", HTML, message_class, ("first_name",)),
            actor=actor,
        )
        campaign = campaigns.create_campaign(
            session,
            name="Flu 2026",
            segment="all",
            template_id=template.id,
            sender_id=SENDER,
            topic="flu",
            actor=actor,
        )
        campaigns.start_campaign(
            session, campaign.id, members=ids, membership_ref="test", actor=actor
        )
    return Scenario(ids, [ids[i] for i in authorized], auth_ids, campaign.id)
