"""The built-in operations console: static ES modules and CSS served by the API itself.

``router`` answers ``GET /`` with the console's page and ``GET /console/{file}`` with its
assets, read once from ``static/`` at import (a handful of small files; nothing to build).
The console talks to ``/api/v1`` with the API key the user signs in with; these files
need no key, hold no data and name no third-party host.

Every answer carries a strict Content-Security-Policy (only our own origin, no inline
script or style), ``nosniff`` and an ETag; browsers revalidate (``no-cache``) so a new
release is picked up at the next load while unchanged files cost a 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cityiot.api.problems import Problem
from cityiot.domain.catalogue import DISTRICTS, KINDS

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Revalidate every time (ETag → 304): file names carry no version, so nothing may go stale.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the console, in memory with its type and validator."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": CACHE_CONTROL, "ETag": self.etag}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def catalogue() -> dict[str, Any]:
    """Kinds (titles, metrics with units), districts (names): the console's reference data,
    from the same catalogue the ingest validates against."""
    return {
        "kinds": {
            kind.name: {
                "zh": kind.title_zh,
                "en": kind.title_en,
                "metrics": [
                    {"name": m.name, "type": m.type, "unit": m.unit, "description": m.description}
                    for m in kind.metrics
                ],
            }
            for kind in KINDS.values()
        },
        "districts": {d.id: {"zh": d.name_zh, "en": d.name_en} for d in DISTRICTS.values()},
    }


def load_assets(folder: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under ``folder`` by its name, plus ``catalogue.json``."""
    assets = {
        path.name: Asset.of(path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }
    assets["catalogue.json"] = Asset.of(orjson.dumps(catalogue()), CONTENT_TYPES[".json"])
    return assets


def make_router(assets: dict[str, Asset] | None = None) -> APIRouter:
    """The console's routes: ``/`` (the page) and ``/console/{name}`` (its files)."""
    files = load_assets() if assets is None else assets
    page = files["index.html"]
    console = APIRouter(tags=["console"], include_in_schema=False)

    @console.get("/")
    async def index(request: Request) -> Response:
        return page.response(request)

    @console.get("/console/{name}")
    async def asset(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None or name == "index.html":
            raise Problem(404, f"the console has no file {name!r}; open / for the console")
        return found.response(request)

    return console


router = make_router()
