"""The thing models: ``GET /kinds``, ``GET /kinds/{kind}``, ``PUT /kinds/{kind}``.

A kind is served as its kind file's mapping (docs/design.md §4a) with where it came from:
a file shipped with the platform, a file of ``CITYIOT_KINDS_PATH``, or a ``PUT`` here (kept
in the database). A ``PUT`` may add a kind or change one compatibly (add metrics,
attributes or enum values, widen ranges, change titles, units and the report interval);
anything stored data forbids is refused with 409 naming each metric or attribute. The
API's own model takes the change at once; the ingest, rules and other API processes within
``CITYIOT_REGISTRY_REFRESH_S``. A kind a changed file brings in is audit-logged by the API
(:func:`audit_file_changes`), a ``PUT`` by the route.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cityiot.api.access import allow
from cityiot.api.audit import audit, audited
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, decode_cursor, encode_cursor
from cityiot.api.problems import Problem
from cityiot.domain.catalogue import (
    MODEL,
    SHIPPED_KINDS,
    IncompatibleChange,
    Kind,
    ModelError,
    ThingModel,
)
from cityiot.domain.thingmodel import kind_spec
from cityiot.rules.events import city_time
from cityiot.storage.kinds import refresh_kinds, save_kind
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.kinds import KindOverride

router = APIRouter(tags=["kinds"])

Origin = Literal["shipped", "kinds_path", "api"]
# What GET adds to the kind file's mapping; a PUT ignores them, so a GET answer can be put back.
READ_ONLY = ("origin", "file", "updated_at", "updated_by")
# Longest reason kept in the audit entry of a refused PUT.
REASON_CHARS = 2000

KindName = Annotated[
    str, Path(max_length=64, description="the kind's id, also its InfluxDB measurement")
]

_NOISE: dict[str, Any] = {
    "kind": "noise",
    "title": {"zh": "环境噪声", "en": "environmental noise"},
    "report_interval_s": 60,
    "metrics": {
        "laeq_db": {
            "type": "float",
            "unit": "dB(A)",
            "range": [20.0, 140.0],
            "title": {"zh": "等效声级", "en": "equivalent level"},
        },
        "alarm": {"type": "bool", "title": {"zh": "超标报警", "en": "limit alarm"}},
        "period": {
            "type": "enum",
            "values": ["day", "night"],
            "title": {"zh": "时段", "en": "period"},
        },
    },
    "attributes": {
        "limit_db": {"type": "float", "title": {"zh": "限值", "en": "limit"}},
        "zone_class": {
            "type": "str",
            "required": True,
            "title": {"zh": "声环境功能区", "en": "noise zone class"},
        },
    },
}
_EXAMPLE: dict[str, Any] = {
    **_NOISE,
    "origin": "api",
    "file": None,
    "updated_at": "2026-11-23T10:00:00+08:00",
    "updated_by": "key:3f2a1b0c9d8e (test admin)",
}


class Titles(BaseModel):
    zh: str
    en: str


class KindOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    kind: str = Field(description="the id: [a-z][a-z0-9_]{0,31}, also the InfluxDB measurement")
    title: Titles
    report_interval_s: int = Field(description="seconds between a device's reports (default)")
    metrics: dict[str, dict[str, Any]] = Field(
        description="name → {type (float, bool, enum), unit, range (float), values (enum), "
        "title {zh, en}, description}"
    )
    attributes: dict[str, dict[str, Any]] = Field(
        description="registry attributes of this kind: name → {type (str, float, int), "
        "required, title {zh, en}, description}"
    )
    description: str | None = None
    origin: Origin = Field(
        description="shipped: a kind file of the platform; kinds_path: a file of "
        "CITYIOT_KINDS_PATH; api: put through PUT /kinds/{kind}"
    )
    file: str | None = Field(description="the kind file's name; null for a kind put here")
    updated_at: str | None = Field(None, description="when it was put through the API")
    updated_by: str | None = None


def origin_of(kind: Kind) -> tuple[Origin, str | None]:
    """Where the version in force came from, and its file's name."""
    if kind.source == "api":
        return "api", None
    path = FilePath(kind.source)
    return ("shipped" if path.parent == SHIPPED_KINDS else "kinds_path"), path.name


