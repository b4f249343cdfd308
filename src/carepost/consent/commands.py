"""`carepost consent …` and `carepost suppress …`. Each command owns one transaction and
prints a human summary or, with --json, JSON. Nothing here prints PHI: ids, codes, times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from carepost.cli_support import DataDir, JsonFlag, actor_of, emit_json, err, fail, out, workspace
from carepost.consent import service
from carepost.consent.authorization import AuthorizationInvalid
from carepost.consent.headers import PublicUrlError, list_unsubscribe_headers, public_base_url
from carepost.consent.importer import import_authorizations, import_consents
from carepost.consent.records import EMAIL, SELF_SENDER
from carepost.contacts.importers.errors import ImportRejected
from carepost.db import transaction

consent_app = typer.Typer(
    no_args_is_help=True, help="Consents, HIPAA authorizations and the send gate."
)
suppress_app = typer.Typer(no_args_is_help=True, help="Addresses that must never be mailed.")

Contact = Annotated[str, typer.Option("--contact", help="Contact id.")]
Channel = Annotated[str, typer.Option("--channel", help="email or sms.")]
Topic = Annotated[str, typer.Option("--topic", help="Topic slug, e.g. newsletter.")]
At = Annotated[str | None, typer.Option("--at", help="ISO 8601 time with offset (default: now).")]


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail("--at must be an ISO 8601 date-time, e.g. 2026-11-24T10:00:00Z", 2)
    if parsed.tzinfo is None:
        fail("--at needs a UTC offset (e.g. Z or +00:00)", 2)
    return parsed.astimezone(UTC)


def _errors() -> tuple[type[Exception], ...]:
    return (service.ConsentError, service.NotFound)


@consent_app.command("set")
def consent_set(
    contact: Contact,
    topic: Topic,
    status: Annotated[str, typer.Option(help="opted_in or opted_out.")],
    channel: Channel = EMAIL,
    source: Annotated[str, typer.Option(help="import, form, api, unsubscribe_link, staff.")] = (
        "staff"
    ),
    evidence: Annotated[str, typer.Option(help="Evidence reference (no PHI).")] = "",
    at: At = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Record an opt-in or opt-out (appended: the history is kept)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                consent_id = service.set_consent(
                    session,
                    contact_id=contact,
                    channel=channel,
                    topic=topic,
                    status=status.replace("-", "_"),
                    source=source,
                    evidence_ref=evidence,
                    effective_at=_parse_at(at),
                    actor=actor_of(ws),
                )
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"consent_id": consent_id, "contact_id": contact, "status": status})
    else:
        out.print(f"consent {consent_id}: {contact} {channel}/{topic} {status}")


@consent_app.command("authorize")
def consent_authorize(
    contact: Contact,
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, readable=True)],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Store a HIPAA authorization (45 CFR 164.508) after checking every required element."""
    try:
        raw = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as exc:
        fail(f"{file}: not valid JSON (line {exc.lineno}, column {exc.colno})", 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                auth_id = service.add_authorization(
                    session, ws.keyring, contact_id=contact, document=raw, actor=actor_of(ws)
                )
        except AuthorizationInvalid as exc:
            if json_out:
                emit_json({"saved": False, **exc.as_dict()})
                raise typer.Exit(1) from None
            err.print("[bold red]authorization not saved[/]")
            for element in exc.missing:
                err.print(f"  missing: {element}")
            for element, problem in exc.invalid:
                err.print(f"  invalid: {element} ({problem})")
            raise typer.Exit(1) from None
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"saved": True, "authorization_id": auth_id, "contact_id": contact})
    else:
        out.print(f"authorization {auth_id} saved for contact {contact} (document encrypted)")


