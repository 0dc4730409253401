"""Device identities on a network (dev_eui, imei, onenet_dev_id) through /devices: given among
a device's attributes on any kind, validated, normalised, unique (409 naming the holder)."""

from __future__ import annotations

from tests.api.conftest import Api

EUI = "70B3D57ED0012345"
IMEI = "869975031234567"
NEW = {
    "device_id": "mh-9",
    "vendor": "acme",
    "kind": "manhole",
    "district": "yicheng",
    "lat": 32.98,
    "lon": 114.02,
    "report_interval_s": 300,
    "attributes": {"depth_cm": 180, "dev_eui": EUI.lower(), "imei": IMEI},
}


async def test_register_and_change_identities_with_validation_and_conflicts(api: Api) -> None:
    client = api.client("operator")
    r = await client.post("/api/v1/devices", json=NEW)
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == {"depth_cm": 180.0, "dev_eui": EUI, "imei": IMEI}
    r = await client.get("/api/v1/devices/mh-9")
    assert r.json()["attributes"] == {"depth_cm": 180.0, "dev_eui": EUI, "imei": IMEI}

    # Another device may not take them: 409 naming the device that has it.
    other = {**NEW, "device_id": "mh-10", "attributes": {"depth_cm": 150, "imei": IMEI}}
    r = await client.post("/api/v1/devices", json=other)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        f"imei: imei '{IMEI}' is registered already to device 'mh-9'; correct it, or clear "
        "it on the other device first"
    )
    assert (await client.get("/api/v1/devices/mh-10")).status_code == 404
    r = await client.patch("/api/v1/devices/sl-1", json={"attributes": {"dev_eui": EUI}})
    assert r.status_code == 409 and "device 'mh-9'" in r.json()["detail"]

    # Invalid values are 422 naming the field and the form to write.
    r = await client.patch("/api/v1/devices/sl-1", json={"attributes": {"dev_eui": "12"}})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("dev_eui: '12' is not a valid dev_eui; write the LoRaWAN")
    r = await client.post(
        "/api/v1/devices", json={**other, "attributes": {"depth_cm": 1, "onenet_dev_id": "a b"}}
    )
    assert r.status_code == 422 and "onenet_dev_id" in r.json()["detail"]

    # A PATCH leaves the identities it does not name; null clears one, and frees it.
    r = await client.patch("/api/v1/devices/mh-9", json={"attributes": {"onenet_dev_id": "52213"}})
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {
        "depth_cm": 180.0,
        "dev_eui": EUI,
        "imei": IMEI,
        "onenet_dev_id": "52213",
    }
    r = await client.patch("/api/v1/devices/mh-9", json={"attributes": {"imei": None}})
    assert r.json()["attributes"] == {"depth_cm": 180.0, "dev_eui": EUI, "onenet_dev_id": "52213"}
    r = await client.post("/api/v1/devices", json=other)
    assert r.status_code == 201 and r.json()["attributes"]["imei"] == IMEI


async def test_csv_import_reports_identity_problems_row_by_row(api: Api) -> None:
    header = "device_id,vendor,kind,district,lat,lon,address,report_interval_s,dev_eui,imei"
    rows = [
        f"sl-7,acme,streetlight,yicheng,32.98,114.02,,60,{EUI.lower()},",
        "sl-8,acme,streetlight,yicheng,32.98,114.02,,60,,12345",
        f"sl-9,acme,streetlight,yicheng,32.98,114.02,,60,{EUI},",
    ]
    r = await api.client().post(
        "/api/v1/devices/import",
        content="\n".join((header, *rows)) + "\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["created"] == 1
    assert [(e["line"], e["column"]) for e in report["errors"]] == [(3, "imei"), (4, "dev_eui")]
    assert "also given to device 'sl-7' on line 2" in report["errors"][1]["message"]
    assert (await api.client().get("/api/v1/devices/sl-7")).json()["attributes"]["dev_eui"] == EUI
    # Against the registry: the device that has it is named.
    again = f"{header}\nsl-10,acme,streetlight,yicheng,32.98,114.02,,60,{EUI},\n"
    r = await api.client().post(
        "/api/v1/devices/import", content=again, headers={"Content-Type": "text/csv"}
    )
    (error,) = r.json()["errors"]
    assert (error["line"], error["column"]) == (2, "dev_eui")
    assert "registered already to device 'sl-7'" in error["message"]
