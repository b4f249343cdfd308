"""delivery: an attempt row carries its part of the message's timeline

A message that is sent wrote three `outbox_transitions` rows on the worker's hot path:
claimed, attempt_started and its result, each with a query for its next sequence number.
The attempt row already holds the same times (`started_at`, `finished_at`), so the last
two are now read off it (delivery.timeline): the attempt records the seq of the
`claimed` transition it follows, which places it in the timeline, and the state and
reason its result gave the outbox row. `claimed` stays a transition row: rate-limited
claims count it, and a claim may end without an attempt (gate denied, no address, a
worker that died first).

Rows written before this migration keep their attempt_started and result transitions
and have NULL in the new columns; the timeline reads both kinds.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.add_column(sa.Column("claim_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("result_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("result_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.drop_column("result_reason")
        batch.drop_column("result_state")
        batch.drop_column("claim_seq")
