"""CSV import of HIPAA authorizations (both engines): element names map to columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from consent_support import add_contacts
from sqlalchemy import func, select

from carepost.audit.actor import Actor
from carepost.consent.importer import AUTH_COLUMNS, import_authorizations
from carepost.consent.models import Authorization
from carepost.contacts.importers.errors import ImportRejected
from carepost.db import transaction
from carepost.workspace import Workspace

ROW = {
    "phi_description": "Name and email",
    "disclosers": "Example Clinic",
    "recipients": "self=Example Clinic;acme-pharmacy=Acme Pharmacy",
    "purposes": "marketing=refill offers",
    "expires_at": "2027-12-31T00:00:00Z",
    "signer_name": "Synthetic Signer",
    "signed_at": "2026-05-01T10:00:00Z",
    "signature_method": "wet_ink",
    "signature_source_address": "scanned at front desk 3",
    "signed_text": "synthetic text",
    "right_to_revoke": "yes",
    "revocation_instructions": "write to the privacy office",
    "conditioning": "yes",
    "redisclosure": "yes",
    "remuneration": "no",
}


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    header = ["contact_id", *ROW]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_authorization_csv(workspace: Workspace, actor: Actor, tmp_path: Path) -> None:
    ws = workspace
    with transaction(ws.engine) as s:
        ids = add_contacts(s, ws.keyring, 2)
    broken = {
        **ROW,
        "contact_id": ids[1],
        "phi_description": "",
        "redisclosure": "no",
        "purposes": "marketing_paid=sponsored",
    }
    path = _write(tmp_path / "a.csv", [{**ROW, "contact_id": ids[0]}, broken])
    with pytest.raises(ImportRejected) as info, transaction(ws.engine) as s:
        import_authorizations(s, ws.keyring, path, actor=actor)
    where = [str(p) for p in info.value.problems]
    assert where == [
        "line 3, column 2 'phi_description': missing required element phi_description",
        "line 3, column 15 'redisclosure': missing required element statements.redisclosure",
        "line 3, column 16 'remuneration': missing required element statements.remuneration",
        "line 3, column 'remuneration_from': missing required element statements.remuneration_from",
    ]
    with transaction(ws.engine) as s:
        assert s.execute(select(func.count()).select_from(Authorization)).scalar_one() == 0
        summary = import_authorizations(s, ws.keyring, path, actor=actor, skip_invalid=True)
    assert summary.written == 1
    with transaction(ws.engine) as s:
        row = s.execute(select(Authorization)).scalar_one()
    assert row.contact_id == ids[0]
    assert row.recipients == "acme-pharmacy self"
    assert row.signature_method == "wet_ink"


def test_unknown_columns_are_refused(workspace: Workspace, actor: Actor, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("contact_id,ssn\n1,2\n")
    with pytest.raises(ImportRejected) as info, transaction(workspace.engine) as s:
        import_authorizations(s, workspace.keyring, path, actor=actor)
    assert str(info.value.problems[0]) == "line 1, column 2 'ssn': unknown column"
    assert "ssn" not in AUTH_COLUMNS
