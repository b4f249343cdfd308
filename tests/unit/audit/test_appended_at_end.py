"""`appended_at_end`: a transaction's audit entries are linked when the block ends, in
order and in the same transaction, so the chain's head lock is held only for the commit
(the delivery worker's long prepare transaction relies on it)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.audit.actor import Actor
from carepost.audit.models import AuditEntry, AuditHead
from carepost.db import transaction
from carepost.workspace import Workspace


def entries(ws: Workspace) -> list[tuple[int, str, str]]:
    with transaction(ws.engine) as session:
        return [
            (e.seq, e.action, e.subjects)
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
        ]


def head_seq(ws: Workspace) -> int:
    with transaction(ws.engine) as session:
        return session.scalars(select(AuditHead.seq)).one()


def test_entries_are_linked_at_the_end_in_order(workspace: Workspace, actor: Actor) -> None:
    before = head_seq(workspace)
    with transaction(workspace.engine) as session:
        with audit.appended_at_end(session):
            first = audit.append(session, actor=actor, action="test.first", subjects=["a"])
            with audit.appended_at_end(session):  # nested: the outer block links
                second = audit.append(session, actor=actor, action="test.second")
            assert first.seq is None
            assert second.seq is None
            assert head_seq_in(session) == before
        assert (first.seq, second.seq) == (before + 1, before + 2)
        assert first.hash == second.prev_hash
        assert head_seq_in(session) == before + 2
        third = audit.append(session, actor=actor, action="test.third")
        assert third.seq == before + 3  # outside the block: linked at once, as always
    assert entries(workspace)[-3:] == [
        (before + 1, "test.first", '["a"]'),
        (before + 2, "test.second", "[]"),
        (before + 3, "test.third", "[]"),
    ]
    assert audit.verify(workspace.engine).ok


def head_seq_in(session: Session) -> int:
    return session.scalars(select(AuditHead.seq)).one()


def test_a_failure_inside_the_block_writes_nothing(workspace: Workspace, actor: Actor) -> None:
    before = entries(workspace)

    def failing_change() -> None:
        with transaction(workspace.engine) as session, audit.appended_at_end(session):
            audit.append(session, actor=actor, action="test.lost")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        failing_change()
    assert entries(workspace) == before
    with transaction(workspace.engine) as session:
        # The session's queue is gone with the block: a later append links at once.
        assert audit.append(session, actor=actor, action="test.after").seq is not None
    assert audit.verify(workspace.engine).ok


def test_another_transaction_appends_while_one_block_is_open(
    workspace: Workspace, actor: Actor
) -> None:
    """PostgreSQL: an open transaction whose entries wait for the block's end holds no head
    lock, so another appender commits meanwhile; without the block it would wait (shown
    with a lock timeout). SQLite's one write lock serialises the transactions anyway."""
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises write transactions with its one write lock")

    def append_elsewhere(action: str) -> None:
        with transaction(workspace.engine) as other:
            other.execute(text("SET LOCAL lock_timeout = '1s'"))
            audit.append(other, actor=actor, action=action)

    with transaction(workspace.engine) as session, audit.appended_at_end(session):
        audit.append(session, actor=actor, action="test.long_prepare")
        append_elsewhere("test.meanwhile")  # commits without waiting
    actions = [action for _, action, _ in entries(workspace)]
    assert actions[-2:] == ["test.meanwhile", "test.long_prepare"]
    assert audit.verify(workspace.engine).ok

    with transaction(workspace.engine) as session:
        audit.append(session, actor=actor, action="test.holds_the_head")
        with pytest.raises(OperationalError, match="lock timeout"):
            append_elsewhere("test.would_wait")
