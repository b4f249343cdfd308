"""CSV contacts: header mapping, per-cell validation with line and column, normalization.

A row is the contact's full current state from this source: re-importing it is a no-op,
and a changed row replaces the stored record (empty cells mean "no value").
"""

from __future__ import annotations

import csv
import multiprocessing
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.orm import Session

from carepost.audit.actor import Actor
from carepost.contacts.importers.errors import ImportProblem, ImportRejected, file_digest
from carepost.contacts.record import RECORD_VERSION, Record
from carepost.contacts.service import record_import
from carepost.contacts.store import ContactInput, ContactWriter, Prepared, prepare
from carepost.crypto.blind_index import normalize_email, normalize_identifier, normalize_phone
from carepost.crypto.keyring import KeyRing
from carepost.gc_pause import paused_gc

FIELDS = (
    "external_id",
    "mrn",
    "first_name",
    "middle_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "sex",
    "gender_identity",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "postal_code",
    "country",
    "language",
    "insurance_type",
)
ALIASES = {
    "id": "external_id",
    "patient_id": "external_id",
    "source_id": "external_id",
    "given_name": "first_name",
    "firstname": "first_name",
    "family_name": "last_name",
    "lastname": "last_name",
    "surname": "last_name",
    "e_mail": "email",
    "email_address": "email",
    "phone_number": "phone",
    "mobile": "phone",
    "dob": "birth_date",
    "date_of_birth": "birth_date",
    "birthdate": "birth_date",
    "gender": "sex",
    "address": "address_line1",
    "street": "address_line1",
    "zip": "postal_code",
    "zip_code": "postal_code",
    "zipcode": "postal_code",
    "postcode": "postal_code",
    "preferred_language": "language",
    "insurance": "insurance_type",
}
ATTR_PREFIXES = ("attr:", "attr.")
US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU AS MP".split()
)
SEX_VALUES = {
    "f": "female",
    "female": "female",
    "m": "male",
    "male": "male",
    "o": "other",
    "other": "other",
    "u": "unknown",
    "unknown": "unknown",
    "x": "other",
}
_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_US_ZIP = re.compile(r"^\d{5}(?:-\d{4})?$")
_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class CsvMapping:
    columns: dict[str, str] = field(default_factory=dict)  # header -> field or attr:name
    date_format: str = "%Y-%m-%d"
    source_system: str = "csv"
    delimiter: str = ","

    @classmethod
    def load(cls, path: Path) -> CsvMapping:
        try:
            raw = path.read_bytes()
            doc: dict[str, Any] = (
                tomllib.loads(raw.decode()) if path.suffix == ".toml" else orjson.loads(raw)
            )
        except (
            OSError,
            UnicodeDecodeError,
            tomllib.TOMLDecodeError,
            orjson.JSONDecodeError,
        ) as exc:
            raise MappingError(f"{path}: cannot read mapping ({exc})") from None
        columns = doc.get("columns", {})
        options = doc.get("options", {})
        if not isinstance(columns, dict) or not isinstance(options, dict):
            raise MappingError(f"{path}: 'columns' and 'options' must be tables")
        unknown = set(options) - {"date_format", "source_system", "delimiter"}
        if unknown:
            raise MappingError(f"{path}: unknown option(s): {', '.join(sorted(unknown))}")
        for header, target in columns.items():
            if not _valid_target(str(target)):
                raise MappingError(
                    f"{path}: column {header!r} maps to unknown field {target!r}; "
                    f"use one of {', '.join(FIELDS)} or attr:<name>"
                )
        delimiter = str(options.get("delimiter", ","))
        if len(delimiter) != 1:
            raise MappingError(f"{path}: delimiter must be one character")
        return cls(
            {str(k): str(v) for k, v in columns.items()},
            str(options.get("date_format", "%Y-%m-%d")),
            str(options.get("source_system", "csv")),
            delimiter,
        )


def _valid_target(target: str) -> bool:
    if target.startswith(ATTR_PREFIXES):
        return bool(_ATTR_NAME.match(target[5:]))
    return target in FIELDS or target == "ignore"


