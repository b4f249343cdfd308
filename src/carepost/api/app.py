"""`create_api_app`: the API as its own FastAPI app, mounted at /api/v1 by web/app.py, so
its OpenAPI document (/api/v1/openapi.json) describes the API and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from carepost.api import docs, problems, purpose, ratelimit
from carepost.api.idempotency import HEADER
from carepost.api.routes import (
    audit,
    campaigns,
    consent,
    contacts,
    events,
    evidence,
    journeys,
    me,
    messages,
    segments,
    suppressions,
    templates,
)
from carepost.api.segment_engine import SharedSegments
from carepost.clock import Clock, system_clock
from carepost.workspace import Workspace

PREFIX = "/api/v1"

ROUTERS: tuple[APIRouter, ...] = (
    me.router,
    contacts.router,
    consent.router,
    suppressions.router,
    segments.router,
    templates.router,
    campaigns.router,
    journeys.router,
    events.router,
    evidence.router,
    audit.router,
    messages.router,
)


def create_api_app(workspace: Workspace, *, clock: Clock = system_clock) -> FastAPI:
    api = FastAPI(
        generate_unique_id_function=lambda route: route.name,
        title="carepost API",
        version="1",
        summary="HIPAA-minded patient communications: contacts, consent, segments, "
        "campaigns, journeys, one-off messages, evidence and audit.",
        openapi_url="/openapi.json",
        docs_url=None,  # api/docs.py serves Swagger UI from this server
        redoc_url=None,
    )
    api.state.workspace = workspace
    api.state.clock = clock
    api.state.segments = SharedSegments(workspace, clock)  # built on first use
    api.state.limiter = ratelimit.Limiter(
        workspace.settings.api_rate_per_minute, workspace.settings.api_rate_burst
    )
    problems.install(api)

    @api.middleware("http")
    async def ratelimit_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in getattr(request.state, "ratelimit_headers", {}).items():
            response.headers.setdefault(name, value)
        return response

    for router in ROUTERS:
        api.include_router(router)
    _problems_as_problem_json(api)
    docs.install(api, PREFIX)
    return api


def _contact_link(operation: str, pointer: str, param: str = "contact_id") -> dict[str, Any]:
    return {"operationId": operation, "parameters": {param: f"$response.body#{pointer}"}}


ALWAYS = {
    "400": "Bad request: a header or parameter (named), or a body that is not JSON",
    "401": "No or invalid API key or session",
    "404": "No such resource (or path)",
    "422": "Invalid request",
    "429": "Rate limit reached; see Retry-After",
}
_NEW_CONTACT = "/rows/0/contact_id"
# OpenAPI links: how an answer's ids feed the next call (schemathesis' stateful phase
# follows them; a client generator may too).
_CONTACT_OPERATIONS = (
    "get_contact",
    "get_facts",
    "add_facts",
    "set_consent",
    "consent_history",
    "add_authorization",
    "list_authorizations",
    "delete_contact",
)


def _to_contact(pointer: str) -> dict[str, Any]:
    return {
        "".join(w.title() for w in op.split("_")): _contact_link(op, pointer)
        for op in _CONTACT_OPERATIONS
    }


def _to(param: str, pointer: str, *operations: str) -> dict[str, Any]:
    return {
        "".join(w.title() for w in op.split("_")): _contact_link(op, pointer, param)
        for op in operations
    }


_CAMPAIGN = ("get_campaign", "start_campaign", "pause_campaign", "resume_campaign")
_JOURNEY = ("get_journey", "pause_journey", "resume_journey", "enrol", "journey_report")
_SEGMENT = ("get_segment", "preview_segment", "change_members")

LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/contacts:bulk", "post", "200"): _to_contact(_NEW_CONTACT),
    ("/contacts", "get", "200"): _to_contact("/items/0/id"),
    ("/contacts/{contact_id}/authorizations", "post", "201"): {
        "Revoke": _contact_link("revoke_authorization", "/id", "authorization_id"),
    },
    ("/suppressions", "post", "201"): {
        "Lift": _contact_link("remove_suppression", "/ids/0", "suppression_id"),
    },
    ("/suppressions", "get", "200"): {
        "Lift": _contact_link("remove_suppression", "/items/0/id", "suppression_id"),
    },
    ("/segments/{name}", "put", "200"): _to("name", "/name", *_SEGMENT),
    ("/segments", "get", "200"): _to("name", "/items/0/name", *_SEGMENT),
    ("/templates", "post", "201"): _to("name", "/name", "get_template"),
    ("/templates", "get", "200"): _to("name", "/items/0/name", "get_template"),
    ("/campaigns", "post", "201"): {
        **_to("campaign_id", "/id", *_CAMPAIGN),
        **_to("campaign_id", "/id", "campaign_report"),
    },
    ("/campaigns", "get", "200"): _to("campaign_id", "/items/0/id", *_CAMPAIGN),
    ("/journeys", "post", "201"): _to("name", "/name", *_JOURNEY),
    ("/journeys", "get", "200"): _to("name", "/items/0/name", *_JOURNEY),
    ("/messages", "post", "202"): _to("message_id", "/id", "get_message", "message_evidence"),
}
GUARDED = "The caller lacks a permission named in x-permissions"
IN_FLIGHT = "This Idempotency-Key's first request is still running"


def _problems_as_problem_json(api: FastAPI) -> None:
    """The document says what the API sends: every error answer is
    `application/problem+json` with the ProblemDetails schema (FastAPI would list it
    as application/json, and its own 422 shape, which the API never answers)."""
    make = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        doc = make()
        ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for methods in doc.get("paths", {}).values():
            for op in methods.values():
                answers = op.setdefault("responses", {})
                for status, why in ALWAYS.items():  # any route may answer these
                    answers.setdefault(status, {"description": why})
                if "x-permissions" in op:
                    answers.setdefault("403", {"description": GUARDED})
                if any(p["name"] == HEADER for p in op.get("parameters", [])):
                    answers.setdefault("409", {"description": IN_FLIGHT})
                for param in op.get("parameters", []):
                    if param["in"] == "header" and param["name"] == purpose.HEADER:
                        # Required, one of the vocabulary: FastAPI would say optional
                        # because the dependency answers the 400 itself.
                        param["required"] = True
                        param["schema"] = {"type": "string", "enum": list(purpose.PURPOSES)}
                for status, answer in op.get("responses", {}).items():
                    if status.isdigit() and int(status) >= 400:
                        answer["content"] = {problems.MEDIA_TYPE: {"schema": ref}}
        for (path, method, status), links in LINKS.items():
            doc["paths"][path][method]["responses"][status]["links"] = links
        schemas = doc.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        api.openapi_schema = doc
        return doc

    api.openapi = openapi  # type: ignore[method-assign]
