"""`carepost` as a user runs it: a real process against the test's workspace. Registered
for every test by `pytest_plugins` in tests/conftest.py; use the `carepost` fixture and
add settings to `carepost.env` before calling it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from carepost.config import Settings

Run = subprocess.CompletedProcess[str]


class CarepostCli:
    def __init__(self, settings: Settings, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {
            **os.environ,
            "CAREPOST_DATA_DIR": str(settings.data_dir),
            "CAREPOST_DATABASE_URL": settings.database_url,
            "CAREPOST_ACTOR": "cli:test-user",
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None
    ) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "carepost.cli", *args],
            env=self.env,
            cwd=self.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"carepost {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "carepost.cli", *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def carepost(settings: Settings, tmp_path: Path) -> Callable[..., Run]:
    return CarepostCli(settings, tmp_path)
