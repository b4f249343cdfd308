"""Reading an append-only table by id without missing rows that commit late.

PostgreSQL hands out an id when a row is inserted, not when it commits: a reader that
sees ids 7 and 9 may see 8 a moment later, once the transaction holding it commits. A
cursor that moved to 9 would never read 8. `HoleWatch.readable` stops a reader at such a
hole until it fills, or until it has stayed open longer than any writer's transaction
should (a rolled-back insert or a deleted row leaves a hole that never fills).

SQLite has one writer at a time and reuses the id of a rolled-back insert, so a hole
there is a deleted row: it never fills, and readers pass it at once (grace zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Longer than any transaction that writes these tables should stay open (tracking
# ingests and event writes commit in milliseconds); a hole older than this is taken
# for a rollback or a deletion.
LATE_COMMIT_GRACE = timedelta(seconds=60)


def grace_for(dialect: str) -> timedelta:
    return LATE_COMMIT_GRACE if dialect == "postgresql" else timedelta(0)


@dataclass
class HoleWatch:
    """One reader's view of the holes ahead of its cursor: when each was first seen."""

    grace: timedelta
    first_seen: dict[int, datetime] = field(default_factory=dict)

    def readable(self, position: int, ids: Sequence[int], now: datetime) -> int:
        """How many of `ids` (ascending, each above `position`) the reader may take now:
        all of them up to the first hole that is younger than the grace."""
        expected = position + 1
        taken = len(ids)
        for index, row_id in enumerate(ids):
            if row_id != expected:
                seen = self.first_seen.setdefault(expected, now)
                if now - seen < self.grace:
                    taken = index
                    break
            expected = row_id + 1
        reached = ids[taken - 1] if taken else position
        self.first_seen = {start: at for start, at in self.first_seen.items() if start > reached}
        return taken
