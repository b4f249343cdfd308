"""Unsubscribe (RFC 8058) and preference pages.

* `GET`/`HEAD /u/{token}`: a page whose button POSTs. Never changes anything: link
  scanners fetch every link in a message.
* `POST /u/{token}` with body `List-Unsubscribe=One-Click`: opt out of the token's topic
  on its channel, at once, audited. Mail clients send this without cookies, so the signed
  token is the only credential (RFC 8058 section 3.1).
* `GET /p/{token}`, `POST /p/{token}`: per-topic opt-outs and unsubscribe-all, with a CSRF
  check (double submit: a `__Host-` cookie and a form field bound to it and the token).

A forged, altered or malformed token gets 400 and changes nothing. Pages show topic codes
only, never a name or an address.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from email import policy as email_policy
from email.parser import BytesParser
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from carepost.audit.actor import Actor
from carepost.consent import service
from carepost.consent.records import OPTED_IN, OPTED_OUT
from carepost.consent.tokens import BadToken, UnsubscribeToken, read_token
from carepost.db import read_only, transaction
from carepost.web.client import client_network
from carepost.web.pages.templates import render
from carepost.workspace import Workspace

router = APIRouter()
CSRF_PURPOSE = "carepost csrf v1"
MAX_FORM_BYTES = 16_384
CHANNEL_NAMES = {"email": "email", "sms": "text"}


def _ws(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def _bad_request(message: str = "This link is not valid.") -> HTMLResponse:
    return HTMLResponse(
        render("done.html", title="Invalid link", heading="Invalid link", message=message),
        status_code=400,
    )


def _token(request: Request, token: str) -> UnsubscribeToken | None:
    try:
        return read_token(_ws(request).keyring, token)
    except BadToken:
        return None


def _actor(request: Request, tok: UnsubscribeToken) -> Actor:
    return Actor(f"contact:{tok.contact_id}", "web", client_network(request))


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The form fields of a small body, urlencoded or multipart/form-data (RFC 8058 section
    3.1: one-click POSTs SHOULD be multipart and MAY be urlencoded). None when unreadable."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart(content_type, body)
    try:
        return parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return None


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]] | None:
    if "\r" in content_type or "\n" in content_type:
        return None
    message = BytesParser(policy=email_policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        return None
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            fields.setdefault(name, []).append(payload.decode("utf-8").strip())
        except UnicodeDecodeError:
            return None
        if len(fields) > 200:
            return None
    return fields


@router.api_route("/u/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    tok = _token(request, token)
    if tok is None:
        return _bad_request()
    return HTMLResponse(
        render(
            "unsubscribe.html",
            title="Unsubscribe",
            token=token,
            topic=tok.topic,
            channel_name=CHANNEL_NAMES[tok.channel],
        )
    )


@router.post("/u/{token}", response_class=HTMLResponse)
async def one_click(request: Request, token: str) -> HTMLResponse:
    tok = _token(request, token)
    if tok is None:
        return _bad_request()
    form = await _form(request)
    if form is None or form.get("List-Unsubscribe") != ["One-Click"]:
        return _bad_request("Expected List-Unsubscribe=One-Click.")
    ws = _ws(request)
    clock = request.app.state.clock
    actor = _actor(request, tok)

    def apply() -> None:
        # A contact that is gone gets nothing anyway: NotFound changes nothing.
        with transaction(ws.engine) as session, contextlib.suppress(service.NotFound):
            service.unsubscribe_topic(
                session,
                contact_id=tok.contact_id,
                channel=tok.channel,
                topic=tok.topic,
                actor=actor,
                clock=clock,
            )

    await run_in_threadpool(apply)
    return HTMLResponse(
        render(
            "done.html",
            title="Unsubscribed",
            heading="You are unsubscribed",
            message=f"You will no longer get {CHANNEL_NAMES[tok.channel]} messages about "
            f"{tok.topic}.",
            token=token,
        )
    )


def _csrf_field(request: Request, cookie: str, token: str) -> str:
    key = _ws(request).keyring.subkey(CSRF_PURPOSE)
    return hmac.new(key, f"{cookie}|{token}".encode(), "sha256").hexdigest()


def _cookie_name(request: Request) -> str:
    # __Host- cookies must be Secure; only DEV_INSECURE (plain http) drops the prefix.
    return "carepost_csrf" if _ws(request).settings.dev_insecure else "__Host-carepost_csrf"


def _preferences(
    request: Request, token: str, tok: UnsubscribeToken, *, saved: bool = False
) -> HTMLResponse:
    ws = _ws(request)
    now = request.app.state.clock()
    # Read-only (no write lock on SQLite): link scanners fetch these pages a lot.
    with read_only(ws.engine) as conn, Session(bind=conn) as session:
        statuses = service.current_topics(session, tok.contact_id, tok.channel, now)
        all_off = service.is_unsubscribed_all(session, tok.contact_id, tok.channel)
    statuses.setdefault(tok.topic, OPTED_IN)
    topics = [(t, s != OPTED_OUT) for t, s in sorted(statuses.items())]
    name = _cookie_name(request)
    cookie = request.cookies.get(name) or secrets.token_urlsafe(32)
    response = HTMLResponse(
        render(
            "preferences.html",
            title="Preferences",
            token=token,
            topics=topics,
            unsubscribed_all=all_off,
            csrf=_csrf_field(request, cookie, token),
            channel_name=CHANNEL_NAMES[tok.channel],
            saved=saved,
        )
    )
    response.set_cookie(
        name,
        cookie,
        max_age=3600,
        path="/",
        secure=not ws.settings.dev_insecure,
        httponly=True,
        samesite="strict",
    )
    return response


@router.api_route("/p/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
def preferences_page(request: Request, token: str) -> Response:
    tok = _token(request, token)
    if tok is None:
        return _bad_request()
    return _preferences(request, token, tok)


@router.post("/p/{token}", response_class=HTMLResponse)
async def preferences_save(request: Request, token: str) -> Response:
    tok = _token(request, token)
    if tok is None:
        return _bad_request()
    form = await _form(request)
    if form is None:
        return _bad_request("The form could not be read.")
    cookie = request.cookies.get(_cookie_name(request), "")
    sent = (form.get("csrf") or [""])[0]
    if not cookie or not hmac.compare_digest(sent, _csrf_field(request, cookie, token)):
        return HTMLResponse(
            render(
                "done.html",
                title="Expired form",
                heading="Please try again",
                message="This form expired or did not come from this site. Nothing changed.",
                token=token,
            ),
            status_code=403,
        )
    shown = set(form.get("shown", []))
    receive = set(form.get("receive", []))
    ws = _ws(request)
    clock = request.app.state.clock
    actor = _actor(request, tok)

    def apply() -> None:
        with transaction(ws.engine) as session:
            current = service.current_topics(session, tok.contact_id, tok.channel, clock())
            for topic in sorted(shown):
                now_status = current.get(topic)
                if topic not in receive and now_status != OPTED_OUT:
                    want = OPTED_OUT
                elif topic in receive and now_status == OPTED_OUT:
                    want = OPTED_IN
                else:
                    continue
                service.set_consent(
                    session,
                    contact_id=tok.contact_id,
                    channel=tok.channel,
                    topic=topic,
                    status=want,
                    source="unsubscribe_link" if want == OPTED_OUT else "form",
                    actor=actor,
                    clock=clock,
                )
            if form.get("unsubscribe_all") == ["yes"]:
                service.unsubscribe_all(
                    session,
                    contact_id=tok.contact_id,
                    channel=tok.channel,
                    actor=actor,
                    clock=clock,
                )

    try:
        await run_in_threadpool(apply)
    except service.ConsentError:
        return _bad_request("The form could not be read.")
    except service.NotFound:
        return _bad_request()
    return _preferences(request, token, tok, saved=True)