def _norm_header(header: str) -> str:
    return re.sub(r"[^a-z0-9:.]+", "_", header.strip().lower()).strip("_")


def resolve_header(
    headers: list[str], mapping: CsvMapping
) -> tuple[list[str], list[ImportProblem]]:
    """Map each header to a field. Unknown columns are an error: silently dropping a
    column of patient data is worse than asking the operator to map it."""
    targets: list[str] = []
    problems: list[ImportProblem] = []
    for idx, header in enumerate(headers, start=1):
        where = f"line 1, column {idx} {header!r}"
        if header in mapping.columns:
            targets.append(mapping.columns[header])
            continue
        key = _norm_header(header)
        if key.startswith(ATTR_PREFIXES) and _ATTR_NAME.match(key[5:]):
            targets.append("attr:" + key[5:])
        elif key in FIELDS:
            targets.append(key)
        elif key in ALIASES:
            targets.append(ALIASES[key])
        else:
            targets.append("ignore")
            problems.append(
                ImportProblem(
                    where,
                    "unknown column; map it with --mapping (to a field, attr:<name> or ignore)",
                )
            )
    seen: dict[str, int] = {}
    for idx, target in enumerate(targets, start=1):
        if target == "ignore":
            continue
        if target in seen:
            problems.append(
                ImportProblem(
                    f"line 1, column {idx} {headers[idx - 1]!r}",
                    f"maps to {target}, which column {seen[target]} already provides",
                )
            )
        seen[target] = idx
    return targets, problems


class CellError(ValueError):
    pass


def _email(value: str) -> list[str]:
    out = []
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        if len(part) > 254 or not _EMAIL.match(part):
            raise CellError("not a valid email address")
        out.append(normalize_email(part))
    return out


def _phone(value: str) -> list[str]:
    out = []
    for part in value.split(";"):
        if not part.strip():
            continue
        digits = normalize_phone(part)
        if not 7 <= len(digits) <= 15:
            raise CellError("not a phone number (7 to 15 digits)")
        out.append(digits)
    return out


def _parse_date(value: str, fmt: str, today: date) -> str:
    try:
        if fmt == "%Y-%m-%d" and len(value) == 10:
            parsed = date.fromisoformat(value)  # strptime costs ~30x more per call
        else:
            parsed = datetime.strptime(value, fmt).date()
    except ValueError:
        raise CellError(f"not a date in the format {fmt}") from None
    if parsed > today:
        raise CellError("date of birth is in the future")
    if parsed.year < 1880:
        raise CellError("date of birth is before 1880")
    return parsed.isoformat()


@dataclass
class CsvResult:
    inputs: list[ContactInput]
    problems: list[ImportProblem]
    rows: int
    fatal: bool = False  # the file as a whole is unusable (header, encoding, CSV syntax)


def iter_csv(
    path: Path, mapping: CsvMapping, *, today: date, chunk_rows: int = 2000
) -> Iterator[CsvResult]:
    """Validated rows in chunks. A chunk with `fatal` set is the last one."""
    inputs: list[ContactInput] = []
    problems: list[ImportProblem] = []
    rows = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=mapping.delimiter, strict=True)
            try:
                headers = next(reader)
            except StopIteration:
                yield CsvResult([], [ImportProblem("line 1", "the file is empty")], 0, True)
                return
            targets, header_problems = resolve_header(headers, mapping)
            if header_problems:
                yield CsvResult([], header_problems, 0, True)
                return
            for line, row in _rows(reader):
                rows += 1
                if len(row) != len(targets):
                    if any(cell.strip() for cell in row):
                        problems.append(
                            ImportProblem(
                                f"line {line}", f"expected {len(targets)} fields, found {len(row)}"
                            )
                        )
                    else:
                        rows -= 1  # a blank line is not a row
                else:
                    item, row_problems = _convert(line, row, headers, targets, mapping, today)
                    if row_problems:
                        problems.extend(row_problems)
                    elif item is not None:
                        inputs.append(item)
                if rows >= chunk_rows:
                    yield CsvResult(inputs, problems, rows)
                    inputs, problems, rows = [], [], 0
    except UnicodeDecodeError as exc:
        problems.append(ImportProblem(f"byte {exc.start}", "the file is not valid UTF-8"))
        yield CsvResult(inputs, problems, rows, True)
        return
    except csv.Error as exc:
        problems.append(ImportProblem(f"line {_csv_line(exc)}", f"malformed CSV ({exc})"))
        yield CsvResult(inputs, problems, rows, True)
        return
    yield CsvResult(inputs, problems, rows)


