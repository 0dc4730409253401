"""The overview's devices come from the counts the database keeps: after every change made
through the API or by the ingest they equal counting the registry, at once, for any grant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from cityiot.domain.catalogue import KINDS
from cityiot.storage.tables.registry import Device
from tests.api.conftest import Api

DEVICE = {
    "device_id": "mh-new",
    "vendor": "acme",
    "kind": "manhole",
    "district": "xiping",
    "lat": 32.98,
    "lon": 114.02,
    "address": "西平县 1 号",
    "report_interval_s": 300,
    "attributes": {"depth_cm": 200},
}


async def _grouped(api: Api, kinds: set[str] | None, districts: set[str] | None) -> dict[str, Any]:
    stmt = (
        select(Device.kind, Device.status, func.count())
        .where(Device.decommissioned_at.is_(None))
        .group_by(Device.kind, Device.status)
    )
    if districts is not None:
        stmt = stmt.where(Device.district.in_(districts))
    counts = {
        k: {"total": 0, "online": 0, "offline": 0, "unknown": 0}
        for k in KINDS
        if kinds is None or k in kinds
    }
    async with api.sessions() as session:
        for kind, status, n in await session.execute(stmt):
            if kind in counts:
                counts[kind]["total"] += n
                counts[kind]["online" if status == "online" else status] += n
    return counts


async def _check(api: Api) -> dict[str, Any]:
    body = (await api.client("admin").get("/api/v1/stats/overview")).json()
    assert body["devices"] == await _grouped(api, None, None)
    department = (await api.client("department").get("/api/v1/stats/overview")).json()
    assert department["devices"] == await _grouped(api, {"manhole", "parking"}, {"yicheng"})
    return dict(body["devices"]["manhole"])


async def test_overview_devices_equal_the_registry_after_every_change(api: Api) -> None:
    admin = api.client("admin")
    first = await _check(api)
    assert (await admin.post("/api/v1/devices", json=DEVICE)).status_code == 201
    assert (await _check(api))["unknown"] == first["unknown"] + 1
    async with api.sessions() as session, session.begin():  # as the ingest's presence does
        await session.execute(update(Device).where(Device.id == "mh-new").values(status="online"))
    assert (await _check(api))["online"] == first["online"] + 1
    assert (await admin.delete("/api/v1/devices/mh-new")).status_code == 200
    assert await _check(api) == first
    patch = {"decommissioned": False, "district": "yicheng"}
    assert (await admin.patch("/api/v1/devices/mh-new", json=patch)).status_code == 200
    assert (await _check(api))["total"] == first["total"] + 1
