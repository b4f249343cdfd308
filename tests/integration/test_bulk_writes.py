"""db.bulk_insert, db.bulk_update and db.among against a real database, both engines.

On PostgreSQL these take their own paths (COPY, one UPDATE joined to a JSON document,
`= ANY(array)`), so each case checks the stored rows, not that a statement ran."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select

from carepost.db import among, bulk_insert, bulk_update, driver_value, transaction
from carepost.delivery.models import OutboxMessage, OutboxTransition
from carepost.workspace import Workspace
from delivery_support import add_contacts

AT = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
COLUMNS = (
    "id", "campaign_id", "contact_id", "lane", "state", "attempts", "unknown_retries",
    "next_attempt_at", "created_at", "updated_at",
)  # fmt: skip


def _ids(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(1, n + 1)]


@pytest.fixture
def contact(workspace: Workspace) -> str:
    """The contact every outbox row here belongs to (the rows need a real one)."""
    return add_contacts(workspace, ["bulk@example.org"])[0]


def _insert(workspace: Workspace, contact: str, ids: list[str]) -> None:
    with transaction(workspace.engine) as session:
        at = driver_value(session, OutboxMessage.__table__.c.created_at, AT)
        bulk_insert(
            session,
            OutboxMessage.__table__,
            COLUMNS,
            [(i, None, contact, 1, "queued", 0, 0, at, at, at) for i in ids],
        )


def test_rows_inserted_in_bulk_read_back_exactly(workspace: Workspace, contact: str) -> None:
    ids = _ids(1200)
    _insert(workspace, contact, ids)
    with transaction(workspace.engine) as session:
        rows = session.execute(
            select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.next_attempt_at)
        ).all()
    assert sorted(r.id for r in rows) == ids
    assert {r.state for r in rows} == {"queued"}
    assert {r.next_attempt_at for r in rows} == {AT}


def test_text_with_tabs_newlines_and_backslashes_survives_the_copy(
    workspace: Workspace, contact: str
) -> None:
    [oid] = _ids(1)
    _insert(workspace, contact, [oid])
    detail = "tab\there\nnew line \\N back\\slash 'quote' \"dq\" ünï"
    with transaction(workspace.engine) as session:
        at = driver_value(session, OutboxTransition.__table__.c.at, AT)
        bulk_insert(
            session,
            OutboxTransition.__table__,
            ("outbox_id", "seq", "state", "at", "detail"),
            [(oid, 0, "queued", at, detail), (oid, 1, "claimed", at, None)],
        )
    with transaction(workspace.engine) as session:
        got = session.execute(
            select(OutboxTransition.seq, OutboxTransition.detail).order_by(OutboxTransition.seq)
        ).all()
    assert [tuple(r) for r in got] == [(0, detail), (1, None)]


def _write(workspace: Workspace, rows: list[tuple[object, ...]]) -> None:
    with transaction(workspace.engine) as session:
        column = OutboxMessage.__table__.c.created_at
        ready = [(*r[:7], *(driver_value(session, column, v) for v in r[7:])) for r in rows]
        bulk_insert(session, OutboxMessage.__table__, COLUMNS, ready)


def test_a_broken_bulk_insert_writes_nothing(workspace: Workspace, contact: str) -> None:
    ids = _ids(3)
    _insert(workspace, contact, ids[:1])
    # The third row repeats a stored primary key: the first two must not stay.
    rows = [(i, None, contact, 1, "queued", 0, 0, AT, AT, AT) for i in [*ids[1:], ids[0]]]
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        _write(workspace, rows)
    with transaction(workspace.engine) as session:
        assert session.scalars(select(OutboxMessage.id)).all() == ids[:1]


def test_bulk_update_sets_each_row_its_own_values(workspace: Workspace, contact: str) -> None:
    ids = _ids(700)
    _insert(workspace, contact, ids)
    later = AT + timedelta(minutes=7)
    with transaction(workspace.engine) as session:
        bulk_update(
            session,
            OutboxMessage.__table__,
            ("state", "attempts", "next_attempt_at", "last_reason", "updated_at"),
            ("id",),
            [
                (
                    "deferred" if n % 2 else "sent",
                    n % 5,
                    later + timedelta(seconds=n) if n % 2 else None,
                    f'reason "{n}"\n\\' if n % 3 else None,
                    later,
                    oid,
                )
                for n, oid in enumerate(ids)
            ],
        )
    with transaction(workspace.engine) as session:
        rows = {
            r.id: r
            for r in session.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.state,
                    OutboxMessage.attempts,
                    OutboxMessage.next_attempt_at,
                    OutboxMessage.last_reason,
                    OutboxMessage.updated_at,
                )
            )
        }
    for n, oid in enumerate(ids):
        row = rows[oid]
        assert row.state == ("deferred" if n % 2 else "sent")
        assert row.attempts == n % 5
        assert row.next_attempt_at == (later + timedelta(seconds=n) if n % 2 else None)
        assert row.last_reason == (f'reason "{n}"\n\\' if n % 3 else None)
        assert row.updated_at == later


def test_bulk_update_naming_a_row_twice_applies_the_last(
    workspace: Workspace, contact: str
) -> None:
    [oid] = _ids(1)
    _insert(workspace, contact, [oid])
    with transaction(workspace.engine) as session:
        bulk_update(
            session,
            OutboxMessage.__table__,
            ("state",),
            ("id",),
            [("claimed", oid), ("sent", oid)],
        )
    with transaction(workspace.engine) as session:
        assert session.scalar(select(OutboxMessage.state)) == "sent"


def test_among_matches_the_ids_given_and_no_others(workspace: Workspace, contact: str) -> None:
    ids = _ids(1500)
    _insert(workspace, contact, ids)
    wanted = [*ids[::7], "f" * 32]  # one id that is not stored
    with transaction(workspace.engine) as session:
        found = session.scalars(
            select(OutboxMessage.id).where(among(session, OutboxMessage.id, wanted))
        ).all()
        none = session.scalars(
            select(OutboxMessage.id).where(among(session, OutboxMessage.id, []))
        ).all()
    assert sorted(found) == sorted(ids[::7])
    assert none == []


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        (["a,b"], ["a,b"]),  # a comma inside a value: not split
        (["a", "b"], ["a", "b"]),
        ([""], [""]),  # an empty string is a value, not an empty list
        (["", "a"], ["", "a"]),
        (["z"], []),
    ],
)
def test_among_takes_commas_and_empty_strings_as_values(
    workspace: Workspace, contact: str, wanted: list[str], matches: list[str]
) -> None:
    """On PostgreSQL plain ids travel comma-joined; values that a join would change go
    as an array. Both give exactly the rows asked for."""
    reasons = ["a,b", "a", "b", ""]
    ids = _ids(len(reasons))
    _insert(workspace, contact, ids)
    with transaction(workspace.engine) as session:
        bulk_update(
            session,
            OutboxMessage.__table__,
            ("last_reason",),
            ("id",),
            list(zip(reasons, ids, strict=True)),
        )
    with transaction(workspace.engine) as session:
        found = session.scalars(
            select(OutboxMessage.last_reason).where(
                among(session, OutboxMessage.last_reason, wanted)
            )
        ).all()
    assert sorted(found) == sorted(matches)


def test_an_archived_campaign_body_stays_in_the_table_s_own_pages(
    workspace: Workspace, contact: str
) -> None:
    """PostgreSQL (migration 0017): a sealed body of a campaign message's size (about
    2.5 KB, incompressible) is not moved to TOAST, whose compression attempt and extra
    heap and index writes doubled the archive insert's server CPU."""
    import os

    from sqlalchemy import text

    from carepost.delivery.models import ArchivedMessage

    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("TOAST is PostgreSQL's")
    ids = _ids(20)
    _insert(workspace, contact, ids)
    with transaction(workspace.engine) as session:
        bulk_insert(
            session,
            ArchivedMessage.__table__,
            ("outbox_id", "attempt", "dek_version", "codec", "body"),
            [(i, 1, 1, "zstd", os.urandom(2500)) for i in ids],
        )
    with transaction(workspace.engine) as session:
        toast = session.scalar(
            text(
                # This test's own table (its schema is first on the search path), not
                # another test's that runs beside it.
                "SELECT reltoastrelid::regclass::text FROM pg_class"
                " WHERE oid = 'message_archive'::regclass"
            )
        )
        assert session.scalar(text(f"SELECT count(*) FROM {toast}")) == 0
        assert session.scalar(text("SELECT min(pg_column_size(body)) FROM message_archive")) >= 2500


