"""App factory: `create_app(workspace)`. Security headers on every response (HSTS, no
referrer so tokens in paths never leak onward, no caching, a strict CSP, no framing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

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

    app.include_router(unsubscribe.router)
    app.include_router(portal.router)
    app.include_router(login.router)
    app.mount("/t", tracking)
    return app
