"""`carepost sender ...` and `carepost campaign ...`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.campaigns import service
from carepost.campaigns.models import Campaign
from carepost.cli_support import (
    DataDir,
    JsonFlag,
    actor_of,
    emit_json,
    fail,
    out,
    progress_bar,
    progress_counter,
    workspace,
)
from carepost.content.service import latest_template
from carepost.db import transaction
from carepost.workspace import Workspace

sender_app = typer.Typer(no_args_is_help=True, help="Sender profiles (who mail comes from).")
campaign_app = typer.Typer(no_args_is_help=True, help="Campaigns: a segment, a template, a sender.")


@sender_app.command("add")
def sender_add(
    sender_id: Annotated[str, typer.Argument(help="Id; authorizations name it as recipient.")],
    from_name: Annotated[str, typer.Option()],
    from_address: Annotated[str, typer.Option()],
    postal_address: Annotated[str, typer.Option(help="Physical postal address (CAN-SPAM).")],
    organization: Annotated[str, typer.Option()],
    reply_to: Annotated[str | None, typer.Option()] = None,
    return_path: Annotated[str | None, typer.Option(help="Envelope sender for bounces.")] = None,
    dkim_domain: Annotated[str | None, typer.Option()] = None,
    dkim_selector: Annotated[str | None, typer.Option()] = None,
    tls_fallback: Annotated[
        str,
        typer.Option(
            help="When the recipient's server cannot do the TLS a message requires: "
            "portal (notice + secure pickup) or fail."
        ),
    ] = "portal",
    portal_verification: Annotated[
        str, typer.Option(help="How the portal checks the reader: code (mailed) or dob.")
    ] = "code",
    e2e: Annotated[
        str,
        typer.Option(
            help="End-to-end encryption: off, smime or pgp (required: a contact without "
            "such a key fails with no_recipient_key), prefer (any key on file, else TLS)."
        ),
    ] = "off",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Add a sender profile. With --dkim-domain/--dkim-selector it signs with the key
    `carepost dkim keygen` made for them."""
    with workspace(data_dir) as ws:
        key_file = None
        if dkim_domain or dkim_selector:
            from carepost.delivery.commands import key_path

            if not (dkim_domain and dkim_selector):
                fail("give both --dkim-domain and --dkim-selector", 2)
            path = key_path(ws.settings.data_dir, dkim_domain, dkim_selector)
            if not path.exists():
                fail(f"no DKIM key at {path}; run `carepost dkim keygen` first")
            key_file = str(path.resolve())
        try:
            with transaction(ws.engine) as session:
                service.add_sender(
                    session,
                    sender_id=sender_id,
                    from_name=from_name,
                    from_address=from_address,
                    postal_address=postal_address,
                    organization_name=organization,
                    reply_to=reply_to,
                    return_path=return_path,
                    dkim_domain=dkim_domain,
                    dkim_selector=dkim_selector,
                    dkim_key_file=key_file,
                    tls_fallback=tls_fallback,
                    portal_verification=portal_verification,
                    e2e=e2e,
                    actor=actor_of(ws),
                )
        except service.CampaignError as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json({"id": sender_id, "dkim": bool(key_file), "e2e": e2e})
    else:
        out.print(f"sender {sender_id} added" + (" (DKIM signing on)" if key_file else ""))


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option()],
    segment: Annotated[str, typer.Option(help="Saved segment or list name.")],
    template: Annotated[str, typer.Option(help="Template name (its newest version).")],
    sender: Annotated[str, typer.Option(help="Sender profile id.")],
    topic: Annotated[str, typer.Option(help="Consent topic, e.g. newsletter.")],
    schedule: Annotated[str | None, typer.Option(help="Send from (ISO 8601, UTC).")] = None,
    rate: Annotated[int | None, typer.Option(help="At most N messages a minute.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Create a draft campaign (nothing is sent until `campaign start`)."""
    schedule_at = None
    if schedule:
        try:
            schedule_at = datetime.fromisoformat(schedule.replace("Z", "+00:00"))
        except ValueError:
            fail("--schedule must be ISO 8601, e.g. 2026-12-01T09:00:00Z", 2)
        if schedule_at.tzinfo is None:
            fail("--schedule needs a time zone (Z or +hh:mm)", 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                tpl = latest_template(session, template)
                if tpl is None:
                    raise service.CampaignError(f"no template named {template!r}")
                from carepost.segments.service import SegmentError, get_segment

                try:
                    get_segment(session, segment)
                except SegmentError as exc:
                    raise service.CampaignError(str(exc)) from None
                row = service.create_campaign(
                    session,
                    name=name,
                    segment=segment,
                    template_id=tpl.id,
                    sender_id=sender,
                    topic=topic,
                    schedule_at=schedule_at,
                    rate_per_minute=rate,
                    actor=actor_of(ws),
                )
        except service.CampaignError as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json({"id": row.id, "status": row.status})
    else:
        out.print(f"campaign {row.id} created (draft); start it with `carepost campaign start`")


def start(ws: Workspace, campaign_id: str, actor: Actor) -> Campaign:
    """Freeze the segment's membership now and write the outbox (the command's work, also
    used by the demo), with feedback on stderr while it runs."""
    from carepost.segments.service import (
        SegmentEngine,
        freeze_membership,
        frozen_members,
        get_segment,
    )

    engine = SegmentEngine(ws.engine, ws.keyring, actor=actor)
    with transaction(ws.engine) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise service.CampaignError(f"no campaign {campaign_id}")
        if campaign.status != "draft":
            raise service.CampaignError(f"cannot start a campaign that is {campaign.status}")
        segment = get_segment(session, campaign.segment)
    # The audience size is known only once the segment is evaluated, so the first phase
    # (snapshot build, evaluation, evidence rows) counts; the outbox phase gets a bar.
    # The snapshot is built before the transaction: its audit entry commits on its own.
    counter, frozen = progress_counter("freezing the audience")
    counter.start()
    try:
        engine.refresh(force=True)
        with transaction(ws.engine) as session:
            segment = get_segment(session, campaign.segment)
            freeze = freeze_membership(
                session,
                segment,
                at=datetime.now(UTC),
                actor=actor,
                campaign_id=campaign_id,
                snapshot=engine.snapshot,
                progress=frozen,
            )
            members = frozen_members(session, freeze.id)
            counter.stop()  # rich shows one live display at a time
            bar, queued = progress_bar(len(members), "queueing messages")
            with bar:
                return service.start_campaign(
                    session,
                    campaign_id,
                    members=members,
                    membership_ref=freeze.id,
                    actor=actor,
                    progress=queued,
                )
    finally:
        counter.stop()


@campaign_app.command("start")
def campaign_start(
    campaign_id: Annotated[str, typer.Argument()],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Freeze the audience and queue one message per member; workers send them."""
    from carepost.segments.service import SegmentError

    with workspace(data_dir) as ws:
        try:
            row = start(ws, campaign_id, actor_of(ws))
        except (service.CampaignError, SegmentError) as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json(
            {
                "id": row.id,
                "status": row.status,
                "recipients": row.recipients,
                "membership_ref": row.membership_ref,
            }
        )
    else:
        out.print(
            f"campaign {row.id} running: {row.recipients} messages queued "
            f"(membership frozen as {row.membership_ref})"
        )


def _status_verb(verb: str) -> None:
    def command(
        campaign_id: Annotated[str, typer.Argument()],
        json_out: JsonFlag = False,
        data_dir: DataDir = None,
    ) -> None:
        with workspace(data_dir) as ws:
            try:
                with transaction(ws.engine) as session:
                    row = service.change_status(session, campaign_id, verb, actor=actor_of(ws))
            except service.CampaignError as exc:
                fail(str(exc), 2)
        if json_out:
            emit_json({"id": row.id, "status": row.status})
        else:
            out.print(f"campaign {row.id} is {row.status}")

    command.__doc__ = {
        "pause": "Stop claiming this campaign's messages (in-flight ones finish).",
        "resume": "Claim this campaign's messages again.",
        "cancel": "Stop this campaign for good; queued messages stay unsent.",
    }[verb]
    campaign_app.command(verb)(command)


for _verb in ("pause", "resume", "cancel"):
    _status_verb(_verb)


@campaign_app.command("status")
def campaign_status(
    campaign_id: Annotated[str, typer.Argument()],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Where a campaign stands: messages by state."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                status = service.campaign_status(session, campaign_id)
        except service.CampaignError as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json(status.as_dict())
        return
    out.print(f"{status.name} ({status.id}): {status.status}, {status.recipients} recipients")
    for state, n in sorted(status.states.items()):
        out.print(f"  {state:16} {n}")


@campaign_app.command("list")
def campaign_list(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Every campaign, newest first."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        rows = session.scalars(select(Campaign).order_by(Campaign.created_at.desc())).all()
        items = [
            {
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "segment": r.segment,
                "class": r.message_class,
                "recipients": r.recipients,
            }
            for r in rows
        ]
    if json_out:
        emit_json(items)
        return
    table = Table("id", "name", "status", "segment", "class", "recipients")
    for r in rows:
        table.add_row(r.id, r.name, r.status, r.segment, r.message_class, str(r.recipients))
    out.print(table)
