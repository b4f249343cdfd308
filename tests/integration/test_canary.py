"""PHI canary: a contact whose every PHI field carries a unique marker is imported, then
the raw database (SQLite file with its WAL, or a pg_dump) is scanned: the markers must
appear zero times. Then the one audited door must give them all back."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import select

from carepost.audit.actor import Actor
from carepost.contacts.importers.csv_import import CsvMapping, import_csv
from carepost.contacts.models import Contact
from carepost.contacts.phi import read_contact
from carepost.db import transaction
from carepost.workspace import Workspace

MARKERS = {
    "external_id": "QZXEXTID",
    "mrn": "QZXMRN",
    "first_name": "Qzxgiven",
    "middle_name": "Qzxmiddle",
    "last_name": "Qzxfamily",
    "email": "qzxmail@qzxdomain.example",
    "phone": "+1 (402) 918-7737",
    "birth_date": "1903-07-19",
    "gender_identity": "qzxgender",
    "address_line1": "QZX Canary Street",
    "address_line2": "QZX Suite",
    "city": "Qzxcity",
    "state": "QZ",
    "postal_code": "QZX-POSTAL",
    "country": "QZXLAND",
    "language": "qzx",
    "insurance_type": "qzxplan",
    "attr:qzxattr": "qzxattrvalue",
}
# What each marker looks like once normalized (the import lower-cases and strips).
# A two-letter value (the state) turns up in any few kilobytes of ciphertext by chance
# (about one in 16,000 a position), so it is searched for as a quoted value, the form
# it would have in leaked JSON or SQL text, and not as a bare pair of letters.
SEARCH = [v.lower() for v in MARKERS.values() if len(v) > 2] + ["4029187737", "qzxmail"]
SEARCH += [f'"{v.lower()}"' for v in MARKERS.values() if len(v) <= 2]
SEARCH += [f"'{v.lower()}'" for v in MARKERS.values() if len(v) <= 2]


def scan(blob: bytes) -> list[str]:
    lowered = blob.lower()
    return [m for m in SEARCH if m.encode() in lowered]


def raw_database(ws: Workspace, db_url: str, tmp_path: Path) -> bytes:
    ws.engine.dispose()
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    parts = urlsplit(db_url)
    schema = unquote(parse_qs(parts.query)["options"][0]).split("=", 1)[1]
    dump = subprocess.run(
        ["pg_dump", "--schema", schema, "--no-owner", f"postgresql://{parts.netloc}{parts.path}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dump.stdout


def test_no_phi_marker_reaches_the_database(
    workspace: Workspace, actor: Actor, db_url: str, tmp_path: Path
) -> None:
    headers = list(MARKERS)
    path = tmp_path / "QZXFILENAME.csv"
    path.write_text(",".join(headers) + "\n" + ",".join(MARKERS.values()) + "\n")
    with transaction(workspace.engine) as session:
        summary = import_csv(
            session,
            workspace.keyring,
            path,
            CsvMapping(),
            actor=actor,
            now=datetime.now(UTC),
            skip_invalid=False,
        )
    assert summary.counts["Contact"]["created"] == 1

    raw = raw_database(workspace, db_url, tmp_path)
    assert len(raw) > 10_000  # we really read the database
    assert scan(raw) == []
    assert b"qzxfilename" not in raw.lower()

    with transaction(workspace.engine) as session:
        cid = session.scalars(select(Contact.id)).one()
        record = read_contact(
            session, workspace.keyring, cid, actor=actor, purpose="canary check"
        ).record
    assert record["name"] == {"given": ["Qzxgiven", "Qzxmiddle"], "family": "Qzxfamily"}
    assert record["emails"] == ["qzxmail@qzxdomain.example"]
    assert record["birth_date"] == "1903-07-19"
    assert record["address"]["postal_code"] == "QZX-POSTAL"
    assert record["attributes"] == {"qzxattr": "qzxattrvalue"}
    assert record["mrn"] == "QZXMRN"
