"""/devices: the registry through the API, with each role, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.registry import Device, Vendor
from tests.api.conftest import DEPARTMENT_SEES, Api

NEW = {
    "device_id": "mh-9",
    "vendor": "acme",
    "kind": "manhole",
    "district": "yicheng",
    "lat": 32.98,
    "lon": 114.02,
    "address": "驿城区 9 号",
    "report_interval_s": 300,
    "attributes": {"depth_cm": 180},
}


async def _ids(client, **params) -> set[str]:  # type: ignore[no-untyped-def]
    r = await client.get("/api/v1/devices", params=params)
    assert r.status_code == 200, r.text
    return {d["id"] for d in r.json()["items"]}


async def test_every_reading_role_lists_devices_within_its_grant(api: Api) -> None:
    everything = {f"{p}-{n}" for p in ("mh", "sl", "hy", "wt", "pk") for n in (1, 2)}
    for role in ("admin", "operator", "field"):
        assert await _ids(api.client(role)) == everything
    assert await _ids(api.client("department")) == DEPARTMENT_SEES
    assert await _ids(api.client("vendor")) == {d for d in everything if d.endswith("-1")}
    assert await _ids(api.client("admin"), kind="water", district="xiping") == {"wt-2"}


async def test_department_filters_outside_the_grant_are_403(api: Api) -> None:
    client = api.client("department")
    for params in ({"kind": "water"}, {"district": "xiping"}):
        r = await client.get("/api/v1/devices", params=params)
        assert r.status_code == 403, params
        assert "not granted" in r.json()["detail"]
    assert await _ids(client, kind="manhole") == {"mh-1"}
    r = await api.client("vendor").get("/api/v1/devices", params={"vendor": "oldco"})
    assert r.status_code == 403


async def test_single_devices_outside_the_grant_read_like_unknown_ones(api: Api) -> None:
    """Issue 22, finding 10: a department or vendor key gets the same 404 for a device it may
    not see as for one that does not exist, so it cannot learn which ids exist."""
    dept = api.client("department")
    assert (await dept.get("/api/v1/devices/mh-1")).json()["kind"] == "manhole"
    for client, device_id in (
        (dept, "sl-1"),
        (dept, "mh-2"),
        (dept, "wt-2"),
        (api.client("vendor"), "mh-2"),
    ):
        outside = await client.get(f"/api/v1/devices/{device_id}")
        missing = await client.get("/api/v1/devices/nope")
        assert outside.status_code == missing.status_code == 404, device_id
        assert outside.text.replace(device_id, "ID") == missing.text.replace("nope", "ID")
    r = await api.client().get("/api/v1/devices/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert (await api.client(None).get("/api/v1/devices/mh-1")).status_code == 401


async def test_register_a_device(api: Api) -> None:
    r = await api.client("operator").post("/api/v1/devices", json=NEW)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "mh-9" and body["attributes"] == {"depth_cm": 180.0}
    assert body["status"] == "unknown" and body["last_seen"] is None
    assert (await api.client().post("/api/v1/devices", json=NEW)).status_code == 409
    async with api.sessions() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "device.create"))
    assert entry is not None and entry.resource == "devices/mh-9" and entry.role == "operator"


async def test_registering_is_refused_to_readers(api: Api) -> None:
    for role in ("field", "department", "vendor"):
        r = await api.client(role).post("/api/v1/devices", json=NEW)
        assert r.status_code == 403, role
    assert (await api.client(None).post("/api/v1/devices", json=NEW)).status_code == 401


async def test_an_invalid_device_gets_every_problem_named(api: Api) -> None:
    bad = {**NEW, "kind": "manhol", "lat": 132.0, "device_id": "mh 9"}
    r = await api.client().post("/api/v1/devices", json=bad)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "kind" in detail and "did you mean 'manhole'" in detail
    assert "lat" in detail and "device_id" in detail
    r = await api.client().post("/api/v1/devices", json={**NEW, "vendor": "ghost"})
    assert r.status_code == 422 and "POST /api/v1/vendors" in r.json()["detail"]
    r = await api.client().post("/api/v1/devices", json={**NEW, "attributes": {"depth_cm": "deep"}})
    assert r.status_code == 422 and "depth_cm" in r.json()["detail"]
    r = await api.client().post("/api/v1/devices", json={**NEW, "colour": "red"})
    assert r.status_code == 422 and "colour" in r.json()["detail"]


async def test_change_a_device_and_its_attributes(api: Api) -> None:
    client = api.client("operator")
    r = await client.patch(
        "/api/v1/devices/pk-1", json={"address": "新地址", "attributes": {"max_stay_min": 30}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["address"] == "新地址"
    assert r.json()["attributes"] == {"lot_id": "lot-7", "max_stay_min": 30.0}
    r = await client.patch("/api/v1/devices/pk-1", json={"attributes": {"depth_cm": 3}})
    assert r.status_code == 422 and "no attribute depth_cm" in r.json()["detail"]
    r = await client.patch("/api/v1/devices/pk-1", json={"kind": "water"})
    assert r.status_code == 422
    r = await client.patch("/api/v1/devices/pk-1", json={"report_interval_s": 0})
    assert r.status_code == 422 and "report_interval_s" in r.json()["detail"]
    assert (await api.client("field").patch("/api/v1/devices/pk-1", json={})).status_code == 403


async def test_decommission_keeps_the_device_and_recommission_brings_it_back(api: Api) -> None:
    client = api.client()
    r = await client.delete("/api/v1/devices/sl-2")
    assert r.status_code == 200
    assert r.json()["status"] == "decommissioned" and r.json()["decommissioned_at"]
    assert "sl-2" not in await _ids(client)
    assert "sl-2" in await _ids(client, status="decommissioned")
    assert (await client.get("/api/v1/devices/sl-2")).status_code == 200
    r = await client.patch("/api/v1/devices/sl-2", json={"decommissioned": False})
    assert r.json()["status"] == "unknown" and r.json()["decommissioned_at"] is None
    assert (await api.client("department").delete("/api/v1/devices/mh-1")).status_code == 403


async def test_csv_import_reports_row_by_row(api: Api) -> None:
    csv = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        "mh-20,acme,manhole,yicheng,32.9,114.0,a,300,150\n"
        "mh-21,acme,manhol,yicheng,32.9,114.0,b,300,150\n"
        "mh-1,acme,manhole,yicheng,32.98,114.02,驿城区解放路 1 号,300,250\n"
    )
    r = await api.client("operator").post(
        "/api/v1/devices/import", content=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["created"], report["updated"]) == (1, 1)
    assert [(e["line"], e["column"]) for e in report["errors"]] == [(3, "kind")]
    assert (await api.client().get("/api/v1/devices/mh-1")).json()["attributes"]["depth_cm"] == 250
    r = await api.client().post("/api/v1/devices/import", content=b"\xff\xfe\x00bad")
    assert r.status_code == 415 and "UTF-8" in r.json()["detail"]
    r = await api.client("department").post("/api/v1/devices/import", content=csv.encode())
    assert r.status_code == 403


async def _stored(api: Api, device_id: str) -> Device:
    async with api.sessions() as session:
        device = await session.get(Device, device_id)
    assert device is not None
    return device


async def test_non_numbers_and_out_of_range_coordinates_are_refused(api: Api) -> None:
    """Issue 22, finding 16: ``PATCH {"lon": false}`` stored 0.0."""
    client = api.client("operator")
    before = await _stored(api, "mh-1")
    for change in (
        {"lon": False},
        {"lat": True},
        {"lat": "32.9"},
        {"lat": 90.5},
        {"lon": -181},
        {"report_interval_s": True},
        {"report_interval_s": 60.0},
        {"decommissioned": "yes"},
        {"decommissioned": 1},
        {"attributes": {"depth_cm": True}},
    ):
        r = await client.patch("/api/v1/devices/mh-1", json=change)
        assert r.status_code == 422, (change, r.text)
        assert next(iter(change)) in r.text, change
    after = await _stored(api, "mh-1")
    assert (after.lat, after.lon, after.report_interval_s, after.decommissioned_at) == (
        before.lat,
        before.lon,
        before.report_interval_s,
        None,
    )
    r = await client.post("/api/v1/devices", json={**NEW, "lon": False})
    assert r.status_code == 422 and "lon" in r.text
    # JSON integers are numbers: whole degrees are fine.
    r = await client.patch("/api/v1/devices/mh-1", json={"lat": 33, "lon": 114})
    assert r.status_code == 200, r.text
    assert (r.json()["lat"], r.json()["lon"]) == (33.0, 114.0)


async def test_install_dates_lie_between_1900_and_tomorrow(api: Api) -> None:
    """Issue 22, finding 16: install_date 3843-08-14 was accepted."""
    client = api.client("operator")
    for day in ("3843-08-14", "1899-12-31"):
        r = await client.patch("/api/v1/devices/mh-1", json={"install_date": day})
        assert r.status_code == 422, r.text
        assert "between 1900-01-01 and tomorrow" in r.json()["detail"]
        r = await client.post("/api/v1/devices", json={**NEW, "install_date": day})
        assert r.status_code == 422 and "between 1900-01-01 and tomorrow" in r.json()["detail"]
    r = await client.patch("/api/v1/devices/mh-1", json={"install_date": 0})  # not 1970-01-01
    assert r.status_code == 422 and "YYYY-MM-DD" in r.text
    assert (await _stored(api, "mh-1")).install_date is None
    csv = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,install_date\n"
        "mh-30,acme,manhole,yicheng,32.9,114.0,a,300,150,3843-08-14\n"
    )
    r = await client.post(
        "/api/v1/devices/import", content=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200 and r.json()["created"] == 0
    assert [(e["line"], e["column"]) for e in r.json()["errors"]] == [(2, "install_date")]
    r = await client.patch("/api/v1/devices/mh-1", json={"install_date": "2024-03-01"})
    assert r.status_code == 200 and r.json()["install_date"] == "2024-03-01"


async def test_only_an_admin_creates_vendors_through_the_import(api: Api) -> None:
    """Issue 22, finding 11: an operator key created vendors through
    ``POST /devices/import?create_vendors=true`` although ``POST /vendors`` refuses it."""
    csv = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        "mh-40,newco,manhole,yicheng,32.9,114.0,a,300,150\n"
    )
    url = "/api/v1/devices/import?create_vendors=true"
    headers = {"Content-Type": "text/csv"}
    assert (
        await api.client("operator").post("/api/v1/vendors", json={"id": "newco", "name": "New Co"})
    ).status_code == 403
    r = await api.client("operator").post(url, content=csv.encode(), headers=headers)
    assert r.status_code == 403
    assert "admin" in r.json()["detail"] and "POST /api/v1/vendors" in r.json()["detail"]
    async with api.sessions() as session:
        assert await session.get(Vendor, "newco") is None
        assert await session.get(Device, "mh-40") is None
    # Without create_vendors the operator imports, and the unknown vendor is a row error.
    r = await api.client("operator").post(
        "/api/v1/devices/import", content=csv.encode(), headers=headers
    )
    assert r.status_code == 200 and r.json()["created"] == 0
    assert r.json()["errors"][0]["column"] == "vendor"
    r = await api.client("admin").post(url, content=csv.encode(), headers=headers)
    assert r.status_code == 200 and r.json()["vendors_created"] == ["newco"]


async def test_a_body_that_is_no_device_csv_is_refused(api: Api) -> None:
    client = api.client("operator")
    for body in (b"", b"{}", b"\n\n"):
        r = await client.post(
            "/api/v1/devices/import", content=body, headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 422, (body, r.text)
        assert "the first line must name the columns device_id,vendor" in r.json()["detail"]


async def test_a_nul_in_the_query_or_path_is_refused_at_the_door(api: Api) -> None:
    for url in ("/api/v1/devices?kind=man%00hole", "/api/v1/devices/mh%00-1/latest"):
        r = await api.client().get(url)
        assert r.status_code == 400, (url, r.text)
        assert r.json()["detail"] == "a parameter contains a NUL character (%00); remove it"
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.client().get("/api/v1/devices?kind=manhole")).status_code == 200
