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
) -> ChainReport:
    """Walk rows (FIELDS order, ascending seq). Stops at the first bad entry."""
    prev = GENESIS
    expected = 1
    sha = hashlib.sha256
    dumps = orjson.dumps
    for row in rows:
        seq = row[0]
        if seq != expected:
            return ChainReport(
                False,
                expected - 1,
                expected - 1,
                prev,
                expected,
                "sequence_gap",
                f"expected {expected}, found {seq}",
            )
        stored_prev = bytes(row[9])  # type: ignore[call-overload]
        if stored_prev != prev:
            return ChainReport(False, expected - 1, expected - 1, prev, seq, "broken_link")
        digest = sha(prev + dumps(list(row[:9]))).digest()
        if digest != bytes(row[10]):  # type: ignore[call-overload]
            return ChainReport(False, expected - 1, expected - 1, prev, seq, "hash_mismatch")
        if checkpoint_size is not None and seq == checkpoint_size and digest != checkpoint_hash:
            return ChainReport(False, expected - 1, expected - 1, prev, seq, "checkpoint_mismatch")
        prev = digest
        expected += 1
    count = expected - 1
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
