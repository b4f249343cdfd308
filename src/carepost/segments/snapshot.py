"""The in-memory columnar snapshot the evaluator reads: decrypted demographics, clinical
facts and engagement events as numpy arrays, one row per contact.

PHI is encrypted in the database, so SQL cannot filter on it. The snapshot is built once
from the store (`build_snapshot`: one audit entry, `segments.snapshot_built`, recorded
before anything is decrypted; two forked processes decrypt halves of the contacts) and
kept current with `Snapshot.refresh`, which re-decrypts only contacts whose record or
facts changed after the cursors (indexed `updated_at` columns) and appends new events
(by id, waiting at an id not yet committed: id_cursor.py). It lives in this process's
memory only: nothing here writes it to disk, logs it or puts it in an exception message.
The decrypt workers hand their columns back to the parent over an anonymous pipe
(memory, never a file).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, func, select
from sqlalchemy.pool import NullPool

from carepost.audit.actor import Actor
from carepost.clock import Clock, system_clock
from carepost.contacts import phi
from carepost.contacts.models import ClinicalFact, Contact
from carepost.crypto.keyring import KeyRing
from carepost.db import make_engine, read_only, transaction
from carepost.id_cursor import HoleWatch, grace_for
from carepost.segments.stage import BOOKED, is_visit

MISSING = int(np.iinfo(np.int64).min)
NO_CODE = -1
CATEGORICAL = ("sex", "state", "postal_code", "city", "language", "insurance_type")
FACT_TABLES = (
    "condition",
    "medication",
    "observation",
    "immunization",
    "procedure",
    "encounter",
    "appointment",
)
EVENT_KINDS = ("open", "click", "form_submitted", "api_event")
VERDICTS = ("human", "machine", "unknown")
INACTIVE_CONDITION = frozenset({"inactive", "remission", "resolved"})
NOT_CONFIRMED = frozenset({"refuted", "entered-in-error"})
ACTIVE_MEDICATION = frozenset({"active", "on-hold", "intended"})
DROPPED_STATUS = frozenset({"entered-in-error", "not-done", "cancelled"})
# Appointment flag bits.
BOOKED_BIT = 1
NO_SHOW_BIT = 2
PARALLEL_MIN_CONTACTS = 20_000

I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@lru_cache(maxsize=65_536)
def epoch(text: object) -> int:
    """Epoch seconds of an ISO date or date-time (a date is midnight UTC; a time without
    offset is UTC; a partial date "2024-05" is its first day). MISSING if unreadable."""
    if not isinstance(text, str) or not text:
        return MISSING
    try:
        if len(text) == 10:
            return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
        if len(text) == 7:
            return int(datetime.fromisoformat(text + "-01").replace(tzinfo=UTC).timestamp())
        if len(text) == 4:
            return int(datetime.fromisoformat(text + "-01-01").replace(tzinfo=UTC).timestamp())
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return math.floor(dt.timestamp())
    except ValueError:
        return MISSING


def value_key(value: object) -> tuple[str, object]:
    """Interning key of a custom-attribute value: keeps True, 1 and "1" apart."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("o", repr(value))


