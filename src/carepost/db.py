"""Engine, transaction scope and migrations entry.

Services never commit: a command, request or worker batch opens one `transaction()` and
the change and its audit entry commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Engine,
    MetaData,
    String,
    Text,
    any_,
    bindparam,
    create_engine,
    event,
    func,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which stores naive text) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: carepost stores aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


READ_ONLY = "carepost_read_only"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how a transaction starts (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        # The default 2 MiB page cache thrashes on imports that insert random blind-index
        # keys into large indexes; 64 MiB keeps them in memory.
        cur.execute("PRAGMA cache_size=-65536")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes can fail with SQLITE_BUSY when
        # another writer got there first; IMMEDIATE takes the write lock up front instead.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any exception."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        yield conn


def among(bind: Session | Connection, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL `column = ANY(:array)`: one parameter however
    many values, so the statement's text stays the same from batch to batch. An IN of
    500 ids is a new 500-placeholder statement each time, which SQLAlchemy expands, the
    driver re-parses and the server plans afresh (about a tenth of the delivery worker's
    main thread on PostgreSQL, in a profile)."""
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    if dialect.name == "postgresql":
        if isinstance(column.type, String) and _joinable(values):
            # Ids travel as one comma-joined text that the server splits: psycopg dumps
            # a list element by element in Python, a string in one C call (500 ids:
            # about 0.5 ms of the worker's CPU a query instead of 1.2).
            joined = bindparam(None, ",".join(values), type_=Text())
            return column == any_(func.string_to_array(joined, ","))  # type: ignore[no-any-return]
        values_param = bindparam(None, list(values), type_=ARRAY(column.type))
        return column == any_(values_param)  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


def _joinable(values: Sequence[Any]) -> bool:
    """Strings that a comma join and split gives back whole (an empty list is fine too:
    the server splits '' into no elements)."""
    return all(type(v) is str and "," not in v for v in values) and "" not in values


def driver_value(session: Session, column: Any, value: Any) -> Any:
    """`value` as the driver receives it for `column` (what bind processing makes of it):
    bulk writers process a shared value, such as the import's timestamp, once."""
    proc = column.type._cached_bind_processor(session.connection().dialect)
    return proc(value) if proc is not None else value


def bulk_update(
    session: Session,
    table: Any,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """`UPDATE table SET columns WHERE keys` for each row, without a round trip per row.

    Each row gives the new values of `columns` and then the values of `keys`, as Python
    values: each column's bind processing (aware datetimes into what the driver stores)
    is applied here. The ORM's bulk update by primary key costs the delivery worker more
    than the database's own work on PostgreSQL; this keeps the per-row work to a tuple.
    SQLite gets one UPDATE per row (executemany). PostgreSQL gets ONE statement that
    joins the table to the rows sent as one JSON document (`json_to_recordset`): its
    executor starts once, not once per row. Measured on the delivery worker's batches
    (docs/benchmarks.md): less client CPU than executemany, which costs less than arrays
    per column (the driver adapts each array element in Python).
    """
    if not rows:
        return
    conn = session.connection()
    names = [*columns, *keys]
    procs = [(i, p) for i, n in enumerate(names) if (p := _bind_processor(table, n, conn))]
    if procs:
        converted = []
        for row in rows:
            values = list(row)
            for i, proc in procs:
                if values[i] is not None:
                    values[i] = proc(values[i])
            converted.append(values)
        rows = converted
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql" and _keys_unique(rows, len(columns)):
            try:
                payload = orjson.dumps([dict(zip(names, row, strict=True)) for row in rows])
            except TypeError:  # a value JSON cannot carry (bytes): the per-row path
                payload = b""
            if payload:
                sql = _pg_update_sql(table, columns, keys, conn.dialect)
                cursor.execute(sql, (payload.decode(),))
                return
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"UPDATE {table.name} SET {', '.join(f'{c} = {marker}' for c in columns)} "  # noqa: S608
            f"WHERE {' AND '.join(f'{k} = {marker}' for k in keys)}"
        )
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _keys_unique(rows: Sequence[Sequence[Any]], first_key: int) -> bool:
    """One statement updates a row once even when the rows name it twice (executemany
    applies both, the last winning): such a batch keeps the per-row path."""
    return len({tuple(row[first_key:]) for row in rows}) == len(rows)


