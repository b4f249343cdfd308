"""`carepost dkim ...`: signing keys for the sender domains."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from carepost.audit import service as audit
from carepost.cli_support import (
    DataDir,
    JsonFlag,
    actor_of,
    emit_json,
    fail,
    out,
    progress_bar,
    workspace,
)
from carepost.db import transaction
from carepost.delivery import dkim

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from carepost.delivery.worker import BatchReport

dkim_app = typer.Typer(no_args_is_help=True, help="DKIM signing keys.")


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return data_dir / "dkim" / f"{selector}._domainkey.{domain}.pem"


@dkim_app.command("keygen")
def keygen(
    domain: Annotated[str, typer.Option(help="The signing domain (d=), e.g. clinic.example")],
    selector: Annotated[str, typer.Option(help="The selector (s=), e.g. cp2026")] = "carepost",
    algorithm: Annotated[
        str, typer.Option(help="rsa (RSA-2048, read by every receiver) or ed25519")
    ] = "rsa",
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Make a signing key (owner-only file in the workspace) and print its DNS TXT record."""
    algo: dkim.Algorithm
    if algorithm == "rsa":
        algo = "rsa-sha256"
    elif algorithm == "ed25519":
        algo = "ed25519-sha256"
    else:
        fail("--algorithm must be rsa or ed25519", 2)
    with workspace(data_dir) as ws:
        key = dkim.generate_key(algo)
        try:
            dkim.DkimSigner(domain, selector, key)
        except dkim.DkimError as exc:
            fail(str(exc), 2)
        path = key_path(ws.settings.data_dir, domain, selector)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            # O_EXCL: a key that DNS already publishes is never replaced by accident.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fail(f"{path} exists; choose a new selector to rotate keys")
        with os.fdopen(fd, "wb") as fh:
            fh.write(dkim.private_pem(key))
        record = dkim.dns_record_value(key)
        with transaction(ws.engine) as session:
            audit.append(
                session,
                actor=actor_of(ws),
                action="delivery.dkim_key_created",
                details={"domain": domain, "selector": selector, "algorithm": algo},
            )
    name = f"{selector}._domainkey.{domain}."
    if json_out:
        emit_json(
            {
                "domain": domain,
                "selector": selector,
                "algorithm": algo,
                "key_file": str(path),
                "dns_name": name,
                "dns_txt": record,
            }
        )
        return
    out.print(f"private key written to {path} (mode 600; back it up with the key file)")
    out.print("publish this TXT record, then sign with it:")
    out.print(f"{name} IN TXT {dkim.dns_txt_strings(record)}")


