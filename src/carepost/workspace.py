"""A workspace: settings, the key file and a migrated database, opened together."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from carepost import migrate
from carepost.config import Settings, load_settings, render_settings_file
from carepost.crypto.keyring import KeyFileError, KeyRing, create_key_file, load_key_file
from carepost.db import make_engine


class WorkspaceError(Exception):
    pass


@dataclass
class Workspace:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def keyring(self) -> KeyRing:
        return load_key_file(self.settings.resolved_key_file)

    def check_schema(self) -> None:
        current = migrate.current_revision(self.engine)
        head = migrate.HEAD
        if current != head:
            raise WorkspaceError(
                f"database schema is at {current or 'nothing'}, code expects {head}; "
                "run `carepost db upgrade` (or `carepost init` for a new workspace)"
            )

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def open_workspace(data_dir: Path | None = None, settings: Settings | None = None) -> Workspace:
    return Workspace(settings or load_settings(data_dir))


def init_workspace(data_dir: Path | None = None, settings: Settings | None = None) -> Workspace:
    """Create the folder, the key file (owner-only, never overwritten), the settings file
    and the schema. Safe to re-run on a database that already exists: migrations are
    idempotent; the key file is not touched if it exists and loads."""
    ws = open_workspace(data_dir, settings)
    s = ws.settings
    s.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(s.data_dir, 0o700)
    key_path = s.resolved_key_file
    if key_path.exists():
        raise KeyFileError(
            f"{key_path} already exists; carepost never overwrites a key file. "
            "Use `carepost db upgrade` to migrate an existing workspace."
        )
    create_key_file(key_path, KeyRing.generate())
    if not s.settings_file.exists():
        s.settings_file.write_text(render_settings_file(s))
    migrate.upgrade(ws.engine)
    return ws