@consent_app.command("revoke")
def consent_revoke(
    authorization: Annotated[
        str | None, typer.Option("--authorization", help="Authorization id.")
    ] = None,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Revoke every authorization of a contact.")
    ] = None,
    source: Annotated[str, typer.Option(help="How it reached us: form, api, staff…")] = "staff",
    evidence: Annotated[str, typer.Option(help="Evidence reference (no PHI).")] = "",
    at: At = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Record the revocation of an authorization (164.508(b)(5)); the gate honours it from
    that time on, including for campaigns already running."""
    if (authorization is None) == (contact is None):
        fail("give --authorization ID or --contact ID", 2)
    revoked: list[dict[str, Any]] = []
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                ids = (
                    [authorization]
                    if authorization
                    else [a["id"] for a in service.authorizations_of(session, contact or "")]
                )
                if not ids:
                    fail("the contact has no authorizations")
                for auth_id in ids:
                    assert auth_id is not None
                    when = service.revoke_authorization(
                        session,
                        authorization_id=auth_id,
                        source=source,
                        evidence_ref=evidence,
                        revoked_at=_parse_at(at),
                        actor=actor_of(ws),
                    )
                    revoked.append({"authorization_id": auth_id, "revoked_at": when.isoformat()})
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"revoked": revoked})
    else:
        for r in revoked:
            out.print(f"authorization {r['authorization_id']} revoked as of {r['revoked_at']}")


@consent_app.command("expiry-event")
def consent_expiry_event(
    authorization: Annotated[str, typer.Option("--authorization", help="Authorization id.")],
    at: At = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Record that an authorization's expiration event happened; it ends the authorization."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                when = service.record_expiry_event(
                    session,
                    authorization_id=authorization,
                    occurred_at=_parse_at(at),
                    actor=actor_of(ws),
                )
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"authorization_id": authorization, "expiry_event_at": when.isoformat()})
    else:
        out.print(f"authorization {authorization} ended by its expiry event at {when.isoformat()}")


@consent_app.command("check")
def consent_check(
    contact: Contact,
    message_class: Annotated[
        str,
        typer.Option(
            "--class", help="treatment, operations, transactional, marketing, marketing_paid."
        ),
    ],
    topic: Topic,
    channel: Channel = EMAIL,
    sender: Annotated[str, typer.Option(help="Sender id ('self' = the covered entity).")] = (
        SELF_SENDER
    ),
    at: At = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Ask the gate about one message, without sending or storing anything."""
    when = _parse_at(at) or datetime.now(UTC)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                decision = service.check(
                    session,
                    contact_id=contact,
                    message_class=message_class,
                    channel=channel,
                    topic=topic,
                    sender=sender,
                    at=when,
                )
        except _errors() as exc:
            fail(str(exc))
    payload = {
        "contact_id": contact,
        "message_class": message_class,
        "channel": channel,
        "topic": topic,
        "sender": sender,
        "at": when.isoformat(),
        **decision.as_dict(),
    }
    if json_out:
        emit_json(payload)
        return
    verdict = "[green]ALLOWED[/]" if decision.allowed else "[red]DENIED[/]"
    out.print(f"{verdict} {message_class} {channel}/{topic} from {sender} at {when.isoformat()}")
    for code, text in zip(payload["reasons"], payload["explanations"], strict=True):
        out.print(f"  {code}: {text}")
    if decision.authorization_id:
        out.print(f"  authorization relied on: {decision.authorization_id}")


