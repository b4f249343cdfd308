"""`migrate.HEAD` is what every command checks the database against without loading
Alembic; it must name the newest migration file's revision."""

from __future__ import annotations

import subprocess
import sys

from carepost import migrate


def test_head_constant_is_the_newest_migration() -> None:
    assert migrate.script_head() == migrate.HEAD


def test_the_cli_starts_without_importing_alembic_or_fastapi() -> None:
    # Importing the command tree must not pull these in: every `carepost` invocation
    # paid ~0.5 s for migrations and a web framework it was not running.
    code = "import sys, carepost.cli; print(sorted({'alembic', 'fastapi'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