def read_csv(path: Path, mapping: CsvMapping, *, today: date) -> CsvResult:
    """The whole file at once (validation only; nothing is written)."""
    total = CsvResult([], [], 0)
    for part in iter_csv(path, mapping, today=today):
        total.inputs.extend(part.inputs)
        total.problems.extend(part.problems)
        total.rows += part.rows
        total.fatal = total.fatal or part.fatal
    return total


def _csv_line(exc: csv.Error) -> str:
    match = re.search(r"line (\d+)", str(exc))
    return match.group(1) if match else "?"


def _rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    start = reader.line_num + 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _convert(
    line: int,
    row: list[str],
    headers: list[str],
    targets: list[str],
    mapping: CsvMapping,
    today: date,
) -> tuple[ContactInput | None, list[ImportProblem]]:
    # The hot loop of a bulk import: plain dict work, no closures or generators.
    values: dict[str, str] = {}
    attrs: dict[str, str] = {}
    for target, cell in zip(targets, row, strict=True):
        if cell:
            cell = cell.strip()
            if cell and target != "ignore":
                if target[:5] == "attr:":
                    attrs[target[5:]] = cell
                else:
                    values[target] = cell
    item, errors = convert_values(
        values,
        attrs,
        source_system=mapping.source_system,
        date_format=mapping.date_format,
        today=today,
        origin=f"line {line}",
    )
    if item is None:
        problems = []
        for field_name, message in errors:
            if field_name == MATCH_KEY:
                problems.append(ImportProblem(f"line {line}", message))
                continue
            col = targets.index(field_name) + 1
            problems.append(
                ImportProblem(f"line {line}, column {col} {headers[col - 1]!r}", message)
            )
        return None, problems
    return item, []


MATCH_KEY = ""  # the field name of the "needs an external_id or an email" problem


def convert_values(
    values: dict[str, str],
    attrs: dict[str, str],
    *,
    source_system: str,
    date_format: str = "%Y-%m-%d",
    today: date,
    origin: str = "",
) -> tuple[ContactInput | None, list[tuple[str, str]]]:
    """One contact from its field values (FIELDS names, stripped, non-empty) and
    attributes: the input to write, or None and every (field, problem) found. Shared by
    the CSV import and the REST API's bulk upsert; messages never carry the value."""
    record: Record = {"v": RECORD_VERSION}
    lookups: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []  # (field, message)
    get = values.get

    value = get("email")
    if value is not None:
        try:
            emails = _email(value)
            if emails:
                record["emails"] = emails
                lookups += [("email", e) for e in emails]
        except CellError as exc:
            errors.append(("email", str(exc)))
    value = get("phone")
    if value is not None:
        try:
            phones = _phone(value)
            if phones:
                record["phones"] = phones
                lookups += [("phone", p) for p in phones]
        except CellError as exc:
            errors.append(("phone", str(exc)))
    value = get("birth_date")
    if value is not None:
        try:
            record["birth_date"] = _parse_date(value, date_format, today)
        except CellError as exc:
            errors.append(("birth_date", str(exc)))
    value = get("sex")
    if value is not None:
        sex = SEX_VALUES.get(value.lower())
        if sex is None:
            errors.append(("sex", "expected female, male, other or unknown (or F, M, O, U)"))
        else:
            record["sex"] = sex
    given = [v for v in (get("first_name"), get("middle_name")) if v is not None]
    family = get("last_name")
    if given or family is not None:
        name: dict[str, Any] = {}
        if given:
            name["given"] = given
        if family is not None:
            name["family"] = family
        record["name"] = name
    _address(values, record, errors)
    value = get("language")
    if value is not None:
        if _LANG.match(value):
            record["language"] = value.lower()
        else:
            errors.append(("language", "not a language tag (e.g. en, es, zh-Hant)"))
    value = get("insurance_type")
    if value is not None:
        record["insurance_type"] = value.lower()
    value = get("gender_identity")
    if value is not None:
        record["gender_identity"] = value
    value = get("mrn")
    if value is not None:
        record["mrn"] = value
        lookups.append(("mrn", normalize_identifier(value)))
    if attrs:
        record["attributes"] = attrs
    value = get("external_id")
    source_key = f"csv:{source_system}:{normalize_identifier(value)}" if value is not None else None
    if source_key is None and "emails" not in record:
        errors.append((MATCH_KEY, "a row needs an external_id or an email to be matched"))
    if errors:
        return None, errors
    return ContactInput(source_key, record, lookups, "Contact", origin), []


