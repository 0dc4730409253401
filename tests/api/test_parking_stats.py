"""GET /parking/availability and GET /stats/overview over a real registry, latest-value
table, alerts and work orders: the counts, the lighting rate by night and by day, and that
a department key counts only its granted kinds and districts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.latest import LatestValues
from cityiot.ingest.validate import Reading
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.registry import import_devices
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.registry import Device
from cityiot.storage.tables.workorders import WorkOrder
from tests.api.conftest import Api

CITY = dt.timezone(dt.timedelta(hours=8))
NIGHT = dt.datetime(2025, 11, 23, 22, 0, tzinfo=CITY)
NOON = dt.datetime(2025, 11, 23, 12, 0, tzinfo=CITY)

MORE_PARKING = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,lot_id,max_stay_min
pk-3,acme,parking,yicheng,32.98,114.03,驿城区 6 号,60,lot-7,120
pk-4,acme,parking,kaifaqu,32.97,114.05,开发区 7 号,60,lot-9,120
pk-5,acme,parking,kaifaqu,32.97,114.05,开发区 8 号,60,lot-9,120
"""


async def latest(api: Api, *readings: Reading) -> None:
    values = LatestValues(api.sessions)
    values.merge(readings)
    assert await values.flush() == len({r.device_id for r in readings})


async def set_status(api: Api, status: str, *device_ids: str) -> None:
    async with api.sessions() as session, session.begin():
        await session.execute(update(Device).where(Device.id.in_(device_ids)).values(status=status))


async def seed_parking(api: Api) -> None:
    parsed = parse_device_csv(MORE_PARKING)
    assert not parsed.errors
    assert not (await import_devices(api.sessions, parsed.rows)).errors
    # yicheng lot-7: pk-1 taken, pk-3 free; xiping lot-8: pk-2 says free but is offline;
    # kaifaqu lot-9: pk-4 never reported, pk-5 decommissioned.
    await latest(
        api,
        Reading("pk-1", "parking", 1000, {"occupied": True}),
        Reading("pk-3", "parking", 1000, {"occupied": False}),
        Reading("pk-2", "parking", 1000, {"occupied": False}),
        Reading("pk-5", "parking", 1000, {"occupied": False}),
    )
    await set_status(api, "online", "pk-1", "pk-3", "pk-5")
    await set_status(api, "offline", "pk-2")
    async with api.sessions() as session, session.begin():
        await session.execute(
            update(Device)
            .where(Device.id == "pk-5")
            .values(decommissioned_at=dt.datetime.now(dt.UTC))
        )


def spaces(item: dict[str, Any]) -> tuple[int, int, int, int]:
    return item["total"], item["free"], item["occupied"], item["unknown"]


# -- parking ---------------------------------------------------------------------------


async def test_parking_availability_per_lot_district_and_overall(api: Api) -> None:
    await seed_parking(api)
    r = await api.client("operator").get("/api/v1/parking/availability")
    assert r.status_code == 200, r.text
    body = r.json()
    lots = {(x["district"], x["lot_id"]): spaces(x) for x in body["lots"]}
    assert lots == {
        ("kaifaqu", "lot-9"): (1, 0, 0, 1),
        ("xiping", "lot-8"): (1, 0, 0, 1),
        ("yicheng", "lot-7"): (2, 1, 1, 0),
    }
    districts = {x["district"]: (x["lots"], *spaces(x)) for x in body["districts"]}
    assert districts["yicheng"] == (1, 2, 1, 1, 0)
    assert spaces(body["overall"]) == (4, 1, 1, 2)
    assert body["at"].endswith("+08:00")

    r = await api.client("field").get("/api/v1/parking/availability?district=yicheng")
    assert [x["lot_id"] for x in r.json()["lots"]] == ["lot-7"]
    r = await api.client().get("/api/v1/parking/availability?lot_id=lot-9")
    assert [spaces(x) for x in r.json()["lots"]] == [(1, 0, 0, 1)]
    r = await api.client().get("/api/v1/parking/availability?district=atlantis")
    assert r.status_code == 422 and "yicheng" in r.json()["detail"]


