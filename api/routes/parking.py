"""Parking availability now: free and total spaces per lot, per district and overall.

Counted in SQL from the registry (parking sensors not decommissioned, one per space) and
the latest-value table (each sensor's newest ``occupied``), so no InfluxDB query is made.
Every lot the key may see is counted in one scan: at every request while the key sees fewer
than ``COUNTED_ABOVE_DEVICES`` parking sensors (:mod:`cityiot.api.context`), else at most every
``COUNTED_MAX_AGE_S`` seconds and served meanwhile (:class:`cityiot.api.counted.Counted`); a
district or a lot is picked from that count, and ``at`` says when it was made.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import and_, case, false, func, select, true

from cityiot.api.access import allow, check_filter, scoped
from cityiot.api.context import COUNTED_ABOVE_DEVICES, ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.problems import Problem
from cityiot.domain.catalogue import DISTRICTS, KINDS
from cityiot.rules.events import Clock, city_time, wall_clock
from cityiot.storage.device_counts import counts
from cityiot.storage.tables.registry import Device, LatestReading

router = APIRouter(tags=["parking"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "the key's role or grant does not cover parking there"},
    422: {"description": "unknown district; the detail lists the districts"},
}


class Spaces(BaseModel):
    total: int = Field(description="spaces with a sensor (parking devices not decommissioned)")
    free: int = Field(description="spaces whose sensor last said occupied=false")
    occupied: int = Field(description="spaces whose sensor last said occupied=true")
    unknown: int = Field(description="spaces whose sensor never reported or is offline")


class LotAvailability(Spaces):
    lot_id: str | None = Field(description="the lot (registry attribute lot_id); null: none set")
    district: str


class DistrictAvailability(Spaces):
    district: str
    lots: int = Field(description="lots in the district")


class Availability(BaseModel):
    """Spaces now, per lot, per district and overall; only what the key may see."""

    at: str = Field(description="when this was counted (RFC 3339, +08:00)")
    lots: list[LotAvailability]
    districts: list[DistrictAvailability]
    overall: Spaces

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "at": "2025-11-23T08:05:00+08:00",
                    "lots": [
                        {
                            "lot_id": "lot-7",
                            "district": "yicheng",
                            "total": 120,
                            "free": 31,
                            "occupied": 85,
                            "unknown": 4,
                        }
                    ],
                    "districts": [
                        {
                            "district": "yicheng",
                            "lots": 1,
                            "total": 120,
                            "free": 31,
                            "occupied": 85,
                            "unknown": 4,
                        }
                    ],
                    "overall": {"total": 120, "free": 31, "occupied": 85, "unknown": 4},
                }
            ]
        }
    }


@router.get(
    "/parking/availability",
    response_model=Availability,
    responses=RESPONSES,
    summary="Free and total parking spaces now",
)
async def availability(
    principal: Annotated[Principal, Depends(allow("admin", "operator", "field", "department"))],
    ctx: Annotated[ApiContext, Depends(context)],
    district: Annotated[
        str | None,
        Query(
            max_length=32,
            description="only this district: a district id of the city (its city file; the "
            "console's catalogue)",
            examples=["yicheng"],
        ),
    ] = None,
    lot_id: Annotated[
        str | None, Query(max_length=64, description="only this lot", examples=["lot-7"])
    ] = None,
) -> Availability:
    """Each parking sensor is one space: ``free`` when its newest ``occupied`` is false,
    ``occupied`` when true, ``unknown`` when it never reported or its device is offline
    (a stale value is not trusted). Parking spaces are the devices of :func:`parking_kinds`.
    Department keys need such a kind and see only their districts."""
    kinds = parking_kinds()
    if principal.kinds is not None and kinds and not set(kinds) & set(principal.kinds):
        check_filter(principal, "kind", kinds[0], principal.kinds)
    if district is not None and district not in DISTRICTS:
        raise Problem(422, f"unknown district {district!r}; use one of {', '.join(DISTRICTS)}")
    check_filter(principal, "district", district, principal.districts)
    if lot_id is not None and any(ord(c) < 32 or ord(c) == 127 for c in lot_id):
        raise Problem(422, "lot_id holds a control character; give the lot id as registered")

    grant = (principal.kinds, principal.districts, principal.vendor)
    clock: Clock = ctx.extra.get("clock", wall_clock)

    async def count() -> tuple[dt.datetime, list[Any]]:
        counted_at = dt.datetime.now(dt.UTC)
        async with ctx.sessions() as session:
            return counted_at, await _lots(session, principal, kinds)

    async with ctx.sessions() as session:
        sensors = await counts(session, kinds, principal.districts)
    keep = sum(c.devices for c in sensors) >= COUNTED_ABOVE_DEVICES
    counted_at, counted = await ctx.counted.get(
        ("spaces", grant, tuple(kinds)), clock(), count, keep
    )
    rows = [
        r
        for r in counted
        if (district is None or r[0] == district) and (lot_id is None or r[1] == lot_id)
    ]
    lots = []
    for row_district, row_lot, total, free, taken in rows:
        total, free, taken = int(total), int(free), int(taken)
        lots.append(
            LotAvailability(
                lot_id=row_lot or None,
                district=row_district,
                total=total,
                free=free,
                occupied=taken,
                unknown=total - free - taken,
            )
        )
    lots.sort(key=lambda x: (x.district, x.lot_id or ""))
    by_district: dict[str, DistrictAvailability] = {}
    for item in lots:
        entry = by_district.setdefault(
            item.district,
            DistrictAvailability(
                district=item.district, lots=0, total=0, free=0, occupied=0, unknown=0
            ),
        )
        entry.lots += 1
        _add(entry, item)
    overall = Spaces(total=0, free=0, occupied=0, unknown=0)
    for item in lots:
        _add(overall, item)
    return Availability(
        at=city_time(counted_at) or "",
        lots=lots,
        districts=list(by_district.values()),
        overall=overall,
    )


async def _lots(session: Any, principal: Principal, kinds: list[str]) -> list[Any]:
    """(district, lot, spaces, free, occupied) of every lot within the key's grant."""
    lot = Device.attributes["lot_id"].as_string()
    occupied = LatestReading.metrics[("occupied", 0)].as_boolean()
    trusted = Device.status != "offline"

    def spaces(flag: Any) -> Any:
        return func.coalesce(func.sum(case((and_(trusted, occupied == flag), 1), else_=0)), 0)

    stmt = (
        select(Device.district, lot, func.count(), spaces(false()), spaces(true()))
        .outerjoin(LatestReading, LatestReading.device_id == Device.id)
        .where(Device.kind.in_(kinds), Device.decommissioned_at.is_(None))
        .group_by(Device.district, lot)
    )
    stmt = scoped(stmt, principal, Device.kind, Device.district, Device.vendor_id)
    return list((await session.execute(stmt)).all())


def parking_kinds() -> list[str]:
    """The kinds whose devices are parking spaces, by their model: a flag ``occupied`` and
    a ``lot_id`` attribute (the shipped parking sensor, and any a city adds like it)."""
    return [
        kind.name
        for kind in KINDS.values()
        if (metric := kind.metric("occupied")) is not None
        and metric.type == "bool"
        and kind.attribute("lot_id") is not None
    ]


def _add(into: Spaces, item: Spaces) -> None:
    into.total += item.total
    into.free += item.free
    into.occupied += item.occupied
    into.unknown += item.unknown
