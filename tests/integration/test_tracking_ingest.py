"""Ingestion below HTTP, on every database: one outbox SELECT per batch and none for cached
sent messages, fresh facts for messages not yet sent, and a writer that, when closed,
writes what it was given before it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from carepost.audit.actor import Actor
from carepost.db import transaction
from carepost.delivery.models import OutboxMessage
from carepost.tracking.ingest import UNAVAILABLE, BatchWriter, EventStore, RawEvent
from carepost.tracking.server import knowledge_from
from carepost.workspace import Workspace
from tracking_support import CHROME, PERSON_IP, Messages, sent_campaign, stored_events


@pytest.fixture
def msgs(workspace: Workspace, actor: Actor) -> Messages:
    return sent_campaign(workspace, actor, 3)


@pytest.fixture
def outbox_selects(workspace: Workspace) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM outbox" in statement:
            seen.append(statement)

    event.listen(workspace.engine, "before_cursor_execute", count)
    yield seen
    event.remove(workspace.engine, "before_cursor_execute", count)


def raw(mid: str, kind: str = "open", index: int = -1, at: datetime | None = None) -> RawEvent:
    return RawEvent(
        message_id=mid,
        kind=kind,  # type: ignore[arg-type]
        link_index=index,
        method="GET",
        user_agent=CHROME,
        ip=PERSON_IP,
        purpose={},
        at=at or datetime.now(UTC),
    )


def test_one_select_per_batch_and_none_for_cached_sent_messages(
    workspace: Workspace, msgs: Messages, outbox_selects: list[str]
) -> None:
    store = EventStore(workspace.engine, knowledge_from(workspace.settings))
    first = store.write([raw(mid) for mid in msgs.ids] + [raw(msgs.ids[0], "click", 1)])
    assert [o.status for o in first] == ["recorded"] * 4
    assert first[-1].location == msgs.links[1].encode()
    assert len(outbox_selects) == 1
    again = store.write([raw(mid) for mid in msgs.ids])
    assert [o.status for o in again] == ["recorded"] * 3
    assert len(outbox_selects) == 1  # all three were sent: their facts were cached
    assert len(stored_events(workspace)) == 7


def test_facts_of_a_message_not_yet_sent_are_read_again(
    workspace: Workspace, msgs: Messages, outbox_selects: list[str]
) -> None:
    """A scanner may click while the worker is still recording the send: the row is
    `attempt_started`. Its facts are not cached, so the next event sees the send time."""
    mid = msgs.ids[0]
    now = datetime.now(UTC)
    with transaction(workspace.engine) as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == mid)
            .values(state="attempt_started", updated_at=now - timedelta(hours=1))
        )
    store = EventStore(workspace.engine, knowledge_from(workspace.settings))
    store.write([raw(mid, at=now)])
    with transaction(workspace.engine) as s:
        sent = update(OutboxMessage).where(OutboxMessage.id == mid)
        s.execute(sent.values(state="sent", updated_at=now))
    store.write([raw(mid, at=now + timedelta(seconds=1))])
    store.write([raw(mid, at=now + timedelta(seconds=2))])
    assert len(outbox_selects) == 2  # read while attempt_started, then cached once sent
    rows = stored_events(workspace)
    assert [r.verdict for r in rows] == ["human", "machine", "machine"]
    assert rows[1].reason == "too_fast_after_delivery"


def test_closing_the_writer_writes_what_it_was_given(workspace: Workspace, msgs: Messages) -> None:
    store = EventStore(workspace.engine, knowledge_from(workspace.settings))
    writer = BatchWriter(store, max_events=5, max_wait=0.05)

    async def scenario() -> tuple[list[str], str]:
        submitted = [
            asyncio.ensure_future(writer.submit(raw(mid))) for mid in msgs.ids * 6
        ]  # 18 events: several batches of at most 5
        await asyncio.sleep(0)
        await writer.close()
        outcomes = await asyncio.gather(*submitted)
        late = await writer.submit(raw(msgs.ids[0]))
        return [o.status for o in outcomes], late.status

    statuses, late = asyncio.run(scenario())
    assert statuses == ["recorded"] * 18
    assert late == UNAVAILABLE.status
    assert writer.batches >= 4
    assert len(stored_events(workspace)) == 18
