"""The migrations build exactly the schema the models describe, on every engine."""

from __future__ import annotations

from carepost import migrate
from carepost.workspace import Workspace


def test_models_and_migrations_agree(workspace: Workspace) -> None:
    assert migrate.current_revision(workspace.engine) == migrate.HEAD
    assert migrate.schema_drift(workspace.engine) == []


def test_upgrade_is_idempotent(workspace: Workspace) -> None:
    migrate.upgrade(workspace.engine)
    assert migrate.schema_drift(workspace.engine) == []