async def test_parking_for_a_department_counts_its_districts_only(api: Api) -> None:
    await seed_parking(api)
    department = api.client("department")
    body = (await department.get("/api/v1/parking/availability")).json()
    assert [(x["district"], x["lot_id"]) for x in body["lots"]] == [("yicheng", "lot-7")]
    assert spaces(body["overall"]) == (2, 1, 1, 0)
    r = await department.get("/api/v1/parking/availability?district=xiping")
    assert r.status_code == 403 and "xiping" in r.json()["detail"]
    # lot-8 lies in xiping: filtered out, not revealed.
    body = (await department.get("/api/v1/parking/availability?lot_id=lot-8")).json()
    assert body["lots"] == [] and body["overall"]["total"] == 0

    water_only = await api.key("department", kinds=["water"])
    r = await api.client(key=water_only).get("/api/v1/parking/availability")
    assert r.status_code == 403 and "parking" in r.json()["detail"]
    assert (await api.client("vendor").get("/api/v1/parking/availability")).status_code == 403
    assert (await api.client(None).get("/api/v1/parking/availability")).status_code == 401


# -- stats -----------------------------------------------------------------------------


async def seed_city(api: Api, now: dt.datetime) -> None:
    await set_status(api, "online", "mh-1", "sl-1", "sl-2", "pk-1")
    await set_status(api, "offline", "mh-2")
    await latest(
        api,
        Reading("sl-1", "streetlight", 1000, {"power_on": True}),
        Reading("sl-2", "streetlight", 1000, {"power_on": False}),
    )
    alerts = [
        ("a1", "mh-1", "manhole", "yicheng", "acme", "critical", "firing"),
        ("a2", "mh-2", "manhole", "xiping", "oldco", "major", "acknowledged"),
        ("a3", "sl-1", "streetlight", "kaifaqu", "acme", "warning", "pending"),
        ("a4", "pk-1", "parking", "yicheng", "acme", "minor", "pending"),
        ("a5", "hy-1", "hydrant", "gaoxinqu", "acme", "minor", "resolved"),
    ]
    day_ago = now - dt.timedelta(days=1)
    async with api.sessions() as session, session.begin():
        for alert_id, device, kind, district, vendor, severity, state in alerts:
            session.add(
                Alert(
                    id=alert_id,
                    rule=f"rule.{alert_id}",
                    device_id=device,
                    kind=kind,
                    district=district,
                    vendor=vendor,
                    severity=severity,
                    state=state,
                    started_at=day_ago,
                    open_key=None if state == "resolved" else f"rule.{alert_id}/{device}",
                )
            )
        await session.flush()
        for alert_id, device, kind, district, verified in (
            ("a1", "mh-1", "manhole", "yicheng", True),
            ("a2", "mh-2", "manhole", "xiping", False),
        ):
            session.add(
                WorkOrder(
                    id=f"wo-{alert_id}",
                    alert_id=alert_id,
                    team="manhole-crew",
                    state="on_site" if verified else "dispatched",
                    device_id=device,
                    kind=kind,
                    district=district,
                    severity="major",
                    created_at=day_ago,
                    accepted_at=day_ago + dt.timedelta(minutes=5) if verified else None,
                    on_site_at=day_ago + dt.timedelta(minutes=20) if verified else None,
                    verify_due_at=day_ago + dt.timedelta(minutes=30),
                    close_due_at=day_ago + dt.timedelta(hours=24),
                )
            )


def at(api: Api, when: dt.datetime) -> None:
    api.server.app.state.ctx.extra["clock"] = when.timestamp