def _address(values: dict[str, str], record: Record, errors: list[tuple[str, str]]) -> None:
    get = values.get
    line1, line2, city = get("address_line1"), get("address_line2"), get("city")
    state, postal, country = get("state"), get("postal_code"), get("country")
    if line1 is None and line2 is None and city is None and state is None and postal is None:  # noqa: SIM102
        if country is None:
            return
    address: dict[str, Any] = {}
    lines = [v for v in (line1, line2) if v is not None]
    if lines:
        address["lines"] = lines
    country = (country or "").upper()
    if country:
        address["country"] = country
    is_us = country in ("", "US", "USA")
    if city is not None:
        address["city"] = city
    if state is not None:
        state = state.upper()
        if is_us and state not in US_STATES:
            errors.append(("state", "not a US state or territory code (two letters, e.g. MA)"))
        address["state"] = state
    if postal is not None:
        if is_us and not _US_ZIP.match(postal):
            errors.append(("postal_code", "not a US ZIP code (12345 or 12345-6789)"))
        address["postal_code"] = postal
    record["address"] = address


@dataclass
class CsvImportSummary:
    run_id: str
    rows: int
    counts: dict[str, dict[str, int]]
    problems: list[ImportProblem]
    skipped: list[ImportProblem]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "rows": self.rows,
            "counts": self.counts,
            "invalid": [p.as_dict() for p in self.problems],
            "skipped": [p.as_dict() for p in self.skipped],
        }


def import_csv(
    session: Session,
    ring: KeyRing,
    path: Path,
    mapping: CsvMapping,
    *,
    actor: Actor,
    now: datetime,
    skip_invalid: bool,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
    parallel: bool | None = None,
) -> CsvImportSummary:
    """Validate and upsert in the caller's transaction (never commits).

    Rows are validated and written chunk by chunk. When a row is invalid and skip_invalid
    is off, writing stops and ImportRejected is raised once the whole file has been
    checked, so the caller's transaction rolls back and nothing is written; with it,
    invalid rows are reported and the rest are written. A fatal problem (header, encoding,
    CSV syntax) rejects the file either way.

    Large files are read and validated in a second process while this one writes, which
    uses both cores of a small machine.
    """
    if parallel is None:
        parallel = path.stat().st_size > PARALLEL_MIN_BYTES
    chunks = (
        _parallel_chunks(ring, path, mapping, now.date(), batch_size)
        if parallel
        else _inline_chunks(ring, path, mapping, now.date(), batch_size)
    )
    writer = ContactWriter(
        session, ring, now=now, source="csv", batch_size=batch_size, progress=progress
    )
    problems: list[ImportProblem] = []
    skipped: list[ImportProblem] = []
    rows = 0
    fatal = False
    with paused_gc():  # the reader process inherits the paused state when it forks
        for part in chunks:
            rows += part.rows
            problems.extend(part.problems)
            fatal = fatal or part.fatal
            if problems and not skip_invalid:
                if progress is not None:
                    progress(part.rows)
                continue  # keep validating so the report is complete; write nothing more
            outcomes = writer.upsert_contacts(part.inputs)
            skipped.extend(
                ImportProblem(item.origin, outcome.reason, "Contact")
                for item, outcome in zip(part.inputs, outcomes, strict=True)
                if outcome.status == "skipped"
            )
    if problems and (fatal or not skip_invalid or rows == 0):
        raise ImportRejected(problems)
    if problems:
        writer.counts.add("Contact", "skipped", len({p.where.split(",")[0] for p in problems}))
    run_id = record_import(
        session,
        kind="csv",
        counts=writer.counts,
        started_at=now,
        actor=actor,
        inputs=[file_digest(path)],
    )
    return CsvImportSummary(run_id, rows, writer.counts.by_type, problems, skipped)


