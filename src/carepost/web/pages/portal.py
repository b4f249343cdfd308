"""Secure message pickup: the pages behind a portal notice's link.

* `GET`/`HEAD /s/{token}`: asks for a one-time code (a button mails one) or the date of
  birth, as the sender profile says. Changes nothing: link scanners fetch it.
* `POST /s/{token}/code`: mails a new code to the address the notice went to.
* `POST /s/{token}/verify`: checks the code or date of birth; on success starts a short
  session (a `__Host-` cookie, 15 minutes idle, one hour at most) and redirects.
* `GET /s/{token}/message`: the message (its text, its HTML in a sandboxed frame under
  the site's CSP, so no script runs and nothing remote loads) and its attachments
  (`GET /s/{token}/a/{n}`, always downloaded, never rendered). The first view is the
  read receipt.

An unknown token gets a bare 404, whatever is wrong with it. Before verification no page
shows anything but the organization's name: no subject, no name, no address. Both forms
carry the double-submit CSRF pair the preference page uses; the codes, guesses and
sessions are limited as portal.limits decides, counted in the database so any number of
web processes share the limits.

The code mail is sent from the web process itself, through the configured transport
(`delivery.factory.transport_for`, the capture server on the embedded default), opened
for that one mail: it is rare, and a request must be able to tell the person at once
whether it left.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, DictLoader, Environment, select_autoescape
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from carepost.audit.actor import Actor
from carepost.campaigns.models import SenderProfile
from carepost.db import read_only, transaction
from carepost.delivery import dkim
from carepost.delivery.archive import NotArchived
from carepost.delivery.smtp import Envelope
from carepost.delivery.transport import Transport
from carepost.portal import service
from carepost.portal.limits import PortalLimits
from carepost.portal.message import PortalMessage as Parsed
from carepost.portal.models import PortalMessage
from carepost.portal.notice import PortalSender, code_mail
from carepost.web import cookies
from carepost.web.client import client_network
from carepost.web.pages import templates
from carepost.workspace import Workspace

router = APIRouter()
CSRF_PURPOSE = "carepost portal csrf v1"
MAX_FORM_BYTES = 4096
TITLE = "Secure message"

_ASK = """{% extends "base.html" %}{% block body %}
<h1>You have a secure message from {{ organization }}</h1>
{% if problem %}<p><strong>{{ problem }}</strong></p>{% endif %}
{% if verification == "dob" %}
<form method="post" action="/s/{{ token }}/verify">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Your date of birth <input type="date" name="answer" required></label>
<button type="submit">Open the message</button></form>
{% else %}
{% if sent %}<p>We emailed a code to the address this message was sent to. It works once
and expires in {{ minutes }} minutes.</p>{% endif %}
<form method="post" action="/s/{{ token }}/code">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">{% if sent %}Email me a new code{% else %}Email me a code{% endif %}
</button></form>
<form method="post" action="/s/{{ token }}/verify">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Code <input name="answer" inputmode="numeric" autocomplete="one-time-code"
maxlength="12" required></label>
<button type="submit">Open the message</button></form>
{% endif %}
<p class="note">To keep it private, this message is shown only after you confirm it is
you.</p>
{% endblock %}"""

_MESSAGE = """{% extends "base.html" %}{% block body %}
<p class="note">Secure message from {{ organization }}</p>
<h1>{{ subject }}</h1>
{% if html %}<iframe sandbox="" referrerpolicy="no-referrer" title="Message"
style="width:100%;min-height:24rem;border:1px solid #ccc" srcdoc="{{ html }}"></iframe>
{% endif %}
{% if text %}<details{% if not html %} open{% endif %}><summary>Plain text</summary>
<pre style="white-space:pre-wrap">{{ text }}</pre></details>{% endif %}
{% if attachments %}<h2>Attachments</h2><ul>
{% for a in attachments %}<li><a href="/s/{{ token }}/a/{{ loop.index0 }}">{{ a.filename }}</a>
({{ a.size }} bytes)</li>{% endfor %}</ul>{% endif %}
<form method="post" action="/s/{{ token }}/logout">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">Close the message</button></form>
{% endblock %}"""

_NOTICE = """{% extends "base.html" %}{% block body %}
<h1>{{ heading }}</h1><p>{{ message }}</p>
{% if token %}<p><a href="/s/{{ token }}">Back</a></p>{% endif %}
{% endblock %}"""

_base_loader = templates.env.loader
assert _base_loader is not None
_env = Environment(
    loader=ChoiceLoader(
        [
            DictLoader(
                {
                    "portal_ask.html": _ASK,
                    "portal_message.html": _MESSAGE,
                    "portal_notice.html": _NOTICE,
                }
            ),
            _base_loader,  # base.html
        ]
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(title=TITLE, **context), status)


def _notice(heading: str, message: str, status: int, token: str = "") -> HTMLResponse:
    return _page("portal_notice.html", status, heading=heading, message=message, token=token)


def _not_found() -> HTMLResponse:
    return HTMLResponse(
        _env.get_template("portal_notice.html").render(
            title="Not found", heading="Not found", message="This link is not valid."
        ),
        404,
    )


REFUSALS = {
    "locked": ("Too many tries", "Too many wrong answers. Please try again later.", 429),
    "too_many_codes": ("Too many codes", "Too many codes were asked for. Try again later.", 429),
    "network_limit": ("Too many tries", "Too many requests. Please try again later.", 429),
    "address_gone": (
        "Cannot send a code",
        "The address this message was sent to is no longer on file. Please contact the sender.",
        409,
    ),
    "unverifiable": (
        "Cannot check",
        "This message cannot be opened this way. Please contact the sender.",
        409,
    ),
}


def _ws(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def _limits(request: Request) -> PortalLimits:
    limits: PortalLimits = request.app.state.portal_limits
    return limits


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def _csrf_value(request: Request, cookie: str, token: str) -> str:
    key = _ws(request).keyring.subkey(CSRF_PURPOSE)
    return hmac.new(key, f"{cookie}|{token}".encode(), "sha256").hexdigest()


def _csrf_cookie(request: Request) -> str:
    return cookies.read(request, "carepost_portal_csrf") or secrets.token_urlsafe(32)


def _ask(
    request: Request,
    token: str,
    row: PortalMessage,
    organization: str,
    *,
    status: int = 200,
    problem: str = "",
    sent: bool = False,
) -> HTMLResponse:
    cookie = _csrf_cookie(request)
    response = _page(
        "portal_ask.html",
        status,
        organization=organization,
        token=token,
        verification=row.verification,
        csrf=_csrf_value(request, cookie, token),
        problem=problem,
        sent=sent,
        minutes=int(_limits(request).code_ttl.total_seconds() // 60),
    )
    cookies.put(request, response, "carepost_portal_csrf", cookie, 3600)
    return response


async def _form(request: Request) -> dict[str, list[str]] | None:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        return parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None


async def _checked_form(request: Request, token: str) -> dict[str, list[str]] | None:
    form = await _form(request)
    if form is None:
        return None
    cookie = cookies.read(request, "carepost_portal_csrf")
    sent = (form.get("csrf") or [""])[0]
    if not cookie or not hmac.compare_digest(sent, _csrf_value(request, cookie, token)):
        return None
    return form


def _forbidden(token: str) -> HTMLResponse:
    return _notice(
        "Please try again",
        "This form expired or did not come from this site. Nothing changed.",
        403,
        token,
    )


def _lookup(request: Request, token: str) -> tuple[PortalMessage, str] | None:
    with read_only(_ws(request).engine) as conn, Session(bind=conn) as session:
        row = service.find(session, token)
        if row is None:
            return None
        organization = service.sender_of(session, row).organization_name
        session.expunge(row)
    return row, organization


@router.api_route("/s/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def ask_page(request: Request, token: str) -> Response:
    found = await run_in_threadpool(_lookup, request, token)
    if found is None:
        return _not_found()
    row, organization = found
    return _ask(request, token, row, organization)


def _pre_actor(request: Request, row: PortalMessage) -> Actor:
    """Before verification nobody is known to be the patient: the actor is the portal
    link of this message, from the client's network."""
    return Actor(f"portal:{row.outbox_id}", "web", client_network(request))


