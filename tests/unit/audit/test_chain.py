"""The pure chain core: every kind of alteration is caught at its sequence number."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from carepost.audit.chain import GENESIS, entry_hash, verify_rows

Row = list[object]


def build(n: int) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        fields: list[object] = [
            seq,
            f"2026-01-01T00:00:{seq % 60:02d}.000000Z",
            "cli:t",
            "contacts.phi_read",
            f'["c{seq}"]',
            "care",
            "cli",
            "h",
            "{}",
        ]
        digest = entry_hash(prev, fields)
        rows.append([*fields, prev, digest])
        prev = digest
    return rows


def rehash_from(rows: list[Row], start: int) -> None:
    """What an attacker with table access does: recompute every hash after an edit."""
    prev = GENESIS if start == 0 else rows[start - 1][10]
    for idx in range(start, len(rows)):
        rows[idx][0] = idx + 1
        rows[idx][9] = prev
        rows[idx][10] = entry_hash(prev, rows[idx][:9])  # type: ignore[arg-type]
        prev = rows[idx][10]  # type: ignore[assignment]


def test_intact_chain_verifies() -> None:
    report = verify_rows(build(50))
    assert report.ok
    assert report.entries == 50


def test_empty_chain_verifies() -> None:
    assert verify_rows([]).ok


@given(st.integers(min_value=1, max_value=30), st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]))
def test_modified_field_is_found_at_its_seq(seq: int, field: int) -> None:
    rows = build(30)
    rows[seq - 1][field] = "altered"
    report = verify_rows(rows)
    assert not report.ok
    assert report.first_bad_seq == seq
    assert report.problem == "hash_mismatch"


@given(st.integers(min_value=1, max_value=29))
def test_deleted_entry_is_a_gap(seq: int) -> None:
    rows = build(30)
    del rows[seq - 1]
    report = verify_rows(rows)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, seq, "sequence_gap")


def test_deleted_and_renumbered_entry_breaks_the_link() -> None:
    rows = build(30)
    del rows[9]
    for idx in range(9, len(rows)):
        rows[idx][0] = idx + 1
    report = verify_rows(rows)
    assert (report.first_bad_seq, report.problem) == (10, "broken_link")


def test_inserted_entry_breaks_the_link() -> None:
    rows = build(30)
    forged = list(rows[4])
    rows.insert(5, forged)
    for idx in range(5, len(rows)):
        rows[idx][0] = idx + 1
    report = verify_rows(rows)
    assert not report.ok
    assert report.first_bad_seq == 6


def test_reordered_entries_are_caught() -> None:
    rows = build(30)
    rows[11], rows[12] = rows[12], rows[11]
    rows[11][0], rows[12][0] = 12, 13
    report = verify_rows(rows)
    assert (report.first_bad_seq, report.problem) == (12, "broken_link")


def test_rehashed_forgery_is_caught_only_by_a_checkpoint() -> None:
    rows = build(30)
    head_at_20 = rows[19][10]
    rows[7][5] = "rewritten purpose"
    rehash_from(rows, 7)
    assert verify_rows(rows).ok  # a consistent rewrite fools the chain alone
    report = verify_rows(rows, checkpoint_size=20, checkpoint_hash=head_at_20)  # type: ignore[arg-type]
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 20, "checkpoint_mismatch")


def test_truncation_is_caught_by_a_checkpoint() -> None:
    rows = build(30)
    report = verify_rows(rows[:25], checkpoint_size=30, checkpoint_hash=rows[29][10])  # type: ignore[arg-type]
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "truncated", 26)


def test_growth_after_checkpoint_is_fine() -> None:
    rows = build(30)
    assert verify_rows(rows, checkpoint_size=20, checkpoint_hash=rows[19][10]).ok  # type: ignore[arg-type]
