"""Events feed segments, end to end on every database: a real campaign goes through the
worker to a real SMTP server; the tracking URLs are read out of the messages received
there and requested over HTTP from `carepost serve`'s app. A person's click makes the
contact match `clicked(within=...)`; a scanner's burst (every link and the honeypot within
a second) and an Apple Mail Privacy Protection fetch do not, unless machines are asked
for (`humans_only=false`)."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta
from email import policy
from random import Random
from typing import Any

import httpx

from carepost.audit.actor import Actor
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.segments.service import SegmentEngine
from carepost.web.app import create_app
from carepost.workspace import Workspace
from delivery_support import campaign_scenario
from smtp_sink import RELAY_TIMEOUT
from tracking_support import APPLE_IP, CHROME, PERSON_IP, SCANNER_IP, serving, stored_events

PUBLIC = "https://mail.clinic.example"
SAFE_LINKS_UA = "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)"


def _sent_links(sink: Any) -> dict[str, tuple[str, list[str], str]]:
    """Per recipient: the honeypot's URL, the visible tracked links in order, the pixel."""
    found = {}
    for got in sink.state.received:
        msg = email.message_from_bytes(got.data, policy=policy.default)
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        hidden = re.findall(rf'<a href="({PUBLIC}/t/c/[^"]+)" style="display:none"', html)
        clicks = re.findall(rf'href="({PUBLIC}/t/c/[^"]+)"', html)
        [pixel] = re.findall(rf'src="({PUBLIC}/t/o/[^"]+)"', html)
        [honeypot] = hidden
        found[got.rcpt_tos[0]] = (honeypot, [c for c in clicks if c != honeypot], pixel)
    return found


def test_a_human_click_puts_the_contact_in_the_segment_a_scanner_does_not(
    workspace: Workspace, actor: Actor, smtp_sink_factory: Any
) -> None:
    emails = ["person@sink.test", "scanned@sink.test", "apple@sink.test"]
    sc = campaign_scenario(workspace, actor, emails, (), message_class="treatment")
    sink = smtp_sink_factory()
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    worker = Worker(
        workspace.engine,
        workspace.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url=PUBLIC, batch_size=10),
        name="w1",
        rng=Random(1),
    )
    assert worker.run().results == {"sent": 3}
    links = _sent_links(sink)
    contact = dict(zip(emails, sc.contact_ids, strict=True))

    # The person reads the message ten minutes later; the tracking app's clock says so.
    later = datetime.now(UTC) + timedelta(minutes=10)
    web = create_app(workspace, clock=lambda: later)
    with serving(web) as base, httpx.Client(timeout=15) as c:

        def get(url: str, ip: str, ua: str) -> httpx.Response:
            headers = {"User-Agent": ua, "X-Forwarded-For": ip}
            return c.get(url.replace(PUBLIC, base), headers=headers)

        honeypot, clicks, _ = links["person@sink.test"]
        r = get(clicks[0], PERSON_IP, CHROME)
        assert r.status_code == 302
        assert r.headers["location"] == "https://clinic.example/flu"

        # Safe Links follows everything in the message at once, the hidden link included.
        honeypot, clicks, _ = links["scanned@sink.test"]
        for url in [honeypot, *clicks]:
            assert get(url, SCANNER_IP, SAFE_LINKS_UA).status_code in (200, 302)

        # Apple's proxy fetches the pixel of every message, read or not.
        _, _, pixel = links["apple@sink.test"]
        assert get(pixel, APPLE_IP, "Mozilla/5.0").status_code == 200

    verdicts = {(e.contact_id, e.kind, e.link_index): e.verdict for e in stored_events(workspace)}
    assert verdicts[(contact["person@sink.test"], "click", 0)] == "human"
    assert {v for (cid, _, _), v in verdicts.items() if cid != contact["person@sink.test"]} == {
        "machine"
    }

    engine = SegmentEngine(
        workspace.engine, workspace.keyring, actor=actor, workers=1, clock=lambda: later
    )
    assert engine.members("clicked(within=7d)") == [contact["person@sink.test"]]
    assert sorted(engine.members("clicked(within=7d, humans_only=false)")) == sorted(
        [contact["person@sink.test"], contact["scanned@sink.test"]]
    )
    assert engine.members("opened(within=7d)") == []
    assert engine.members("opened(within=7d, humans_only=false)") == [contact["apple@sink.test"]]
