"""The public pages over real HTTPS (uvicorn on a loopback port, httpx), on both engines:
scanners' GET and HEAD change nothing, RFC 8058 one-click POST works, forged or altered
tokens get 400 and change nothing, the preference form needs its CSRF pair."""

from __future__ import annotations

import datetime as dt
import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from consent_support import add_contacts
from sqlalchemy import func, select

from carepost.audit.models import AuditEntry
from carepost.consent import service
from carepost.consent.headers import list_unsubscribe_headers
from carepost.consent.models import Consent, Suppression
from carepost.consent.tokens import make_token
from carepost.db import transaction
from carepost.web.app import create_app
from carepost.web.commands import server_config
from carepost.workspace import Workspace
from https_support import self_signed
from smtp_sink import free_port


class Site:
    def __init__(self, ws: Workspace, base: str, cert: Path, contact_ids: list[str]) -> None:
        self.ws = ws
        self.base = base
        self.cert = cert
        self.ids = contact_ids

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.base, verify=ctx, timeout=15, follow_redirects=False)

    def token(self, idx: int = 0, topic: str = "newsletter") -> str:
        return make_token(self.ws.keyring, self.ids[idx], "email", topic)

    def counts(self) -> tuple[int, int, int]:
        with transaction(self.ws.engine) as s:
            return (
                s.execute(select(func.count()).select_from(Consent)).scalar_one(),
                s.execute(select(func.count()).select_from(Suppression)).scalar_one(),
                s.execute(select(func.count()).select_from(AuditEntry)).scalar_one(),
            )


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path, actor: Any) -> Iterator[Site]:
    with transaction(workspace.engine) as s:
        ids = add_contacts(s, workspace.keyring, 2)
        service.set_consent(
            s,
            contact_id=ids[0],
            channel="email",
            topic="newsletter",
            status="opted_in",
            source="form",
            actor=actor,
        )
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = server_config(create_app(workspace), "127.0.0.1", port, cert, key, "warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Site(workspace, f"https://127.0.0.1:{port}", cert, ids)
    finally:
        server.should_exit = True
        thread.join(10)


def _status(site: Site, idx: int = 0, topic: str = "newsletter") -> str | None:
    with transaction(site.ws.engine) as s:
        return service.current_topics(
            s, site.ids[idx], "email", dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        ).get(topic)


def test_health_and_security_headers(site: Site) -> None:
    with site.client() as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert "server" not in r.headers


def test_scanner_get_and_head_change_nothing(site: Site) -> None:
    token = site.token()
    before = site.counts()
    with site.client() as c:
        for _ in range(3):
            page = c.get(f"/u/{token}")
            assert page.status_code == 200
            assert c.head(f"/u/{token}").status_code == 200
            assert c.get(f"/p/{token}").status_code == 200
            assert c.head(f"/p/{token}").status_code == 200
    assert 'method="post"' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert site.counts() == before
    assert _status(site) == "opted_in"


def test_one_click_post_unsubscribes_at_once_and_is_audited(site: Site) -> None:
    headers = list_unsubscribe_headers(
        site.ws.keyring, site.base, site.ids[0], "email", "newsletter"
    )
    url = re.match(r"<([^>]+)>", headers["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    with site.client() as c:
        # As a mail provider sends it (RFC 8058 section 3.1): no cookies, form body.
        r = c.post(
            url,
            content=headers["List-Unsubscribe-Post"],
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200
        assert "unsubscribed" in r.text
        assert _status(site) == "opted_out"
        # Idempotent: a second POST writes nothing new.
        before = site.counts()
        assert c.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert site.counts() == before
    with transaction(site.ws.engine) as s:
        last = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).scalar_one()
        row = s.execute(select(Consent).order_by(Consent.recorded_at.desc()).limit(1)).scalar_one()
    assert last.action == "consent.set"
    assert last.actor == f"contact:{site.ids[0]}"
    assert last.source_kind == "web"
    assert last.source_address == "127.0.0.0/24"
    assert row.source == "unsubscribe_link"


def test_one_click_as_multipart_form_data(site: Site) -> None:
    # RFC 8058 section 3.1: the POST SHOULD be multipart/form-data.
    with site.client() as c:
        r = c.post(f"/u/{site.token()}", files={"List-Unsubscribe": (None, "One-Click")})
        assert r.request.headers["content-type"].startswith("multipart/form-data")
        assert r.status_code == 200
    assert _status(site) == "opted_out"


def test_post_without_one_click_body_is_refused(site: Site) -> None:
    before = site.counts()
    with site.client() as c:
        assert c.post(f"/u/{site.token()}", data={"x": "y"}).status_code == 400
        assert c.post(f"/u/{site.token()}").status_code == 400
        multipart_wrong = c.post(f"/u/{site.token()}", files={"List-Unsubscribe": (None, "No")})
        assert multipart_wrong.status_code == 400
    assert site.counts() == before


def test_forged_and_tampered_tokens_get_400_and_change_nothing(site: Site) -> None:
    token = site.token()
    i = len(token) // 2
    tampered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    other_key = make_token(
        __import__("carepost.crypto.keyring", fromlist=["KeyRing"]).KeyRing.generate(),
        site.ids[0],
        "email",
        "newsletter",
    )
    before = site.counts()
    with site.client() as c:
        for bad in (tampered, other_key, "forged", token + "AA"):
            assert c.post(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"}).status_code == 400
            assert c.get(f"/u/{bad}").status_code == 400
            assert c.get(f"/p/{bad}").status_code == 400
            assert c.post(f"/p/{bad}", data={"csrf": "x"}).status_code == 400
    assert site.counts() == before
    assert _status(site) == "opted_in"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]


def test_preferences_apply_at_once_with_csrf(site: Site) -> None:
    token = site.token()
    with site.client() as c:
        page = c.get(f"/p/{token}")
        cookie = page.headers["set-cookie"]
        assert "__Host-carepost_csrf=" in cookie
        assert "secure" in cookie.lower()
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        field = _csrf(page.text)
        # Without the cookie (a cross-site form): refused, nothing changes.
        before = site.counts()
        bare = site.client()
        r = bare.post(f"/p/{token}", data={"csrf": field, "shown": "newsletter"})
        bare.close()
        assert r.status_code == 403
        # A wrong field with the right cookie: refused.
        assert (
            c.post(f"/p/{token}", data={"csrf": "0" * 64, "shown": "newsletter"}).status_code == 403
        )
        assert site.counts() == before
        # The real form: uncheck the topic -> opted out at once.
        r = c.post(f"/p/{token}", data={"csrf": field, "shown": "newsletter"})
        assert r.status_code == 200
        assert "Saved" in r.text
        assert _status(site) == "opted_out"
        # Re-check it -> opted in again (history kept).
        r = c.post(
            f"/p/{token}", data={"csrf": field, "shown": "newsletter", "receive": "newsletter"}
        )
        assert _status(site) == "opted_in"
        # Unsubscribe from everything: a suppression of the contact's address.
        r = c.post(
            f"/p/{token}",
            data={
                "csrf": field,
                "shown": "newsletter",
                "receive": "newsletter",
                "unsubscribe_all": "yes",
            },
        )
        assert r.status_code == 200
        assert "checked disabled" in r.text
    with transaction(site.ws.engine) as s:
        assert service.is_unsubscribed_all(s, site.ids[0], "email")
        assert not service.is_unsubscribed_all(s, site.ids[1], "email")
        decision = service.check(
            s,
            contact_id=site.ids[0],
            message_class="transactional",
            channel="email",
            topic="newsletter",
            sender="self",
            at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
        )
        actions = list(s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars())
    assert decision.reasons == ("suppressed_unsubscribe_all",)
    assert actions[-3:] == ["consent.set", "consent.set", "suppression.added"]


def test_pages_escape_and_show_no_phi(site: Site) -> None:
    with site.client() as c:
        page = c.get(f"/p/{site.token()}").text + c.get(f"/u/{site.token()}").text
    assert "p0@example.org" not in page
    assert site.ids[0] not in page


def test_carepost_serve_runs_the_app_over_tls(
    workspace: Workspace, settings: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "CAREPOST_DATA_DIR": str(settings.data_dir),
        "CAREPOST_DATABASE_URL": settings.database_url,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carepost.cli",
            "serve",
            "--port",
            str(port),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ctx, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200
        assert "strict-transport-security" in r.headers
        token = make_token(workspace.keyring, "0" * 32, "email", "newsletter")
        assert httpx.head(f"https://127.0.0.1:{port}/u/{token}", verify=ctx).status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert token not in stderr
