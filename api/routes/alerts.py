"""Alerts: ``GET /alerts``, ``GET /alerts/{id}``, ``POST /alerts/{id}/ack``.

Every alert is served as the alert event of the contract (DESIGN §5) — the same object the
MQTT alert topic carries. Lists are newest first (by ``started_at``) and exclude nothing by
default: pending, firing, acknowledged and resolved alerts are all rows; filter with
``state=firing`` and the like. An acknowledgement is published on
``city/alerts/{district}/{kind}`` like every other state change.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, and_, event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from api.access import allow, check_filter, check_sees, scoped
from api.audit import audit
from api.context import ApiContext, context
from api.keys import Principal
from api.paging import Cursor, Limit, Page, decode_cursor, encode_cursor
from api.problems import Problem
from cityiot.catalogue import DISTRICTS, KINDS
from cityiot.db import Alert, utcnow
from cityiot.sun import CITY_TZ
from rules.events import alert_event, alert_topic, city_time

router = APIRouter(tags=["alerts"])

ACKERS = ("admin", "operator", "field")

# Ids are [A-Za-z0-9_-]; free text may hold anything but NUL (PostgreSQL refuses it).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RULE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
TEXT_PATTERN = r"^[^\x00]*$"

KindFilter = Annotated[str | None, Query(max_length=32, json_schema_extra={"enum": list(KINDS)})]
DistrictFilter = Annotated[
    str | None, Query(max_length=32, json_schema_extra={"enum": list(DISTRICTS)})
]
AlertId = Annotated[str, Path(pattern=ID_PATTERN, description="the alert's id")]
State = Literal["pending", "firing", "acknowledged", "resolved"]
Severity = Literal["critical", "major", "minor", "warning"]

ALERT_EXAMPLE: dict[str, Any] = {
    "id": "4f1c2a9e0b7d4e6f8a1b2c3d4e5f6a7b",
    "rule": "manhole_cover_open",
    "device_id": "mh-0001",
    "kind": "manhole",
    "district": "yicheng",
    "vendor": "acme",
    "severity": "critical",
    "state": "firing",
    "started_at": "2026-11-23T10:00:00+08:00",
    "resolved_at": None,
    "values": {"cover_open": True, "tilt_deg": 31.0},
    "summary": "井盖打开或倾斜（倾角 31°） / Manhole cover open or tilted (31°)",
}


class AlertOut(BaseModel):
    """The alert event (DESIGN §5, contract): the object the MQTT alert topic carries."""

    model_config = ConfigDict(json_schema_extra={"examples": [ALERT_EXAMPLE]})

    id: str
    rule: str
    device_id: str
    kind: str
    district: str
    vendor: str
    severity: Severity
    state: State = Field(description="pending → firing → (acknowledged) → resolved")
    started_at: str = Field(description="RFC 3339, +08:00: when the condition first held")
    resolved_at: str | None = Field(description="RFC 3339, +08:00; null while open")
    values: dict[str, Any] = Field(description="the metrics that triggered it")
    summary: str = Field(description="one line, Chinese / English")


class AckIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "crew 1 on the way"}]}
    )

    note: str = Field(
        "", max_length=1000, pattern=TEXT_PATTERN, description="kept in the audit log"
    )


def audited(sessions: Any, principal: Principal, action: str, resource: str, **detail: Any) -> Any:
    """A session factory (an ``async_sessionmaker`` look-alike) whose sessions add one audit
    entry to whatever they commit.

    For changes made by library code that opens its own transaction: the entry is written
    in that transaction, so it exists exactly when the change does.
    """

    def factory() -> AsyncSession:
        session: AsyncSession = sessions()

        def add_entry(_: Session) -> None:
            audit(session, principal, action, resource, **detail)

        event.listen(session.sync_session, "before_commit", add_entry, once=True)
        return session

    return factory


def check_kind_district(principal: Principal, kind: str | None, district: str | None) -> None:
    """422 for a kind or district that does not exist; 403 for one outside the grant."""
    if kind is not None and kind not in KINDS:
        raise Problem(422, f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if district is not None and district not in DISTRICTS:
        raise Problem(422, f"unknown district {district!r}; use one of {', '.join(DISTRICTS)}")
    check_filter(principal, "kind", kind, principal.kinds)
    check_filter(principal, "district", district, principal.districts)


def time_ordered(
    stmt: Select[Any], time: Any, key: Any, cursor: str | None, *, descending: bool = True
) -> Select[Any]:
    """``stmt`` ordered by (time, key), newest first unless not ``descending``, continuing
    after ``cursor`` (made by :func:`time_cursor`)."""
    if cursor is not None:
        at_text, last = decode_cursor(cursor, 2)
        try:
            at = dt.datetime.fromisoformat(str(at_text))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None or "\x00" in str(last):
            raise Problem(400, "cursor is not one this API gave out; pass next_cursor unchanged")
        if descending:
            stmt = stmt.where(or_(time < at, and_(time == at, key < str(last))))
        else:
            stmt = stmt.where(or_(time > at, and_(time == at, key > str(last))))
    if descending:
        return stmt.order_by(time.desc(), key.desc())
    return stmt.order_by(time.asc(), key.asc())


def time_cursor(at: dt.datetime, key: str) -> list[Any]:
    return [at.isoformat(), key]


def as_city(when: dt.datetime | None) -> dt.datetime | None:
    """A time given by a caller, in UTC; without an offset it is Zhumadian's (+08:00)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=CITY_TZ)
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:
        raise Problem(
            422, f"{when.isoformat()} is out of range; give a time after year 1"
        ) from None


