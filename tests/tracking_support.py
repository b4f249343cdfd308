"""Set-up for tracking tests: a started campaign whose outbox rows count as sent an hour
ago (so a person's click is not "too fast after delivery"), the tokens compose would put
in each message, the tracking app under uvicorn on a loopback port, and the stored events.

Addresses: uvicorn trusts X-Forwarded-For from 127.0.0.1 (its default, as behind a
reverse proxy on the same host), so a test speaks as any client address by sending that
header; the classifier and the stored network see that address.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from sqlalchemy import select, update

from carepost.audit.actor import Actor
from carepost.campaigns.models import Campaign
from carepost.content.tokens import TokenSigner
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.tracking.destinations import links_of
from carepost.tracking.models import EngagementEvent
from carepost.web.commands import server_config
from carepost.workspace import Workspace
from delivery_support import campaign_scenario
from smtp_sink import free_port

# A person's desktop browser, and the agents of machines that fetch mail links.
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
PERSON_IP = "198.51.100.23"  # documentation range: no knowledge list holds it
SCANNER_IP = "40.107.22.9"  # Microsoft EOP, a default scanner network
APPLE_IP = "17.58.1.2"


class SteppingClock:
    """Now, and each later call `step` after the previous one."""

    def __init__(self, **step: float) -> None:
        self.now = datetime.now(UTC)
        self.step = timedelta(**step)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@dataclass
class Messages:
    campaign_id: str
    ids: list[str]  # outbox ids, one per recipient
    contact_of: dict[str, str]
    links: tuple[str, ...]  # the template's destinations by link index
    signer: TokenSigner

    def click(self, outbox_id: str, index: int) -> str:
        return self.signer.click_token(outbox_id, index)

    def open(self, outbox_id: str) -> str:
        return self.signer.open_token(outbox_id)

    def honeypot(self, outbox_id: str) -> str:
        return self.click(outbox_id, len(self.links))


def sent_campaign(
    ws: Workspace, actor: Actor, recipients: int, *, sent_ago: timedelta = timedelta(hours=1)
) -> Messages:
    """A campaign of `recipients` (the delivery tests' two-link template), its outbox rows
    marked sent `sent_ago` (the worker is not what these tests are about)."""
    emails = [f"patient.{i}@sink.test" for i in range(recipients)]
    sc = campaign_scenario(ws, actor, emails, (), message_class="treatment")
    at = datetime.now(UTC) - sent_ago
    with transaction(ws.engine) as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.campaign_id == sc.campaign_id)
            .values(state="sent", updated_at=at)
        )
        rows = s.execute(
            select(OutboxMessage.id, OutboxMessage.contact_id)
            .where(OutboxMessage.campaign_id == sc.campaign_id)
            .order_by(OutboxMessage.id)
        ).all()
        template_id = s.get_one(Campaign, sc.campaign_id).template_id
        links = links_of(s, template_id)
    return Messages(
        sc.campaign_id,
        [r[0] for r in rows],
        {r[0]: r[1] for r in rows},
        links,
        TokenSigner(ws.keyring),
    )


@contextmanager
def serving(app: Any, **tls: Any) -> Iterator[str]:
    """`app` under the uvicorn configuration the commands use, on a free loopback port;
    yields the base URL (https when `ssl_certfile`/`ssl_keyfile` are given)."""
    port = free_port()
    config = server_config(
        app, "127.0.0.1", port, tls.get("ssl_certfile"), tls.get("ssl_keyfile"), "warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    scheme = "https" if tls.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass(frozen=True)
class Stored:
    contact_id: str
    message_id: str | None
    campaign_id: str | None
    kind: str
    link_index: int | None
    verdict: str
    reason: str | None
    confidence: float | None
    network: str | None
    at: datetime


def stored_events(ws: Workspace, message_ids: Sequence[str] | None = None) -> list[Stored]:
    e = EngagementEvent
    query = select(
        e.contact_id,
        e.message_id,
        e.campaign_id,
        e.kind,
        e.link_index,
        e.verdict,
        e.reason,
        e.confidence,
        e.network,
        e.at,
    ).order_by(e.id)
    if message_ids is not None:
        query = query.where(e.message_id.in_(list(message_ids)))
    with transaction(ws.engine) as s:
        return [Stored(*row) for row in s.execute(query)]
