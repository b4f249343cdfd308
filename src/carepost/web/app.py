"""App factory: `create_app(workspace)`. Security headers on every response (HSTS, no
referrer so tokens in paths never leak onward, no caching, a strict CSP, no framing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from carepost.clock import Clock, system_clock
from carepost.db import read_only
from carepost.web.pages import unsubscribe
from carepost.workspace import Workspace

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


def create_app(workspace: Workspace, *, clock: Clock = system_clock) -> FastAPI:
    app = FastAPI(
        title="carepost",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the public part has no API to describe
    )
    app.state.workspace = workspace
    app.state.clock = clock

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
    return app