class Vocab:
    """Interned values; arrays hold their index (NO_CODE for missing)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.keys: list[Any] = []
        self.index: dict[Any, int] = {}

    def code(self, value: Any, key: Any = None) -> int:
        k = value if key is None else key
        found = self.index.get(k)
        if found is None:
            found = self.index[k] = len(self.values)
            self.values.append(value)
            self.keys.append(k)
        return found

    def __len__(self) -> int:
        return len(self.values)


@dataclass(repr=False)
class FactColumns:
    row: array[int] = field(default_factory=lambda: array("i"))
    code: array[int] = field(default_factory=lambda: array("i"))  # into Part.codes
    t: array[int] = field(default_factory=lambda: array("q"))
    end: array[int] = field(default_factory=lambda: array("q"))
    flag: array[int] = field(default_factory=lambda: array("b"))
    value: array[float] = field(default_factory=lambda: array("d"))

    def __repr__(self) -> str:  # sizes only: the columns are PHI
        return f"FactColumns({len(self.row)} rows)"

    def add(self, row: int, code: int, t: int, end: int, flag: int, value: float) -> None:
        self.row.append(row)
        self.code.append(code)
        self.t.append(t)
        self.end.append(end)
        self.flag.append(flag)
        self.value.append(value)


def _codings(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    codes = payload.get("codes") or ([payload["code"]] if payload.get("code") else [])
    out = []
    for c in codes:
        if isinstance(c, dict) and c.get("code"):
            out.append((c.get("system"), str(c["code"])))
    return out


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


class Part:
    """Columns for some contacts, built from plain records and fact payloads. The decrypt
    workers build one each; tests build one straight from a synthetic population."""

    def __repr__(self) -> str:  # sizes only: the columns are PHI
        return f"Part({len(self.ids)} contacts)"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.birth_y = array("h")
        self.birth_md = array("h")
        self.deceased = array("b")
        self.cats = {name: array("i") for name in CATEGORICAL}
        self.cat_vocab = {name: Vocab() for name in CATEGORICAL}
        self.attr_rows: dict[str, array[int]] = {}
        self.attr_codes: dict[str, array[int]] = {}
        self.attr_vocab = Vocab()
        self.codes = Vocab()  # (system, code) pairs of every fact table
        self.facts = {kind: FactColumns() for kind in FACT_TABLES}
        self.cpu_seconds = 0.0  # CPU time the worker spent building it

    def __len__(self) -> int:
        return len(self.ids)

    def add_contact(
        self, contact_id: str, record: dict[str, Any], facts: Iterable[dict[str, Any]]
    ) -> None:
        row = len(self.ids)
        self.ids.append(contact_id)
        born = record.get("birth_date")
        y = md = 0
        if isinstance(born, str) and len(born) >= 10:
            try:
                d = datetime.fromisoformat(born[:10])
                y, md = d.year, d.month * 100 + d.day
            except ValueError:
                y = md = 0
        self.birth_y.append(y)
        self.birth_md.append(md)
        dec = record.get("deceased")
        self.deceased.append(1 if (dec is True or (isinstance(dec, str) and dec)) else 0)
        address = record.get("address") or {}
        for name, value in (
            ("sex", record.get("sex")),
            ("state", address.get("state")),
            ("postal_code", address.get("postal_code")),
            ("city", address.get("city")),
            ("language", record.get("language")),
            ("insurance_type", record.get("insurance_type")),
        ):
            self.cats[name].append(
                self.cat_vocab[name].code(value) if isinstance(value, str) and value else NO_CODE
            )
        for name, value in (record.get("attributes") or {}).items():
            if value is None:
                continue
            if name not in self.attr_rows:
                self.attr_rows[name] = array("i")
                self.attr_codes[name] = array("i")
            self.attr_rows[name].append(row)
            self.attr_codes[name].append(self.attr_vocab.code(value, value_key(value)))
        for payload in facts:
            self.add_fact(row, payload)

    def add_fact(self, row: int, p: dict[str, Any]) -> None:
        kind = p.get("kind")
        status = p.get("status")
        if kind not in self.facts or status in DROPPED_STATUS:
            return
        table = self.facts[kind]
        t = epoch(p.get("date"))
        if kind == "encounter":
            if is_visit(status):
                table.add(row, NO_CODE, t, MISSING, 0, math.nan)
            return
        if kind == "appointment":
            flag = (BOOKED_BIT if status in BOOKED else 0) | (
                NO_SHOW_BIT if (p.get("no_show") or status == "noshow") else 0
            )
            table.add(row, NO_CODE, t, MISSING, flag, math.nan)
            return
        if kind == "immunization" and p.get("not_done"):
            return
        end, flag, value = MISSING, 1, math.nan
        if kind == "condition":
            t = epoch(p.get("onset") or p.get("date"))
            end = epoch(p.get("abatement"))
            flag = int(
                status not in INACTIVE_CONDITION and p.get("verification") not in NOT_CONFIRMED
            )
        elif kind == "medication":
            end = epoch(p.get("end"))
            flag = int(status is None or status in ACTIVE_MEDICATION)
        elif kind == "observation":
            value = _number(p.get("value"))
        codings = _codings(p)
        for system, code in dict.fromkeys(codings):
            table.add(row, self.codes.code((system, code)), t, end, flag, value)


def _remap(vocab: Vocab, target: Vocab) -> I32:
    """Part codes -> snapshot codes, with one spare slot so NO_CODE (-1) maps to -1."""
    out = np.empty(len(vocab) + 1, dtype=np.int32)
    for i, (value, key) in enumerate(zip(vocab.values, vocab.keys, strict=True)):
        out[i] = target.code(value, key)
    out[-1] = NO_CODE
    return out


@dataclass(repr=False)
class FactTable:
    row: I32
    code: I32
    t: I64
    end: I64
    flag: I8
    value: F64

    @classmethod
    def empty(cls) -> FactTable:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int8),
            np.empty(0, np.float64),
        )

    def __len__(self) -> int:
        return len(self.row)

    def __repr__(self) -> str:  # sizes only: the columns are PHI
        return f"FactTable({len(self.row)} rows)"

    def keep(self, mask: B) -> FactTable:
        return FactTable(
            self.row[mask],
            self.code[mask],
            self.t[mask],
            self.end[mask],
            self.flag[mask],
            self.value[mask],
        )

    def extend(self, other: FactTable) -> FactTable:
        return FactTable(
            *(
                np.concatenate([getattr(self, n), getattr(other, n)])
                for n in ("row", "code", "t", "end", "flag", "value")
            )
        )


@dataclass(repr=False)
class Events:
    row: I32
    kind: I8
    name: I32
    verdict: I8
    t: I64

    @classmethod
    def empty(cls) -> Events:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int8),
            np.empty(0, np.int32),
            np.empty(0, np.int8),
            np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.row)

    def __repr__(self) -> str:
        return f"Events({len(self.row)} rows)"


@dataclass
class Cursors:
    contacts_at: datetime | None = None
    facts_at: datetime | None = None
    event_id: int = 0  # every event id up to this one is in the snapshot (or never will be)
    # Events read past a hole the cursor waits at (an id whose transaction had not
    # committed: id_cursor.py): the next refresh reads from `event_id` and skips these.
    events_ahead: set[int] = field(default_factory=set)
    holes: HoleWatch = field(default_factory=lambda: HoleWatch(grace_for("sqlite")))

    def read_events(self, ids: Sequence[int], now: datetime) -> None:
        """Move past the events just read (ascending ids above the cursor, none of them
        in `events_ahead`), up to the first hole that may still fill."""
        ahead = sorted(self.events_ahead.union(ids)) if self.events_ahead else list(ids)
        taken = self.holes.readable(self.event_id, ahead, now)
        if taken:
            self.event_id = ahead[taken - 1]
        self.events_ahead = set(ahead[taken:])


class Snapshot:
    """Columns for every contact (row = position), fact tables and events.

    Rows never move: a changed contact is updated in place, a new one appended, a
    shredded or deleted one marked absent. `version` increases with every change so
    callers can cache per version.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.present: B = np.empty(0, bool)
        self.birth_y = np.empty(0, np.int16)
        self.birth_md = np.empty(0, np.int16)
        self.deceased: B = np.empty(0, bool)
        self.cats: dict[str, I32] = {n: np.empty(0, np.int32) for n in CATEGORICAL}
        self.cat_vocab: dict[str, Vocab] = {n: Vocab() for n in CATEGORICAL}
        self.attrs: dict[str, I32] = {}
        self.attr_vocab = Vocab()
        self.codes = Vocab()
        self.facts: dict[str, FactTable] = {k: FactTable.empty() for k in FACT_TABLES}
        self.events = Events.empty()
        self.event_names = Vocab()
        self.cursors = Cursors()
        self.version = 0
        self.cache: dict[Any, Any] = {}
        self.pending_events: list[tuple[int, str, str, str | None, str, int]] = []
        self.build_seconds = 0.0
        self.build_timings: dict[str, object] = {}

    def __repr__(self) -> str:  # sizes only: the snapshot is PHI
        return f"Snapshot({self.stats()})"

    # --- sizes -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.ids)

    def stats(self) -> dict[str, int]:
        return {
            "contacts": int(self.present.sum()),
            "facts": sum(len(t) for t in self.facts.values()),
            "events": len(self.events),
        }

    def nbytes(self) -> int:
        arrays: list[Any] = [self.present, self.birth_y, self.birth_md, self.deceased]
        arrays += list(self.cats.values()) + list(self.attrs.values())
        for t in self.facts.values():
            arrays += [t.row, t.code, t.t, t.end, t.flag, t.value]
        e = self.events
        arrays += [e.row, e.kind, e.name, e.verdict, e.t]
        return sum(int(a.nbytes) for a in arrays)

    # --- changes ---------------------------------------------------------------------------
    def _grow(self, extra: int) -> None:
        if extra <= 0:
            return
        self.present = np.concatenate([self.present, np.zeros(extra, bool)])
        self.birth_y = np.concatenate([self.birth_y, np.zeros(extra, np.int16)])
        self.birth_md = np.concatenate([self.birth_md, np.zeros(extra, np.int16)])
        self.deceased = np.concatenate([self.deceased, np.zeros(extra, bool)])
        for name in CATEGORICAL:
            self.cats[name] = np.concatenate([self.cats[name], np.full(extra, NO_CODE, np.int32)])
        for name in self.attrs:
            self.attrs[name] = np.concatenate([self.attrs[name], np.full(extra, NO_CODE, np.int32)])

    def merge(self, part: Part) -> None:
        """Put the part's contacts in (replacing their previous columns and facts)."""
        if not part.ids:
            return
        rows = np.empty(len(part.ids), np.int32)
        old_n = self.n
        new_ids = 0
        replaced: list[int] = []
        for i, cid in enumerate(part.ids):
            row = self.row_of.get(cid)
            if row is None:
                row = self.n + new_ids
                new_ids += 1
                self.row_of[cid] = row
            else:
                replaced.append(row)
            rows[i] = row
        self.ids.extend([cid for cid in part.ids if self.row_of[cid] >= old_n])
        self._grow(len(self.ids) - len(self.present))
        self.present[rows] = True
        self.birth_y[rows] = np.frombuffer(part.birth_y, np.int16)
        self.birth_md[rows] = np.frombuffer(part.birth_md, np.int16)
        self.deceased[rows] = np.frombuffer(part.deceased, np.int8).astype(bool)
        for name in CATEGORICAL:
            remap = _remap(part.cat_vocab[name], self.cat_vocab[name])
            self.cats[name][rows] = remap[np.frombuffer(part.cats[name], np.int32)]
        if replaced:
            for col in self.attrs.values():
                col[np.asarray(replaced, np.int32)] = NO_CODE
        remap = _remap(part.attr_vocab, self.attr_vocab)
        for name, prow in part.attr_rows.items():
            if name not in self.attrs:
                self.attrs[name] = np.full(self.n, NO_CODE, np.int32)
            col = self.attrs[name]
            col[rows[np.frombuffer(prow, np.int32)]] = remap[
                np.frombuffer(part.attr_codes[name], np.int32)
            ]
        code_remap = _remap(part.codes, self.codes)
        gone = np.zeros(self.n, bool)
        if replaced:
            gone[np.asarray(replaced, np.int32)] = True
        for kind in FACT_TABLES:
            cols = part.facts[kind]
            table = self.facts[kind]
            if replaced and len(table):
                table = table.keep(~gone[table.row])
            if len(cols.row):
                add = FactTable(
                    rows[np.frombuffer(cols.row, np.int32)],
                    code_remap[np.frombuffer(cols.code, np.int32)],
                    np.frombuffer(cols.t, np.int64).copy(),
                    np.frombuffer(cols.end, np.int64).copy(),
                    np.frombuffer(cols.flag, np.int8).copy(),
                    np.frombuffer(cols.value, np.float64).copy(),
                )
                table = add if not len(table) else table.extend(add)
            self.facts[kind] = table
        self.version += 1
        self.cache.clear()

    def remove(self, contact_ids: Iterable[str]) -> None:
        """Mark contacts absent (deleted or crypto-shredded): they match no rule."""
        rows = [self.row_of[c] for c in contact_ids if c in self.row_of]
        if rows:
            self.present[np.asarray(rows, np.int32)] = False
            self.version += 1
            self.cache.clear()

    def add_events(self, events: Sequence[tuple[int, str, str, str | None, str, int]]) -> int:
        """Append (id, contact id, kind, name, verdict, epoch seconds); events of contacts
        not (yet) in the snapshot wait in `pending_events` for the next refresh."""
        batch = [*self.pending_events, *events] if self.pending_events else list(events)
        if not batch:
            return 0
        row_of = self.row_of
        rows = np.fromiter((row_of.get(e[1], -1) for e in batch), np.int64, len(batch))
        kind_ix = {k: i for i, k in enumerate(EVENT_KINDS)}
        kinds = np.fromiter((kind_ix.get(e[2], -1) for e in batch), np.int64, len(batch))
        known = rows >= 0
        self.pending_events = [e for e, ok in zip(batch, known.tolist(), strict=True) if not ok][
            -100_000:
        ]
        keep = known & (kinds >= 0)
        if not keep.any():
            return 0
        names_code = self.event_names.code
        name_ix: dict[str | None, int] = {None: NO_CODE, "": NO_CODE}
        for e in batch:
            if e[3] not in name_ix:
                name_ix[e[3]] = names_code(e[3].casefold())  # type: ignore[union-attr]
        verdict_ix = {v: i for i, v in enumerate(VERDICTS)}
        names = np.fromiter((name_ix[e[3]] for e in batch), np.int64, len(batch))
        verdicts = np.fromiter((verdict_ix.get(e[4], 2) for e in batch), np.int64, len(batch))
        ts = np.fromiter(
            (e[5] if e[5] is not None else MISSING for e in batch), np.int64, len(batch)
        )
        old = self.events
        self.events = Events(
            np.concatenate([old.row, rows[keep].astype(np.int32)]),
            np.concatenate([old.kind, kinds[keep].astype(np.int8)]),
            np.concatenate([old.name, names[keep].astype(np.int32)]),
            np.concatenate([old.verdict, verdicts[keep].astype(np.int8)]),
            np.concatenate([old.t, ts[keep]]),
        )
        self.version += 1
        self.cache.clear()
        return int(keep.sum())

    @classmethod
    def from_parts(cls, parts: Sequence[Part]) -> Snapshot:
        snap = cls()
        for part in parts:
            snap.merge(part)
        return snap

    # --- the store -------------------------------------------------------------------------
    def refresh(
        self,
        engine: Engine,
        ring: KeyRing,
        *,
        actor: Actor,
        clock: Clock = system_clock,
    ) -> dict[str, int]:
        """Re-decrypt contacts whose record or facts changed after the cursors, drop the
        ones shredded or deleted, append new events. Cheap when nothing changed: three
        indexed queries. A refresh that decrypts writes one audit entry naming the
        contacts (`segments.snapshot_refreshed`)."""
        c = self.cursors
        with read_only(engine) as session:
            changed: dict[str, None] = {}
            q = select(Contact.id, Contact.updated_at)
            if c.contacts_at is not None:
                q = q.where(Contact.updated_at > c.contacts_at)
            new_c_at = c.contacts_at
            for cid, at in session.execute(q):
                changed[cid] = None
                new_c_at = at if new_c_at is None or at > new_c_at else new_c_at
            q2 = select(ClinicalFact.contact_id, ClinicalFact.updated_at)
            if c.facts_at is not None:
                q2 = q2.where(ClinicalFact.updated_at > c.facts_at)
            new_f_at = c.facts_at
            for cid, at in session.execute(q2):
                changed[cid] = None
                new_f_at = at if new_f_at is None or at > new_f_at else new_f_at
        decrypted = 0
        if changed:
            ids = sorted(changed)
            with transaction(engine) as session:
                access = phi.record_bulk_access(
                    session,
                    actor=actor,
                    action="segments.snapshot_refreshed",
                    purpose="segment evaluation: contacts changed since the snapshot",
                    subjects=ids,
                    clock=clock,
                )
            part, found = _decrypt_ids(engine, ring, access, ids)
            self.merge(part)
            self.remove(set(ids) - found)
            decrypted = len(found)
        c.contacts_at, c.facts_at = new_c_at, new_f_at
        events = self._load_events(engine, clock())
        return {"contacts": decrypted, "events": events}

    def _load_events(self, engine: Engine, now: datetime) -> int:
        added = 0
        c = self.cursors
        read: list[int] = []
        for batch in _event_batches(engine, c.event_id):
            if c.events_ahead:
                batch = [e for e in batch if e[0] not in c.events_ahead]
            added += self.add_events(batch)
            read += (e[0] for e in batch)
        if self.pending_events and not added:
            added += self.add_events([])
        c.read_events(read, now)
        return added