PARALLEL_MIN_BYTES = 1 << 20


def _inline_chunks(
    ring: KeyRing,
    path: Path,
    mapping: CsvMapping,
    today: date,
    chunk_rows: int,
    *,
    seal_as_new: bool = False,
) -> Iterator[CsvResult]:
    for part in iter_csv(path, mapping, today=today, chunk_rows=chunk_rows):
        for item in part.inputs:
            item.prepared = prepare(ring, item, seal_as_new=seal_as_new)
        yield part


# What crosses the pipe per row: flat tuples of str/bytes. Pickling the dataclasses and
# their nested record dicts cost the writer more than its database inserts did.
_Wire = tuple[
    str | None,
    str,
    bytes,
    str,
    str | None,
    str | None,
    list[tuple[str, str]],
    tuple[str, int, bytes, bytes] | None,
]


def _to_wire(part: CsvResult) -> tuple[list[_Wire], list[ImportProblem], int, bool]:
    rows: list[_Wire] = []
    for item in part.inputs:
        p = item.prepared
        assert p is not None
        # The sealed form carries the record; the plaintext does not cross the pipe.
        plain = b"" if p.sealed_new is not None else p.plain
        rows.append(
            (
                item.source_key,
                item.origin,
                plain,
                p.fingerprint,
                p.source_bi,
                p.email_bi,
                p.lookup_bis,
                p.sealed_new,
            )
        )
    return rows, part.problems, part.rows, part.fatal


def _from_wire(wire: tuple[list[_Wire], list[ImportProblem], int, bool]) -> CsvResult:
    rows, problems, count, fatal = wire
    inputs = [
        ContactInput(key, {}, [], "Contact", origin, Prepared(plain, fp, sbi, ebi, bis, new))
        for key, origin, plain, fp, sbi, ebi, bis, new in rows
    ]
    return CsvResult(inputs, problems, count, fatal)


def _produce(
    conn: Connection, ring: KeyRing, path: Path, mapping: CsvMapping, today: date, chunk_rows: int
) -> None:
    try:
        # Sealing here too, as if every contact were new, moves the costliest step off the
        # writer; the writer re-seals the few that turn out to exist under their own key.
        for part in _inline_chunks(ring, path, mapping, today, chunk_rows, seal_as_new=True):
            conn.send(_to_wire(part))
        conn.send(None)
    except BaseException as exc:
        conn.send(_ProducerFailed(type(exc).__name__))
    finally:
        conn.close()


@dataclass(frozen=True)
class _ProducerFailed:
    kind: str


def _parallel_chunks(
    ring: KeyRing, path: Path, mapping: CsvMapping, today: date, chunk_rows: int
) -> Iterator[CsvResult]:
    # fork: the child inherits the key ring in memory, so no key material is ever sent
    # over the pipe. Chunks travel parent-ward over an anonymous pipe and are never stored.
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_produce, args=(sender, ring, path, mapping, today, chunk_rows), daemon=True
    )
    child.start()
    sender.close()
    try:
        while True:
            try:
                part = receiver.recv()
            except EOFError:
                raise RuntimeError("the CSV reader process ended unexpectedly") from None
            if part is None:
                return
            if isinstance(part, _ProducerFailed):
                raise RuntimeError(f"the CSV reader process failed ({part.kind})")
            yield _from_wire(part)
    finally:
        receiver.close()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
