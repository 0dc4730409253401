"""The API's reference pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served from the
API's own origin.

The viewers are vendored (``vendor/``, versions and licences in its README) and served at
``/docs/assets/{name}``; the pages load nothing from another origin and carry a strict
Content-Security-Policy: scripts only from this origin, none inline (Swagger UI starts from
``swagger-init.js``). Styles may be inline, as both viewers set them at run time; ReDoc's
search runs in a worker it makes from a ``blob:``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cityiot.api.console import CONTENT_TYPES, SECURITY_HEADERS, Asset
from cityiot.api.problems import Problem

HERE = Path(__file__).resolve().parent
ASSETS = "/docs/assets"
SPEC_URL = "/openapi.json"
# Only these files are served; the licences stay in the folder for readers of the source.
FILES = {
    "swagger-init.js": HERE / "swagger-init.js",
    "swagger-ui-bundle.js": HERE / "vendor" / "swagger-ui-bundle.js",
    "swagger-ui.css": HERE / "vendor" / "swagger-ui.css",
    "redoc.standalone.js": HERE / "vendor" / "redoc.standalone.js",
}


def _csp(worker: str = "'none'") -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:; connect-src 'self'; font-src 'self'; worker-src {worker}; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


SWAGGER_CSP = _csp()
REDOC_CSP = _csp("'self' blob:")

SWAGGER_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cityiot API</title>
<link rel="icon" href="/console/icon.svg">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{SPEC_URL}"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cityiot API</title>
<link rel="icon" href="/console/icon.svg">
</head>
<body>
<redoc spec-url="{SPEC_URL}"></redoc>
<script src="{ASSETS}/redoc.standalone.js"></script>
</body>
</html>
"""


def _page(html: str, csp: str) -> Response:
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": csp, "Cache-Control": "no-cache"}
    return Response(html, media_type=CONTENT_TYPES[".html"], headers=headers)


def make_router() -> APIRouter:
    files = {
        name: Asset.of(path.read_bytes(), CONTENT_TYPES[path.suffix])
        for name, path in FILES.items()
    }
    docs = APIRouter(tags=["docs"], include_in_schema=False)

    @docs.get("/docs")
    async def swagger() -> Response:
        return _page(SWAGGER_PAGE, SWAGGER_CSP)

    @docs.get("/redoc")
    async def redoc() -> Response:
        return _page(REDOC_PAGE, REDOC_CSP)

    @docs.get(f"{ASSETS}/{{name}}")
    async def asset(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None:
            raise Problem(404, f"the API docs have no file {name!r}; open /docs or /redoc")
        return found.response(request)

    return docs


router = make_router()
