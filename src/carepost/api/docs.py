"""Interactive docs at /api/v1/docs: Swagger UI served from this server.

FastAPI's default page loads Swagger UI from a CDN with an inline script; the web app's
CSP (`default-src 'none'`) blocks both, a self-hosted install may be offline, and a
third-party CDN would learn who reads the docs. So the assets come from the
`swagger-ui-bundle-v2` package (Swagger UI 5, which reads OpenAPI 3.1; published from
spec-first/swagger_ui_bundle, connexion's maintainers) and the page's script is a file
of ours. Only these responses get a CSP that allows scripts, and only from this origin;
every other path keeps the strict one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>carepost API</title>
<link rel="stylesheet" href="{prefix}/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{prefix}/docs/assets/swagger-ui-bundle.js"></script>
<script src="{prefix}/docs/init.js"></script>
</body>
</html>
"""

_INIT = """window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{prefix}/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: false,
    persistAuthorization: false,
  }});
}});
"""

_NO_BUNDLE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>carepost API</title></head>
<body><p>Swagger UI is not installed (the swagger-ui-bundle-v2 package). The API's
OpenAPI document is at <a href="{prefix}/openapi.json">{prefix}/openapi.json</a>.</p>
</body></html>
"""


def assets_folder() -> Path | None:
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def install(api: FastAPI, prefix: str) -> None:
    """Add /docs, /docs/init.js and /docs/assets/* to `api` (mounted at `prefix`)."""
    folder = assets_folder()
    headers = {"Content-Security-Policy": DOCS_CSP}

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = _PAGE if folder is not None else _NO_BUNDLE
        return HTMLResponse(page.format(prefix=prefix), headers=headers)

    @api.get("/docs/init.js", include_in_schema=False)
    def init() -> Response:
        return Response(_INIT.format(prefix=prefix), media_type="text/javascript", headers=headers)

    if folder is not None:
        api.mount("/docs/assets", StaticFiles(directory=folder), name="docs-assets")
