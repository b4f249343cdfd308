"""CSV import on a real database: upsert rules, validation messages, all-or-nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.contacts.importers.csv_import import (
    CsvImportSummary,
    CsvMapping,
    MappingError,
    import_csv,
)
from carepost.contacts.importers.errors import ImportRejected
from carepost.contacts.models import Contact, ContactLookup
from carepost.contacts.phi import read_contact
from carepost.contacts.service import count_contacts
from carepost.db import transaction
from carepost.workspace import Workspace

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HEADER = "external_id,first_name,last_name,email,phone,dob,sex,state,zip,attr:plan\n"


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def run(
    ws: Workspace,
    actor: Actor,
    path: Path,
    *,
    skip_invalid: bool = False,
    mapping: CsvMapping | None = None,
    parallel: bool = False,
) -> CsvImportSummary:
    with transaction(ws.engine) as session:
        return import_csv(
            session,
            ws.keyring,
            path,
            mapping or CsvMapping(),
            actor=actor,
            now=NOW,
            skip_invalid=skip_invalid,
            parallel=parallel,
        )


def contacts(ws: Workspace) -> int:
    with transaction(ws.engine) as session:
        return count_contacts(session)


GOOD = (
    "1,Ann,Lee,ann@example.org,617-555-0100,1970-02-03,F,MA,02139,gold\n"
    "2,Bob,Ray,bob@example.org,,1980-12-31,M,NH,03101,\n"
)


def test_import_creates_then_is_idempotent(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    path = write(tmp_path, GOOD)
    first = run(workspace, actor, path)
    assert first.counts["Contact"] == {"created": 2, "updated": 0, "unchanged": 0, "skipped": 0}
    second = run(workspace, actor, path)
    assert second.counts["Contact"]["unchanged"] == 2
    assert contacts(workspace) == 2
    assert audit.verify(workspace.engine).entries == 2  # one audit entry per import


def test_changed_row_updates_and_reindexes(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    run(workspace, actor, write(tmp_path, GOOD))
    changed = write(
        tmp_path,
        "1,Ann,Lee,ann.lee@example.org,617-555-0100,1970-02-03,F,MA,02139,platinum\n",
        name="changed.csv",
    )
    summary = run(workspace, actor, changed)
    assert summary.counts["Contact"]["updated"] == 1
    with transaction(workspace.engine) as session:
        cid = session.scalars(select(Contact.id).order_by(Contact.created_at, Contact.id)).first()
        assert cid is not None
        view = read_contact(session, workspace.keyring, cid, actor=actor, purpose="test")
        kinds = session.scalars(
            select(ContactLookup.kind).where(ContactLookup.contact_id == cid)
        ).all()
    assert view.record["emails"] == ["ann.lee@example.org"]
    assert view.record["attributes"] == {"plan": "platinum"}
    assert sorted(kinds) == ["email", "phone", "source"]


def test_rows_without_external_id_upsert_by_email(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    header = "email,first_name\n"
    run(workspace, actor, write(tmp_path, "Pat@Example.org,Pat\n", header))
    summary = run(
        workspace, actor, write(tmp_path, "pat@example.org,Patricia\n", header, name="again.csv")
    )
    assert summary.counts["Contact"]["updated"] == 1
    assert contacts(workspace) == 1


def test_same_contact_twice_in_one_file_keeps_the_last(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    header = "external_id,first_name\n"
    summary = run(workspace, actor, write(tmp_path, "7,First\n7,Second\n", header))
    assert contacts(workspace) == 1
    assert summary.counts["Contact"]["created"] == 1
    with transaction(workspace.engine) as session:
        cid = session.scalars(select(Contact.id)).one()
        view = read_contact(session, workspace.keyring, cid, actor=actor, purpose="test")
    assert view.record["name"]["given"] == ["Second"]


@pytest.mark.parametrize(
    ("row", "where", "message"),
    [
        (
            "3,Cy,Doe,not-an-email,,1990-01-01,F,MA,02139,",
            "line 2, column 4 'email'",
            "not a valid email",
        ),
        (
            "3,Cy,Doe,cy@example.org,,1990-13-01,F,MA,02139,",
            "line 2, column 6 'dob'",
            "not a date in the format %Y-%m-%d",
        ),
        (
            "3,Cy,Doe,cy@example.org,,2999-01-01,F,MA,02139,",
            "line 2, column 6 'dob'",
            "in the future",
        ),
        (
            "3,Cy,Doe,cy@example.org,,1990-01-01,Q,MA,02139,",
            "line 2, column 7 'sex'",
            "expected female",
        ),
        (
            "3,Cy,Doe,cy@example.org,,1990-01-01,F,ZZ,02139,",
            "line 2, column 8 'state'",
            "not a US state",
        ),
        (
            "3,Cy,Doe,cy@example.org,,1990-01-01,F,MA,2139,",
            "line 2, column 9 'zip'",
            "not a US ZIP",
        ),
        (
            "3,Cy,Doe,cy@example.org,12,1990-01-01,F,MA,02139,",
            "line 2, column 5 'phone'",
            "not a phone number",
        ),
        ("3,Cy,Doe,cy@example.org", "line 2", "expected 10 fields, found 4"),
        (",Cy,Doe,,,1990-01-01,F,MA,02139,", "line 2", "needs an external_id or an email"),
    ],
)
def test_invalid_cell_names_line_and_column_and_writes_nothing(
    workspace: Workspace, actor: Actor, tmp_path: Path, row: str, where: str, message: str
) -> None:
    path = write(tmp_path, row + "\n" + GOOD)
    with pytest.raises(ImportRejected) as info:
        run(workspace, actor, path)
    problem = info.value.problems[0]
    assert problem.where == where
    assert message in problem.message
    assert "Cy" not in str(problem)
    assert "1990" not in str(problem)
    assert contacts(workspace) == 0
    assert audit.verify(workspace.engine).entries == 0


def test_skip_invalid_imports_the_rest_and_reports(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    bad = "3,Cy,Doe,not-an-email,,1990-01-01,F,MA,02139,\n"
    summary = run(workspace, actor, write(tmp_path, GOOD + bad), skip_invalid=True)
    assert summary.counts["Contact"]["created"] == 2
    assert summary.counts["Contact"]["skipped"] == 1
    assert [p.where for p in summary.problems] == ["line 4, column 4 'email'"]
    assert contacts(workspace) == 2


def test_quoted_multiline_field_keeps_line_numbers(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    body = (
        '1,"Ann\nMarie",Lee,ann@example.org,,1970-02-03,F,MA,02139,\n'
        "2,Bob,Ray,bad@,,1980-12-31,M,NH,03101,\n"
    )
    with pytest.raises(ImportRejected) as info:
        run(workspace, actor, write(tmp_path, body))
    assert info.value.problems[0].where == "line 4, column 4 'email'"


def test_unknown_column_is_rejected_even_with_skip_invalid(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    path = write(tmp_path, "1,x\n", header="external_id,favourite_colour\n")
    with pytest.raises(ImportRejected) as info:
        run(workspace, actor, path, skip_invalid=True)
    assert info.value.problems[0].where == "line 1, column 2 'favourite_colour'"


def test_mapping_file_renames_columns_and_sets_date_format(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    mapping_path = tmp_path / "map.toml"
    mapping_path.write_text(
        '[columns]\n"Patient No" = "external_id"\n"E-mail Address" = "email"\n'
        '"Birth" = "birth_date"\n"Plan Tier" = "attr:plan"\n"Notes" = "ignore"\n'
        '[options]\ndate_format = "%m/%d/%Y"\nsource_system = "athena"\n'
    )
    mapping = CsvMapping.load(mapping_path)
    path = write(
        tmp_path,
        "A-1,a@example.org,02/03/1970,gold,call first\n",
        header="Patient No,E-mail Address,Birth,Plan Tier,Notes\n",
    )
    run(workspace, actor, path, mapping=mapping)
    with transaction(workspace.engine) as session:
        cid = session.scalars(select(Contact.id)).one()
        record = read_contact(session, workspace.keyring, cid, actor=actor, purpose="test").record
    assert record["birth_date"] == "1970-02-03"
    assert record["attributes"] == {"plan": "gold"}


def test_bad_mapping_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text('{"columns": {"X": "shoe_size"}}')
    with pytest.raises(MappingError, match="shoe_size"):
        CsvMapping.load(path)


def test_not_utf8_is_rejected(workspace: Workspace, actor: Actor, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"external_id,first_name\n1,Jos\xe9\n")
    with pytest.raises(ImportRejected) as info:
        run(workspace, actor, path, skip_invalid=True)
    assert "not valid UTF-8" in info.value.problems[0].message


def test_parallel_reader_gives_the_same_result(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    rows = "".join(
        f"{n},Given,Family,p{n}@example.org,,1970-02-03,F,MA,02139,\n" for n in range(5000)
    )
    summary = run(
        workspace,
        actor,
        write(tmp_path, rows + "x,Bad,Row,bad@,,,,,,\n"),
        skip_invalid=True,
        parallel=True,
    )
    assert summary.counts["Contact"]["created"] == 5000
    assert [p.where for p in summary.problems] == ["line 5002, column 4 'email'"]
    with pytest.raises(ImportRejected):
        run(
            workspace,
            actor,
            write(tmp_path, rows + "x,Bad,Row,bad@,,,,,,\n", name="b.csv"),
            parallel=True,
        )
    with transaction(workspace.engine) as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 5000
