"""Staff sign-in over real HTTPS (uvicorn on loopback, httpx), on both engines and a
frozen clock: the password and TOTP pages, the cookies' attributes, CSRF on every
cookie-authenticated POST, logout, timeouts, a disabled user's session, throttling
answers and break-glass from the page."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from api_support import running_site
from carepost.audit.models import AuditEntry
from carepost.db import transaction
from carepost.staff import service
from carepost.staff.models import StaffAlert
from carepost.workspace import Workspace
from staff_support import PASSWORD, SYSTEM, Clock, Staff, add, code_for

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@dataclass
class Site:
    ws: Workspace
    base: str
    cert: Path
    clock: Clock

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.base, verify=ctx, timeout=15, follow_redirects=False)

    def count(self, action: str) -> int:
        with transaction(self.ws.engine) as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
                )
                or 0
            )


@pytest.fixture
def site(workspace: Workspace, tmp_path: Path) -> Iterator[Site]:
    clock = Clock()
    with running_site(workspace, tmp_path, clock) as (base, cert):
        yield Site(workspace, base, cert, clock)


def _csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match is not None, page.text
    return match.group(1)


def _password(c: httpx.Client, email: str, password: str) -> httpx.Response:
    page = c.get("/staff/login")
    return c.post("/staff/login", data={"csrf": _csrf(page), "email": email, "password": password})


def _sign_in(site: Site, c: httpx.Client, user: Staff) -> httpx.Response:
    site.clock.advance(seconds=30)  # a fresh TOTP step
    first = _password(c, user.email, PASSWORD)
    assert first.status_code == 303
    assert first.headers["location"] == "/staff/login/mfa"
    page = c.get("/staff/login/mfa")
    done = c.post(
        "/staff/login/mfa",
        data={"csrf": _csrf(page), "code": code_for(site.ws, user.id, site.clock())},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/staff/me"
    return done


def _cookie_header(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    raise AssertionError(f"no {name} cookie set")


def test_sign_in_me_and_sign_out(site: Site) -> None:
    user = add(site.ws, "nurse@clinic.example", "care_team", clock=site.clock)
    with site.client() as c:
        done = _sign_in(site, c, user)
        for name in ("__Host-carepost_staff", "__Host-carepost_staff_device"):
            header = _cookie_header(done, name).lower()
            for attribute in ("secure", "httponly", "samesite=strict", "path=/"):
                assert attribute in header, (name, attribute)
            assert "domain=" not in header
        me = c.get("/staff/me")
        assert me.status_code == 200
        assert "Nurse" in me.text
        assert "nurse@clinic.example" in me.text
        assert "phi:read_recipients" in me.text
        assert "care_team" in me.text
        assert me.headers["cache-control"] == "no-store"
        out = c.post("/staff/logout", data={"csrf": _csrf(me)})
        assert out.status_code == 200
        assert "signed out" in out.text
        assert c.get("/staff/me").status_code == 303
    assert site.count("staff.login") == 1
    assert site.count("staff.logout") == 1


def test_csrf_is_checked_on_every_cookie_authenticated_post(site: Site) -> None:
    user = add(site.ws, "a@clinic.example", "analyst", clock=site.clock)
    other = add(site.ws, "b@clinic.example", "analyst", clock=site.clock)
    with site.client() as c:
        # sign-in form: no cookie, or a field that does not match it
        bare = httpx.Client(
            base_url=site.base, verify=ssl.create_default_context(cafile=str(site.cert))
        )
        with bare:
            forged = bare.post(
                "/staff/login", data={"csrf": "0" * 64, "email": user.email, "password": PASSWORD}
            )
        assert forged.status_code == 403
        c.get("/staff/login")
        assert (
            c.post(
                "/staff/login", data={"csrf": "0" * 64, "email": user.email, "password": PASSWORD}
            ).status_code
            == 403
        )
        assert site.count("staff.login_failed") == 0  # refused before anything was tried
        _sign_in(site, c, user)
        assert c.get("/staff/me").status_code == 200
    with site.client() as c2:
        _sign_in(site, c2, other)
        others_token = _csrf(c2.get("/staff/me"))
    with site.client() as c:
        _sign_in(site, c, user)
        mine = _csrf(c.get("/staff/me"))
        assert c.post("/staff/logout", data={}).status_code == 403
        assert c.post("/staff/logout", data={"csrf": others_token}).status_code == 403
        assert (
            c.post("/staff/break-glass", data={"reason": "x" * 20, "code": "1"}).status_code == 403
        )
        assert c.get("/staff/me").status_code == 200  # still signed in: nothing changed
        assert c.post("/staff/logout", data={"csrf": mine}).status_code == 200
    # the second factor's form too
    with site.client() as c:
        site.clock.advance(seconds=30)
        assert _password(c, user.email, PASSWORD).status_code == 303
        code = code_for(site.ws, user.id, site.clock())
        assert c.post("/staff/login/mfa", data={"code": code}).status_code == 403
        page = c.get("/staff/login/mfa")
        assert (
            c.post("/staff/login/mfa", data={"csrf": _csrf(page), "code": code}).status_code == 303
        )


def test_failures_look_alike_and_throttling_says_when(site: Site) -> None:
    user = add(site.ws, "a@clinic.example", "analyst", clock=site.clock)
    with site.client() as c:
        wrong = _password(c, user.email, "not the password!!")
        unknown = _password(c, "nobody@clinic.example", PASSWORD)
        assert wrong.status_code == unknown.status_code == 401
        strip = re.compile(r'value="[0-9a-f]{64}"')
        assert strip.sub("", wrong.text) == strip.sub("", unknown.text)
        for _ in range(4):  # five failures on the account: the sixth attempt waits
            _password(c, user.email, "not the password!!")
        throttled = _password(c, user.email, PASSWORD)
        assert throttled.status_code == 429
        # the account-and-network counter's first wait (2 s) is the longest
        assert throttled.headers["retry-after"] == "2"
        site.clock.advance(seconds=1)
        assert _password(c, user.email, PASSWORD).status_code == 429
        site.clock.advance(seconds=1)
        assert _password(c, user.email, PASSWORD).status_code == 303


def test_idle_timeout_and_disabling_end_the_session(site: Site) -> None:
    user = add(site.ws, "a@clinic.example", "analyst", clock=site.clock)
    with site.client() as c:
        _sign_in(site, c, user)
        site.clock.advance(minutes=14)
        assert c.get("/staff/me").status_code == 200
        site.clock.advance(minutes=15)
        assert c.get("/staff/me").status_code == 303
        _sign_in(site, c, user)
        assert c.get("/staff/me").status_code == 200
        with transaction(site.ws.engine) as s:
            assert service.do_disable_user(s, SYSTEM, user.id, clock=site.clock) == 1
        assert c.get("/staff/me").status_code == 303


def test_break_glass_from_the_page(site: Site) -> None:
    nurse = add(site.ws, "nurse@clinic.example", "care_team", clock=site.clock)
    with site.client() as c:
        _sign_in(site, c, nurse)
        me = c.get("/staff/me")
        assert "Emergency access" in me.text
        refused = c.post(
            "/staff/break-glass",
            data={"csrf": _csrf(me), "reason": "Patient in ER, unconscious", "code": "000000"},
        )
        assert refused.status_code == 403
        assert "code is not right" in refused.text
        site.clock.advance(seconds=30)
        granted = c.post(
            "/staff/break-glass",
            data={
                "csrf": _csrf(me),
                "reason": "Patient in ER, unconscious",
                "code": code_for(site.ws, nurse.id, site.clock()),
            },
        )
        assert granted.status_code == 200, granted.text
        assert "Emergency access granted" in granted.text
    with transaction(site.ws.engine) as s:
        assert s.scalar(select(func.count()).select_from(StaffAlert)) == 1
    assert site.count("staff.break_glass_granted") == 1
    assert site.count("staff.break_glass_refused") == 1
