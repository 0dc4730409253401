"""The city at a glance: devices online by kind, the lighting rate, open alerts, SLA KPIs.

Everything is counted in SQL (registry, latest-value table, alerts, work orders) and only
over what the key may see: a department key gets its granted kinds and districts only. The
kinds come from the model (docs/design.md §4a): the lights of the lighting rate are the
devices of every kind with a bool metric ``power_on``.

Devices are read from the counts the database keeps (:mod:`cityiot.storage.device_counts`)
and open alerts are counted per request: both are exact when answered. The lighting tally
and the SLA KPIs scan every light and every work order of 30 days: where the key sees
``COUNTED_ABOVE_DEVICES`` devices or more (:mod:`cityiot.api.context`) they are counted at
most every ``COUNTED_MAX_AGE_S`` seconds per grant and served meanwhile
(:class:`cityiot.api.counted.Counted`); below, at every request.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from cityiot.api.access import allow, scoped
from cityiot.api.context import COUNTED_ABOVE_DEVICES, ApiContext, context
from cityiot.api.keys import Principal
from cityiot.domain.catalogue import KINDS
from cityiot.domain.sun import CITY_TZ, is_dark, sun_times
from cityiot.rules.events import SEVERITIES, Clock, city_time, wall_clock
from cityiot.rules.workorders import kpis
from cityiot.storage.device_counts import counts
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.registry import Device, LatestReading

router = APIRouter(tags=["stats"])

KPI_PERIOD = dt.timedelta(days=30)

RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "vendor keys do not see city statistics"},
}


class DeviceCounts(BaseModel):
    total: int = Field(description="registered and not decommissioned")
    online: int
    offline: int
    unknown: int = Field(description="never heard from since registration")


class Lighting(BaseModel):
    """Lighting rate = lights on / lights that should be on, at night only.

    The lights are the devices of every kind that has a bool metric ``power_on`` (the
    shipped streetlights, and any kind an operator adds with one). At night (the sun below
    the horizon at the city's centre) every online light should be on: ``should_be_on``
    counts them, ``on`` those whose latest ``power_on`` is true, and ``rate`` = on /
    should_be_on (null when none should be on). By day ``rate`` is null, ``is_dark`` false,
    and ``on`` counts lamps burning in daylight.
    """

    is_dark: bool = Field(description="the sun is down in the city now")
    rate: float | None = Field(description="on / should_be_on at night; null by day")
    on: int = Field(description="online lights whose latest power_on is true")
    should_be_on: int = Field(description="online lights at night; 0 by day")
    sunrise: str = Field(description="today's sunrise in the city (RFC 3339, its offset)")
    sunset: str = Field(description="today's sunset in the city (RFC 3339, its offset)")


class AlertCounts(BaseModel):
    open: int = Field(description="firing and acknowledged alerts")
    by_severity: dict[str, int] = Field(description="open alerts per severity")
    pending: int = Field(description="alerts whose condition holds but has not lasted long enough")


class SlaKpis(BaseModel):
    """Work-order SLA KPIs of the orders created in the last 30 days, each rate judged over
    the orders **due** by now (CJJ/T 106): an order still inside its deadline is not counted
    against the rate. A rate with nothing due is null and its target is not missed. See the
    work orders section of docs/rules.md for the exact definitions."""

    start: str
    end: str
    team: str | None
    created: int
    by_state: dict[str, int]
    verification_due: int = Field(
        description="应核查数: orders whose verification was due before the end, or was done"
    )
    verified_on_time: int = Field(description="按时核查数: of those, on site by the due time")
    on_time_verification_rate: float | None = Field(
        description="按时核查率 = verified_on_time / verification_due; null when none is due"
    )
    verification_target: float
    meets_verification_target: bool
    closure_due: int = Field(
        description="应结案数: orders whose closure was due before the end, or that were closed"
    )
    closed: int = Field(description="结案数: of those, closed before the end")
    closed_on_time: int = Field(description="按期结案数: of those, closed by the due time")
    closure_rate: float | None = Field(
        description="结案率 = closed / closure_due; null when none is due"
    )
    closure_target: float
    meets_closure_target: bool
    on_time_closure_rate: float | None = Field(
        description="按期结案率 = closed_on_time / closure_due; null when none is due"
    )
    mean_time_to_verify_s: float | None
    mean_time_to_close_s: float | None


class Overview(BaseModel):
    """Devices, lighting, alerts and SLA KPIs, restricted to the key's grant."""

    at: str = Field(description="when this was counted (RFC 3339, +08:00)")
    devices: dict[str, DeviceCounts] = Field(description="per kind the key may see")
    lighting: Lighting | None = Field(
        description="null when no kind the key is granted has a bool metric power_on"
    )
    alerts: AlertCounts
    kpis: SlaKpis

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "at": "2025-11-23T20:00:00+08:00",
                    "devices": {
                        "manhole": {"total": 1200, "online": 1180, "offline": 15, "unknown": 5},
                        "streetlight": {"total": 800, "online": 790, "offline": 10, "unknown": 0},
                    },
                    "lighting": {
                        "is_dark": True,
                        "rate": 0.987,
                        "on": 780,
                        "should_be_on": 790,
                        "sunrise": "2025-11-23T06:53:00+08:00",
                        "sunset": "2025-11-23T17:15:00+08:00",
                    },
                    "alerts": {
                        "open": 7,
                        "by_severity": {"critical": 1, "major": 2, "minor": 1, "warning": 3},
                        "pending": 2,
                    },
                    "kpis": {
                        "start": "2025-10-24T20:00:00+08:00",
                        "end": "2025-11-23T20:00:00+08:00",
                        "team": None,
                        "created": 40,
                        "by_state": {
                            "dispatched": 1,
                            "accepted": 1,
                            "on_site": 0,
                            "resolved": 2,
                            "closed": 36,
                        },
                        "verification_due": 39,
                        "verified_on_time": 38,
                        "on_time_verification_rate": 0.974,
                        "verification_target": 0.97,
                        "meets_verification_target": True,
                        "closure_due": 38,
                        "closed": 36,
                        "closed_on_time": 35,
                        "closure_rate": 0.947,
                        "closure_target": 0.95,
                        "meets_closure_target": False,
                        "on_time_closure_rate": 0.921,
                        "mean_time_to_verify_s": 1260.0,
                        "mean_time_to_close_s": 9800.0,
                    },
                }
            ]
        }
    }


