"""Work orders for field teams: ``GET /workorders``, ``GET /workorders/{id}``,
``GET /workorders/{id}/alerts`` and ``POST /workorders/{id}/{accept,on_site,resolve,close}``.

A firing alert opens a work order for the team its route names, or joins the open order of
its group when the route groups work orders (``workorder_group_by``); the team moves it
``dispatched → accepted → on_site → resolved → closed``, each step stamped with its time
(the SLA clocks: on site by ``verify_due_at``, closed by ``close_due_at``). Each answer
carries its device's ``address``, ``lat`` and ``lon`` from the registry, for the team on the
road.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from cityiot.api.access import allow, check_filter, check_sees, scoped
from cityiot.api.audit import audited
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.params import TEXT
from cityiot.api.problems import Problem
from cityiot.api.routes.alerts import (
    ID_PATTERN,
    AlertOut,
    DistrictFilter,
    KindFilter,
    check_kind_district,
)
from cityiot.api.teams import require_teams, routing, team_titles
from cityiot.rules.events import alert_event, city_time, wall_clock
from cityiot.rules.workorders import TRANSITIONS, IllegalTransition, WorkOrderNotFound, transition
from cityiot.storage.registry import Place, device_places
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.workorders import WorkOrder, WorkOrderAlert

router = APIRouter(tags=["workorders"])

READERS = ("admin", "operator", "field", "department")
MOVERS = ("admin", "operator", "field")

WorkOrderId = Annotated[str, Path(pattern=ID_PATTERN, description="the work order's id")]
State = Literal["dispatched", "accepted", "on_site", "resolved", "closed"]

_EXAMPLE: dict[str, Any] = {
    "id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
    "alert_id": "4f1c2a9e0b7d4e6f8a1b2c3d4e5f6a7b",
    "team": "yicheng-roads",
    "state": "accepted",
    "device_id": "mh-0001",
    "kind": "manhole",
    "district": "yicheng",
    "address": "驿城区解放路 1 号",
    "lat": 32.98,
    "lon": 114.02,
    "severity": "critical",
    "title": "井盖打开或倾斜（倾角 31°） / Manhole cover open or tilted (31°)",
    "alert_count": 1,
    "assignee": "crew 1",
    "note": "2026-11-23T10:02:11+08:00 accept by crew 1: on our way",
    "created_at": "2026-11-23T10:00:05+08:00",
    "accepted_at": "2026-11-23T10:02:11+08:00",
    "on_site_at": None,
    "resolved_at": None,
    "closed_at": None,
    "verify_due_at": "2026-11-23T10:30:05+08:00",
    "close_due_at": "2026-11-23T14:00:05+08:00",
    "updated_at": "2026-11-23T10:02:11+08:00",
}


class WorkOrderOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    alert_id: str
    team: str
    state: State
    device_id: str
    kind: str
    district: str
    address: str | None = Field(
        None, description="the device's street address (registry); null for an unknown device"
    )
    lat: float | None = Field(None, description="the device's latitude (WGS-84)")
    lon: float | None = Field(None, description="the device's longitude (WGS-84)")
    severity: str
    title: str
    alert_count: int = Field(
        1,
        description="alerts this order gathered: 1, or more when the route groups work orders "
        "(workorder_group_by); alert_id is the first",
    )
    assignee: str | None = Field(description="who accepted it")
    note: str = Field(description="journal: one line per step with who and their note")
    created_at: str = Field(description="dispatched at (RFC 3339, +08:00)")
    accepted_at: str | None
    on_site_at: str | None
    resolved_at: str | None
    closed_at: str | None
    verify_due_at: str = Field(description="SLA: on site by")
    close_due_at: str = Field(description="SLA: closed by")
    updated_at: str


class StepIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "cover replaced, road safe"}]}
    )

    note: str = Field(
        "", max_length=1000, pattern=TEXT, description="added to the work order's journal"
    )


def work_order_out(order: WorkOrder, place: Place | None) -> dict[str, Any]:
    return {
        "id": order.id,
        "alert_id": order.alert_id,
        "team": order.team,
        "state": order.state,
        "device_id": order.device_id,
        "kind": order.kind,
        "district": order.district,
        "address": place.address if place else None,
        "lat": place.lat if place else None,
        "lon": place.lon if place else None,
        "severity": order.severity,
        "title": order.title,
        "alert_count": order.alert_count,
        "assignee": order.assignee,
        "note": order.note,
        "created_at": city_time(order.created_at),
        "accepted_at": city_time(order.accepted_at),
        "on_site_at": city_time(order.on_site_at),
        "resolved_at": city_time(order.resolved_at),
        "closed_at": city_time(order.closed_at),
        "verify_due_at": city_time(order.verify_due_at),
        "close_due_at": city_time(order.close_due_at),
        "updated_at": city_time(order.updated_at),
    }


class TeamTitle(BaseModel):
    zh: str
    en: str


class TeamOut(BaseModel):
    id: str = Field(description="the team as the routing file and work orders name it")
    title: TeamTitle | None = Field(description="its name for people; null when none is given")


class Teams(BaseModel):
    items: list[TeamOut]


@router.get(
    "/teams",
    response_model=Teams,
    summary="The field teams that take work orders, with their titles",
    responses={403: {"description": "a vendor key"}},
)
async def list_teams(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
) -> dict[str, Any]:
    """Every team a receiver of the routing file names, in id order, with the ``title`` the
    receiver gives it (``title: {zh, en}`` in routing.yaml)."""
    titles = team_titles(routing(ctx))
    return {"items": [{"id": team, "title": title} for team, title in titles.items()]}


@router.get(
    "/workorders",
    response_model=Page[WorkOrderOut],
    summary="List work orders",
    responses={
        403: {
            "description": "a filter outside the key's grant or teams, a field key without a "
            "team, or a vendor key"
        }
    },
)
async def list_workorders(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
    team: Annotated[
        str | None, Query(pattern=r"^[^\x00-\x1f]{1,128}$", description="the team's name")
    ] = None,
    state: Annotated[State | None, Query()] = None,
    district: DistrictFilter = None,
    kind: KindFilter = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Work orders in dispatch order, oldest first: the order a team works through its
    queue (``team=…&state=dispatched`` is a team's inbox). A field key sees its teams' only."""
    check_kind_district(principal, kind, district)
    stmt = scoped(select(WorkOrder), principal, WorkOrder.kind, WorkOrder.district, None)
    if principal.team_bound:
        require_teams(principal)
        check_filter(principal, "team", team, principal.teams)
        stmt = stmt.where(WorkOrder.team.in_(sorted(principal.teams or ())))
    for column, value in (
        (WorkOrder.team, team),
        (WorkOrder.state, state),
        (WorkOrder.district, district),
        (WorkOrder.kind, kind),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    stmt = after(stmt, [WorkOrder.created_at, WorkOrder.id], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    places = await device_places(ctx.sessions, (o.device_id for o in rows[:limit]))
    return page_of(
        rows,
        limit,
        key=lambda o: [o.created_at, o.id],
        convert=lambda o: work_order_out(o, places.get(o.device_id)),
    )


async def _with_place(ctx: ApiContext, order: WorkOrder) -> dict[str, Any]:
    places = await device_places(ctx.sessions, [order.device_id])
    return work_order_out(order, places.get(order.device_id))


async def _visible(ctx: ApiContext, principal: Principal, work_order_id: str) -> WorkOrder:
    """The work order, or 404 (also for another team's, to a field key)."""
    require_teams(principal)
    async with ctx.sessions() as session:
        order = await session.get(WorkOrder, work_order_id)
    if order is None or not principal.acts_for([order.team]):
        raise Problem(
            404, f"no work order {work_order_id!r}; check the id (GET /api/v1/workorders)"
        )
    check_sees(
        principal,
        order.kind,
        order.district,
        "",
        f"no work order {work_order_id!r}; check the id (GET /api/v1/workorders)",
    )
    return order


@router.get(
    "/workorders/{work_order_id}",
    response_model=WorkOrderOut,
    summary="One work order",
    responses={
        403: {"description": "a vendor key"},
        404: {"description": "no such work order, or one outside the key's grant (alike)"},
    },
)
async def get_workorder(
    work_order_id: WorkOrderId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
) -> dict[str, Any]:
    """One work order with its SLA clocks and journal."""
    return await _with_place(ctx, await _visible(ctx, principal, work_order_id))


@router.get(
    "/workorders/{work_order_id}/alerts",
    response_model=Page[AlertOut],
    summary="The alerts a work order gathers",
    responses={
        403: {"description": "a vendor key"},
        404: {"description": "no such work order, or one outside the key's grant (alike)"},
    },
)
async def list_workorder_alerts(
    work_order_id: WorkOrderId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The alerts of one work order, oldest first (by when their condition started), each
    as ``GET /alerts`` serves it: the alert that opened it (``alert_id``) and, when its route
    groups work orders, every alert that joined it. Readable by whoever may read the order;
    alerts outside the key's grant are left out, as in ``GET /alerts``."""
    order = await _visible(ctx, principal, work_order_id)
    joined = select(WorkOrderAlert.alert_id).where(WorkOrderAlert.work_order_id == order.id)
    stmt = scoped(select(Alert), principal, Alert.kind, Alert.district, Alert.vendor).where(
        or_(Alert.id == order.alert_id, Alert.id.in_(joined))
    )
    stmt = after(stmt, [Alert.started_at, Alert.id], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    return page_of(rows, limit, key=lambda a: [a.started_at, a.id], convert=alert_event)


def _step(action: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def step(
        work_order_id: WorkOrderId,
        ctx: Annotated[ApiContext, Depends(context)],
        principal: Annotated[Principal, Depends(allow(*MOVERS))],
        body: Annotated[StepIn | None, Body()] = None,
    ) -> dict[str, Any]:
        note = body.note if body is not None else ""
        by = (principal.name or principal.actor)[:128]
        await _visible(ctx, principal, work_order_id)  # a field key moves its teams' only
        try:
            order = await transition(
                audited(
                    ctx.sessions,
                    principal,
                    f"workorder.{action}",
                    f"workorders/{work_order_id}",
                    note=note,
                ),
                work_order_id,
                action,
                wall_clock,
                by=by,
                note=note or None,
            )
        except WorkOrderNotFound:
            raise Problem(
                404, f"no work order {work_order_id!r}; check the id (GET /api/v1/workorders)"
            ) from None
        except IllegalTransition as exc:
            raise Problem(409, str(exc), state=exc.state, allowed=list(exc.allowed)) from None
        return await _with_place(ctx, order)

    step.__name__ = f"workorder_{action}"
    step.__doc__ = (
        f"{TRANSITIONS[action].source} → {TRANSITIONS[action].target}; stamps "
        f"``{TRANSITIONS[action].stamp}``, records who did it and the note. Audited."
    )
    return step


for _action, _summary in (
    ("accept", "Accept a dispatched work order"),
    ("on_site", "Report the team on site (verification)"),
    ("resolve", "Report the fault fixed"),
    ("close", "Close a resolved work order"),
):
    router.add_api_route(
        f"/workorders/{{work_order_id}}/{_action}",
        _step(_action),
        methods=["POST"],
        response_model=WorkOrderOut,
        summary=_summary,
        responses={
            403: {"description": "the key's role may not move work orders"},
            404: {"description": "no such work order, or another team's (field keys)"},
            409: {"description": "the work order's state does not allow this step"},
        },
    )
