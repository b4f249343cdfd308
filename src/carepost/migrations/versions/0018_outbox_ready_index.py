"""delivery: a partial index in the claim's order over due rows

The claim selects the oldest due rows of running campaigns, `ORDER BY lane,
next_attempt_at, id LIMIT n`. `ix_outbox_due` starts with `state`, and the claim asks
for three states, so no index gave that order: the planner read and sorted every due
row for each claim (on PostgreSQL, `FOR UPDATE` also keeps the sort from being a top-N
one). With 200,000 rows queued, the claim's SELECT of 500 took 565 ms; reading this
index from its front, 4 ms. Only due rows are in it, so sending (claimed,
attempt_started, sent) adds no entries to it.

The predicate must stay the same text as `delivery.models.READY`, with which the claim
spells its condition: SQLite uses a partial index only for that same term.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

READY = "state IN ('queued', 'deferred', 'unknown')"


def upgrade() -> None:
    op.create_index(
        "ix_outbox_ready",
        "outbox",
        ["lane", "next_attempt_at", "id"],
        unique=False,
        postgresql_where=sa.text(READY),
        sqlite_where=sa.text(READY),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_ready", table_name="outbox")
