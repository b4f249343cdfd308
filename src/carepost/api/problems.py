"""RFC 9457 problem details: every error the API answers is `application/problem+json`.

Errors never echo a submitted value: a field is named by its JSON pointer and what is
wrong with it, because the value may be PHI (a name, a birth date, a lab result)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from carepost.staff.principal import PermissionDenied

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://carepost.dev/problems/"  # a name space, never fetched by carepost

_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class Problem(Exception):
    """Raised by a route (or a dependency) to answer a problem. `kind` is the last part of
    the type URI (`not-found`, `idempotency-conflict`...); `errors` lists per-field or
    per-row problems as {"pointer": "/rows/3/email", "detail": "..."}; `headers` is for
    `Retry-After` and `WWW-Authenticate`."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class _AsciiJSON(JSONResponse):
    """A problem may name a key the client sent (a journey definition's unknown key),
    which may hold a lone surrogate that UTF-8 cannot carry; \\u escapes can."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def response(problem: Problem, instance: str) -> JSONResponse:
    return _AsciiJSON(
        problem.body(instance),
        status_code=problem.status,
        headers=problem.headers,
        media_type=MEDIA_TYPE,
    )


def _pointer(loc: Sequence[Any]) -> str:
    # FastAPI locations start with where the value came from: body, query, path, header.
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts)


def validation_problem(exc: RequestValidationError) -> Problem:
    errors = [
        {"pointer": _pointer(e.get("loc", ())), "detail": str(e.get("msg", "invalid"))}
        for e in exc.errors()  # "input" and "ctx" are left out: they may carry PHI
    ]
    return Problem(422, "invalid-request", "the request has invalid fields", errors=errors)


def _service_errors() -> dict[type[Exception], tuple[int, str]]:
    """The feature packages' own error types -> (status, kind). Their messages name the
    field or id at fault and never a value (each package's rule), so the detail is the
    exception's text. Imported here, lazily, so the packages do not import the API."""
    from carepost.consent.authorization import AuthorizationInvalid
    from carepost.consent.service import ConsentError
    from carepost.consent.service import NotFound as ConsentNotFound
    from carepost.contacts.phi import ContactNotFound, ContactShredded, PurposeRequired
    from carepost.contacts.service import NoSuchContact as NoContact
    from carepost.contacts.upsert import RowsInvalid
    from carepost.delivery.evidence import NoSuchMessage
    from carepost.journeys.events import EventError, NoSuchContact

    return {
        ContactNotFound: (404, "not-found"),
        ConsentNotFound: (404, "not-found"),
        NoSuchMessage: (404, "not-found"),
        NoSuchContact: (404, "not-found"),
        NoContact: (404, "not-found"),
        RowsInvalid: (422, "invalid-rows"),
        ContactShredded: (410, "shredded"),
        PurposeRequired: (400, "purpose-required"),
        ConsentError: (422, "invalid-request"),
        AuthorizationInvalid: (422, "invalid-authorization"),
        EventError: (422, "invalid-request"),
    }


def _allowed(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a problem document."""
    table = _service_errors()

    async def on_package_error(request: Request, exc: Exception) -> JSONResponse:
        status, kind = next(table[t] for t in type(exc).__mro__ if t in table)
        extra: dict[str, Any] = {}
        as_dict = getattr(exc, "as_dict", None)
        if callable(as_dict):
            extra = dict(as_dict())  # e.g. an authorization's missing element names
        return response(Problem(status, kind, str(exc), **extra), request.url.path)

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return response(validation_problem(exc), request.url.path)

    async def on_denied(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PermissionDenied)
        problem = Problem(
            403,
            "permission-denied",
            f"{exc.permission} is required",
            permission=exc.permission,
        )
        return response(problem, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        kind = _TITLES.get(status, "error").lower().replace(" ", "-")
        headers = dict(exc.headers or {})
        if status == 405:
            # Starlette names only the first matching route's methods; a path has one
            # route per method here, so gather them all.
            headers["Allow"] = ", ".join(_allowed(request))
        problem = Problem(status, kind, _TITLES.get(status, "error"), headers=headers)
        return response(problem, request.url.path)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text may hold anything; the log gets its type only (app.py).
        return response(Problem(500, "internal-error", "the server failed"), request.url.path)

    # The feature packages' errors (api/service_errors.py: one table, one handler each).
    from carepost.api.service_errors import TABLE

    for error_type, to_problem in TABLE:

        async def on_mapped_error(
            request: Request, exc: Exception, to_problem: Any = to_problem
        ) -> JSONResponse:
            return response(to_problem(exc), request.url.path)

        app.add_exception_handler(error_type, on_mapped_error)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(PermissionDenied, on_denied)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
    for exc_type in table:
        app.add_exception_handler(exc_type, on_package_error)