async def _put_by(ctx: ApiContext) -> dict[str, tuple[dt.datetime, str]]:
    """kind → (when, by whom) for the kinds put through the API."""
    stmt = select(KindOverride.kind, KindOverride.updated_at, KindOverride.updated_by)
    async with ctx.sessions() as session:
        return {k: (at, by) for k, at, by in (await session.execute(stmt)).all()}


def _out(kind: Kind, put: tuple[dt.datetime, str] | None) -> dict[str, Any]:
    origin, file = origin_of(kind)
    at, by = put if put is not None and origin == "api" else (None, None)
    return {
        **kind_spec(kind),
        "origin": origin,
        "file": file,
        "updated_at": city_time(at),
        "updated_by": by,
    }


def _visible(principal: Principal) -> list[str]:
    """The kinds in force the key may read, in id order: a department key its granted ones."""
    granted = principal.kinds
    return sorted(n for n in MODEL.kinds if granted is None or n in granted)


def _unknown(kind: str, principal: Principal) -> Problem:
    known = ", ".join(_visible(principal)) or "none"
    if principal.kinds is not None:  # a key learns nothing of kinds outside its grant
        return Problem(404, f"no kind {kind!r} for this key; the kinds it may read are {known}")
    return Problem(
        404, f"no kind {kind!r}; the known kinds are {known} (PUT /api/v1/kinds/{{kind}} adds one)"
    )


