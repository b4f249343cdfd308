"""Audit chain on a real database: tampering with SQL is caught, checkpoints sign and
detect truncation, concurrent appenders keep one chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from carepost.audit import checkpoint as cp
from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.crypto.keyring import KeyRing
from carepost.db import transaction
from carepost.workspace import Workspace


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def verify_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every check runs on the serial walk and on the segmented parallel walk (3 workers,
    so seams fall inside these short chains)."""
    if request.param == "parallel":
        monkeypatch.setattr(audit, "PARALLEL_MIN_ENTRIES", 1)
        monkeypatch.setattr(audit, "WORKERS", 3)
    else:
        monkeypatch.setattr(audit, "WORKERS", 1)
    return str(request.param)


def fill(ws: Workspace, actor: Actor, n: int) -> None:
    with transaction(ws.engine) as session:
        for i in range(n):
            audit.append(
                session,
                actor=actor,
                action="contacts.phi_read",
                subjects=[f"c{i}"],
                purpose="treatment",
                details={"i": i},
            )


def sql(ws: Workspace, statement: str, **params: object) -> None:
    with ws.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_append_commits_with_the_change_or_not_at_all(workspace: Workspace, actor: Actor) -> None:
    fill(workspace, actor, 3)

    def failing_change() -> None:
        with transaction(workspace.engine) as session:
            audit.append(session, actor=actor, action="contacts.phi_read", subjects=["x"])
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    report = audit.verify(workspace.engine)
    assert report.ok
    assert report.entries == 3


def test_modified_entry(workspace: Workspace, actor: Actor) -> None:
    fill(workspace, actor, 10)
    sql(workspace, "UPDATE audit_log SET purpose = 'marketing' WHERE seq = 4")
    report = audit.verify(workspace.engine)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 4, "hash_mismatch")


def test_deleted_entry(workspace: Workspace, actor: Actor) -> None:
    fill(workspace, actor, 10)
    sql(workspace, "DELETE FROM audit_log WHERE seq = 6")
    report = audit.verify(workspace.engine)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 6, "sequence_gap")


def test_inserted_entry(workspace: Workspace, actor: Actor) -> None:
    fill(workspace, actor, 5)
    sql(
        workspace,
        "INSERT INTO audit_log SELECT seq + 100, at, actor, action, subjects, "
        "'inserted', source_kind, source_address, details, prev_hash, hash "
        "FROM audit_log WHERE seq = 5",
    )
    report = audit.verify(workspace.engine)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 6, "sequence_gap")


def test_reordered_entries(workspace: Workspace, actor: Actor) -> None:
    fill(workspace, actor, 8)
    sql(workspace, "UPDATE audit_log SET seq = -1 WHERE seq = 3")
    sql(workspace, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    sql(workspace, "UPDATE audit_log SET seq = 4 WHERE seq = -1")
    report = audit.verify(workspace.engine)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert report.problem in {"broken_link", "hash_mismatch"}


def test_truncated_tail_without_checkpoint_is_caught_by_the_head(
    workspace: Workspace, actor: Actor
) -> None:
    fill(workspace, actor, 10)
    sql(workspace, "DELETE FROM audit_log WHERE seq > 7")
    report = audit.verify(workspace.engine)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "head_mismatch", 8)


def test_checkpoint_detects_truncation_even_with_the_head_rewritten(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    fill(workspace, actor, 10)
    signed, report = audit.make_checkpoint(
        workspace.engine, workspace.keyring, tmp_path / "cp.json"
    )
    assert report.ok
    assert signed.size == 10
    fill(workspace, actor, 2)
    loaded = cp.load(tmp_path / "cp.json")
    assert audit.verify(workspace.engine, checkpoint=loaded, ring=workspace.keyring).ok
    # An attacker deletes the tail and makes the head agree with what is left.
    sql(workspace, "DELETE FROM audit_log WHERE seq > 6")
    sql(
        workspace,
        "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6)",
    )
    assert audit.verify(workspace.engine).ok
    report = audit.verify(workspace.engine, checkpoint=loaded, ring=workspace.keyring)
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "truncated", 7)


def test_checkpoint_signature_is_checked(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    fill(workspace, actor, 3)
    signed, _ = audit.make_checkpoint(workspace.engine, workspace.keyring, tmp_path / "cp.json")
    forged = cp.Checkpoint(2, signed.head_hash, signed.at, signed.key_id, signed.signature)
    report = audit.verify(workspace.engine, checkpoint=forged, ring=workspace.keyring)
    assert (report.ok, report.problem) == (False, "bad_signature")
    other = KeyRing.generate()
    report = audit.verify(workspace.engine, checkpoint=signed, ring=other)
    assert report.problem == "bad_signature"


def test_broken_chain_is_never_checkpointed(
    workspace: Workspace, actor: Actor, tmp_path: Path
) -> None:
    fill(workspace, actor, 4)
    sql(workspace, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    _, report = audit.make_checkpoint(workspace.engine, workspace.keyring, tmp_path / "cp.json")
    assert not report.ok
    assert not (tmp_path / "cp.json").exists()


def test_malformed_checkpoint_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text("{not json")
    with pytest.raises(cp.CheckpointError, match="malformed"):
        cp.load(path)


def test_concurrent_appenders_keep_one_chain(workspace: Workspace, actor: Actor) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                with transaction(workspace.engine) as session:
                    audit.append(
                        session, actor=actor, action="test.concurrent", subjects=[f"w{n}-{i}"]
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = audit.verify(workspace.engine)
    assert report.ok
    assert report.entries == 60
