"""Set-up for one-off message tests: contacts, a sender and a treatment template with
per-message data fields, all through the real services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.messages.service import SentMessage, do_send_message
from carepost.staff.principal import Principal
from carepost.workspace import Workspace
from delivery_support import SENDER, add_contacts
from smtp_sink import RELAY_TIMEOUT

LAB_HTML = (
    "<html><body><p>Dear {{ first_name }},</p>"
    "<p>Your {{ data_test_name }} result is ready. Reference {{ data_reference }}.</p>"
    "</body></html>"
)
LAB_FIELDS = ("first_name", "data_test_name", "data_reference")


def setup_one_off(ws: Workspace, actor: Actor, emails: list[str]) -> list[str]:
    ids = add_contacts(ws, emails)
    with transaction(ws.engine) as session:
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="care@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            actor=actor,
        )
        add_template(
            session,
            TemplateSpec("lab-result", "Your results are ready", LAB_HTML, "treatment", LAB_FIELDS),
            actor=actor,
        )
    return ids


def send(
    ws: Workspace,
    actor: Actor,
    contact_id: str,
    data: dict[str, Any],
    *,
    message_class: str = "treatment",
    principal: Principal | None = None,
    template: str = "lab-result",
) -> SentMessage:
    with transaction(ws.engine) as session:
        return do_send_message(
            session,
            ws.keyring,
            principal=principal or Principal.system(actor),
            contact_id=contact_id,
            template=template,
            message_class=message_class,
            data=data,
            sender=SENDER,
            at=datetime.now(UTC),
        )


def worker_for(
    ws: Workspace, sink: Any, on_handoff: Callable[[], None] | None = None, **config: Any
) -> Worker:
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    return Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url="https://mail.clinic.example", **config),
        name="w-one-off",
        on_handoff=on_handoff,
    )