@router.get(
    "/kinds",
    response_model=Page[KindOut],
    summary="The kinds of device (thing models)",
)
async def list_kinds(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every kind in force, in id order, as its kind file's mapping, with ``origin``
    (shipped, kinds_path or api) and ``file``. Any key may read them (they are the access
    standard a vendor's devices report against); a department key granted some kinds sees
    those only."""
    names = _visible(principal)
    if cursor is not None:
        (last,) = decode_cursor(cursor, 1)
        names = [n for n in names if n > str(last)]
    page = names[:limit]
    put = await _put_by(ctx)
    return {
        "items": [_out(MODEL.kinds[n], put.get(n)) for n in page],
        "next_cursor": encode_cursor([page[-1]]) if len(names) > limit else None,
    }


@router.get(
    "/kinds/{kind}",
    response_model=KindOut,
    summary="One kind",
    responses={404: {"description": "no such kind; the detail lists the known ones"}},
)
async def get_kind(
    kind: KindName,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> dict[str, Any]:
    """The kind as it is in force now; 404 for a kind outside a department key's grant."""
    found = MODEL.kinds.get(kind)
    if found is None or (principal.kinds is not None and kind not in principal.kinds):
        raise _unknown(kind, principal)
    return _out(found, (await _put_by(ctx)).get(kind))


FILE_CHANGED = "kind.file_changed"
# The actor and role of a change the platform took in from a kind file, not from a key.
SYSTEM = "system"


async def audit_file_changes(
    sessions: Any, before: Mapping[str, Kind], model: ThingModel = MODEL
) -> dict[str, Kind]:
    """Write ``kind.file_changed`` for each kind of ``model`` that came from a changed kind
    file since ``before`` (the kinds then); the kinds now, to pass next time.

    Compared with the model rather than with what a refresh returned: in ``cityiot run``
    the ingest and rules refresh the same model, and whichever is first sees the change. An
    entry equal to the kind's last one is not written again (another API process wrote it).
    """
    now = dict(model.kinds)
    changed = [k for name, k in now.items() if k.source != "api" and before.get(name) != k]
    if not changed:
        return now
    async with sessions() as session, session.begin():
        for kind in changed:
            spec = orjson.loads(orjson.dumps(kind_spec(kind)))  # as the JSON column reads back
            resource = f"kinds/{kind.name}"
            last = await session.scalar(
                select(AuditEntry.detail)
                .where(AuditEntry.action == FILE_CHANGED, AuditEntry.resource == resource)
                .order_by(AuditEntry.id.desc())
                .limit(1)
            )
            if last and last.get("file") == kind.source and last.get("spec") == spec:
                continue
            old = before.get(kind.name)
            session.add(
                AuditEntry(
                    actor=SYSTEM,
                    role=SYSTEM,
                    action=FILE_CHANGED,
                    resource=resource,
                    detail={
                        "file": kind.source,
                        "spec": spec,
                        "replaced": "/".join(x for x in origin_of(old) if x) if old else None,
                    },
                )
            )
    return now


async def _refused(
    ctx: ApiContext, principal: Principal, kind: str, status: int, detail: str, **extra: Any
) -> Problem:
    """The Problem to raise for a refused PUT, after writing it to the audit log."""
    async with ctx.sessions() as session, session.begin():
        audit(
            session,
            principal,
            "kind.put_refused",
            f"kinds/{kind}",
            status=status,
            reason=detail[:REASON_CHARS],
        )
    return Problem(status, detail, **extra)


@router.put(
    "/kinds/{kind}",
    response_model=KindOut,
    summary="Change a kind compatibly, or add one",
    responses={
        409: {"description": "an incompatible change; the detail names each metric and why"},
        422: {"description": "the kind is invalid; the detail names the field and the fix"},
    },
)
async def put_kind(
    kind: KindName,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    body: Annotated[
        dict[str, Any],
        Body(
            description="the kind file's mapping as JSON (kind optional: the path's)",
            openapi_examples={
                "new kind": {
                    "summary": "add the noise kind of docs/design.md §4a",
                    "value": {k: v for k, v in _NOISE.items() if k != "kind"},
                },
                "widen": {
                    "summary": "then widen it: a wider range, an enum value, a metric more",
                    "value": {
                        **{k: v for k, v in _NOISE.items() if k not in ("kind", "metrics")},
                        "metrics": {
                            **_NOISE["metrics"],
                            "laeq_db": {**_NOISE["metrics"]["laeq_db"], "range": [0.0, 150.0]},
                            "period": {
                                **_NOISE["metrics"]["period"],
                                "values": ["day", "evening", "night"],
                            },
                            "lamax_db": {
                                "type": "float",
                                "unit": "dB(A)",
                                "range": [0.0, 150.0],
                                "title": {"zh": "最大声级", "en": "maximum level"},
                            },
                        },
                    },
                },
            },
        ),
    ],
) -> dict[str, Any]:
    """Store the kind (replacing the one in force, or adding one) when the change is
    compatible; this API uses it at once, every stage within ``CITYIOT_REGISTRY_REFRESH_S``.
    Validated exactly like a kind file; a refused change changes nothing. Audited, refused
    ones too (``kind.put``, ``kind.put_refused``)."""
    spec = {k: v for k, v in body.items() if k not in READ_ONLY}
    if "kind" in spec and spec["kind"] != kind:
        raise await _refused(
            ctx,
            principal,
            kind,
            422,
            f"the body's kind {str(spec['kind'])[:64]!r} differs from the path's {kind!r}; "
            "leave kind out of the body or make them equal",
        )
    spec = {"kind": kind, **spec}
    try:
        encoded = orjson.dumps(spec)
    except TypeError:
        raise await _refused(
            ctx, principal, kind, 422, "body: a number in the kind is too large; use smaller ones"
        ) from None
    if b"\\u0000" in encoded:
        raise await _refused(
            ctx, principal, kind, 422, "body: a kind holds no NUL characters (\\u0000); remove them"
        )
    # Judged against the kinds stored now, also those another API process took in.
    await refresh_kinds(ctx.sessions)
    before = MODEL.kinds.get(kind)
    try:
        checked = MODEL.check_change(spec, "body")
    except IncompatibleChange as exc:
        raise await _refused(ctx, principal, kind, 409, str(exc), problems=exc.problems) from None
    except ModelError as exc:
        raise await _refused(ctx, principal, kind, 422, str(exc)) from None
    stored = replace(checked, source="api")  # as every stage reads it back
    replaced = "/".join(x for x in origin_of(before) if x) if before is not None else None
    by = principal.actor[:128]
    spec_stored = kind_spec(stored)
    changes = audited(
        ctx.sessions, principal, "kind.put", f"kinds/{kind}", spec=spec_stored, replaced=replaced
    )
    try:
        await save_kind(changes, stored, by)
    except IncompatibleChange as exc:  # another PUT stored a version this one may not replace
        raise await _refused(ctx, principal, kind, 409, str(exc), problems=exc.problems) from None
    except IntegrityError:  # another PUT added the same new kind in the same instant
        raise await _refused(
            ctx,
            principal,
            kind,
            409,
            f"kind {kind} was put by someone else at the same moment; retry",
        ) from None
    await refresh_kinds(ctx.sessions)
    return _out(stored, (await _put_by(ctx)).get(kind))
