"""A campaign with a known outcome for every recipient, built through the real services
and sent by the real worker to the SMTP sink: sent, denied by the gate (first or on a
retry), refused live (hard and soft), deferred, bounced by a DSN (hard and soft),
complained about, unsubscribed (counted and not), opened and clicked by people, machines
and unknown agents, a honeypot hit and a click on an unknown link index; the audience is
a saved segment with two top-level clauses, frozen at start.

Contacts are synthetic. `Person` says, per recipient, what happens to them, so each test
computes the numbers it expects from this table rather than from the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.bounces import inbound
from carepost.campaigns import service as campaigns
from carepost.campaigns.commands import start
from carepost.consent import service as consent
from carepost.contacts.store import ContactInput, ContactWriter
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.delivery.smtp import RelayConfig, SmtpTransport
from carepost.delivery.worker import Worker, WorkerConfig
from carepost.segments.service import save_segment
from carepost.tracking.service import TrackedEvent, record_tracked
from carepost.workspace import Workspace
from delivery_support import HTML, SENDER, authorization
from smtp_sink import RELAY_TIMEOUT

RULE = 'state == "MA" or age >= 65'
CLAUSES = ('state == "MA"', "age >= 65")
LINKS = ("https://clinic.example/flu", "https://clinic.example/hours")
HONEYPOT = len(LINKS)


@dataclass(frozen=True)
class Event:
    kind: str  # open | click
    verdict: str
    minutes: int  # after T0 (the first send)
    link: int | None = None


@dataclass(frozen=True)
class Person:
    email: str
    state: str
    born: int
    consent: str = "full"  # full (opt-in + authorization) | opt_in | none
    events: tuple[Event, ...] = ()
    report: str | None = None  # hard | soft | complaint | auth_failure (a received report)
    opt_outs: tuple[tuple[str, int], ...] = ()  # (source, minutes after T0)
    later_campaign: bool = False  # a second campaign on the topic reaches them at T0 + 1 day
    staff_opt_out_before_retry: bool = False


def E(kind: str, verdict: str, minutes: int, link: int | None = None) -> Event:
    return Event(kind, verdict, minutes, link)


PEOPLE: tuple[Person, ...] = (
    Person(
        "a0@big.example",
        "MA",
        1990,
        events=(
            E("open", "human", 60),
            E("click", "human", 65, 0),
            E("click", "human", 70, HONEYPOT),  # a honeypot hit is never a human click
        ),
    ),
    Person(
        "a1@big.example",
        "MA",
        1950,
        events=(
            E("open", "machine", 1),
            E("open", "human", 180),
            E("open", "human", 210),
            E("click", "machine", 211, 7),  # no such link
        ),
    ),
    Person(
        "a2@big.example",
        "NH",
        1950,
        events=(
            E("click", "machine", 2, 0),
            E("click", "machine", 2, 1),
            E("click", "machine", 2, HONEYPOT),
        ),
    ),
    Person("a3@big.example", "MA", 1980, opt_outs=(("unsubscribe_link", 60),)),
    Person("a4@big.example", "NH", 1940, report="hard"),
    Person("a5@big.example", "MA", 1985, events=(E("open", "human", 26 * 60),), report="complaint"),
    Person("rcpt-550.a@big.example", "MA", 1970),  # refused live: 550 5.1.1 (hard)
    Person("data-552.b@small-practice.example", "MA", 1970),  # refused live: 552 5.2.2 (soft)
    Person("data-451.c@small-practice.example", "NH", 1945),  # deferred, and again on retry
    Person("data-451.d@tiny.example", "MA", 1980, staff_opt_out_before_retry=True),
    Person("d0@big.example", "MA", 1990, consent="none"),
    Person("d1@big.example", "NH", 1950, consent="opt_in"),
    Person("a6@big.example", "MA", 1970, report="soft"),
    Person(
        "a7@other.example",
        "MA",
        1990,
        events=(E("open", "unknown", 300),),
        opt_outs=(("unsubscribe_all", 120),),
    ),
    Person(
        "a8@big.example",
        "MA",
        1991,
        report="auth_failure",
        opt_outs=(("import", 60), ("unsubscribe_link", 31 * 24 * 60)),
    ),
    Person("a9@big.example", "NH", 1950, later_campaign=True, opt_outs=(("form", 2 * 24 * 60),)),
)


@dataclass
class World:
    campaign_id: str
    second_campaign_id: str
    t0: datetime
    contact_of: dict[str, str]  # email -> contact id
    outbox_of: dict[str, str]  # email -> outbox id (first campaign)
    sink: Any
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _contacts(ws: Workspace) -> dict[str, str]:
    with transaction(ws.engine) as session:
        writer = ContactWriter(session, ws.keyring, now=datetime.now(UTC), source="test")
        outcomes = writer.upsert_contacts(
            [
                ContactInput(
                    f"report:{i}",
                    {
                        "v": 1,
                        "name": {"given": [f"Pat{i}"], "family": "Synthetic"},
                        "emails": [p.email],
                        "birth_date": f"{p.born}-06-15",
                        "address": {"state": p.state},
                    },
                    [("email", p.email)],
                )
                for i, p in enumerate(PEOPLE)
            ]
        )
    ids = [o.contact_id for o in outcomes]
    assert all(ids)
    return {p.email: str(c) for p, c in zip(PEOPLE, ids, strict=True)}


def _worker(ws: Workspace, sink: Any, clock: Clock) -> Worker:
    relay = RelayConfig(
        sink.host, sink.port, tls_context=sink.client_context, timeout=RELAY_TIMEOUT
    )
    return Worker(
        ws.engine,
        ws.keyring,
        SmtpTransport(relay),
        WorkerConfig(public_url="https://mail.clinic.example", batch_size=50),
        name="w1",
        clock=clock,
        rng=Random(5),
    )


def _dsn(message_id: str, email: str, status: str) -> bytes:
    return f"""From: MAILER-DAEMON@mx.example (Mail Delivery System)
