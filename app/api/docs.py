"""The API's documentation at /docs, working offline: Swagger UI's files come from the swagger-ui-bundle-v2
package (its dist, served here under /docs/swagger-ui/) and our own starter script from app/api/static/,
so the page loads nothing from a CDN. /docs/swagger serves the same page (older links), and the OpenAPI
document itself is at /docs/openapi.json.

The page carries no inline script: Swagger UI is started by static/docs.js, which reads the document's
URL from the page. That lets the Content-Security-Policy of every /docs response allow scripts, styles and
requests from this server only (DOCS_HEADERS)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.datastructures import ResponseHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
STATIC = Path(__file__).parent / "static"
# What Swagger UI needs and nothing more: its script and styles from here (no inline script or style
# element), data: images (its CSS draws icons as data: SVGs), and requests to this server only (the
# document, and "Try it out" calls to the API beside it).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{docs}/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{docs}/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="{docs}/static/docs.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec}"><noscript>The API documentation needs JavaScript; the OpenAPI
document itself is at <a href="{spec}">{spec}</a>.</noscript></div>
<script src="{docs}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{docs}/static/docs.js"></script>
</body>
</html>
"""


class OfflineSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI from this server's own files. Litestar's SwaggerRenderPlugin takes js_url / css_url too,
    but it inlines the document in an inline script (which a strict CSP refuses) and loads its favicon
    from a CDN; this page does neither."""

    def __init__(self, path: str | list[str] = "/swagger") -> None:
        super().__init__(path=path)

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return PAGE.format(
            title=escape(openapi_schema["info"]["title"]),
            docs=DOCS_PATH,
            spec=escape(self.get_openapi_json_route(request)),
        ).encode()

    def receive_router(self, router: Router) -> None:
        """Serve the assets beside the page, under the same router (and so the same headers)."""
        router.register(
            create_static_files_router(
                path="/swagger-ui", directories=[swagger_ui_path], name="docs:swagger-ui"
            )
        )
        router.register(create_static_files_router(path="/static", directories=[STATIC], name="docs:static"))


def docs_router() -> Router:
    """The router Litestar fills with the documentation routes: every response gets DOCS_HEADERS."""
    return Router(
        path=DOCS_PATH,
        route_handlers=[],
        include_in_schema=False,
        response_headers=[ResponseHeader(name=name, value=value) for name, value in DOCS_HEADERS.items()],
    )