# --- reading the store --------------------------------------------------------------------
_CONTACTS_SQL = (
    "SELECT c.id, c.phi, k.dek_version, k.kek_version, k.wrapped_dek FROM contacts c "
    "JOIN contact_keys k ON k.contact_id = c.id WHERE {where} ORDER BY c.id"
)
_FACTS_SQL = (
    "SELECT f.id, f.contact_id, f.payload FROM clinical_facts f WHERE {where} ORDER BY f.contact_id"
)


def _stream(
    conn: Any, sql: str, params: Sequence[object], name: str, batch: int = 5000
) -> Iterator[Any]:
    raw = conn.connection.dbapi_connection
    pg = conn.dialect.name == "postgresql"
    if pg:
        sql = sql.replace("?", "%s")
    cursor = raw.cursor(name=name) if pg else raw.cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(batch):
            yield from rows
    finally:
        cursor.close()


# What the forked decrypt workers inherit (never sent over a pipe: it holds the key ring).
_FORK_STATE: dict[str, Any] = {}


def _decrypt_forked(lo: str | None, hi: str | None) -> Part:
    return _decrypt_range(_FORK_STATE["url"], _FORK_STATE["ring"], _FORK_STATE["access"], lo, hi)


def _decrypt_range(
    url: str, ring: KeyRing, access: phi.BulkAccess, lo: str | None, hi: str | None
) -> Part:
    """One worker's share: contacts with lo <= id < hi, decrypted into a Part."""
    engine = make_engine(url, poolclass=NullPool)
    part = Part()
    cpu = time.process_time()
    try:
        conds, params = [], []
        if lo is not None:
            conds.append("{col} >= ?")
            params.append(lo)
        if hi is not None:
            conds.append("{col} < ?")
            params.append(hi)
        where = " AND ".join(conds) or "1 = 1"
        with read_only(engine) as conn:
            contacts = _stream(
                conn, _CONTACTS_SQL.format(where=where.format(col="c.id")), params, "seg_c"
            )
            with read_only(engine) as conn2:
                facts = _stream(
                    conn2,
                    _FACTS_SQL.format(where=where.format(col="f.contact_id")),
                    params,
                    "seg_f",
                )
                for cid, record, fact_list in phi.bulk_open(access, ring, contacts, facts):
                    part.add_contact(cid, record, fact_list)
    finally:
        engine.dispose()
    part.cpu_seconds = time.process_time() - cpu
    return part