def _pg_update_sql(table: Any, columns: Sequence[str], keys: Sequence[str], dialect: Any) -> str:
    # The rows travel as one JSON document: orjson writes it in C, where the driver's
    # array adapters would visit every value in Python.
    q = dialect.identifier_preparer.quote
    shape = ", ".join(
        f"{q(n)} {table.c[n].type.compile(dialect=dialect)}" for n in [*columns, *keys]
    )
    name = q(table.name)
    return (
        f"UPDATE {name} SET {', '.join(f'{q(c)} = v.{q(c)}' for c in columns)} "  # noqa: S608
        f"FROM json_to_recordset(%s::json) AS v({shape}) "
        f"WHERE {' AND '.join(f'{name}.{q(k)} = v.{q(k)}' for k in keys)}"
    )


def _bind_processor(table: Any, name: str, conn: Any) -> Any:
    return table.c[name].type._cached_bind_processor(conn.dialect)


# PostgreSQL's types as psycopg names them for binary COPY, by the type SQLAlchemy
# compiles (before any length). Binary COPY carries bytea as it is: text COPY doubles it
# into hex that the driver writes and the server parses (the sealed message archive: 58
# against 27 µs of server CPU a row, docs/benchmarks.md). A table with a column of any
# other type keeps text COPY.
_COPY_BINARY = {
    "BIGINT": "int8",
    "BOOLEAN": "bool",
    "BYTEA": "bytea",
    "DATE": "date",
    "DOUBLE PRECISION": "float8",
    "FLOAT": "float8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "TEXT": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "VARCHAR": "text",
}
_copy_types_seen: dict[tuple[Any, tuple[str, ...]], list[str] | None] = {}


def _copy_types(table: Any, columns: tuple[str, ...], dialect: Any) -> list[str] | None:
    key = (table, columns)
    if key not in _copy_types_seen:
        compiled = [table.c[c].type.compile(dialect=dialect).split("(")[0] for c in columns]
        known = all(name in _COPY_BINARY for name in compiled)
        _copy_types_seen[key] = [_COPY_BINARY[name] for name in compiled] if known else None
    return _copy_types_seen[key]


def bulk_insert(
    session: Session, table: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """executemany straight on the driver cursor, inside the session's transaction.

    The ORM and Core paths spend more time building per-row parameter dicts than SQLite
    spends storing the rows; imports write hundreds of thousands of rows, so they come
    here. Values must be driver-ready: bytes, str, numbers, and datetimes passed through
    `driver_value`. On PostgreSQL the rows go by COPY, which costs the server and the
    driver a fraction of one INSERT per row; constraints and defaults apply the same.
    """
    if not rows:
        return
    conn = session.connection()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            q = conn.dialect.identifier_preparer.quote
            types = _copy_types(table, tuple(columns), conn.dialect)
            binary = " (FORMAT BINARY)" if types is not None else ""
            sql = f"COPY {q(table.name)} ({', '.join(map(q, columns))}) FROM STDIN{binary}"
            with cursor.copy(sql) as copy:
                if types is not None:
                    copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            return
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 (names from models)
            f"VALUES ({', '.join([marker] * len(columns))})"
        )
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def insert_if_absent(
    session: Session, table: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """`bulk_insert`, skipping rows that would break a unique key (SQLite's INSERT OR
    IGNORE, PostgreSQL's ON CONFLICT DO NOTHING): a step re-run after a crash writes its
    deterministic rows again and finds them already there."""
    if not rows:
        return
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    verb = "INSERT OR IGNORE" if sqlite else "INSERT"
    tail = "" if sqlite else " ON CONFLICT DO NOTHING"
    sql = (
        f"{verb} INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([marker] * len(columns))}){tail}"
    )
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()
