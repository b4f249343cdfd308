"""The warm-up ledger in the database: one row per sending IP and UTC day.

Why the database: the count must survive a restart (a worker restarted at noon must not
get the day's cap again) and be shared by every worker process on every machine (two
workers must not each send the cap). Each process reserves a block at a time
(`ThrottleConfig.warmup_block`) in a short transaction that locks the day's row, so the
table is written once per block, not once per message. Blocks a process holds when it
stops are not given back: the cap errs on the side of sending less.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from carepost.db import transaction
from carepost.delivery.models import WarmupCount


class DbLedger:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def reserve(self, source: str, day: date, want: int, cap: int) -> int:
        # On a thread: SQLite may wait on another process's write lock, and the event
        # loop has connections to serve meanwhile.
        return await asyncio.to_thread(self.reserve_now, source, day, want, cap)

    def reserve_now(self, source: str, day: date, want: int, cap: int) -> int:
        if want < 0 or cap < 0:
            raise ValueError("a warm-up reservation must not be negative")
        with transaction(self.engine) as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            # Create the day's row if no process has yet; concurrent creators meet here.
            session.execute(
                insert(WarmupCount)
                .values(source=source, day=day, reserved=0)
                .on_conflict_do_nothing(index_elements=["source", "day"])
            )
            query = select(WarmupCount).where(WarmupCount.source == source, WarmupCount.day == day)
            if dialect == "postgresql":
                query = query.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds it
            row = session.execute(query).scalar_one()
            granted = max(0, min(want, cap - row.reserved))
            row.reserved += granted
            return granted

    def used(self, source: str, day: date) -> int:
        """Messages reserved for `source` on `day` (status displays, tests)."""
        with transaction(self.engine) as session:
            row = session.get(WarmupCount, (source, day))
            return row.reserved if row is not None else 0
