"""delivery: archived bodies stay in the table's own pages on PostgreSQL

A campaign message's sealed, compressed body is about 2.5 KB: over the 2 KB at which
PostgreSQL hands a row to TOAST, which tries to compress the (encrypted, so
incompressible) value, fails, and moves it to the TOAST table with an index entry of its
own. With `toast_tuple_target` at its largest (8160 bytes) such a row stays whole in
the table: half the server CPU of the archive's insert (docs/benchmarks.md). Bodies over
8 KB sealed are still moved out of line. SQLite has no such setting.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE message_archive SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE message_archive RESET (toast_tuple_target)")
