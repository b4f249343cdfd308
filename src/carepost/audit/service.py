"""Audit use cases: append inside the caller's transaction, verify, checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from carepost.audit import checkpoint as cp
from carepost.audit.actor import Actor
from carepost.audit.chain import FIELDS, ChainReport, entry_hash, verify_rows
from carepost.audit.models import AuditEntry, AuditHead
from carepost.clock import Clock, isoformat_utc, system_clock
from carepost.crypto.keyring import KeyRing
from carepost.db import read_only

HEAD_ID = 1


def append(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subjects: Sequence[str] = (),
    purpose: str = "",
    details: Mapping[str, object] | None = None,
    clock: Clock = system_clock,
) -> AuditEntry:
    """Add one entry to the chain in the caller's transaction (never commits).

    The head row is locked for update, so concurrent appenders serialize on PostgreSQL;
    on SQLite every write transaction already holds the database's write lock.
    """
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
    ).scalar_one()
    seq = head.seq + 1
    fields: list[object] = [
        seq,
        isoformat_utc(clock()),
        actor.id,
        action,
        orjson.dumps(list(subjects)).decode(),
        purpose,
        actor.source_kind,
        actor.source_address,
        orjson.dumps(dict(details or {}), option=orjson.OPT_SORT_KEYS).decode(),
    ]
    digest = entry_hash(head.hash, fields)
    entry = AuditEntry(**dict(zip(FIELDS, [*fields, head.hash, digest], strict=True)))
    session.add(entry)
    head.seq = seq
    head.hash = digest
    session.flush()
    return entry


_SELECT = f"SELECT {', '.join(FIELDS)} FROM audit_log ORDER BY seq"  # noqa: S608 (constant)


def _stream(engine: Engine, batch: int = 20_000) -> Iterator[Sequence[object]]:
    with read_only(engine) as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(
            _SELECT
        )
        for part in result.partitions(batch):
            yield from part


def verify(
    engine: Engine, *, checkpoint: cp.Checkpoint | None = None, ring: KeyRing | None = None
) -> ChainReport:
    if checkpoint is not None and (ring is None or not checkpoint.verify(ring.verify_key)):
        return ChainReport(False, 0, 0, b"", None, "bad_signature")
    report = verify_rows(
        _stream(engine),
        checkpoint_size=checkpoint.size if checkpoint else None,
        checkpoint_hash=checkpoint.head_hash if checkpoint else None,
    )
    if not report.ok:
        return report
    with read_only(engine) as conn:
        row = conn.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
        ).one()
    if row.seq != report.head_seq or bytes(row.hash) != report.head_hash:
        return ChainReport(
            False,
            report.entries,
            report.head_seq,
            report.head_hash,
            min(row.seq, report.head_seq) + 1,
            "head_mismatch",
            f"head records {row.seq} entries, chain has {report.head_seq}",
        )
    return report


def make_checkpoint(
    engine: Engine, ring: KeyRing, out: Path, clock: Clock = system_clock
) -> tuple[cp.Checkpoint, ChainReport]:
    """Verify the chain, then sign its head. A broken chain is never checkpointed."""
    report = verify(engine)
    if not report.ok:
        return cp.Checkpoint(0, b"", "", "", b""), report
    signed = cp.sign(
        ring.signing_key,
        ring.verify_key_id(),
        report.head_seq,
        report.head_hash,
        isoformat_utc(clock()),
    )
    cp.write(out, signed)
    return signed, report


def entries_for_subject(session: Session, subject_id: str) -> Iterable[AuditEntry]:
    """Entries naming a subject id (accounting of disclosures builds on this)."""
    needle = orjson.dumps(subject_id).decode()
    return session.scalars(
        select(AuditEntry).where(AuditEntry.subjects.contains(needle)).order_by(AuditEntry.seq)
    )
