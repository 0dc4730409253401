"""The built-in operations console: static ES modules and CSS served by the API itself.

:func:`make_router` answers ``GET /`` with the console's page and ``GET /console/{file}``
with its assets, read once from ``static/`` (a handful of small files; nothing to build).
``/console/catalogue.json`` is the console's reference data (kinds, metrics, attributes,
the city and its districts, with their titles), built from the live thing model and built
again whenever the model's generation moves, so a kind changed while the platform runs
reaches the console at its next look; it also tells the console how often to look
(``CITYIOT_REGISTRY_REFRESH_S``). The console talks to ``/api/v1`` with the API key the
user signs in with; these files need no key, hold no device data and name no third-party
host.

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
from cityiot.domain.catalogue import MODEL, Attribute, Kind, Metric, ThingModel

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


CATALOGUE = "catalogue.json"
# The console looks again at most this often, however short the registry's refresh.
MIN_REFRESH_S = 1.0
DEFAULT_REFRESH_S = 2.0  # CITYIOT_REGISTRY_REFRESH_S's default


def _titles(zh: str, en: str) -> dict[str, str]:
    return {"zh": zh, "en": en}


def _metric(metric: Metric) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": metric.name,
        "type": metric.type,
        "unit": metric.unit,
        "title": _titles(metric.title_zh, metric.title_en),
        "description": metric.description,
    }
    if metric.type == "float":
        out["range"] = [metric.low, metric.high]
    if metric.type == "enum":
        out["values"] = list(metric.values)
    return out


def _attribute(attribute: Attribute) -> dict[str, Any]:
    return {
        "name": attribute.name,
        "type": attribute.type.__name__,
        "required": attribute.required,
        "title": _titles(attribute.title_zh, attribute.title_en),
        "description": attribute.description,
    }


def _kind(kind: Kind) -> dict[str, Any]:
    return {
        "title": _titles(kind.title_zh, kind.title_en),
        "description": kind.description,
        "report_interval_s": kind.report_interval_s,
        "metrics": [_metric(m) for m in kind.metrics],
        "attributes": [_attribute(a) for a in kind.attributes],
    }


def catalogue(model: ThingModel = MODEL, refresh_s: float = DEFAULT_REFRESH_S) -> dict[str, Any]:
    """The console's reference data, from the thing model in force: per kind its titles,
    report interval, metrics (type, unit, titles, range or values) and attributes; the city
    (names, time zone, centre, the districts' boundaries when the city file has them, as
    GeoJSON) and its districts' names. The console shows these titles,
    never the raw names, and looks again every ``refresh_s`` (at least a second)."""
    city = model.city
    return {
        "refresh_s": max(MIN_REFRESH_S, refresh_s),
        "city": {
            "name": _titles(city.name_zh, city.name_en),
            "timezone": city.timezone,
            "center": [city.lat, city.lon],
            "boundaries": city.boundaries,
        },
        "districts": {d.id: _titles(d.name_zh, d.name_en) for d in model.districts.values()},
        "kinds": {name: _kind(kind) for name, kind in model.kinds.items()},
    }


class ReferenceData:
    """``catalogue.json`` as an :class:`Asset`, built again when the model's generation moves.

    Its ETag is the body's hash: it changes with every change the console can see, and
    API processes that hold the same model answer the same tag."""

    def __init__(self, model: ThingModel = MODEL, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.model = model
        self.refresh_s = refresh_s  # CITYIOT_REGISTRY_REFRESH_S: a change reaches it that soon
        self._built: tuple[int, Asset] | None = None

    def asset(self) -> Asset:
        generation = self.model.generation()
        if self._built is None or self._built[0] != generation:
            body = orjson.dumps(catalogue(self.model, self.refresh_s))
            self._built = (generation, Asset.of(body, CONTENT_TYPES[".json"]))
        return self._built[1]


def load_assets(folder: Path = STATIC) -> dict[str, Asset]:
    """Every servable file in ``folder`` by its name, and in its ``vendor/`` folder (the
    built files of the libraries the console uses, README there) as ``vendor/{name}``."""
    found = {}
    for prefix, where in (("", folder), ("vendor/", folder / "vendor")):
        if not where.is_dir():
            continue
        for path in sorted(where.iterdir()):
            if path.is_file() and path.suffix in CONTENT_TYPES:
                found[prefix + path.name] = Asset.of(path.read_bytes(), CONTENT_TYPES[path.suffix])
    return found


def make_router(
    assets: dict[str, Asset] | None = None, reference: ReferenceData | None = None
) -> APIRouter:
    """The console's routes: ``/`` (the page) and ``/console/{name}`` (its files and the
    live ``catalogue.json``)."""
    files = load_assets() if assets is None else assets
    live = ReferenceData() if reference is None else reference
    page = files["index.html"]
    console = APIRouter(tags=["console"], include_in_schema=False)

    @console.get("/")
    async def index(request: Request) -> Response:
        return page.response(request)

    @console.get("/console/{name:path}")
    async def asset(name: str, request: Request) -> Response:
        if name == CATALOGUE:
            return live.asset().response(request)
        found = files.get(name)
        if found is None or name == "index.html":
            raise Problem(404, f"the console has no file {name!r}; open / for the console")
        return found.response(request)

    return console
