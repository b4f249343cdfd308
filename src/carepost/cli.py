"""`carepost ...`: each command opens the workspace, owns one transaction, and prints
either a human summary or, with --json, a machine-readable one. No command prints PHI
except `contacts show`, which is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from carepost import migrate
from carepost.audit import checkpoint as cp
from carepost.audit import service as audit
from carepost.audit.chain import PROBLEMS
from carepost.cli_lazy import LazyGroup
from carepost.cli_support import (
    DataDir,
    JsonFlag,
    actor_of,
    chosen_data_dir,
    emit_json,
    err,
    fail,
    out,
    progress_bar,
    set_root_data_dir,
    workspace,
)
from carepost.config import load_settings
from carepost.contacts import phi
from carepost.contacts.key_commands import key_app
from carepost.contacts.service import list_contacts
from carepost.crypto import service as key_service
from carepost.crypto.keyring import KeyFileError, replace_key_file
from carepost.db import transaction
from carepost.workspace import init_workspace, open_workspace

if TYPE_CHECKING:
    from carepost.audit.chain import ChainReport
    from carepost.contacts.importers.errors import ImportProblem

# Tracebacks never show local variables: they may hold decrypted PHI. The command groups
# of the other packages load when used (cli_lazy).
app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="carepost: HIPAA-minded patient communications, self-hosted.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
import_app = typer.Typer(no_args_is_help=True, help="Import contacts and clinical facts.")
contacts_app = typer.Typer(no_args_is_help=True, help="Look at contacts.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
keys_app = typer.Typer(no_args_is_help=True, help="Encryption keys.")
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(contacts_app, name="contacts")
contacts_app.add_typer(key_app, name="key")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")


@app.callback()
def _root(data_dir: DataDir = None) -> None:
    set_root_data_dir(data_dir)


# --- init / db -------------------------------------------------------------------------
@app.command()
def init(data_dir: DataDir = None) -> None:
    """Create a workspace: database (migrated), owner-only key file, settings."""
    try:
        ws = init_workspace(chosen_data_dir(data_dir))
    except KeyFileError as exc:
        fail(str(exc))
    s = ws.settings
    out.print(f"workspace ready in {s.data_dir}")
    out.print(f"  database  {_safe_url(s.resolved_database_url)}")
    out.print(
        f"  key file  {s.resolved_key_file} (mode 600; back it up: without it the "
        "data cannot be read)"
    )
    out.print(
        "  next      create the first owner: carepost user add EMAIL --name NAME --role owner"
    )
    ws.close()


def _safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply database migrations up to the newest."""
    ws = open_workspace(chosen_data_dir(data_dir))
    try:
        migrate.upgrade(ws.engine)
        out.print(f"database at revision {migrate.current_revision(ws.engine)}")
    finally:
        ws.close()


@db_app.command("check")
def db_check(data_dir: DataDir = None) -> None:
    """Fail if the database schema and the code's models disagree."""
    ws = open_workspace(chosen_data_dir(data_dir))
    try:
        drift = migrate.schema_drift(ws.engine)
    finally:
        ws.close()
    if drift:
        for diff in drift:
            err.print(f"  {diff}")
        fail(f"{len(drift)} difference(s) between models and database")
    out.print("models and database agree")


# --- imports ---------------------------------------------------------------------------
def _print_problems(problems: list[ImportProblem], title: str, limit: int = 50) -> None:
    if not problems:
        return
    err.print(f"[bold]{title}[/] ({len(problems)}):")
    for problem in problems[:limit]:
        err.print(f"  {problem}")
    if len(problems) > limit:
        err.print(f"  ... and {len(problems) - limit} more (use --report FILE for all)")


