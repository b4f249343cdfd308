"""The hash chain, as pure functions over plain rows: no database, no clock.

entry hash = SHA-256(previous hash || canonical entry), where the canonical entry is the
JSON array of the stored fields in a fixed order. The first entry's previous hash is 32
zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

GENESIS = bytes(32)

# Row layout shared by the writer and the verifier.
FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "subjects",
    "purpose",
    "source_kind",
    "source_address",
    "details",
    "prev_hash",
    "hash",
)


def canonical(fields: Sequence[object]) -> bytes:
    return orjson.dumps(list(fields))


def entry_hash(prev_hash: bytes, fields: Sequence[object]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(fields)).digest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    head_seq: int
    head_hash: bytes
    first_bad_seq: int | None = None
    problem: str | None = None  # stable code: see PROBLEMS
    detail: str = ""


PROBLEMS = {
    "hash_mismatch": "the entry's content does not match its hash (modified entry)",
    "broken_link": "the entry does not link to the one before it (inserted, deleted or reordered)",
    "sequence_gap": "sequence numbers skip here (deleted entries)",
    "head_mismatch": "the recorded chain head disagrees with the last entry (truncated or "
    "appended)",
    "checkpoint_mismatch": "the chain differs from the signed checkpoint at its size",
    "truncated": "the chain is shorter than the signed checkpoint (truncated)",
    "bad_signature": "the checkpoint's signature does not verify with this workspace's key",
}


def verify_rows(
    rows: Iterable[Sequence[object]],
    *,
    checkpoint_size: int | None = None,
    checkpoint_hash: bytes | None = None,
    start_seq: int = 1,
    start_prev: bytes = GENESIS,
    segment: bool = False,
) -> ChainReport:
    """Walk rows (FIELDS order, ascending seq from `start_seq`, the first linking to
    `start_prev`). Stops at the first bad entry. A segment of the chain verifies alone
    from its first entry's stored previous hash; `join` checks the seams.

    The loop is the whole cost of verifying a million entries, so it stays bare: one
    canonical dump and one SHA-256 per row, checks as plain comparisons.
    """
    prev = start_prev
    expected = start_seq
    sha = hashlib.sha256
    dumps = orjson.dumps
    stop = checkpoint_size if checkpoint_size is not None else -1
    for row in rows:
        seq = row[0]
        if seq != expected:
            return _bad(
                expected, prev, expected, "sequence_gap", f"expected {expected}, found {seq}"
            )
        if row[9] != prev:
            return _bad(expected, prev, expected, "broken_link")
        digest = sha(prev + dumps(row[:9])).digest()
        if row[10] != digest:
            return _bad(expected, prev, expected, "hash_mismatch")
        if expected == stop and digest != checkpoint_hash:
            return _bad(expected, prev, expected, "checkpoint_mismatch")
        prev = digest
        expected += 1
    count = expected - 1
    if segment:  # the caller joins the segments and judges truncation
        return ChainReport(True, count - start_seq + 1, count, prev)
    if checkpoint_size is not None and count < checkpoint_size:
        return ChainReport(
            False,
            count,
            count,
            prev,
            count + 1,
            "truncated",
            f"checkpoint has {checkpoint_size} entries, chain has {count}",
        )
    return ChainReport(True, count, count, prev)


def _bad(seq: int, prev: bytes, at: int, problem: str, detail: str = "") -> ChainReport:
    good = seq - 1
    return ChainReport(False, good, good, prev, at, problem, detail)


def join(
    parts: Sequence[tuple[int, bytes, ChainReport]], checkpoint_size: int | None = None
) -> ChainReport:
    """Combine segment reports (start seq, the start's stored previous hash, report) in
    chain order: the earliest bad entry wins, then every seam must link."""
    prev = GENESIS
    head = 0
    for start, start_prev, report in parts:
        if start != head + 1:
            return _bad(
                head + 1, prev, head + 1, "sequence_gap", f"expected {head + 1}, found {start}"
            )
        if start_prev != prev:
            return _bad(start, prev, start, "broken_link")
        if not report.ok:
            return report
        prev, head = report.head_hash, report.head_seq
    if checkpoint_size is not None and head < checkpoint_size:
        return ChainReport(
            False,
            head,
            head,
            prev,
            head + 1,
            "truncated",
            f"checkpoint has {checkpoint_size} entries, chain has {head}",
        )
    return ChainReport(True, head, head, prev)