def _decrypt_ids(
    engine: Engine, ring: KeyRing, access: phi.BulkAccess, ids: Sequence[str]
) -> tuple[Part, set[str]]:
    part = Part()
    with read_only(engine) as conn:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join(["?"] * len(chunk))
            contacts = list(
                _stream(conn, _CONTACTS_SQL.format(where=f"c.id IN ({marks})"), chunk, "seg_rc")
            )
            facts = list(
                _stream(
                    conn, _FACTS_SQL.format(where=f"f.contact_id IN ({marks})"), chunk, "seg_rf"
                )
            )
            for cid, record, fact_list in phi.bulk_open(access, ring, contacts, facts):
                part.add_contact(cid, record, fact_list)
    return part, set(part.ids)


def _event_sql(engine: Engine, where: str) -> str:
    if engine.dialect.name == "postgresql":
        t_expr = "CAST(FLOOR(EXTRACT(EPOCH FROM at)) AS BIGINT)"
    else:
        t_expr = "CAST(strftime('%s', at) AS INTEGER)"
    return (
        f"SELECT id, contact_id, kind, name, verdict, {t_expr} FROM engagement_events "  # noqa: S608
        f"WHERE {where} ORDER BY id"
    )


def _event_batches(
    engine: Engine, after: int, batch: int = 200_000
) -> Iterator[list[tuple[int, str, str, str | None, str, int]]]:
    sql = _event_sql(engine, "id > ?")
    with read_only(engine) as conn:
        rows: list[tuple[int, str, str, str | None, str, int]] = []
        for row in _stream(conn, sql, [after], "seg_e", batch=20_000):
            rows.append(tuple(row))
            if len(rows) >= batch:
                yield rows
                rows = []
        if rows:
            yield rows


