"""Swagger UI at /api/v1/docs, served from this server with a CSP that lets only this
origin's scripts run, on that page alone; every other path keeps the strict CSP."""

from __future__ import annotations

from pathlib import Path

from api_support import serve
from carepost.workspace import Workspace


def test_docs_are_served_locally_under_their_own_csp(workspace: Workspace, tmp_path: Path) -> None:
    with serve(workspace, tmp_path) as site, site.client() as c:
        page = c.get("/docs")
        init = c.get("/docs/init.js")
        bundle = c.get("/docs/assets/swagger-ui-bundle.js")
        css = c.get("/docs/assets/swagger-ui.css")
        other = c.get("/me")
    assert page.status_code == 200
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert "<script>" not in page.text  # no inline script: CSP needs none
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert '"/api/v1/openapi.json"' in init.text
    assert init.headers["content-type"].startswith("text/javascript")
    assert bundle.status_code == 200
    assert len(bundle.content) > 100_000
    assert css.status_code == 200
    assert "script-src" not in other.headers["content-security-policy"]