# --- worker ---------------------------------------------------------------------------
def worker(
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    until_idle: Annotated[bool, typer.Option(help="Exit when nothing is due.")] = False,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Deliver queued messages until stopped (or until idle). Any number of workers, on
    any number of machines, may share one PostgreSQL database."""
    import multiprocessing
    from datetime import UTC, datetime

    from carepost.consent.headers import PublicUrlError
    from carepost.delivery import outbox
    from carepost.delivery.factory import DeliveryConfigError, worker_for

    with workspace(data_dir) as ws:
        try:
            policy = worker_for(ws).config.retry  # fail fast on settings before forking
        except (PublicUrlError, DeliveryConfigError) as exc:
            fail(str(exc), 2)
        with transaction(ws.engine) as session:
            due = outbox.count_due(session, at=datetime.now(UTC), policy=policy)
        data = ws.settings.data_dir
    bar, advance = progress_bar(due, "delivering")
    with bar:
        if processes == 1:
            report = _run_worker(data, until_idle, lambda batch: advance(batch.claimed))
        else:
            # The children report each batch's claims over a queue, the same count the
            # one-process bar advances by. Polling the database instead would also count
            # other machines' workers and retries coming due, and cost queries meanwhile.
            ctx = multiprocessing.get_context("spawn")
            handled: Queue[int] = ctx.Queue()
            with ctx.Pool(processes, initializer=_report_to, initargs=(handled,)) as pool:
                running = pool.starmap_async(_run_worker, [(data, until_idle)] * processes)
                while not running.ready():
                    _drain(handled, advance, wait=0.5)
                reports = running.get()
            report = reports[0]
            for r in reports[1:]:
                report.add(r)
    payload = {
        "claimed": report.claimed,
        "denied": report.denied,
        "no_address": report.no_address,
        "handed_off": report.handed_off,
        "results": dict(report.results),
    }
    if json_out:
        emit_json(payload)
    else:
        out.print(
            f"claimed {report.claimed}; denied by consent {report.denied}; handed to the "
            f"transport {report.handed_off}; results {dict(report.results) or '-'}"
        )


# Set in each pool process by `_report_to`: where its batches' claim counts go.
_handled: Queue[int] | None = None


def _report_to(handled: Queue[int]) -> None:
    global _handled
    _handled = handled


def _put_claims(batch: BatchReport) -> None:
    if batch.claimed and _handled is not None:
        _handled.put(batch.claimed)


def _drain(handled: Queue[int], advance: Callable[[int], None], *, wait: float) -> None:
    try:
        advance(handled.get(timeout=wait))
        while True:
            advance(handled.get_nowait())
    except Empty:
        pass


def _run_worker(
    data_dir: Path, until_idle: bool, on_batch: Callable[[BatchReport], None] | None = None
) -> BatchReport:
    from carepost.delivery.factory import worker_for
    from carepost.workspace import open_workspace

    if on_batch is None and _handled is not None:
        on_batch = _put_claims
    ws = open_workspace(data_dir)
    try:
        return worker_for(ws).run(until_idle=until_idle, on_batch=on_batch)
    finally:
        ws.close()


# --- outbox and evidence ---------------------------------------------------------------
outbox_app = typer.Typer(no_args_is_help=True, help="Messages and where they stand.")
message_app = typer.Typer(no_args_is_help=True, help="One message's proof of delivery.")
capture_app = typer.Typer(no_args_is_help=True, help="The built-in capture mail server.")


@outbox_app.command("list")
def outbox_list(
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Messages, newest first: ids, states, attempts. No PHI."""
    from sqlalchemy import select

    from carepost.delivery.models import OutboxMessage

    with workspace(data_dir) as ws, transaction(ws.engine) as session:
        query = select(OutboxMessage).order_by(OutboxMessage.updated_at.desc()).limit(limit)
        if campaign:
            query = query.where(OutboxMessage.campaign_id == campaign)
        if state:
            query = query.where(OutboxMessage.state == state)
        rows = [
            {
                "id": r.id,
                "campaign_id": r.campaign_id,
                "contact_id": r.contact_id,
                "state": r.state,
                "attempts": r.attempts,
                "last_reason": r.last_reason,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in session.scalars(query)
        ]
    if json_out:
        emit_json(rows)
        return
    table = Table("id", "campaign", "state", "attempts", "reason", "updated")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["campaign_id"] or "-"),
            str(r["state"]),
            str(r["attempts"]),
            str(r["last_reason"] or "-"),
            str(r["updated_at"])[:19],
        )
    out.print(table)