def _write_report(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def _counts_table(counts: dict[str, dict[str, int]], extra: dict[str, int] | None = None) -> Table:
    """Per resource type; `ignored` counts types read but not imported (Claim, ...)."""
    ignored = extra or {}
    columns = ["created", "updated", "unchanged", "skipped"]
    table = Table("resource", *columns, *(["ignored"] if ignored else []))
    for rtype in sorted(set(counts) | set(ignored)):
        c = counts.get(rtype, {})
        cells = [str(c.get(k, 0)) if c else "" for k in columns]
        table.add_row(rtype, *cells, *([str(ignored.get(rtype, ""))] if ignored else []))
    return table


@import_app.command("csv")
def import_csv_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    mapping: Annotated[Path | None, typer.Option(help="Column mapping, TOML or JSON.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Import valid rows, report the rest.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the full report as JSON.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Upsert contacts from a CSV file (by external_id, else by email)."""
    from carepost.contacts.importers.csv_import import CsvMapping, MappingError, import_csv
    from carepost.contacts.importers.errors import ImportRejected

    try:
        csv_mapping = CsvMapping.load(mapping) if mapping else CsvMapping()
    except MappingError as exc:
        fail(str(exc), 2)
    with workspace(data_dir) as ws:
        with file.open("rb") as fh:
            total = max(sum(1 for _ in fh) - 1, 0)
        bar, advance = progress_bar(total, "importing contacts")
        try:
            with bar, transaction(ws.engine) as session:
                summary = import_csv(
                    session,
                    ws.keyring,
                    file,
                    csv_mapping,
                    actor=actor_of(ws),
                    now=datetime.now(UTC),
                    skip_invalid=skip_invalid,
                    batch_size=ws.settings.import_batch_size,
                    progress=advance,
                )
        except ImportRejected as exc:
            _write_report(
                report, {"written": False, "invalid": [p.as_dict() for p in exc.problems]}
            )
            _print_problems(exc.problems, "invalid input")
            fail("nothing was written; fix the rows above or use --skip-invalid")
    _write_report(report, {"written": True, **summary.as_dict()})
    if json_out:
        emit_json(summary.as_dict())
        return
    _print_problems(summary.problems, "invalid rows, not imported")
    _print_problems(summary.skipped, "rows skipped")
    out.print(_counts_table(summary.counts))
    out.print(f"{summary.rows} rows read; import run {summary.run_id}")


@import_app.command("fhir")
def import_fhir_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, readable=True, help="Bundle/resource JSON, NDJSON, folders."),
    ],
    skip_invalid: Annotated[
        bool, typer.Option(help="Import valid resources, report the rest.")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write the full report as JSON.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Upsert patients and clinical facts from FHIR R4 (Bundles, resources, Bulk NDJSON)."""
    from carepost.contacts.importers.fhir_import import read_fhir, write_fhir

    with workspace(data_dir) as ws:
        result = read_fhir(paths)
        if result.problems and (not skip_invalid or result.total == 0):
            _write_report(
                report, {"written": False, "invalid": [p.as_dict() for p in result.problems]}
            )
            _print_problems(result.problems, "invalid input")
            fail("nothing was written; fix the input or use --skip-invalid")
        bar, advance = progress_bar(result.total, "importing resources")
        with bar, transaction(ws.engine) as session:
            summary = write_fhir(
                session,
                ws.keyring,
                result,
                actor=actor_of(ws),
                now=datetime.now(UTC),
                batch_size=ws.settings.import_batch_size,
                progress=advance,
            )
    _write_report(report, {"written": True, **summary.as_dict()})
    if json_out:
        emit_json(summary.as_dict())
        return
    _print_problems(summary.problems, "invalid resources, not imported")
    _print_problems(summary.skipped, "resources skipped")
    _print_problems(summary.ignored_files, "files not read")
    out.print(_counts_table(summary.counts, summary.ignored))
    out.print(f"{summary.files} files read; import run {summary.run_id}")


# --- demo ------------------------------------------------------------------------------
@app.command()
def demo(
    contacts: Annotated[
        int, typer.Option(min=10, max=1_000_000, help="Synthetic patients to generate.")
    ] = 2000,
    data_dir: DataDir = None,
) -> None:
    """The main job end to end on the embedded default: encrypted synthetic patients, a
    segment, a template, consent and authorizations, and a marketing campaign sent over
    STARTTLS into the built-in capture server, with what the consent gate denied and why."""
    from carepost.audit.actor import Actor
    from carepost.demo import run_demo

    chosen = chosen_data_dir(data_dir)
    result = run_demo(chosen, contacts, out.print, Actor.cli(load_settings(chosen).actor))
    out.print(
        "next:\n"
        f"  carepost campaign status {result.campaign_id}\n"
        + (
            f"  carepost message evidence {result.sample_message}\n"
            if result.sample_message
            else ""
        )
        + "  carepost outbox list --state denied\n"
        f"  carepost consent explain --campaign {result.campaign_id} --contact ID\n"
        "  carepost serve   (unsubscribe and preference pages, worker and capture server)"
    )
    if not result.audit_ok or result.sent == 0:
        raise typer.Exit(1)


# --- contacts --------------------------------------------------------------------------
@contacts_app.command("list")
def contacts_list(
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    after: Annotated[str | None, typer.Option(help="Continue after this contact id.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Ids, times and clinical fact counts. No PHI."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        rows = list_contacts(session, limit=limit, after=after)
    if json_out:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table("id", "source", "created", "facts")
    for r in rows:
        facts = ", ".join(f"{k} {v}" for k, v in sorted(r.facts.items())) or "-"
        table.add_row(r.id, r.source, r.created_at.strftime("%Y-%m-%d %H:%M"), facts)
    out.print(table)


@contacts_app.command("zone")
def contacts_zone(
    contact_ids: Annotated[list[str], typer.Argument(help="Contact ids.")],
    zone: Annotated[str | None, typer.Option(help="IANA time zone, e.g. America/New_York.")] = None,
    clear: Annotated[bool, typer.Option(help="Back to the account's default zone.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Set the contacts' time zone (journeys' times of day and date triggers). Audited."""
    from carepost.contacts.zones import ZoneError, do_set_time_zone

    if (zone is None) == (not clear):
        fail("give --zone NAME or --clear", 2)
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                n = do_set_time_zone(session, contact_ids, zone, actor=actor_of(ws))
        except ZoneError as exc:
            fail(str(exc), 2)
    out.print(f"{n} contacts: time zone {zone or 'cleared (account default)'}")


@contacts_app.command("show")
def contacts_show(
    contact_id: Annotated[str, typer.Argument()],
    purpose: Annotated[str, typer.Option(help="Why you need this PHI (audited).")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Show a contact's decrypted record. Writes an audit entry with your purpose."""
    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                view = phi.read_contact(
                    session, ws.keyring, contact_id, actor=actor_of(ws), purpose=purpose
                )
        except (phi.ContactNotFound, phi.ContactShredded, phi.PurposeRequired) as exc:
            fail(str(exc))
    if json_out:
        emit_json(view.as_dict())
        return
    out.print_json(orjson.dumps(view.as_dict()).decode())


# --- audit -----------------------------------------------------------------------------
def _report_dict(report: ChainReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "entries": report.entries,
        "head_hash": report.head_hash.hex(),
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
        "explanation": PROBLEMS.get(report.problem or "", ""),
        "detail": report.detail,
    }


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[Path | None, typer.Option(help="A signed checkpoint file.")] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Recompute the hash chain; with a checkpoint, also detect truncation."""
    with workspace(data_dir) as ws:
        try:
            signed = cp.load(checkpoint) if checkpoint else None
        except cp.CheckpointError as exc:
            fail(str(exc), 2)
        report = audit.verify(ws.engine, checkpoint=signed, ring=ws.keyring)
    if json_out:
        emit_json(_report_dict(report))
    elif report.ok:
        extra = f", matches checkpoint of {signed.size}" if signed else ""
        out.print(
            f"audit chain intact: {report.entries} entries{extra}; "
            f"head {report.head_hash.hex()[:16]}"
        )
    else:
        err.print(
            f"[bold red]audit chain BROKEN[/] at sequence {report.first_bad_seq}: "
            f"{PROBLEMS.get(report.problem or '', report.problem)} {report.detail}"
        )
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint.")],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Sign the current chain head (Ed25519) into a file kept outside the database."""
    with workspace(data_dir) as ws:
        signed, report = audit.make_checkpoint(ws.engine, ws.keyring, out_file)
    if not report.ok:
        err.print(
            f"[bold red]not checkpointed:[/] chain broken at {report.first_bad_seq} "
            f"({report.problem})"
        )
        raise typer.Exit(1)
    if json_out:
        emit_json(
            {
                "size": signed.size,
                "head_hash": signed.head_hash.hex(),
                "at": signed.at,
                "key_id": signed.key_id,
                "file": str(out_file),
            }
        )
    else:
        out.print(f"checkpoint of {signed.size} entries written to {out_file}")


# --- keys ------------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Make a new key-encryption key primary and re-wrap every data key under it."""
    with workspace(data_dir) as ws:
        new_ring = ws.keyring.with_new_primary()
        # The key file first: it keeps the old versions, so if the re-wrap below fails or
        # the process dies, every data key is still readable and a rerun finishes the job.
        replace_key_file(ws.settings.resolved_key_file, new_ring)
        with transaction(ws.engine) as session:
            result = key_service.rewrap_data_keys(session, new_ring, actor=actor_of(ws))
    payload = {
        "primary_version": result.to_version,
        "rewrapped": result.rewrapped,
        "from_versions": {str(k): v for k, v in result.from_versions.items()},
    }
    if json_out:
        emit_json(payload)
    else:
        out.print(
            f"key version {result.to_version} is primary; {result.rewrapped} data keys "
            "re-wrapped; no record was re-encrypted"
        )


@keys_app.command("status")
def keys_status(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Key versions in the key file and how many data keys each wraps."""
    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        usage = key_service.kek_usage(session)
        ring = ws.keyring
    payload = {
        "primary_version": ring.primary_version,
        "versions": sorted(ring.keks),
        "data_keys_by_version": {str(k): v for k, v in sorted(usage.items())},
        "audit_key_id": ring.verify_key_id(),
    }
    if json_out:
        emit_json(payload)
        return
    out.print(f"primary key version {ring.primary_version}; versions {sorted(ring.keks)}")
    for version, n in sorted(usage.items()):
        out.print(f"  version {version}: {n} data keys")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
