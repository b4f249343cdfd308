"""Staff sign-in pages: password, then the TOTP code (or a recovery code), then a session.

* `GET /staff/login`, `POST /staff/login`: address and password (staff/login.py decides;
  throttled attempts get 429 with Retry-After; every failure gets the same words).
* `GET /staff/login/mfa`, `POST /staff/login/mfa`: the second factor for the pending
  login; success ends the pending token and sets a new session token (rotation).
* `GET /staff/me`: who is signed in, with which roles and permissions (proves the
  session; the REST API builds on the same session and principal).
* `POST /staff/logout`, `POST /staff/break-glass`: cookie-authenticated changes.

Cookies are `__Host-` (Secure, HttpOnly, SameSite=Strict, path /): the session, the
pending login, a pre-login CSRF cookie and the device cookie that exempts this browser
from the account-wide login throttle (staff/throttle.py). Every POST checks a CSRF token:
before sign-in the double-submit pair of the other pages (a cookie and a form field that
is its HMAC, so an attacker cannot log a victim into the attacker's account), after it a
synchronizer token derived from the session (staff/sessions.csrf_for). Plain http and
non-Secure cookies exist only under CAREPOST_DEV_INSECURE, as for the portal.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, DictLoader, Environment, select_autoescape
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from carepost.db import transaction
from carepost.staff import breakglass, login, sessions
from carepost.staff.models import StaffSession, StaffUser
from carepost.staff.principal import PermissionDenied, Principal
from carepost.staff.users import principal_for, roles_of
from carepost.web import cookies
from carepost.web.client import client_network
from carepost.web.pages import templates
from carepost.workspace import Workspace

router = APIRouter()
MAX_FORM_BYTES = 4096
LOGIN_CSRF_PURPOSE = "carepost staff login csrf v1"
SESSION, PENDING, LOGIN_CSRF, DEVICE = (
    "carepost_staff",
    "carepost_staff_login",
    "carepost_staff_csrf",
    "carepost_staff_device",
)
DEVICE_MAX_AGE = 365 * 24 * 3600
FAILED = "The email address or password is not right."

_LOGIN = """{% extends "base.html" %}{% block body %}
<h1>Sign in</h1>
{% if problem %}<p><strong>{{ problem }}</strong></p>{% endif %}
<form method="post" action="/staff/login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Email <input type="email" name="email" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password"
minlength="1" maxlength="128" required></label>
<button type="submit">Next</button></form>
{% endblock %}"""

_MFA = """{% extends "base.html" %}{% block body %}
<h1>Sign in: your code</h1>
{% if problem %}<p><strong>{{ problem }}</strong></p>{% endif %}
<form method="post" action="/staff/login/mfa">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>The 6-digit code from your authenticator app, or a recovery code
<input name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="20" required>
</label>
<button type="submit">Sign in</button></form>
{% endblock %}"""

_ME = """{% extends "base.html" %}{% block body %}
<h1>{{ name }}</h1>
<p>Signed in as {{ email }}. Roles: {{ roles or "none" }}.</p>
{% if granted %}<p><strong>{{ granted }}</strong></p>{% endif %}
{% if problem %}<p><strong>{{ problem }}</strong></p>{% endif %}
{% if break_glass %}<p><strong>Emergency access is on until {{ break_glass }}.</strong>
Every record you open is logged and reviewed.</p>{% endif %}
<details><summary>Permissions</summary><ul>
{% for p in permissions %}<li>{{ p }}</li>{% endfor %}</ul></details>
{% if can_break_glass %}
<h2>Emergency access</h2>
<form method="post" action="/staff/break-glass">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Why you need it <input name="reason" minlength="10" maxlength="500" required></label>
<label>Your 6-digit code <input name="code" inputmode="numeric" maxlength="6" required>
</label>
<button type="submit">Open emergency access for {{ minutes }} minutes</button></form>
<p class="note">Compliance is told at once, and every record you open is logged.</p>
{% endif %}
<form method="post" action="/staff/logout">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">Sign out</button></form>
{% endblock %}"""

_NOTICE = """{% extends "base.html" %}{% block body %}
<h1>{{ heading }}</h1><p>{{ message }}</p><p><a href="/staff/login">Sign in</a></p>
{% endblock %}"""

_base_loader = templates.env.loader
assert _base_loader is not None
_env = Environment(
    loader=ChoiceLoader(
        [
            DictLoader(
                {
                    "staff_login.html": _LOGIN,
                    "staff_mfa.html": _MFA,
                    "staff_me.html": _ME,
                    "staff_notice.html": _NOTICE,
                }
            ),
            _base_loader,
        ]
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("title", "carepost staff")
    return HTMLResponse(_env.get_template(template).render(**context), status)


def _ws(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def _policy(request: Request) -> sessions.SessionPolicy:
    return sessions.policy_of(_ws(request).settings)


async def _form(request: Request) -> dict[str, str] | None:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


def _forbidden() -> HTMLResponse:
    return _page(
        "staff_notice.html",
        403,
        heading="Please try again",
        message="This form expired or did not come from this site. Nothing changed.",
    )


# --- before sign-in: double-submit CSRF -----------------------------------------------------
def _login_csrf(request: Request, cookie: str) -> str:
    key = _ws(request).keyring.subkey(LOGIN_CSRF_PURPOSE)
    return hmac.new(key, cookie.encode("ascii", "replace"), "sha256").hexdigest()


def _login_page(request: Request, status: int = 200, problem: str = "") -> HTMLResponse:
    cookie = cookies.read(request, LOGIN_CSRF) or secrets.token_urlsafe(32)
    response = _page("staff_login.html", status, csrf=_login_csrf(request, cookie), problem=problem)
    cookies.put(request, response, LOGIN_CSRF, cookie, 3600)
    return response


@router.get("/staff/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return _login_page(request)


@router.post("/staff/login", response_class=HTMLResponse)
async def login_password(request: Request) -> Response:
    form = await _form(request)
    cookie = cookies.read(request, LOGIN_CSRF)
    if (
        form is None
        or not cookie
        or not hmac.compare_digest(form.get("csrf", ""), _login_csrf(request, cookie))
    ):
        return _forbidden()
    ws = _ws(request)
    result = await run_in_threadpool(
        login.password_step,
        ws.engine,
        ws.keyring,
        form.get("email", "")[:254],
        form.get("password", ""),
        network=client_network(request),
        device=cookies.read(request, DEVICE) or None,
        at=_now(request),
        policy=_policy(request),
    )
    response: Response
    if result.outcome == "throttled":
        response = _login_page(
            request, 429, f"Too many attempts. Try again in {result.retry_after} seconds."
        )
        response.headers["Retry-After"] = str(result.retry_after)
        return response
    if result.outcome != "mfa":
        return _login_page(request, 401, FAILED)
    response = RedirectResponse("/staff/login/mfa", status_code=303)
    cookies.put(request, response, PENDING, result.pending_token, 300)
    return response


# --- the second factor: synchronizer token of the pending login ---------------------------
def _mfa_page(request: Request, status: int = 200, problem: str = "") -> HTMLResponse:
    pending = cookies.read(request, PENDING)
    csrf = sessions.csrf_for(_ws(request).keyring, sessions.token_id(pending))
    return _page("staff_mfa.html", status, csrf=csrf, problem=problem)


@router.get("/staff/login/mfa", response_class=HTMLResponse)
async def mfa_page(request: Request) -> Response:
    if not cookies.read(request, PENDING):
        return RedirectResponse("/staff/login", status_code=303)
    return _mfa_page(request)


@router.post("/staff/login/mfa", response_class=HTMLResponse)
async def login_mfa(request: Request) -> Response:
    pending = cookies.read(request, PENDING)
    form = await _form(request)
    ws = _ws(request)
    if (
        form is None
        or not pending
        or not sessions.csrf_ok(ws.keyring, sessions.token_id(pending), form.get("csrf", ""))
    ):
        return _forbidden()

    def step() -> login.MfaResult:
        with transaction(ws.engine) as session:
            return login.mfa_step(
                session,
                ws.keyring,
                pending,
                form.get("code", "")[:32],
                network=client_network(request),
                device=cookies.read(request, DEVICE) or None,
                at=_now(request),
                policy=_policy(request),
            )

    result = await run_in_threadpool(step)
    response: Response
    if result.outcome == "wrong":
        return _mfa_page(request, 401, "That code is not right, or it was already used.")
    if result.outcome == "throttled":
        response = _mfa_page(
            request, 429, f"Too many attempts. Try again in {result.retry_after} seconds."
        )
        response.headers["Retry-After"] = str(result.retry_after)
        return response
    if result.outcome != "ok":
        response = _login_page(request, 401, "Please sign in again.")
        cookies.clear(request, response, PENDING)
        return response
    response = RedirectResponse("/staff/me", status_code=303)
    cookies.clear(request, response, PENDING)
    policy = _policy(request)
    cookies.put(
        request, response, SESSION, result.session_token, int(policy.absolute.total_seconds())
    )
    if result.device_cookie:
        cookies.put(request, response, DEVICE, result.device_cookie, DEVICE_MAX_AGE)
    return response


# --- signed in ------------------------------------------------------------------------------
def current(session: Session, request: Request) -> tuple[StaffSession, StaffUser, Principal] | None:
    """The signed-in user of this request (the session touched), or None."""
    row = sessions.resolve(
        session,
        cookies.read(request, SESSION),
        stage="active",
        at=_now(request),
        policy=_policy(request),
    )
    if row is None:
        return None
    user = session.get(StaffUser, row.user_id)
    if user is None or user.status != "active":
        sessions.end(session, row, "user_disabled", _now(request))
        return None
    principal = principal_for(session, user, source_kind="web", network=client_network(request))
    return row, user, principal


def _me(
    request: Request,
    session: Session,
    row: StaffSession,
    user: StaffUser,
    principal: Principal,
    *,
    status: int = 200,
    problem: str = "",
    granted: str = "",
) -> HTMLResponse:
    grant = breakglass.live_grant(session, user.id, _now(request))
    can = principal.has("breakglass:request") and not principal.has("phi:read") and grant is None
    return _page(
        "staff_me.html",
        status,
        name=user.display_name,
        email=user.email,
        roles=", ".join(roles_of(session, user.id)),
        permissions=sorted(principal.permissions),
        csrf=sessions.csrf_for(_ws(request).keyring, row.id),
        can_break_glass=can,
        minutes=_ws(request).settings.staff_break_glass_minutes,
        break_glass=grant.expires_at.strftime("%H:%M UTC") if grant else "",
        problem=problem,
        granted=granted,
    )


def _signed_out() -> Response:
    return RedirectResponse("/staff/login", status_code=303)


@router.get("/staff/me", response_class=HTMLResponse)
async def me(request: Request) -> Response:
    ws = _ws(request)

    def show() -> HTMLResponse | None:
        with transaction(ws.engine) as session:
            found = current(session, request)
            if found is None:
                return None
            return _me(request, session, *found)

    page = await run_in_threadpool(show)
    return page if page is not None else _signed_out()


@router.post("/staff/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    form = await _form(request)
    ws = _ws(request)

    def end() -> str:
        with transaction(ws.engine) as session:
            found = current(session, request)
            if found is None:
                return "signed_out"
            row = found[0]
            if form is None or not sessions.csrf_ok(ws.keyring, row.id, form.get("csrf", "")):
                return "forbidden"
            login.logout(session, row, network=client_network(request), at=_now(request))
            return "ok"

    outcome = await run_in_threadpool(end)
    if outcome == "forbidden":
        return _forbidden()
    response = _page("staff_notice.html", heading="Signed out", message="You are signed out.")
    cookies.clear(request, response, SESSION)
    return response


@router.post("/staff/break-glass", response_class=HTMLResponse)
async def break_glass(request: Request) -> Response:
    form = await _form(request)
    ws = _ws(request)

    def grant() -> Response:
        # One transaction: a refusal's audit entry and a wrong code's count commit too.
        with transaction(ws.engine) as session:
            found = current(session, request)
            if found is None:
                return _signed_out()
            row, _user, principal = found
            if form is None or not sessions.csrf_ok(ws.keyring, row.id, form.get("csrf", "")):
                return _forbidden()
            try:
                given = breakglass.do_request_break_glass(
                    session,
                    ws.keyring,
                    principal,
                    reason=form.get("reason", "")[:500],
                    code=form.get("code", "")[:12],
                    max_minutes=ws.settings.staff_break_glass_minutes,
                    web_session=row,
                    clock=lambda: _now(request),
                )
            except (breakglass.BreakGlassRefused, PermissionDenied) as exc:
                return _me(request, session, *found, status=403, problem=str(exc))
            return _me(
                request,
                session,
                *found,
                granted=f"Emergency access granted until {given.expires_at:%H:%M} UTC.",
            )

    return await run_in_threadpool(grant)
