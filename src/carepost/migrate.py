"""Programmatic Alembic: `carepost db upgrade` and the models/migrations agreement check.

Alembic is imported only by the functions that migrate or compare: every command checks
that the database is at `HEAD` before it starts, and importing Alembic for that check
alone cost each `carepost` invocation about 0.3 s. A test keeps `HEAD` equal to the last
migration's revision.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The revision of the newest file in migrations/versions (tests/unit/test_migrate_head.py).
HEAD = "0019"
VERSION_TABLE = "alembic_version"


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (Alembic's version table), None when unmigrated."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        query = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608
        found = conn.execute(query).scalars().all()
    if len(found) > 1:
        raise RuntimeError(f"the database is at several revisions at once: {sorted(found)}")
    return found[0] if found else None


def script_head() -> str | None:
    """The newest revision among the migration files, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_drift(engine: Engine) -> list[Any]:
    """Differences between the migrated database and the models; empty when they agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from carepost.models import metadata

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))
