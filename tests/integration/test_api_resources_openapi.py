"""The resource routes in the OpenAPI document: every operation names its permissions
(`x-permissions`, what the role matrix reads), and the document builds with the
generic page models."""

from __future__ import annotations

from pathlib import Path

from api_support import serve
from carepost.workspace import Workspace

EXPECTED = {
    ("get", "/segments"): ["segments:read"],
    ("post", "/segments/count"): ["segments:read"],
    ("put", "/segments/{name}"): ["segments:write"],
    ("get", "/segments/{name}"): ["segments:read"],
    ("post", "/segments/{name}/preview"): ["segments:read", "phi:read"],
    ("post", "/segments/{name}/members"): ["segments:write"],
    ("get", "/templates"): ["templates:read"],
    ("post", "/templates"): ["templates:write"],
    ("get", "/templates/{name}"): ["templates:read"],
    ("post", "/templates/check"): ["templates:read"],
    ("post", "/campaigns"): ["campaigns:write"],
    ("get", "/campaigns"): ["campaigns:read"],
    ("get", "/campaigns/{campaign_id}"): ["campaigns:read"],
    ("post", "/campaigns/{campaign_id}/start"): ["campaigns:write"],
    ("post", "/campaigns/{campaign_id}/pause"): ["campaigns:write"],
    ("post", "/campaigns/{campaign_id}/resume"): ["campaigns:write"],
    ("get", "/campaigns/{campaign_id}/report"): ["reports:read"],
    ("get", "/journeys"): ["journeys:read"],
    ("post", "/journeys"): ["journeys:write"],
    ("get", "/journeys/{name}"): ["journeys:read"],
    ("post", "/journeys/{name}/pause"): ["journeys:write"],
    ("post", "/journeys/{name}/resume"): ["journeys:write"],
    ("post", "/journeys/{name}/enrolments"): ["journeys:write"],
    ("get", "/journeys/{name}/report"): ["reports:read"],
}


def test_every_resource_operation_names_its_permissions(
    workspace: Workspace, tmp_path: Path
) -> None:
    with serve(workspace, tmp_path) as site, site.client() as c:
        doc = c.get("/openapi.json").json()
    found = {
        (method, path): op.get("x-permissions")
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if path.split("/")[1] in ("segments", "templates", "campaigns", "journeys")
    }
    assert found == EXPECTED
    page = doc["components"]["schemas"]["Page_SegmentOut_"]
    assert set(page["properties"]) == {"items", "next_cursor"}