async def test_overview_counts_devices_lighting_alerts_and_kpis(api: Api) -> None:
    await seed_city(api, NIGHT)
    at(api, NIGHT)
    r = await api.client("field").get("/api/v1/stats/overview")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["devices"]["manhole"] == {"total": 2, "online": 1, "offline": 1, "unknown": 0}
    assert body["devices"]["hydrant"] == {"total": 2, "online": 0, "offline": 0, "unknown": 2}
    assert set(body["devices"]) == set(KINDS)  # every kind of the model, devices or not
    lighting = body["lighting"]
    assert lighting["is_dark"] is True
    assert (lighting["on"], lighting["should_be_on"], lighting["rate"]) == (1, 2, 0.5)
    assert lighting["sunset"].startswith("2025-11-23T17:") and lighting["sunset"].endswith("+08:00")
    assert body["alerts"] == {
        "open": 2,
        "by_severity": {"critical": 1, "major": 1, "minor": 0, "warning": 0},
        "pending": 2,
    }
    kpis = body["kpis"]
    assert kpis["created"] == 2 and kpis["verified_on_time"] == 1
    assert kpis["verification_due"] == 2 and kpis["on_time_verification_rate"] == 0.5
    # Both are due to close exactly now, the period's (exclusive) end: not judged yet.
    assert (kpis["closure_due"], kpis["closed"], kpis["closure_rate"]) == (0, 0, None)
    assert kpis["meets_closure_target"] is True and kpis["on_time_closure_rate"] is None
    assert kpis["end"] == "2025-11-23T22:00:00+08:00"

    at(api, NOON)
    lighting = (await api.client().get("/api/v1/stats/overview")).json()["lighting"]
    assert lighting["is_dark"] is False and lighting["rate"] is None
    assert (lighting["on"], lighting["should_be_on"]) == (1, 0)  # sl-1 burning by day


async def test_overview_for_a_department_counts_its_grant_only(api: Api) -> None:
    await seed_city(api, NIGHT)
    at(api, NIGHT)
    r = await api.client("department").get("/api/v1/stats/overview")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["devices"] == {
        "manhole": {"total": 1, "online": 1, "offline": 0, "unknown": 0},
        "parking": {"total": 1, "online": 1, "offline": 0, "unknown": 0},
    }
    assert body["lighting"] is None  # streetlights are not granted
    assert body["alerts"]["open"] == 1 and body["alerts"]["by_severity"]["critical"] == 1
    assert body["alerts"]["pending"] == 1  # pk-1's, not sl-1's
    assert body["kpis"]["created"] == 1 and body["kpis"]["on_time_verification_rate"] == 1.0

    lights = await api.key("department", kinds=["streetlight"], districts=["xiping"])
    body = (await api.client(key=lights).get("/api/v1/stats/overview")).json()
    assert (body["lighting"]["on"], body["lighting"]["should_be_on"]) == (0, 1)
    assert body["lighting"]["rate"] == 0.0
    assert body["kpis"]["created"] == 0 and body["alerts"]["open"] == 0


async def test_overview_roles(api: Api) -> None:
    for role in ("admin", "operator", "field", "department"):
        assert (await api.client(role).get("/api/v1/stats/overview")).status_code == 200, role
    r = await api.client("vendor").get("/api/v1/stats/overview")
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem")
    assert (await api.client(None).get("/api/v1/stats/overview")).status_code == 401


async def test_a_small_citys_parking_is_exact_right_after_a_change(api: Api) -> None:
    # Counting a few spaces is cheap, so nothing is served from memory: an answer right
    # after a sensor changes has the change (a city whose count costs a scan gets it within
    # a few seconds: api/counted.py).
    await seed_parking(api)
    client = api.client("operator")
    r = await client.get("/api/v1/parking/availability?lot_id=lot-7")
    assert [spaces(x) for x in r.json()["lots"]] == [(2, 1, 1, 0)]
    await latest(api, Reading("pk-3", "parking", 2000, {"occupied": True}))
    r = await client.get("/api/v1/parking/availability?lot_id=lot-7")
    assert [spaces(x) for x in r.json()["lots"]] == [(2, 0, 2, 0)]
