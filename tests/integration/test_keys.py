"""Key rotation re-wraps data keys without re-encrypting records; shredding a contact's
data key makes its record unreadable for good."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.contacts.importers.csv_import import CsvMapping, import_csv
from carepost.contacts.models import Contact
from carepost.contacts.phi import ContactShredded, read_contact
from carepost.crypto import service as keys
from carepost.crypto.keyring import load_key_file, replace_key_file
from carepost.db import transaction
from carepost.workspace import Workspace


def seed(ws: Workspace, actor: Actor, tmp_path: Path, n: int = 30) -> list[str]:
    path = tmp_path / "seed.csv"
    path.write_text(
        "external_id,email,first_name\n"
        + "".join(f"{i},p{i}@example.org,Name{i}\n" for i in range(n))
    )
    with transaction(ws.engine) as session:
        import_csv(
            session,
            ws.keyring,
            path,
            CsvMapping(),
            actor=actor,
            now=datetime.now(UTC),
            skip_invalid=False,
        )
        return list(session.scalars(select(Contact.id).order_by(Contact.id)))


def phi_snapshot(ws: Workspace) -> dict[str, bytes]:
    with transaction(ws.engine) as session:
        return {cid: bytes(phi) for cid, phi in session.execute(select(Contact.id, Contact.phi))}


def test_rotation_rewraps_and_old_data_stays_readable(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    ids = seed(workspace, actor, tmp_path)
    before = phi_snapshot(workspace)
    key_file = workspace.settings.resolved_key_file
    rotated = workspace.keyring.with_new_primary()
    replace_key_file(key_file, rotated)
    with transaction(workspace.engine) as session:
        result = keys.rewrap_data_keys(session, rotated, actor=actor, batch=7)
        assert keys.kek_usage(session) == {2: 30}
    assert (result.to_version, result.rewrapped, result.from_versions) == (2, 30, {1: 30})
    assert phi_snapshot(workspace) == before  # no record was re-encrypted
    reloaded = load_key_file(key_file)
    assert sorted(reloaded.keks) == [1, 2]
    with transaction(workspace.engine) as session:
        record = read_contact(session, reloaded, ids[3], actor=actor, purpose="check").record
    assert record["emails"][0].endswith("@example.org")
    # Version 1 is no longer needed for any data key.
    del reloaded.keks[1]
    with transaction(workspace.engine) as session:
        assert read_contact(session, reloaded, ids[4], actor=actor, purpose="check").record
    assert audit.verify(workspace.engine).ok


def test_interrupted_rotation_is_finished_by_a_rerun(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    seed(workspace, actor, tmp_path)
    rotated = workspace.keyring.with_new_primary()
    replace_key_file(workspace.settings.resolved_key_file, rotated)

    def interrupted() -> None:
        with transaction(workspace.engine) as session:
            keys.rewrap_data_keys(session, rotated, actor=actor, batch=7)
            raise RuntimeError("power cut before commit")

    with pytest.raises(RuntimeError):
        interrupted()
    with transaction(workspace.engine) as session:
        assert keys.kek_usage(session) == {1: 30}  # still readable with the file's v1
        assert keys.rewrap_data_keys(session, rotated, actor=actor).rewrapped == 30


def test_shredded_contact_cannot_be_read(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    ids = seed(workspace, actor, tmp_path, n=3)
    with transaction(workspace.engine) as session:
        assert keys.shred_contact(session, ids[0], actor=actor, reason="erasure request")
    with pytest.raises(ContactShredded), transaction(workspace.engine) as session:
        read_contact(session, workspace.keyring, ids[0], actor=actor, purpose="check")
    with transaction(workspace.engine) as session:
        assert read_contact(session, workspace.keyring, ids[1], actor=actor, purpose="check")
