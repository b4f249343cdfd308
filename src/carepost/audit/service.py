"""Audit use cases: append inside the caller's transaction, verify, checkpoint."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from carepost.audit import checkpoint as cp
from carepost.audit.actor import Actor
from carepost.audit.chain import FIELDS, GENESIS, ChainReport, entry_hash, join, verify_rows
from carepost.audit.models import AuditEntry, AuditHead
from carepost.clock import Clock, isoformat_utc, system_clock
from carepost.crypto.keyring import KeyRing
from carepost.db import make_engine, read_only
from carepost.staff.principal import Principal

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
    on SQLite every write transaction already holds the database's write lock. Inside
    `appended_at_end`, the entry is linked when that block ends (its `seq` is unset
    until then).
    """
    body: list[object] = [
        isoformat_utc(clock()),
        actor.id,
        action,
        orjson.dumps(list(subjects)).decode(),
        purpose,
        actor.source_kind,
        actor.source_address,
        orjson.dumps(dict(details or {}), option=orjson.OPT_SORT_KEYS).decode(),
    ]
    entry = AuditEntry()
    queued: list[tuple[AuditEntry, list[object]]] | None = session.info.get(_QUEUED)
    if queued is not None:
        queued.append((entry, body))
    else:
        _link(session, [(entry, body)])
    return entry


_QUEUED = "carepost.audit.queued"


@contextmanager
def appended_at_end(session: Session) -> Iterator[None]:
    """Entries appended inside the block are linked into the chain when it ends, in the
    order they were appended and still in the caller's transaction, so they commit (or
    roll back) with the change they record exactly as before.

    Why: the head lock is held from the first append to the commit. A delivery worker's
    prepare transaction audits its gate run and PHI read first and then composes
    hundreds of messages; linking at the start made every other worker's prepare wait
    for that commit, so two workers prepared one at a time (docs/benchmarks.md)."""
    if _QUEUED in session.info:
        yield  # an outer block links them all
        return
    queued: list[tuple[AuditEntry, list[object]]] = []
    session.info[_QUEUED] = queued
    try:
        yield
    finally:
        del session.info[_QUEUED]
    if queued:
        _link(session, queued)


def _link(session: Session, entries: Sequence[tuple[AuditEntry, list[object]]]) -> None:
    """Number and hash the entries onto the head under its lock, and move the head."""
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
    ).scalar_one()
    seq, prev = head.seq, head.hash
    for entry, body in entries:
        seq += 1
        fields = [seq, *body]
        digest = entry_hash(prev, fields)
        for name, value in zip(FIELDS, [*fields, prev, digest], strict=True):
            setattr(entry, name, value)
        session.add(entry)
        prev = digest
    head.seq = seq
    head.hash = prev
    session.flush()


_COLUMNS = ", ".join(FIELDS)
PARALLEL_MIN_ENTRIES = 200_000
WORKERS: int | None = None  # None: one per core, at most 4


def _stream(
    engine: Engine, lo: int = 1, hi: int | None = None, batch: int = 20_000
) -> Iterator[Sequence[object]]:
    """Rows lo..hi as the driver gives them (tuples, bytes), streamed: a million Row
    objects would cost more than hashing them."""
    marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    where = f"seq >= {marker}" + (f" AND seq <= {marker}" if hi is not None else "")
    sql = f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY seq"  # noqa: S608
    params = (lo,) if hi is None else (lo, hi)
    with read_only(engine) as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # PostgreSQL: a named (server-side) cursor, so the client never holds the whole log.
        cursor = (
            raw.cursor(name="audit_verify")
            if engine.dialect.name == "postgresql"
            else (raw.cursor())
        )
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(batch):
                yield from rows
        finally:
            cursor.close()


def _verify_segment(
    url: str, lo: int, hi: int | None, checkpoint_size: int | None, checkpoint_hash: bytes | None
) -> tuple[int, bytes, ChainReport] | None:
    """One worker's share: seq lo..hi, linked from the first row's stored previous hash."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        rows = _stream(engine, lo, hi)
        first = next(rows, None)
        if first is None:
            return None
        start_prev = bytes(first[9])  # type: ignore[call-overload]
        report = verify_rows(
            chain_rows(first, rows),
            checkpoint_size=checkpoint_size,
            checkpoint_hash=checkpoint_hash,
            start_seq=lo,
            start_prev=start_prev if lo > 1 else GENESIS,
            segment=True,
        )
        return lo, start_prev if lo > 1 else GENESIS, report
    finally:
        engine.dispose()


def chain_rows(
    first: Sequence[object], rest: Iterator[Sequence[object]]
) -> Iterator[Sequence[object]]:
    yield first
    yield from rest


def _verify_parallel(
    engine: Engine,
    last_seq: int,
    workers: int,
    checkpoint_size: int | None,
    checkpoint_hash: bytes | None,
) -> ChainReport:
    """Segments verified side by side, each from its first entry's stored previous hash;
    `join` then checks that every seam links, so the result equals a serial walk's."""
    url = engine.url.render_as_string(hide_password=False)
    size = -(-last_seq // workers)
    bounds = [(1 + k * size, (k + 1) * size if k < workers - 1 else None) for k in range(workers)]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_verify_segment, url, lo, hi, checkpoint_size, checkpoint_hash)
            for lo, hi in bounds
        ]
        parts = [f.result() for f in futures]
    return join([p for p in parts if p is not None], checkpoint_size)


def verify(
    engine: Engine,
    *,
    checkpoint: cp.Checkpoint | None = None,
    ring: KeyRing | None = None,
    parallel: int | None = None,
) -> ChainReport:
    """Recompute the chain. Long chains are split across processes (one per core)."""
    if checkpoint is not None and (ring is None or not checkpoint.verify(ring.verify_key)):
        return ChainReport(False, 0, 0, b"", None, "bad_signature")
    cp_size = checkpoint.size if checkpoint else None
    cp_hash = checkpoint.head_hash if checkpoint else None
    with read_only(engine) as conn:
        last_seq = conn.scalar(select(func.max(AuditEntry.seq))) or 0
    workers = parallel or WORKERS or min(os.cpu_count() or 1, 4)
    if workers > 1 and last_seq >= PARALLEL_MIN_ENTRIES:
        report = _verify_parallel(engine, last_seq, workers, cp_size, cp_hash)
    else:
        report = verify_rows(_stream(engine), checkpoint_size=cp_size, checkpoint_hash=cp_hash)
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


def query(
    session: Session,
    *,
    action: str | None = None,
    subject: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after_seq: int | None = None,
    limit: int = 100,
    principal: Principal | None = None,
) -> list[AuditEntry]:
    """Entries in chain order, filtered: an exact action (or a prefix ending in `.`,
    e.g. `staff.`), a subject id, and canonical UTC times `since` <= at < `until`
    (the `at` column is canonical text, so text order is time order)."""
    if principal is not None:
        principal.require("audit:read")
    stmt = select(AuditEntry).order_by(AuditEntry.seq).limit(limit)
    if action:
        if action.endswith("."):
            stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == action)
    if subject:
        stmt = stmt.where(AuditEntry.subjects.contains(orjson.dumps(subject).decode()))
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    if after_seq is not None:
        stmt = stmt.where(AuditEntry.seq > after_seq)
    return list(session.scalars(stmt))