@consent_app.command("explain")
def consent_explain(
    contact: Contact,
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign id.")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Why did (or didn't) this contact get this campaign's message? Every stored decision."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        rows = service.explain(session, contact_id=contact, campaign_id=campaign)
    if json_out:
        emit_json({"contact_id": contact, "campaign_id": campaign, "decisions": rows})
        if not rows:
            raise typer.Exit(1)
        return
    if not rows:
        fail(f"the gate made no decision for contact {contact} in campaign {campaign}")
    for r in rows:
        verdict = "[green]ALLOWED[/]" if r["allowed"] else "[red]DENIED[/]"
        out.print(
            f"{r['decided_at']} {verdict} {r['message_class']} {r['channel']}/{r['topic']} "
            f"from {r['sender']} (run {r['run_id']})"
        )
        for code, text in zip(r["reasons"], r["explanations"], strict=True):
            out.print(f"  {code}: {text}")
        if r["authorization_id"]:
            out.print(f"  authorization: {r['authorization_id']}")


@consent_app.command("show")
def consent_show(contact: Contact, json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """A contact's consent history and authorizations (structure only, nothing decrypted)."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        history = [c.as_dict() for c in service.consent_history(session, contact)]
        auths = service.authorizations_of(session, contact)
    if json_out:
        emit_json({"contact_id": contact, "consents": history, "authorizations": auths})
        return
    table = Table("effective", "channel", "topic", "status", "source", "evidence")
    for c in history:
        table.add_row(
            c["effective_at"], c["channel"], c["topic"], c["status"], c["source"], c["evidence_ref"]
        )
    out.print(table)
    for a in auths:
        state = "revoked " + a["revoked_at"] if a["revoked_at"] else "active"
        out.print(
            f"authorization {a['id']}: purposes {', '.join(a['purposes'])}; recipients "
            f"{', '.join(a['recipients'])}; signed {a['signed_at']}; {state}"
        )


@consent_app.command("import")
def consent_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    kind: Annotated[str, typer.Option("--kind", help="consents or authorizations.")],
    skip_invalid: Annotated[bool, typer.Option(help="Import valid rows, report the rest.")] = False,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Import consents or HIPAA authorizations from CSV (see README for the columns)."""
    if kind not in ("consents", "authorizations"):
        fail("--kind must be consents or authorizations", 2)
    reader = import_consents if kind == "consents" else import_authorizations
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                summary = reader(
                    session, ws.keyring, file, actor=actor_of(ws), skip_invalid=skip_invalid
                )
        except ImportRejected as exc:
            if json_out:
                emit_json({"written": 0, "invalid": [p.as_dict() for p in exc.problems]})
                raise typer.Exit(1) from None
            err.print(f"[bold]invalid input[/] ({len(exc.problems)}):")
            for problem in exc.problems[:50]:
                err.print(f"  {problem}")
            fail("nothing was written; fix the rows above or use --skip-invalid")
    if json_out:
        emit_json(summary.as_dict())
        return
    for problem in summary.problems[:50]:
        err.print(f"  not imported: {problem}")
    out.print(f"{summary.written} of {summary.rows} {kind} imported")


@consent_app.command("headers")
def consent_headers(
    contact: Contact,
    topic: Topic,
    channel: Channel = EMAIL,
    mailto: Annotated[str | None, typer.Option(help="Also a mailto: unsubscribe address.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """The List-Unsubscribe headers a message to this contact on this topic carries."""
    with workspace(data_dir) as ws:
        try:
            base = public_base_url(ws.settings)
            headers = list_unsubscribe_headers(
                ws.keyring, base, contact, channel, topic, mailto=mailto
            )
        except (PublicUrlError, ValueError) as exc:
            fail(str(exc))
    if json_out:
        emit_json(headers)
    else:
        for name, value in headers.items():
            out.print(f"{name}: {value}")


# --- suppress --------------------------------------------------------------------------
@suppress_app.command("add")
def suppress_add(
    reason: Annotated[
        str, typer.Option(help="hard_bounce, spam_complaint, manual, unsubscribe_all.")
    ],
    email: Annotated[str | None, typer.Option(help="An email address.")] = None,
    phone: Annotated[str | None, typer.Option(help="A phone number (sms).")] = None,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Every address of this contact.")
    ] = None,
    channel: Channel = EMAIL,
    source: Annotated[str, typer.Option(help="staff, api, import…")] = "staff",
    evidence: Annotated[str, typer.Option(help="Evidence reference (no PHI).")] = "",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Suppress an address (stored only as a blind index). Suppression beats everything."""
    if sum(x is not None for x in (email, phone, contact)) != 1:
        fail("give exactly one of --email, --phone, --contact", 2)
    if email is not None:
        channel = EMAIL
    elif phone is not None:
        channel = "sms"
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                if contact is not None:
                    bis = service.contact_address_bis(session, contact, channel)
                else:
                    bis = [service.address_bi(ws.keyring, channel, email or phone or "")]
                ids = service.add_suppression(
                    session,
                    channel=channel,
                    address_bis=bis,
                    reason=reason,
                    source=source,
                    evidence_ref=evidence,
                    contact_id=contact,
                    actor=actor_of(ws),
                )
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"suppression_ids": ids, "already_suppressed": not ids})
    elif ids:
        out.print(f"suppressed ({reason}): {', '.join(ids)}")
    else:
        out.print(f"already suppressed ({reason}); nothing changed")


@suppress_app.command("remove")
def suppress_remove(
    suppression_id: Annotated[str, typer.Argument(help="Suppression id (from suppress list).")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Lift a suppression (kept in history, audited)."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                service.remove_suppression(
                    session, suppression_id=suppression_id, actor=actor_of(ws)
                )
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json({"removed": suppression_id})
    else:
        out.print(f"suppression {suppression_id} removed")


@suppress_app.command("list")
def suppress_list(
    include_removed: Annotated[bool, typer.Option("--all", help="Include removed ones.")] = False,
    email: Annotated[str | None, typer.Option(help="Only this address.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    after: Annotated[str | None, typer.Option(help="Continue after this id.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Suppressions: ids, channels, reasons, times. Addresses are never shown."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                bis = [service.address_bi(ws.keyring, EMAIL, email)] if email else None
                rows = service.list_suppressions(
                    session,
                    include_removed=include_removed,
                    limit=limit,
                    after=after,
                    address_bis=bis,
                )
        except _errors() as exc:
            fail(str(exc))
    if json_out:
        emit_json(rows)
        return
    table = Table("id", "channel", "reason", "source", "created", "removed")
    for r in rows:
        table.add_row(
            r["id"], r["channel"], r["reason"], r["source"], r["created_at"], r["removed_at"] or ""
        )
    out.print(table)
