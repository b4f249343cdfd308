"""`carepost demo`: the main job end to end on the embedded default.

A workspace (SQLite, key file, settings), a realistic synthetic population written
encrypted, a segment, a template that declares its PHI fields, a DKIM-signing sender,
consent and HIPAA marketing authorizations for part of the audience, and a marketing
campaign delivered by a worker over STARTTLS into the built-in capture server. It prints
what was sent, what the consent gate denied and why, and where to look next. Running it
again reuses the workspace: the population is unchanged and a new campaign is sent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from carepost.audit import checkpoint as cp
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.campaigns import commands as campaign_commands
from carepost.campaigns import service as campaigns
from carepost.campaigns.models import SenderProfile
from carepost.config import load_settings, set_file_setting
from carepost.consent import service as consent
from carepost.consent.models import Authorization, GateDecision
from carepost.contacts.population import write_population
from carepost.content.service import add_template
from carepost.content.template import TemplateSpec
from carepost.db import transaction
from carepost.delivery import dkim
from carepost.delivery.capture import CaptureServer, captured
from carepost.delivery.factory import capture_folder, worker_for
from carepost.delivery.models import OutboxMessage
from carepost.segments import service as segments
from carepost.workspace import Workspace, init_workspace, open_workspace

DEMO_PUBLIC_URL = "https://localhost:8025"  # `carepost serve` answers here, own certificate
SENDER = "riverside-clinic"
SEGMENT = "flu-outreach"
RULE = 'age >= 50 and not vaccinated("influenza", within=365d)'
TOPIC = "flu-clinic"
HTML = """<html><head><style>
  body { font-family: Georgia, serif; color: #1f2933 }
  .cta { background: #0b7285; color: #ffffff; padding: 10px 16px; text-decoration: none }
  .foot { font-size: 12px; color: #52606d }
</style></head><body>
<p>Dear {{ first_name }},</p>
<p>Flu season is here, and our records show you have not had this year's flu shot.
Walk-in clinics run every Saturday in November and December.</p>
<p><a class="cta" href="https://riverside-clinic.example/flu">Book your flu shot</a></p>
<p>Questions? <a href="https://riverside-clinic.example/contact">Contact us</a>.</p>
<p class="foot">Riverside Clinic · {{ sender_postal_address }} ·
<a href="{{ unsubscribe_url }}">Unsubscribe</a> ·
<a href="{{ preferences_url }}">Email preferences</a></p>
</body></html>
"""


@dataclass
class DemoResult:
    campaign_id: str
    recipients: int
    sent: int
    denied: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    captured: int = 0
    sample_message: str | None = None
    audit_entries: int = 0
    audit_ok: bool = False


def authorization_document(
    signed_at: datetime,
    *,
    sender: str = SENDER,
    organization: str = "Riverside Clinic",
    purpose: str = "Seasonal vaccination clinics",
) -> dict[str, object]:
    """A complete 164.508(c) marketing authorization naming `sender` as recipient, as a
    synthetic patient would sign it (the demo's, the benchmarks' and the tests')."""
    return {
        "phi_description": "Name, email address, age and vaccination and visit history",
        "disclosers": [organization],
        "recipients": [{"id": sender, "name": organization}],
        "purposes": [{"code": "marketing", "description": purpose}],
        "expires_at": "2030-12-31T00:00:00Z",
        "signature": {
            "signer_name": "synthetic patient",
            "signed_at": signed_at.isoformat(),
            "method": "electronic",
            "source_address": "192.0.2.10",
            "signed_text": f"I authorize {organization} to email me about: {purpose}.",
        },
        "statements": {
            "right_to_revoke": True,
            "revocation_instructions": "Use the preferences link, or write to the clinic",
            "conditioning": True,
            "redisclosure": True,
        },
    }


def prepare_workspace(data_dir: Path | None) -> tuple[Workspace, bool]:
    settings = load_settings(data_dir)
    if settings.resolved_key_file.exists():
        return open_workspace(data_dir), False
    ws = init_workspace(data_dir)
    return ws, True


def run_demo(
    data_dir: Path | None, contacts: int, say: Callable[[str], None], actor: Actor
) -> DemoResult:
    ws, created = prepare_workspace(data_dir)
    try:
        return _run(ws, created, contacts, say, actor)
    finally:
        ws.close()


def _run(
    ws: Workspace, created: bool, contacts: int, say: Callable[[str], None], actor: Actor
) -> DemoResult:
    s = ws.settings
    if not s.public_url:
        # The demo's own default, written to the workspace settings so `carepost serve`
        # and every worker build the same https links.
        set_file_setting(s, "public_url", DEMO_PUBLIC_URL)
        ws.close()
        ws.settings = load_settings(s.data_dir)
        s = ws.settings
    say(f"1. {'created' if created else 'using'} workspace {s.data_dir} (SQLite, key file 0600)")
    now = datetime.now(UTC)
    started = time.perf_counter()
    with transaction(ws.engine) as session:
        population = write_population(
            session, ws.keyring, contacts=contacts, seed=1, as_of=now.date(), actor=actor, now=now
        )
    c = population.contacts
    say(
        f"2. synthetic population, encrypted: {sum(c.values())} contacts "
        f"({c.get('created', 0)} new, {c.get('unchanged', 0)} unchanged), "
        f"{sum(population.facts.values())} clinical facts, in {time.perf_counter() - started:.1f} s"
    )
    with transaction(ws.engine) as session:
        segments.save_segment(
            session, SEGMENT, RULE, actor=actor, description="50+ without a flu shot this year"
        )
        if session.get(SenderProfile, SENDER) is None:
            key_path = s.data_dir / "dkim" / f"demo._domainkey.{SENDER}.example.pem"
            if not key_path.exists():
                key_path.parent.mkdir(mode=0o700, exist_ok=True)
                key_path.write_bytes(dkim.private_pem(dkim.generate_key("rsa-sha256")))
                key_path.chmod(0o600)
            campaigns.add_sender(
                session,
                sender_id=SENDER,
                from_name="Riverside Clinic",
                from_address="care@riverside-clinic.example",
                return_path="bounces@riverside-clinic.example",
                postal_address="200 River Road, Springfield, MA 01101",
                organization_name="Riverside Clinic",
                dkim_domain="riverside-clinic.example",
                dkim_selector="demo",
                dkim_key_file=str(key_path.resolve()),
                actor=actor,
            )
        template = add_template(
            session,
            TemplateSpec(
                "flu-outreach", "Flu shots at Riverside Clinic", HTML, "marketing", ("first_name",)
            ),
            actor=actor,
        )
        campaign = campaigns.create_campaign(
            session,
            name=f"Flu outreach {now:%Y-%m-%d %H:%M}",
            segment=SEGMENT,
            template_id=template.id,
            sender_id=SENDER,
            topic=TOPIC,
            actor=actor,
        )
    started_campaign = campaign_commands.start(ws, campaign.id, actor)
    with transaction(ws.engine) as session:
        members = list(
            session.scalars(
                select(OutboxMessage.contact_id)
                .where(OutboxMessage.campaign_id == campaign.id)
                .order_by(OutboxMessage.contact_id)
            )
        )
        already = set(session.scalars(select(Authorization.contact_id)))
        # Two in three members signed an authorization and opted in; one in ten of those
        # later opted out of the topic; the rest never authorized marketing.
        for i, contact_id in enumerate(members):
            if i % 3 == 2 or contact_id in already:
                continue
            consent.set_consent(
                session,
                contact_id=contact_id,
                channel="email",
                topic=TOPIC,
                status="opted_in",
                source="form",
                actor=actor,
            )
            consent.add_authorization(
                session,
                ws.keyring,
                contact_id=contact_id,
                document=authorization_document(now),
                actor=actor,
            )
            if i % 10 == 0:
                consent.set_consent(
                    session,
                    contact_id=contact_id,
                    channel="email",
                    topic=TOPIC,
                    status="opted_out",
                    source="unsubscribe_link",
                    actor=actor,
                )
    say(
        f"3. segment {SEGMENT!r}: {RULE}\n"
        f"   campaign {campaign.id}: {started_campaign.recipients} recipients frozen "
        f"(membership {started_campaign.membership_ref}); template declares PHI: first_name"
    )
    server = CaptureServer(capture_folder(ws), ws.keyring, s.capture_port)
    before = len(captured(capture_folder(ws)))
    server.start()
    try:
        started = time.perf_counter()
        report = worker_for(ws, name="demo-worker").run(until_idle=True)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    result = DemoResult(campaign.id, started_campaign.recipients, report.results.get("sent", 0))
    result.captured = len(captured(capture_folder(ws))) - before
    with transaction(ws.engine) as session:
        for reasons in session.scalars(
            select(GateDecision.reasons).where(
                GateDecision.campaign_id == campaign.id, GateDecision.allowed.is_(False)
            )
        ):
            result.denied.update(reasons.split())
        result.other.update({k: v for k, v in report.results.items() if k != "sent"})
        result.sample_message = session.scalar(
            select(OutboxMessage.id)
            .where(OutboxMessage.campaign_id == campaign.id, OutboxMessage.state == "sent")
            .limit(1)
        )
    say(
        f"4. delivered over STARTTLS (verified), DKIM-signed, into the capture server: "
        f"{result.sent} sent in {elapsed:.1f} s; {result.captured} captured (stored sealed)"
    )
    denied_total = report.denied
    say(f"5. the consent gate denied {denied_total} at send time:")
    for reason, n in result.denied.most_common():
        say(f"     {n:6}  {reason}  ({consent_reason_text(reason)})")
    checkpoint_path = s.data_dir / "demo" / "audit-checkpoint.json"
    checkpoint_path.parent.mkdir(exist_ok=True)
    audit.make_checkpoint(ws.engine, ws.keyring, checkpoint_path)
    chain = audit.verify(ws.engine, checkpoint=cp.load(checkpoint_path), ring=ws.keyring)
    result.audit_entries, result.audit_ok = chain.entries, chain.ok
    say(
        f"6. audit chain {'intact' if chain.ok else 'BROKEN'}: {chain.entries} entries; "
        f"signed checkpoint {checkpoint_path}"
    )
    return result


def consent_reason_text(code: str) -> str:
    from carepost.consent.gate import EXPLANATIONS

    return EXPLANATIONS.get(code, code)