def test_bytes_of_every_value_survive_the_copy(workspace: Workspace, contact: str) -> None:
    """bytea goes by binary COPY on PostgreSQL (no hex): every byte value, a backslash
    and bytes that spell hex included, comes back exactly."""
    from carepost.delivery.models import ArchivedMessage

    ids = _ids(300)
    _insert(workspace, contact, ids)
    bodies = {i: bytes(range(256)) * (n % 7) + b"\\x00\\\\" + i.encode() for n, i in enumerate(ids)}
    with transaction(workspace.engine) as session:
        bulk_insert(
            session,
            ArchivedMessage.__table__,
            ("outbox_id", "attempt", "dek_version", "codec", "body"),
            [(i, 1, 1, "zstd", body) for i, body in bodies.items()],
        )
    with transaction(workspace.engine) as session:
        stored = dict(
            session.execute(select(ArchivedMessage.outbox_id, ArchivedMessage.body)).all()
        )
    assert {i: bytes(b) for i, b in stored.items()} == bodies


def test_binary_copy_only_where_every_column_has_a_binary_form() -> None:
    from sqlalchemy import JSON, Column, Integer, LargeBinary, MetaData, Table
    from sqlalchemy.dialects import postgresql

    from carepost.db import _copy_types

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table = Table(
        "t", MetaData(), Column("id", Integer), Column("blob", LargeBinary), Column("doc", JSON)
    )
    assert _copy_types(table, ("id", "blob"), dialect) == ["int4", "bytea"]
    assert _copy_types(table, ("id", "doc"), dialect) is None
    assert _copy_types(OutboxMessage.__table__, COLUMNS, dialect) == [
        "text", "text", "text", "int4", "text", "int4", "int4",
        "timestamptz", "timestamptz", "timestamptz",
    ]  # fmt: skip