def _bounds(engine: Engine, workers: int) -> list[tuple[str | None, str | None]]:
    with read_only(engine) as session:
        total = session.scalar(select(func.count()).select_from(Contact)) or 0
        if workers <= 1 or total < PARALLEL_MIN_CONTACTS:
            return [(None, None)]
        cuts: list[str | None] = [None]
        for k in range(1, workers):
            cut = session.scalar(
                select(Contact.id).order_by(Contact.id).offset(total * k // workers).limit(1)
            )
            cuts.append(cut)
        cuts.append(None)
    return [(cuts[i], cuts[i + 1]) for i in range(workers)]


def build_snapshot(
    engine: Engine,
    ring: KeyRing,
    *,
    actor: Actor,
    purpose: str = "segment evaluation: build the in-memory snapshot",
    workers: int = 2,
    clock: Clock = system_clock,
) -> Snapshot:
    """Decrypt every contact and fact into a new snapshot, after writing ONE audit entry
    (`segments.snapshot_built`) for the bulk access."""
    started = time.perf_counter()
    snap = Snapshot()
    with read_only(engine) as session:
        cursors = Cursors(
            session.scalar(select(func.max(Contact.updated_at))),
            session.scalar(select(func.max(ClinicalFact.updated_at))),
            0,
        )
        total = session.scalar(select(func.count()).select_from(Contact)) or 0
    with transaction(engine) as session:
        access = phi.record_bulk_access(
            session,
            actor=actor,
            action="segments.snapshot_built",
            purpose=purpose,
            details={"contacts": total},
            clock=clock,
        )
    bounds = _bounds(engine, workers)
    url = engine.url.render_as_string(hide_password=False)
    events: list[tuple[int, str, str, str | None, str, int]] = []
    if len(bounds) == 1:
        parts = [_decrypt_range(url, ring, access, None, None)]
        for batch in _event_batches(engine, 0):
            events += batch
    else:
        ctx = multiprocessing.get_context("fork")
        _FORK_STATE.update(url=url, ring=ring, access=access)
        try:
            with ctx.Pool(len(bounds)) as pool:
                pending = pool.starmap_async(_decrypt_forked, bounds)
                # The events table is plain: read it while the workers decrypt.
                for batch in _event_batches(engine, 0):
                    events += batch
                parts = pending.get()
        finally:
            _FORK_STATE.clear()
    decrypted = time.perf_counter()
    worker_cpu = [round(p.cpu_seconds, 2) for p in parts]
    for part in parts:
        snap.merge(part)
    del parts
    merged = time.perf_counter()
    cursors.holes = HoleWatch(grace_for(engine.dialect.name))
    snap.cursors = cursors
    snap.add_events(events)
    cursors.read_events([e[0] for e in events], clock())
    done = time.perf_counter()
    snap.build_seconds = done - started
    snap.build_timings = {
        "decrypt": round(decrypted - started, 2),
        "merge": round(merged - decrypted, 2),
        "events": round(done - merged, 2),
        "worker_cpu": worker_cpu,
    }
    return snap


def build_snapshot_of(
    engine: Engine,
    ring: KeyRing,
    contact_ids: Sequence[str],
    *,
    actor: Actor,
    purpose: str,
    action: str = "segments.snapshot_built",
    details: dict[str, object] | None = None,
    with_events: bool = True,
    clock: Clock = system_clock,
) -> Snapshot:
    """A one-off snapshot of only these contacts (a campaign's recipients, for its
    report), after ONE audit entry naming them all: the minimum necessary instead of the
    whole store. The evaluator decides each row from that row's own data, so a contact
    gets the same answer here as in the full snapshot. Not meant to be refreshed."""
    ids = sorted(set(contact_ids))
    with transaction(engine) as session:
        access = phi.record_bulk_access(
            session,
            actor=actor,
            action=action,
            purpose=purpose,
            subjects=ids,
            details={**(details or {}), "contacts": len(ids)},
            clock=clock,
        )
    started = time.perf_counter()
    snap = Snapshot()
    part, _found = _decrypt_ids(engine, ring, access, ids)
    snap.merge(part)
    if with_events and ids:
        rows: list[tuple[int, str, str, str | None, str, int]] = []
        with read_only(engine) as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                sql = _event_sql(engine, f"contact_id IN ({', '.join(['?'] * len(chunk))})")
                rows += [tuple(r) for r in _stream(conn, sql, chunk, "seg_eo")]
        snap.add_events(rows)
        snap.pending_events = []
    snap.build_seconds = time.perf_counter() - started
    return snap
