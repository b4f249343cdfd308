"""`carepost segment ...` and `carepost demo-data`.

Counting decrypts the store into an in-memory snapshot (one audit entry per build); only
`preview` prints PHI, with a purpose, through the audited door in contacts/phi.py.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.cli_support import (
    DataDir,
    JsonFlag,
    actor_of,
    emit_json,
    err,
    fail,
    out,
    progress_bar,
    workspace,
)
from carepost.contacts import phi
from carepost.contacts.population import write_population
from carepost.db import read_only, transaction
from carepost.segments import evaluator, service
from carepost.segments.ast import RuleError
from carepost.segments.parser import parse
from carepost.segments.printer import print_rule
from carepost.segments.snapshot import build_snapshot

segment_app = typer.Typer(no_args_is_help=True, help="Segments: rules over contacts, counted live.")

AtOption = Annotated[
    str | None, typer.Option("--at", help="Evaluate at this ISO time (UTC); default now.")
]


def _at(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--at: not an ISO date or time: {value!r}", 2)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _rule_error(exc: RuleError, json_out: bool) -> None:
    if json_out:
        emit_json({"error": exc.as_dict()})
        raise typer.Exit(2)
    fail(f"rule error: {exc}", 2)


@segment_app.command("count")
def count_cmd(
    rule: Annotated[
        str, typer.Argument(help="A rule, e.g. 'age >= 50 and has_condition(\"diabetes\")'")
    ],
    at: AtOption = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Count the contacts a rule matches (builds the snapshot: an audited bulk access)."""
    try:
        node = parse(rule)
    except RuleError as exc:
        _rule_error(exc, json_out)
        return
    when = _at(at)
    with workspace(data_dir) as ws:
        with read_only(ws.engine) as conn, Session(bind=conn) as session:
            defs = service.definitions(session)
        snap = build_snapshot(ws.engine, ws.keyring, actor=actor_of(ws))
        started = time.perf_counter()
        try:
            n = evaluator.count(node, snap, when, segments=defs)
        except RuleError as exc:
            _rule_error(exc, json_out)
            return
        elapsed = (time.perf_counter() - started) * 1000
    payload = {
        "rule": print_rule(node),
        "at": when.isoformat(),
        "count": n,
        "contacts": snap.stats()["contacts"],
        "count_ms": round(elapsed, 2),
        "snapshot_s": round(snap.build_seconds, 2),
    }
    if json_out:
        emit_json(payload)
        return
    out.print(
        f"{n} of {payload['contacts']} contacts match ({elapsed:.1f} ms; "
        f"snapshot built in {snap.build_seconds:.1f} s)"
    )


@segment_app.command("save")
def save_cmd(
    name: Annotated[str, typer.Argument()],
    rule: Annotated[str, typer.Argument()],
    description: Annotated[str, typer.Option(help="What the segment is for.")] = "",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Save a dynamic segment; saving a new rule under the same name adds a version."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                seg, version, changed = service.save_segment(
                    session, name, rule, actor=actor_of(ws), description=description
                )
                seg_id = seg.id
        except RuleError as exc:
            _rule_error(exc, json_out)
            return
        except service.SegmentError as exc:
            fail(str(exc), 2)
    payload = {"id": seg_id, "name": name, "version": version, "changed": changed}
    if json_out:
        emit_json(payload)
        return
    out.print(f"segment {name!r} version {version}" + ("" if changed else " (unchanged)"))


