"""Errors as RFC 9457 problem details (``application/problem+json``), each with a ``detail``
that tells the caller what to change."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("cityiot.api")

PROBLEM_JSON = "application/problem+json"
BUSY_RETRY_S = 5  # Retry-After of a 503 for a database busy past its waits

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid request",
    423: "Locked",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class ProblemDoc(BaseModel):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(description="what went wrong and what to change")
    instance: str = Field(description="the path that was asked for")
    errors: list[dict[str, Any]] | None = Field(None, description="each invalid field (422)")


def _doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDoc"}},
        },
    }


# Answers any endpoint under /api/v1 may give, documented once for all.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("a malformed cursor or parameter"),
    401: _doc("no API key or session, or an unknown, revoked or ended one"),
    403: _doc("the role or grant does not allow this, or a session's CSRF token is missing"),
    404: _doc("no such item"),
    422: _doc("invalid parameters or body; each problem is named"),
    429: _doc("the key's rate limit is reached; see Retry-After"),
}


def problem_doc(description: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response of a problem document with ``extra`` properties besides the
    standard ones (a route's own fields, such as the HTTP link's ``rejected``)."""
    properties: dict[str, Any] = {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        **(extra or {}),
    }
    schema = {"type": "object", "properties": properties}
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema}}}


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "body", "header"):
        source, rest = parts[0], parts[1:]
        return f"{source} {'.'.join(rest)}" if rest else source
    return ".".join(parts)


def _locked(exc: sqlalchemy.exc.OperationalError) -> bool:
    """SQLite's "database is locked" (or "busy"): its write lock held past the busy timeout."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in text or "database is busy" in text


class NoNul:
    """Refuse a request whose path or query holds a NUL at the door, for every parameter at
    once: PostgreSQL can neither store nor compare one, and would fail deep inside as a driver
    error. Pure ASGI: a request costs one look at its scope, no task of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", "")
        ):
            answer = problem_response(
                Request(scope), 400, "a parameter contains a NUL character (%00); remove it"
            )
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Route every error the app can raise to a problem document."""

    app.add_middleware(NoNul)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.detail, exc.title, exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"where": _where(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['where']}: {e['message']}" for e in errors[:5])
        return problem_response(request, 422, detail or "the request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint {request.url.path}; the API is listed at /docs"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(request, exc.status_code, detail, headers=headers)

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _database_busy(request: Request, exc: Exception) -> JSONResponse:
        # Every connection of the pool in use past its wait, or SQLite's write lock held
        # past its busy timeout: a passing load, not a fault of the request. Anything else
        # the database says is the platform's to look at (500).
        if isinstance(exc, sqlalchemy.exc.OperationalError) and not _locked(exc):
            return await _crash(request, exc)
        log.warning("event=database_busy path=%s error=%.200s", request.url.path, exc)
        return problem_response(
            request,
            503,
            "the platform's database is busy (every connection in use, or a write holding "
            f"it); send the request again after {BUSY_RETRY_S} s",
            headers={"Retry-After": str(BUSY_RETRY_S)},
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("event=api_error path=%s", request.url.path)
        return problem_response(
            request, 500, "the platform failed to answer; the error is in its log"
        )
