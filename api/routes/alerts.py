"""Alerts: ``GET /alerts``, ``GET /alerts/{id}``, ``POST /alerts/{id}/ack``.

Every alert is served as the alert event of the contract (docs/design.md §5) — the same object the
MQTT alert topic carries. Lists are newest first (by ``started_at``) and exclude nothing by
default: pending, firing, acknowledged and resolved alerts are all rows; filter with
``state=firing`` and the like. An acknowledgement is published on
``city/alerts/{district}/{kind}`` like every other state change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from cityiot.api.access import allow, check_filter, check_sees, scoped
from cityiot.api.audit import audit
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.params import TEXT, Instant, city_instant
from cityiot.api.problems import Problem
from cityiot.api.teams import alert_teams, require_teams, routing
from cityiot.domain.catalogue import DISTRICTS, KINDS
from cityiot.rules.events import alert_event, alert_topic, city_time
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["alerts"])

ACKERS = ("admin", "operator", "field")

# Ids are [A-Za-z0-9_-]; free text follows api.params.TEXT.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RULE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

# No enum in the schema: kinds and districts are data and change while the API runs.
KindFilter = Annotated[
    str | None,
    Query(max_length=32, description="a kind id (see GET /api/v1/kinds)", examples=["manhole"]),
]
DistrictFilter = Annotated[
    str | None,
    Query(
        max_length=32,
        description="a district id of the city (its city file; the console's catalogue)",
        examples=["yicheng"],
    ),
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
    """The alert event (docs/design.md §5, contract): the object the MQTT alert topic carries."""

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

    note: str = Field("", max_length=1000, pattern=TEXT, description="kept in the audit log")


def check_kind_district(principal: Principal, kind: str | None, district: str | None) -> None:
    """422 for a kind or district that does not exist; 403 for one outside the grant."""
    if kind is not None and kind not in KINDS:
        raise Problem(422, f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if district is not None and district not in DISTRICTS:
        raise Problem(422, f"unknown district {district!r}; use one of {', '.join(DISTRICTS)}")
    check_filter(principal, "kind", kind, principal.kinds)
    check_filter(principal, "district", district, principal.districts)


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
        Instant | None, Query(description="started at or after (RFC 3339; +08:00 if no offset)")
    ] = None,
    until: Annotated[Instant | None, Query(description="started before (RFC 3339)")] = None,
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
    since, until = city_instant(since, "since"), city_instant(until, "until")
    if since is not None:
        stmt = stmt.where(Alert.started_at >= since)
    if until is not None:
        stmt = stmt.where(Alert.started_at < until)
    stmt = after(stmt, [Alert.started_at, Alert.id], cursor, descending=True).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    return page_of(rows, limit, key=lambda a: [a.started_at, a.id], convert=alert_event)


def missing_alert(alert_id: str) -> str:
    """The 404 detail for an alert that does not exist and for one the key may not see."""
    return (
        f"no alert {alert_id!r} among the alerts this key may see; "
        "check the id (GET /api/v1/alerts)"
    )


async def visible_alert(ctx: ApiContext, principal: Principal, alert_id: str) -> Alert:
    """The alert, or 404 when it does not exist or lies outside the key's grant (alike)."""
    async with ctx.sessions() as session:
        alert = await session.get(Alert, alert_id)
    if alert is None:
        raise Problem(404, missing_alert(alert_id))
    check_sees(principal, alert.kind, alert.district, alert.vendor, missing_alert(alert_id))
    return alert


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertOut,
    summary="One alert",
    responses={404: {"description": "no such alert, or one outside the key's grant (alike)"}},
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
        403: {
            "description": "the key's role may not acknowledge, or (field keys) the alert "
            "is routed to another team"
        },
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
    condition clears. A field key acknowledges the alerts routed to its teams only.
    """
    note = body.note if body is not None else ""
    now = utcnow()
    by = principal.actor[:128]
    require_teams(principal)
    router = routing(ctx) if principal.team_bound else None
    async with ctx.sessions() as session, session.begin():
        alert = await session.get(Alert, alert_id)
        if alert is None:
            raise Problem(404, missing_alert(alert_id))
        check_sees(principal, alert.kind, alert.district, alert.vendor, missing_alert(alert_id))
        if router is not None:
            teams = alert_teams(router, alert)
            if not principal.acts_for(teams):
                raise Problem(
                    403,
                    f"alert {alert_id} is routed to team {', '.join(sorted(teams)) or 'none'}; "
                    f"this key acts for {', '.join(sorted(principal.teams or ()))} only",
                )
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
