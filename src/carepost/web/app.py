"""App factory: `create_app(workspace)`. Security headers on every response (HSTS, no
referrer so tokens in paths never leak onward, no caching, a strict CSP, no framing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from carepost.api import problems
from carepost.api.app import PREFIX as API_PREFIX
from carepost.api.app import create_api_app
from carepost.clock import Clock, system_clock
from carepost.db import read_only
from carepost.portal.limits import PortalLimits
from carepost.tracking.server import create_tracking_app
from carepost.web.pages import login, portal, unsubscribe
from carepost.workspace import Workspace

if TYPE_CHECKING:
    from carepost.delivery.transport import Transport

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def create_app(
    workspace: Workspace,
    *,
    clock: Clock = system_clock,
    portal_transport: Callable[[], Transport] | None = None,
    portal_limits: PortalLimits | None = None,
) -> FastAPI:
    """`portal_transport` makes the transport a portal code mail goes through (default:
    the workspace's configured one); `portal_limits` the portal's rate limits. The
    tracking endpoints (tracking/endpoints.py) are mounted at /t."""
    tracking = create_tracking_app(workspace, clock=clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await tracking.close()  # writes what was submitted (a mounted app has no lifespan)

    app = FastAPI(
        title="carepost",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the public part has no API to describe
        lifespan=lifespan,
    )
    app.state.tracking = tracking
    app.state.workspace = workspace
    app.state.clock = clock
    app.state.portal_limits = portal_limits or PortalLimits()
    if portal_transport is None:

        def portal_transport() -> Transport:
            from carepost.delivery.factory import transport_for

            return transport_for(workspace)

    app.state.portal_transport = portal_transport

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> JSONResponse:
        try:
            with read_only(workspace.engine) as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # any database failure: unhealthy, without details
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def api_aware_http_error(request: Request, exc: Exception) -> Response:
        # A path under /api/v1 that the mount cannot take (a newline in it: the mount's
        # pattern does not match one) still gets the API's problem document.
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith(API_PREFIX + "/"):
            status = exc.status_code
            return problems.response(
                problems.Problem(status, "not-found" if status == 404 else "error", "no such path"),
                request.url.path,
            )
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, api_aware_http_error)
    app.include_router(unsubscribe.router)
    app.include_router(portal.router)
    app.include_router(login.router)
    app.mount("/t", tracking)
    app.mount(API_PREFIX, create_api_app(workspace, clock=clock))
    return app