@segment_app.command("list")
def list_cmd(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Saved segments and static lists with their current rule versions."""
    with workspace(data_dir) as ws, read_only(ws.engine) as conn, Session(bind=conn) as session:
        rows = service.list_segments(session)
    if json_out:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table("name", "kind", "version", "rule / members", "updated")
    for r in rows:
        table.add_row(
            r.name,
            r.kind,
            str(r.version),
            r.rule or f"{r.members} members",
            r.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


def _member_ids(ws: Any, name: str, at: datetime, json_out: bool) -> tuple[list[str], str]:
    with read_only(ws.engine) as conn, Session(bind=conn) as session:
        try:
            seg = service.get_segment(session, name)
        except service.SegmentError as exc:
            fail(str(exc), 2)
        node = service.segment_node(session, seg)
        defs = service.definitions(session)
    snap = build_snapshot(ws.engine, ws.keyring, actor=actor_of(ws))
    try:
        ids = evaluator.member_ids(
            node, snap, at, segments=defs, name=name if seg.kind == "dynamic" else None
        )
    except RuleError as exc:
        _rule_error(exc, json_out)
    return ids, print_rule(node)


@segment_app.command("preview")
def preview_cmd(
    name: Annotated[str, typer.Argument()],
    purpose: Annotated[str, typer.Option(help="Why you need to see members' PHI (audited).")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    at: AtOption = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Show the first N members' records. PHI: writes an audit entry with your purpose."""
    when = _at(at)
    with workspace(data_dir) as ws:
        ids, rule = _member_ids(ws, name, when, json_out)
        shown = ids[:limit]
        try:
            with transaction(ws.engine) as session:
                views = phi.read_contacts(
                    session,
                    ws.keyring,
                    shown,
                    actor=actor_of(ws),
                    purpose=purpose,
                    action="segments.preview",
                    details={"segment": name, "members": len(ids)},
                )
        except phi.PurposeRequired as exc:
            fail(str(exc), 2)
    if json_out:
        emit_json(
            {
                "segment": name,
                "rule": rule,
                "members": len(ids),
                "shown": [v.as_dict() for v in views],
            }
        )
        return
    out.print(f"{name}: {len(ids)} members; showing {len(views)}")
    table = Table("id", "name", "email", "birth date", "sex", "state")
    for v in views:
        r = v.record
        nm = r.get("name") or {}
        table.add_row(
            v.id,
            " ".join([*(nm.get("given") or []), nm.get("family") or ""]).strip(),
            ", ".join(r.get("emails") or []),
            r.get("birth_date") or "",
            r.get("sex") or "",
            (r.get("address") or {}).get("state") or "",
        )
    out.print(table)


@segment_app.command("explain")
def explain_cmd(
    name: Annotated[str, typer.Argument()],
    contact: Annotated[str, typer.Option("--contact", help="Contact id.")],
    purpose: Annotated[
        str, typer.Option(help="Why (audited: clause results are facts about a patient).")
    ] = "explain segment membership",
    at: AtOption = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Which clauses a contact passes and fails, and so why they are in or out."""
    when = _at(at)
    with workspace(data_dir) as ws:
        with read_only(ws.engine) as conn, Session(bind=conn) as session:
            try:
                seg = service.get_segment(session, name)
            except service.SegmentError as exc:
                fail(str(exc), 2)
            node = service.segment_node(session, seg)
            defs = service.definitions(session)
        snap = build_snapshot(ws.engine, ws.keyring, actor=actor_of(ws))
        if contact not in snap.row_of:
            fail(f"no contact with id {contact} (or it was shredded)", 1)
        try:
            result = evaluator.explain(node, snap, contact, when, segments=defs)
        except RuleError as exc:
            _rule_error(exc, json_out)
            return
        with transaction(ws.engine) as session:
            audit.append(
                session,
                actor=actor_of(ws),
                action="segments.explained",
                subjects=[contact],
                purpose=purpose,
                details={"segment": name},
            )
    payload = {
        "segment": name,
        "contact": contact,
        "at": when.isoformat(),
        "member": result.result,
        "failed": result.failed(),
        "clauses": result.as_dict(),
    }
    if json_out:
        emit_json(payload)
        return
    out.print(f"{contact} is {'a member' if result.result else 'not a member'} of {name}")

    def show(e: evaluator.Explanation, depth: int) -> None:
        mark = "[green]pass[/]" if e.result else "[red]fail[/]"
        out.print(f"{'  ' * depth}{mark}  {e.text}", markup=True, highlight=False)
        for c in e.children:
            show(c, depth + 1)

    show(result, 0)


@segment_app.command("freeze")
def freeze_cmd(
    name: Annotated[str, typer.Argument()],
    campaign: Annotated[str, typer.Option("--campaign", help="The campaign this send is for.")],
    at: AtOption = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Freeze the segment's membership for a campaign: contacts, rule version, time."""
    when = _at(at)
    with workspace(data_dir) as ws:
        snap = build_snapshot(ws.engine, ws.keyring, actor=actor_of(ws))
        try:
            with transaction(ws.engine) as session:
                seg = service.get_segment(session, name)
                freeze = service.freeze_membership(
                    session, seg, at=when, actor=actor_of(ws), campaign_id=campaign, snapshot=snap
                )
                payload = {
                    "freeze": freeze.id,
                    "segment": name,
                    "version": freeze.version,
                    "campaign": freeze.campaign_id,
                    "members": freeze.member_count,
                    "members_sha256": freeze.members_sha256,
                    "evaluated_at": when.isoformat(),
                }
        except service.SegmentError as exc:
            fail(str(exc), 2)
        except RuleError as exc:
            _rule_error(exc, json_out)
    if json_out:
        emit_json(payload)
        return
    out.print(
        f"froze {payload['members']} members of {name} v{payload['version']} for campaign "
        f"{campaign} ({payload['freeze']})"
    )


def demo_data(
    contacts: Annotated[int, typer.Option(min=1, max=5_000_000, help="How many contacts.")] = 1000,
    seed: Annotated[int, typer.Option(help="Same seed and --as-of, same population.")] = 1,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Date the histories lead up to (default today, UTC)."),
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Generate a realistic synthetic population (contacts, clinical facts, engagement)
    straight into the encrypted store."""
    try:
        day = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    except ValueError:
        fail(f"--as-of: not a date (YYYY-MM-DD): {as_of!r}", 2)
    with workspace(data_dir) as ws:
        started = time.perf_counter()
        bar, advance = progress_bar(contacts, "generating contacts")
        with bar, transaction(ws.engine) as session:
            summary = write_population(
                session,
                ws.keyring,
                contacts=contacts,
                seed=seed,
                as_of=day,
                actor=actor_of(ws),
                now=datetime.now(UTC),
                batch_size=ws.settings.import_batch_size,
                progress=advance,
            )
        elapsed = time.perf_counter() - started
    payload = {
        **summary.as_dict(),
        "seed": seed,
        "as_of": day.isoformat(),
        "seconds": round(elapsed, 1),
    }
    if json_out:
        emit_json(payload)
        return
    c = summary.contacts
    out.print(
        f"{contacts} synthetic contacts (seed {seed}, as of {day}) in {elapsed:.1f} s: "
        f"created {c.get('created', 0)}, updated {c.get('updated', 0)}, unchanged "
        f"{c.get('unchanged', 0)}; facts created {summary.facts.get('created', 0)}; "
        f"events {summary.events}"
    )
    err.print(
        "next: carepost segment count 'age >= 65 and not vaccinated(\"influenza\", within=365d)'"
    )
