"""The problem answers routes declare in the OpenAPI document (`responses=`), so the
document says what a client may get besides success."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from carepost.api.problems import MEDIA_TYPE


class FieldProblem(BaseModel):
    pointer: str
    detail: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; `errors` lists per-field or per-row problems."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldProblem] | None = None


_WHY = {
    400: "Bad header or parameter (the problem names it)",
    401: "No or invalid API key or session",
    403: "The caller lacks a permission (named), or a session's CSRF token is missing",
    404: "No such resource",
    409: "Conflict (e.g. the same Idempotency-Key still in flight)",
    410: "The contact was crypto-shredded",
    422: "Invalid request body, or an Idempotency-Key reused with another body",
    429: "Rate limit reached; see Retry-After",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these statuses, plus 401, 403, 422 and 429 that every route has."""
    wanted = sorted({401, 403, 404, 422, 429, *statuses})
    return {
        s: {
            "description": _WHY[s],
            "model": ProblemDetails,
            "content": {MEDIA_TYPE: {}},
        }
        for s in wanted
    }
