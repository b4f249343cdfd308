"""Set-up for portal tests: contacts whose PHI carries unique markers, a treatment
campaign whose template uses them, a transport that plays a recipient server without
TLS, a worker, and the web app over real HTTPS (uvicorn on loopback).

`MxTlsRefusing` stands in for the direct-delivery transport (another part of issue 6)
until it lands: for the chosen recipients it answers what direct delivery answers when
the recipient's server offers no STARTTLS (`mx_tls_unavailable()`), but only for an
envelope that requires TLS; everything else, the notices included, goes to a real SMTP
sink through the real SMTP transport. The lead adds the end-to-end test with the real
direct transport after merging.
"""

from __future__ import annotations

import email
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from random import Random
from typing import Any

import uvicorn

from carepost.audit.actor import Actor
from carepost.campaigns import service as campaigns
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.outcome import mx_tls_unavailable
from carepost.delivery.smtp import Attempt, Envelope, RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.portal.limits import PortalLimits
from carepost.web.app import create_app
from carepost.web.commands import server_config
from carepost.workspace import Workspace
from https_support import self_signed
from smtp_sink import RELAY_TIMEOUT, free_port

SENDER = "example-clinic"
ORG = "Example Clinic"
# Unique markers in every PHI field and in the template's own words: none may appear in
# a notice, a code mail, a URL or a page before verification.
GIVEN, FAMILY, BIRTH = "Qzxgiven", "Qzxfamily", "1903-07-19"
SUBJECT_MARK, BODY_MARK = "QZXSUBJECT", "QZXBODY"
MARKERS = [GIVEN.lower(), FAMILY.lower(), BIRTH, SUBJECT_MARK.lower(), BODY_MARK.lower()]
HTML = (
    "<html><body><p>Dear {{ first_name }} {{ last_name }} (born {{ birth_date }}),</p>"
    f"<p>{BODY_MARK}: your results are ready.</p>"
    '<img src="https://tracker.example/pixel.gif" alt=""></body></html>'
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Crash(Exception):
    """Stands for the worker process dying right after a notice left."""


@dataclass
class MxTlsRefusing:
    inner: SmtpTransport
    refuse: set[str]
    crash_after_notice: bool = False
    policies: list[tuple[str, str]] = field(default_factory=list)
    name: str = "smtp"
    method: str = "tls_relay"

    async def send(self, envelope: Envelope) -> Attempt:
        self.policies.append((envelope.rcpt_to, envelope.tls))
        if envelope.rcpt_to in self.refuse and envelope.tls == "required":
            return Attempt(mx_tls_unavailable())
        attempt = await self.inner.send(envelope)
        if self.crash_after_notice and envelope.tls == "opportunistic":
            raise Crash
        return attempt

    async def close(self) -> None:
        await self.inner.close()


def relay(sink: Any) -> SmtpTransport:
    return SmtpTransport(
        RelayConfig(sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT)
    )


def add_contacts(ws: Workspace, emails: Sequence[str]) -> list[str]:
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"portal:{i}",
                    {
                        "v": 1,
                        "name": {"given": [GIVEN], "family": FAMILY},
                        "emails": [address],
                        "birth_date": BIRTH,
                    },
                    [("email", address)],
                )
                for i, address in enumerate(emails)
            ]
        )
    return [o.contact_id for o in outcomes if o.contact_id]


@dataclass
class Scenario:
    contact_ids: list[str]
    campaign_id: str


def scenario(
    ws: Workspace,
    actor: Actor,
    emails: Sequence[str],
    *,
    tls_fallback: str = "portal",
    verification: str = "code",
    secure_delivery: bool = False,
    dkim_key_file: str | None = None,
) -> Scenario:
    ids = add_contacts(ws, emails)
    with transaction(ws.engine) as session:
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name=ORG,
            from_address="care@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name=ORG,
            dkim_domain="clinic.example" if dkim_key_file else None,
            dkim_selector="s1" if dkim_key_file else None,
            dkim_key_file=dkim_key_file,
            tls_fallback=tls_fallback,
            portal_verification=verification,
            actor=actor,
        )
        subject = f"{SUBJECT_MARK} for {{{{ first_name }}}}" if secure_delivery else SUBJECT_MARK
        template = add_template(
            session,
            TemplateSpec(
                "results",
                subject,
                HTML,
                "treatment",
                ("first_name", "last_name", "birth_date"),
                secure_delivery=secure_delivery,
            ),
            actor=actor,
        )
        campaign = campaigns.create_campaign(
            session,
            name="Results",
            segment="all",
            template_id=template.id,
            sender_id=SENDER,
            topic="results",
            actor=actor,
        )
        campaigns.start_campaign(
            session, campaign.id, members=ids, membership_ref="test", actor=actor
        )
    return Scenario(ids, campaign.id)


def worker(ws: Workspace, transport: Any, clock: Clock, public_url: str, **config: Any) -> Worker:
    return Worker(
        ws.engine,
        ws.keyring,
        transport,
        WorkerConfig(public_url=public_url, batch_size=10, **config),
        name="w1",
        clock=clock,
        rng=Random(7),
    )


def parsed(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def body_text(data: bytes) -> str:
    msg = parsed(data)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(data: bytes) -> str:
    match = re.search(r"https://\S+/s/[A-Za-z0-9_-]{43}", body_text(data))
    assert match is not None
    return match.group(0)


def code_in(data: bytes) -> str:
    match = re.search(r"\b(\d{8})\b", body_text(data))
    assert match is not None
    return match.group(1)


def phi_in(text: str | bytes) -> list[str]:
    lowered = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).lower()
    return [m for m in MARKERS if m in lowered]


# --- the web app over HTTPS -----------------------------------------------------------------
@contextmanager
def https_site(
    ws: Workspace, tmp_path: Path, clock: Clock, sink: Any, limits: PortalLimits | None = None
) -> Iterator[tuple[str, Path]]:
    """The app on a loopback port over HTTPS: yields its base URL and certificate."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    app = create_app(ws, clock=clock, portal_transport=lambda: relay(sink), portal_limits=limits)
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, cert, key, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        thread.join(10)