@router.get(
    "/alerts",
    response_model=Page[AlertOut],
    summary="List alerts",
    responses={403: {"description": "a filter outside the key's grant"}},
)
async def list_alerts(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
    state: Annotated[State | None, Query(description="e.g. firing; default: every state")] = None,
    kind: KindFilter = None,
    district: DistrictFilter = None,
    severity: Annotated[Severity | None, Query()] = None,
    rule: Annotated[str | None, Query(pattern=RULE_PATTERN, description="rule id")] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Annotated[
        dt.datetime | None, Query(description="started at or after (RFC 3339; +08:00 if no offset)")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="started before (RFC 3339)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Alerts newest first (by when their condition started), within the key's grant.

    Every state is listed unless ``state`` says otherwise: ``state=firing`` is what needs
    attention now, ``state=pending`` what is waiting out its rule's ``for``.
    """
    check_kind_district(principal, kind, district)
    stmt = scoped(select(Alert), principal, Alert.kind, Alert.district, Alert.vendor)
    for column, value in (
        (Alert.state, state),
        (Alert.kind, kind),
        (Alert.district, district),
        (Alert.severity, severity),
        (Alert.rule, rule),
        (Alert.device_id, device_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    since, until = as_city(since), as_city(until)
    if since is not None:
        stmt = stmt.where(Alert.started_at >= since)
    if until is not None:
        stmt = stmt.where(Alert.started_at < until)
    stmt = time_ordered(stmt, Alert.started_at, Alert.id, cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [alert_event(a) for a in rows],
        "next_cursor": encode_cursor(time_cursor(rows[-1].started_at, rows[-1].id))
        if more and rows
        else None,
    }


async def visible_alert(ctx: ApiContext, principal: Principal, alert_id: str) -> Alert:
    """The alert, or 404; 403 when it lies outside the key's grant."""
    async with ctx.sessions() as session:
        alert = await session.get(Alert, alert_id)
    if alert is None:
        raise Problem(404, f"no alert {alert_id!r}; check the id (GET /api/v1/alerts)")
    check_sees(principal, alert.kind, alert.district, alert.vendor, f"alert {alert_id}")
    return alert


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertOut,
    summary="One alert",
    responses={
        403: {"description": "outside the key's grant"},
        404: {"description": "no such alert"},
    },
)
async def get_alert(
    alert_id: AlertId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> dict[str, Any]:
    """The alert event of one alert."""
    return alert_event(await visible_alert(ctx, principal, alert_id))


def _not_firing(alert: Alert) -> Problem:
    if alert.state == "pending":
        why = "it has not fired yet (its rule's `for` is still running); acknowledge it once firing"
    elif alert.state == "acknowledged":
        why = (
            f"it was acknowledged already by {alert.acknowledged_by or 'someone'} "
            f"at {city_time(alert.acknowledged_at)}"
        )
    else:
        why = f"it resolved at {city_time(alert.resolved_at)}; there is nothing to acknowledge"
    return Problem(
        409,
        f"alert {alert.id} is {alert.state}; only a firing alert can be acknowledged: {why}",
        state=alert.state,
    )


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    summary="Acknowledge a firing alert",
    responses={
        403: {"description": "the key's role may not acknowledge"},
        404: {"description": "no such alert"},
        409: {"description": "the alert is not firing (pending, acknowledged or resolved)"},
    },
)
async def acknowledge(
    alert_id: AlertId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*ACKERS))],
    body: Annotated[AckIn | None, Body()] = None,
) -> dict[str, Any]:
    """firing → acknowledged: someone is on it. Published on the alert topic and audited.

    Acknowledging stops repeated notifications; the alert still resolves by itself when its
    condition clears.
    """
    note = body.note if body is not None else ""
    now = utcnow()
    by = principal.actor[:128]
    async with ctx.sessions() as session, session.begin():
        alert = await session.get(Alert, alert_id)
        if alert is None:
            raise Problem(404, f"no alert {alert_id!r}; check the id (GET /api/v1/alerts)")
        check_sees(principal, alert.kind, alert.district, alert.vendor, f"alert {alert_id}")
        if alert.state != "firing":
            raise _not_firing(alert)
        # Compare-and-set on the state: the rules engine may resolve it at the same moment.
        result = await session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.state == "firing")
            .values(state="acknowledged", acknowledged_at=now, acknowledged_by=by, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(alert)
            raise _not_firing(alert)
        audit(session, principal, "alert.ack", f"alerts/{alert_id}", note=note)
    async with ctx.sessions() as session:
        alert = await session.get(Alert, alert_id)
    assert alert is not None  # alerts are never deleted
    acknowledged = alert_event(alert)
    # Resolved meanwhile: the engine published that, the newer state; do not contradict it.
    if ctx.hub is not None and alert.state == "acknowledged":
        ctx.hub.publish(alert_topic(acknowledged), orjson.dumps(acknowledged))
    return acknowledged