@outbox_app.command("show")
def outbox_show(
    outbox_id: Annotated[str, typer.Argument()],
    purpose: Annotated[
        str | None, typer.Option(help="Show the message as sent (PHI, audited): why.")
    ] = None,
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """A message's state and timeline; with --purpose, also the exact bytes sent,
    decrypted from the archive through the audited door."""
    from carepost.delivery import archive
    from carepost.delivery.evidence import NoSuchMessage, evidence

    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                report = evidence(session, outbox_id)
                body = (
                    archive.read_sent(
                        session, ws.keyring, outbox_id, actor=actor_of(ws), purpose=purpose
                    )
                    if purpose
                    else None
                )
        except (NoSuchMessage, archive.NotArchived) as exc:
            fail(str(exc))
    if json_out:
        emit_json({**report, "sent_message": body.decode("utf-8", "replace") if body else None})
        return
    out.print(f"message {outbox_id}: {report['state']} ({report['last_reason'] or '-'})")
    for step in report["timeline"]:
        out.print(f"  {step['at']}  {step['state']:16} {step['detail'] or ''}")
    if body is not None:
        out.print("--- as sent ---")
        out.print(body.decode("utf-8", "replace"), markup=False, highlight=False)


@message_app.command("evidence")
def message_evidence(
    outbox_id: Annotated[str, typer.Argument()],
    json_out: JsonFlag = False,
    data_dir: DataDir = None,
) -> None:
    """Proof of delivery: gate decision, membership, bytes hash, DKIM, relay reply, TLS,
    and every state change with its time. No PHI."""
    from carepost.delivery.evidence import NoSuchMessage, evidence

    with workspace(data_dir) as ws:
        try:
            with transaction(ws.engine) as session:
                report = evidence(session, outbox_id)
        except NoSuchMessage as exc:
            fail(str(exc))
    if json_out:
        emit_json(report)
        return
    out.print(f"[bold]proof of delivery for message {outbox_id}[/]  state: {report['state']}")
    c = report["campaign"]
    if c:
        out.print(
            f"campaign {c['name']} ({c['id']}), class {c['message_class']}, "
            f"sender {c['sender']}, template {c['template']}"
        )
        if c["membership"]:
            m = c["membership"]
            out.print(
                f"membership: segment {m['segment']} v{m['rule_version']} at "
                f"{m['evaluated_at']}, {m['members']} members, sha256 {m['members_sha256']}"
            )
    for d in report["consent_decisions"]:
        verdict = "allowed" if d["allowed"] else "denied " + " ".join(d["reasons"])
        out.print(
            f"consent gate {d['decided_at']}: {verdict}"
            + (f" (authorization {d['authorization_id']})" if d["authorization_id"] else "")
        )
    for a in report["attempts"]:
        out.print(f"attempt {a['attempt']} via {a['method']}: {a['status']} ({a['reason']})")
        out.print(f"  Message-ID {a['message_id']}  sha256 {a['sha256']}  {a['size']} bytes")
        out.print(f"  relay said: {a['relay_reply']}")
        out.print(f"  TLS: {a['tls_version']} {a['tls_cipher']}")
        if a["dkim_signature"]:
            out.print(f"  DKIM-Signature: {a['dkim_signature'][:120]}...")
    for step in report["timeline"]:
        out.print(f"  {step['at']}  {step['state']}")
    if report["portal"]:
        p = report["portal"]
        out.print(
            f"portal: stored {p['stored_at']} ({p['reason']}), notice {p['notice_message_id']}, "
            f"verification {p['verification']}, read receipt: {p['first_viewed_at'] or 'not yet'}"
        )


# --- capture ---------------------------------------------------------------------------
@capture_app.command("serve")
def capture_serve(data_dir: DataDir = None) -> None:
    """Run the capture mail server in the foreground (STARTTLS, workspace CA)."""
    import time

    from carepost.delivery.capture import CaptureServer
    from carepost.delivery.factory import capture_folder

    with workspace(data_dir) as ws:
        server = CaptureServer(capture_folder(ws), ws.keyring, ws.settings.capture_port)
        server.start()
        out.print(
            f"capture server on 127.0.0.1:{ws.settings.capture_port} (STARTTLS); ctrl-c stops"
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


@capture_app.command("list")
def capture_list(json_out: JsonFlag = False, data_dir: DataDir = None) -> None:
    """Names of captured messages (stored sealed)."""
    from carepost.delivery.capture import captured
    from carepost.delivery.factory import capture_folder

    with workspace(data_dir) as ws:
        names = captured(capture_folder(ws))
    if json_out:
        emit_json(names)
    else:
        out.print(f"{len(names)} captured message(s)")
        for name in names[-50:]:
            out.print(f"  {name}")
