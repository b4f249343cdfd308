"""Who is calling: the dependency every route takes (`Caller`).

A request proves itself with an API key (`Authorization: Bearer cpk_...`; each use is
audited with the key's id, staff/apikeys.authenticate) or with a staff session cookie
(the sign-in pages'), in which case a state-changing method must also carry the
session's CSRF token in `X-CSRF-Token`: a cookie is sent by the browser on its own, a
header is not. Neither means 401."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from carepost.api import ratelimit
from carepost.api.problems import Problem
from carepost.clock import Clock
from carepost.db import transaction
from carepost.staff import apikeys, sessions
from carepost.staff.principal import Principal
from carepost.web.client import client_network
from carepost.web.pages import login
from carepost.workspace import Workspace

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`carepost apikey create`), sent as `Bearer cpk_...`.",
)


@dataclass(frozen=True)
class ApiContext:
    workspace: Workspace
    principal: Principal
    network: str  # the caller's /24 or /48, what audit rows keep
    at: datetime  # the request's time, from the app's (injectable) clock
    clock: Clock

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.workspace.engine) as session:
            yield session


def unauthenticated(detail: str = "an API key or a staff session is required") -> Problem:
    return Problem(401, "not-authenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiContext:
    workspace: Workspace = request.app.state.workspace
    clock: Clock = request.app.state.clock
    at = clock()
    network = client_network(request)
    with transaction(workspace.engine) as session:
        if credentials is not None:
            principal = apikeys.authenticate(
                session, credentials.credentials, network=network, at=at
            )
            if principal is None:
                raise unauthenticated("the API key is not valid")
        else:
            found = login.current(session, request)
            if found is None:
                raise unauthenticated()
            row, _, principal = found
            if request.method not in SAFE_METHODS and not sessions.csrf_ok(
                workspace.keyring, row.id, request.headers.get(CSRF_HEADER, "")
            ):
                raise Problem(403, "csrf", f"a session's {request.method} needs {CSRF_HEADER}")
    limiter: ratelimit.Limiter = request.app.state.limiter
    decision = limiter.hit(principal.api_key_id or principal.actor.id, at.timestamp())
    if not decision.allowed:
        raise Problem(
            429,
            "rate-limited",
            f"too many requests; retry in {decision.retry_after} s",
            headers=ratelimit.headers(decision),
        )
    # On every answer, also those a route builds itself (api/app.py copies them over).
    request.state.ratelimit_headers = ratelimit.headers(decision)
    return ApiContext(workspace, principal, network, at, clock)


Caller = Annotated[ApiContext, Depends(caller)]


def guard(*permissions: str, decided_by_service: str = "") -> dict[str, Any]:
    """Route keyword arguments that refuse a caller lacking `permissions` with a 403
    before the body is read, and name them in the OpenAPI document
    (`x-permissions`), where the role matrix test finds every route's requirement.
    The service function called checks again: this is the route's half of it.

        @router.get("/segments/{id}/count", **guard("segments:read"))

    `decided_by_service` (a note for the document, `x-permission-note`): the route does
    not refuse by itself because the service may allow on another basis that depends on
    the data (a PHI read: `phi:read_recipients` for one's own recipients, a live
    break-glass grant); without such a basis the service refuses naming `permissions`.
    """
    extra: dict[str, Any] = {"x-permissions": list(permissions)}
    if decided_by_service:
        extra["x-permission-note"] = decided_by_service
        return {"openapi_extra": extra}

    def check(ctx: Caller) -> None:
        ctx.principal.require(*permissions)

    return {"dependencies": [Depends(check)], "openapi_extra": extra}