@router.get(
    "/stats/overview",
    response_model=Overview,
    responses=RESPONSES,
    summary="Devices online, lighting rate, open alerts by severity, SLA KPIs",
)
async def overview(
    principal: Annotated[Principal, Depends(allow("admin", "operator", "field", "department"))],
    ctx: Annotated[ApiContext, Depends(context)],
) -> Overview:
    """Devices by kind and status (decommissioned excluded); the lighting rate (night
    only); open alerts by severity (firing + acknowledged; pending apart); the SLA KPIs of
    the work orders created in the last 30 days. A department key's answer covers only its
    granted kinds and districts."""
    clock: Clock = ctx.extra.get("clock", wall_clock)  # tests set the hour of day
    at = clock()
    now = dt.datetime.fromtimestamp(at, dt.UTC)
    kinds = [k for k in KINDS if principal.kinds is None or k in principal.kinds]
    lights = lighting_kinds(kinds)
    grant = (principal.kinds, principal.districts, principal.vendor)
    async with ctx.sessions() as session:
        devices = await _devices(session, principal, kinds)
        alerts = await _alerts(session, principal)

    async def count_lights() -> tuple[int, int]:
        async with ctx.sessions() as session:
            return await _lights_on(session, principal, lights)

    async def count_kpis() -> SlaKpis:
        period = await kpis(
            ctx.sessions,
            now - KPI_PERIOD,
            now,
            kinds=principal.kinds,
            districts=principal.districts,
        )
        return SlaKpis(**period.as_dict())

    # A small city's tallies are counted at every request (exact); a large one's kept.
    keep = sum(d.total for d in devices.values()) >= COUNTED_ABOVE_DEVICES
    lighting = None
    if lights:
        online, lit = await ctx.counted.get(
            ("lights", grant, tuple(lights)), at, count_lights, keep
        )
        lighting = _lighting(now, online, lit)
    sla = await ctx.counted.get(("kpis", grant), at, count_kpis, keep)
    return Overview(
        at=city_time(now) or "",
        devices=devices,
        lighting=lighting,
        alerts=alerts,
        kpis=sla,
    )


async def _devices(session: Any, principal: Principal, kinds: list[str]) -> dict[str, DeviceCounts]:
    result = {k: DeviceCounts(total=0, online=0, offline=0, unknown=0) for k in kinds}
    if principal.vendor is not None:  # the counts have no vendor: show nothing, as scoped does
        return result
    for count in await counts(session, principal.kinds, principal.districts):
        entry = result.get(count.kind)
        if entry is None:
            continue
        entry.total += count.devices
        if count.status == "online":
            entry.online += count.devices
        elif count.status == "offline":
            entry.offline += count.devices
        else:
            entry.unknown += count.devices
    return result


def lighting_kinds(kinds: list[str]) -> list[str]:
    """Those of ``kinds`` whose devices are lights: a bool metric ``power_on``."""
    lights = []
    for name in kinds:
        metric = KINDS[name].metric("power_on")
        if metric is not None and metric.type == "bool":
            lights.append(name)
    return lights


async def _lights_on(session: Any, principal: Principal, lights: list[str]) -> tuple[int, int]:
    """Online lights in service, and those of them whose latest ``power_on`` is true."""
    power_on = LatestReading.metrics[("power_on", 0)].as_boolean()
    stmt = (
        select(func.count(), func.count().filter(power_on.is_(True)))
        .select_from(Device)
        .outerjoin(LatestReading, LatestReading.device_id == Device.id)
        .where(
            Device.kind.in_(lights),
            Device.status == "online",
            Device.decommissioned_at.is_(None),
        )
    )
    stmt = scoped(stmt, principal, Device.kind, Device.district, Device.vendor_id)
    online, lit = (await session.execute(stmt)).one()
    return int(online), int(lit)


def _lighting(now: dt.datetime, online: int, lit: int) -> Lighting:
    dark = is_dark(int(now.timestamp() * 1000))
    sunrise, sunset = sun_times(now.astimezone(CITY_TZ).date())
    should = online if dark else 0
    return Lighting(
        is_dark=dark,
        rate=lit / should if dark and should else None,
        on=lit,
        should_be_on=should,
        sunrise=city_time(sunrise) or "",
        sunset=city_time(sunset) or "",
    )


async def _alerts(session: Any, principal: Principal) -> AlertCounts:
    stmt = (
        select(Alert.state, Alert.severity, func.count())
        .where(Alert.state.in_(("pending", "firing", "acknowledged")))
        .group_by(Alert.state, Alert.severity)
    )
    stmt = scoped(stmt, principal, Alert.kind, Alert.district, Alert.vendor)
    by_severity = dict.fromkeys(SEVERITIES, 0)
    pending = 0
    for state, severity, count in await session.execute(stmt):
        if state == "pending":
            pending += count
        else:
            by_severity[severity] = by_severity.get(severity, 0) + count
    return AlertCounts(open=sum(by_severity.values()), by_severity=by_severity, pending=pending)