To: news@clinic.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system at host mx.example.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example

Final-Recipient: rfc822; {email}
Action: failed
Status: {status}
Diagnostic-Code: smtp; 550 {status} no

--B1
Content-Type: text/rfc822-headers

From: news@clinic.example
To: {email}
Message-ID: {message_id}
Subject: Flu shots are here

--B1--
""".replace("\n", "\r\n").encode()


def _arf(message_id: str, email: str, feedback_type: str) -> bytes:
    return f"""From: feedback@isp.example
To: abuse@clinic.example
Subject: FW: Flu shots are here
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain

This is an email abuse report.

--F1
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{email}>

--F1
Content-Type: message/rfc822

From: news@clinic.example
To: {email}
Message-ID: {message_id}
Subject: Flu shots are here

Hello.
--F1--
""".replace("\n", "\r\n").encode()


def build_world(ws: Workspace, actor: Actor, sink: Any) -> World:
    contact_of = _contacts(ws)
    with transaction(ws.engine) as session:
        for p in PEOPLE:
            cid = contact_of[p.email]
            if p.consent in ("full", "opt_in"):
                consent.set_consent(
                    session,
                    contact_id=cid,
                    channel="email",
                    topic="flu",
                    status="opted_in",
                    source="form",
                    actor=actor,
                    clock=lambda: datetime.now(UTC) - timedelta(days=10),
                )
            if p.consent == "full":
                consent.add_authorization(
                    session, ws.keyring, contact_id=cid, document=authorization(), actor=actor
                )
        campaigns.add_sender(
            session,
            sender_id=SENDER,
            from_name="Example Clinic",
            from_address="news@clinic.example",
            return_path="bounces@clinic.example",
            postal_address="1 Example Way, Springfield, MA 01101",
            organization_name="Example Clinic",
            actor=actor,
        )
        template = add_template(
            session,
            TemplateSpec("flu", "Flu shots are here", HTML, "marketing", ("first_name",)),
            actor=actor,
        )
        save_segment(session, "flu-audience", RULE, actor=actor)
        first = campaigns.create_campaign(
            session,
            name="Flu 2026",
            segment="flu-audience",
            template_id=template.id,
            sender_id=SENDER,
            topic="flu",
            actor=actor,
        )
    start(ws, first.id, actor)
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    clock = Clock(t0)
    _worker(ws, sink, clock).run()
    with transaction(ws.engine) as session:
        outbox_of = {
            email: oid
            for oid, cid in session.execute(
                select(OutboxMessage.id, OutboxMessage.contact_id).where(
                    OutboxMessage.campaign_id == first.id
                )
            )
            for email, c in contact_of.items()
            if c == cid
        }
    by_rcpt = {r.rcpt_tos[0]: r for r in sink.state.received}

    # Between the runs: a staff opt-out (the retry's gate denies), a second campaign.
    with transaction(ws.engine) as session:
        for p in PEOPLE:
            if p.staff_opt_out_before_retry:
                consent.set_consent(
                    session,
                    contact_id=contact_of[p.email],
                    channel="email",
                    topic="flu",
                    status="opted_out",
                    source="staff",
                    actor=actor,
                    clock=lambda: t0 + timedelta(minutes=10),
                )
        second = campaigns.create_campaign(
            session,
            name="Flu 2026 reminder",
            segment="flu-audience",
            template_id=template.id,
            sender_id=SENDER,
            topic="flu",
            actor=actor,
        )
        campaigns.start_campaign(
            session,
            second.id,
            members=[contact_of[p.email] for p in PEOPLE if p.later_campaign],
            membership_ref="no-freeze",
            actor=actor,
        )
    clock.now = t0 + timedelta(days=1)
    _worker(ws, sink, clock).run()

    # Reports received about messages of the first campaign.
    for p in PEOPLE:
        if p.report is None:
            continue
        received = by_rcpt[p.email]
        mid = next(
            line.split(":", 1)[1].strip()
            for line in received.data.decode("latin-1").split("\r\n")
            if line.lower().startswith("message-id:")
        )
        data = {
            "hard": lambda m, e: _dsn(m, e, "5.1.1"),
            "soft": lambda m, e: _dsn(m, e, "5.2.2"),
            "complaint": lambda m, e: _arf(m, e, "abuse"),
            "auth_failure": lambda m, e: _arf(m, e, "auth-failure"),
        }[p.report](mid, p.email)
        with transaction(ws.engine) as session:
            got = inbound.receive(
                session,
                ws.keyring,
                data,
                rcpt_tos=[received.mail_from],
                actor=actor,
                clock=lambda: t0 + timedelta(hours=2),
            )
        assert got.status == "recorded", (p.email, got)

    # Opt-outs, as the pages and the importer record them.
    with transaction(ws.engine) as session:
        for p in PEOPLE:
            for source, minutes in p.opt_outs:
                at = t0 + timedelta(minutes=minutes)
                if source == "unsubscribe_all":
                    consent.unsubscribe_all(
                        session,
                        contact_id=contact_of[p.email],
                        channel="email",
                        actor=actor,
                        clock=lambda at=at: at,
                    )
                else:
                    consent.set_consent(
                        session,
                        contact_id=contact_of[p.email],
                        channel="email",
                        topic="flu",
                        status="opted_out",
                        source=source,
                        actor=actor,
                        clock=lambda at=at: at,
                    )

    # Opens and clicks, as the tracking endpoints write them.
    events = [
        TrackedEvent(
            contact_id=contact_of[p.email],
            message_id=outbox_of[p.email],
            campaign_id=first.id,
            kind=ev.kind,
            link_index=ev.link,
            verdict=ev.verdict,
            reason={"human": "no_machine_signal", "machine": "scanner_ua"}.get(
                ev.verdict, "unclassified"
            ),
            confidence=0.9,
            network="203.0.113.0/24",
            at=t0 + timedelta(minutes=ev.minutes),
        )
        for p in PEOPLE
        for ev in p.events
    ]
    with transaction(ws.engine) as session:
        record_tracked(session, events)
    return World(first.id, second.id, t0, contact_of, outbox_of, sink)
