"""Helpers for the REST API tests: the whole web app (the API mounted at /api/v1) served
by uvicorn over HTTPS on loopback, and API keys made through the real services for users
of any built-in role."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from carepost.db import transaction
from carepost.staff import apikeys
from carepost.staff.permissions import BUILTIN_ROLES
from carepost.web.app import create_app
from carepost.web.commands import server_config
from carepost.workspace import Workspace
from https_support import self_signed
from smtp_sink import free_port
from staff_support import SYSTEM, Clock, add

API = "/api/v1"


@dataclass
class ApiSite:
    ws: Workspace
    base: str
    cert: Path
    clock: Clock

    def client(self, token: str | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base + API,
            verify=ctx,
            timeout=30,
            follow_redirects=False,
            headers=headers,
        )

    def key(self, role: str, *, scopes: list[str] | None = None, email: str = "") -> str:
        """A new user with `role` and an API key with all of the role's permissions (or
        `scopes`); the key's token."""
        user = add(self.ws, email or f"{role}-{time.monotonic_ns()}@clinic.example", role)
        with transaction(self.ws.engine) as s:
            created = apikeys.do_create_api_key(
                s,
                SYSTEM,
                owner=user.id,
                name=f"{role} key",
                scopes=sorted(scopes if scopes is not None else BUILTIN_ROLES[role][1]),
                clock=self.clock,
            )
        return created.token


@contextmanager
def running_site(workspace: Workspace, tmp_path: Path, clock: Clock) -> Iterator[tuple[str, Path]]:
    """The whole web app (staff pages, portal, API) under uvicorn over HTTPS on a free
    loopback port: (base URL, the certificate to trust)."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = uvicorn.Server(
        server_config(create_app(workspace, clock=clock), "127.0.0.1", port, cert, key, "warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serve(workspace: Workspace, tmp_path: Path, clock: Clock | None = None) -> Iterator[ApiSite]:
    clock = clock or Clock()
    with running_site(workspace, tmp_path, clock) as (base, cert):
        yield ApiSite(workspace, base, cert, clock)