def _reader(request: Request, row: PortalMessage) -> Actor:
    return Actor(f"contact:{row.contact_id}", "web", client_network(request))


@router.post("/s/{token}/code", response_class=HTMLResponse)
async def send_code(request: Request, token: str) -> Response:
    found = await run_in_threadpool(_lookup, request, token)
    if found is None:
        return _not_found()
    row, organization = found
    if row.verification != "code":
        return _ask(request, token, row, organization)
    if await _checked_form(request, token) is None:
        return _forbidden(token)
    ws = _ws(request)
    at = _now(request)

    def issue() -> tuple[service.CodeToSend | str, PortalSender]:
        with transaction(ws.engine) as session:
            locked = service.find(session, token, lock=True)
            assert locked is not None  # portal rows are never deleted while their outbox lives
            sender = _portal_sender(service.sender_of(session, locked))
            result = service.request_code(
                session,
                ws.keyring,
                locked,
                network=client_network(request),
                limits=_limits(request),
                actor=_pre_actor(request, locked),
                at=at,
            )
            return result, sender

    result, sender = await run_in_threadpool(issue)
    if isinstance(result, str):
        heading, message, status = REFUSALS[result]
        return _notice(heading, message, status, token)
    minutes = int(_limits(request).code_ttl.total_seconds() // 60)
    mail = code_mail(
        sender, code_id=result.code_id, rcpt=result.rcpt, code=result.code, minutes=minutes, at=at
    )
    make: Callable[[], Transport] = request.app.state.portal_transport
    transport = make()
    try:
        attempt = await transport.send(
            Envelope(
                sender.return_path, result.rcpt, mail.data, crlf_clean=True, tls="opportunistic"
            )
        )
    finally:
        await transport.close()
    if attempt.outcome.status != "sent":
        return _notice(
            "Could not send the code",
            "We could not send the code just now. Please try again in a few minutes.",
            503,
            token,
        )
    return _ask(request, token, row, organization, sent=True)


def _portal_sender(profile: SenderProfile) -> PortalSender:
    signer = None
    if profile.dkim_domain and profile.dkim_selector and profile.dkim_key_file:
        key = dkim.load_private_key(Path(profile.dkim_key_file))
        signer = dkim.DkimSigner(profile.dkim_domain, profile.dkim_selector, key)
    return PortalSender(
        profile.from_name,
        profile.from_address,
        profile.return_path,
        profile.organization_name,
        signer,
    )


@router.post("/s/{token}/verify", response_class=HTMLResponse)
async def verify(request: Request, token: str) -> Response:
    found = await run_in_threadpool(_lookup, request, token)
    if found is None:
        return _not_found()
    row, organization = found
    form = await _checked_form(request, token)
    if form is None:
        return _forbidden(token)
    answer = (form.get("answer") or [""])[0][:64]
    ws = _ws(request)
    at = _now(request)

    def check() -> tuple[str, str | None]:
        with transaction(ws.engine) as session:
            locked = service.find(session, token, lock=True)
            assert locked is not None
            answer_with = (
                service.answer_birth_date if locked.verification == "dob" else service.answer_code
            )
            result = answer_with(
                session,
                ws.keyring,
                locked,
                answer,
                network=client_network(request),
                limits=_limits(request),
                actor=_pre_actor(request, locked),
                at=at,
            )
            if result != "ok":
                return result, None
            return result, service.open_session(session, locked, at)

    result, session_id = await run_in_threadpool(check)
    if result == "wrong":
        what = "date of birth" if row.verification == "dob" else "code"
        return _ask(
            request,
            token,
            row,
            organization,
            status=400,
            problem=f"That {what} is not right, or the code has expired or was used.",
        )
    if result != "ok" or session_id is None:
        heading, message, status = REFUSALS[result]
        return _notice(heading, message, status, token)
    response = RedirectResponse(f"/s/{token}/message", status_code=303)
    cookies.put(
        request,
        response,
        "carepost_portal",
        session_id,
        int(_limits(request).session_max.total_seconds()),
    )
    return response


def _open(request: Request, token: str) -> tuple[Parsed, str] | str:
    """The parsed message for a live session, or why not: "unknown", "no_session",
    "gone" (the contact was crypto-shredded, or the archive is missing)."""
    ws = _ws(request)
    at = _now(request)
    session_id = cookies.read(request, "carepost_portal")
    with transaction(ws.engine) as session:
        row = service.find(session, token)
        if row is None:
            return "unknown"
        if not service.use_session(session, row, session_id, limits=_limits(request), at=at):
            return "no_session"
        organization = service.sender_of(session, row).organization_name
        try:
            parsed = service.read_message(
                session, ws.keyring, row, actor=_reader(request, row), at=at
            )
        except NotArchived:
            return "gone"
    return parsed, organization


def _not_open(request: Request, token: str, why: str) -> Response:
    if why == "unknown":
        return _not_found()
    if why == "gone":
        return _notice("Not available", "This message is no longer available.", 410)
    return RedirectResponse(f"/s/{token}", status_code=303)


@router.get("/s/{token}/message", response_class=HTMLResponse)
async def message_page(request: Request, token: str) -> Response:
    opened = await run_in_threadpool(_open, request, token)
    if isinstance(opened, str):
        return _not_open(request, token, opened)
    parsed, organization = opened
    cookie = _csrf_cookie(request)
    response = _page(
        "portal_message.html",
        organization=organization,
        subject=parsed.subject,
        html=parsed.html,
        text=parsed.text,
        attachments=[{"filename": a.filename, "size": len(a.data)} for a in parsed.attachments],
        token=token,
        csrf=_csrf_value(request, cookie, token),
    )
    cookies.put(request, response, "carepost_portal_csrf", cookie, 3600)
    return response


@router.get("/s/{token}/a/{index}")
async def attachment(request: Request, token: str, index: int) -> Response:
    opened = await run_in_threadpool(_open, request, token)
    if isinstance(opened, str):
        return _not_open(request, token, opened)
    parsed, _ = opened
    if not 0 <= index < len(parsed.attachments):
        return _not_found()
    item = parsed.attachments[index]
    # Always a download of opaque bytes: a browser must never render what a message
    # carried (an HTML or SVG attachment would run on this origin).
    return Response(
        item.data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(item.filename)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post("/s/{token}/logout", response_class=HTMLResponse)
async def logout(request: Request, token: str) -> Response:
    if await _checked_form(request, token) is None:
        return _forbidden(token)
    ws = _ws(request)
    session_id = cookies.read(request, "carepost_portal")

    def end() -> None:
        with transaction(ws.engine) as session:
            service.end_session(session, session_id)

    await run_in_threadpool(end)
    response = _notice("Closed", "The message is closed.", 200, token)
    cookies.clear(request, response, "carepost_portal")
    return response
