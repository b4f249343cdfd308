"""Shared fixtures. Every database test runs on SQLite, and on PostgreSQL too when
CAREPOST_TEST_DATABASE_URL names a server (each test gets its own schema there)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from carepost.audit.actor import Actor
from carepost.config import Settings
from carepost.workspace import Workspace, init_workspace

PG_URL = os.environ.get("CAREPOST_TEST_DATABASE_URL", "")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if env_data := os.environ.get("CAREPOST_SHARED_DATA"):
    SHARED_DATA = Path(env_data)

DB_KINDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def shared_data(name: str) -> Path:
    """A folder of third-party test data; the test skips where the clone has none."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared test data {name!r} not found at {path} (only in the project's CI)")
    return path


def _pg_engine_url() -> str:
    return PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'carepost.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_engine_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "ws", database_url=db_url)


@pytest.fixture
def workspace(settings: Settings) -> Iterator[Workspace]:
    ws = init_workspace(settings=settings)
    yield ws
    ws.close()


@pytest.fixture
def actor() -> Actor:
    return Actor("cli:tester", "cli", "test-host")


# A real SMTP server with STARTTLS and injected faults (tests/smtp_sink.py); loopback
# recipient MX servers, one per TLS behaviour, and their resolver (tests/tls_servers.py);
# a loopback HTTPS server for MTA-STS policies (tests/policy_server.py).
pytest_plugins = ["smtp_sink", "tls_servers", "cli_runner", "policy_server"]
