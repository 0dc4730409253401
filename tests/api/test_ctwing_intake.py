"""CTWing's (China Telecom AEP) HTTP push, ``POST /api/v1/intake/ctwing/{vendor}?token=T``
(design §4a), against the real platform as ``cityiot run`` composes it (see
tests/api/test_telemetry_link.py): what CTWing sends, checked where it lands — points in
InfluxDB, presence through the API, dead letters through the API.

Three vendors: ctco's codec is a mapping of its own JSON names (the test codec acme-json),
for ``serviceData``; oldco's is hexframe, for ``APPdata``; acme's is the access standard.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityiot.ingest.codecs.hexframe import encode as hexframe
from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.test_telemetry_link import Link, running_link
from tests.codecs.frames import copy_codec
from tests.waiting import until

IMEIS = {"nb-1": "869975031230001", "nb-2": "869975031230002", "nb-3": "869975031230003"}
OWNERS = {"nb-1": "ctco", "nb-2": "oldco", "nb-3": "acme"}
ONENET_IDS = {"nb-1": "1052201", "nb-2": "1052202", "nb-3": "1052203"}
UNKNOWN_IMEI = "869975031239999"
_sn = itertools.count(1)


class CtLink:
    """The running platform and each vendor's intake token."""

    def __init__(self, link: Link, tokens: dict[str, str]) -> None:
        self.link = link
        self.tokens = tokens

    async def push(self, vendor: str, message: dict[str, Any], token: str | None = "own") -> Any:
        params = (
            {} if token is None else {"token": self.tokens[vendor] if token == "own" else token}
        )
        return await self.link.client(None).post(
            f"/api/v1/intake/ctwing/{vendor}", json=message, params=params
        )


def data_report(device_id: str, payload: dict[str, Any], ts: int, sn: int) -> dict[str, Any]:
    """A dataReport as CTWing pushes it."""
    imei = IMEIS.get(device_id, device_id)
    return {
        "upPacketSN": sn,
        "upDataSN": -1,
        "topic": "v1/up/ad",
        "timestamp": ts,
        "tenantId": "2000031234",
        "serviceId": "",
        "protocol": "lwm2m",
        "productId": "15012345",
        "payload": payload,
        "messageType": "dataReport",
        "deviceType": "",
        "deviceId": f"15012345{imei}",
        "assocAssetId": "",
        "IMSI": "undefined",
        "IMEI": imei,
    }


def online_report(device_id: str, event: int, ts: int) -> dict[str, Any]:
    """A deviceOnlineOfflineReport as CTWing pushes it."""
    return {
        "timestamp": ts,
        "tenantId": "2000031234",
        "protocol": "lwm2m",
        "productId": "15012345",
        "messageType": "deviceOnlineOfflineReport",
        "eventType": event,
        "deviceId": f"15012345{IMEIS[device_id]}",
        "IMEI": IMEIS[device_id],
    }


@pytest.fixture(scope="module")
async def ct(
    broker: LocalBroker, influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CtLink]:
    tmp: Path = tmp_path_factory.mktemp("ctwing")
    copy_codec("acme-json", tmp / "codecs")
    async with running_link(tmp, broker, influx, codecs_path=tmp / "codecs") as link:
        admin = link.client("admin")
        r = await admin.post(
            "/api/v1/vendors", json={"id": "ctco", "name": "CT Co", "codec": "acme-json"}
        )
        assert r.status_code == 201, r.text
        for device_id, vendor in OWNERS.items():
            device = {
                "device_id": device_id,
                "vendor": vendor,
                "kind": "manhole",
                "district": "yicheng",
                "lat": 32.98,
                "lon": 114.02,
                "report_interval_s": 86400,
                "attributes": {
                    "depth_cm": 180,
                    "imei": IMEIS[device_id],
                    "onenet_dev_id": ONENET_IDS[device_id],
                },
            }
            r = await admin.post("/api/v1/devices", json=device)
            assert r.status_code == 201, r.text
        tokens = {}
        for vendor in ("ctco", "oldco", "acme"):
            r = await admin.post(f"/api/v1/vendors/{vendor}/intake-token")
            assert r.status_code == 201, r.text
            tokens[vendor] = r.json()["token"]
        devices = link.running.ingest.intake.devices
        await until(
            lambda: (
                all(i in devices.by_imei for i in IMEIS.values())
                and all(i in devices.by_onenet_dev_id for i in ONENET_IDS.values())
                and devices.codecs.get("ctco") == "acme-json"
            ),
            15,
            "the ingest's device map has the NB-IoT devices and ctco's codec",
        )
        yield CtLink(link, tokens)


async def test_service_data_is_mapped_stored_at_its_timestamp_and_a_resend_dropped(
    ct: CtLink,
) -> None:
    ts, sn = ct.link.ts(), next(_sn)
    message = data_report("nb-1", {"serviceData": {"lvl": 42.5, "bat": 88}}, ts, sn)
    r = await ct.push("ctco", message)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    # Answered once durable: the point is in InfluxDB, at CTWing's timestamp.
    assert await ct.link.points("manhole", "nb-1", "water_level_cm") == [ts]
    # CTWing resends (its answer was lost): the same upPacketSN is dropped.
    r = await ct.push("ctco", message)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 0, "rejected": [], "duplicates": 1}
    assert await ct.link.points("manhole", "nb-1", "water_level_cm") == [ts]


async def test_service_data_for_the_access_standard_codec_is_its_metrics(ct: CtLink) -> None:
    ts = ct.link.ts()
    message = data_report(
        "nb-3", {"serviceData": {"tilt_deg": 3.5, "cover_open": False}}, ts, next(_sn)
    )
    r = await ct.push("acme", message)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    assert await ct.link.points("manhole", "nb-3", "tilt_deg") == [ts]


async def test_app_data_is_decoded_by_the_vendors_codec(ct: CtLink) -> None:
    ts = ct.link.ts()
    frame = hexframe("manhole", {"tilt_deg": 4.5, "cover_open": False}, None, 7)
    payload = {"APPdata": base64.b64encode(frame).decode()}
    r = await ct.push("oldco", data_report("nb-2", payload, ts, next(_sn)))
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    # The frame carries no time: CTWing's timestamp is the reading's.
    assert await ct.link.points("manhole", "nb-2", "tilt_deg") == [ts]


async def test_a_frame_the_codec_refuses_is_answered_200_and_kept(ct: CtLink) -> None:
    payload = {"APPdata": base64.b64encode(b"not a frame").decode()}
    r = await ct.push("oldco", data_report("nb-2", payload, ct.link.ts(), next(_sn)))
    assert r.status_code == 200, r.text  # CTWing would resend anything else for ever
    [refused] = r.json()["rejected"]
    letters = await ct.link.dead_letters("nb-2")
    assert refused["reason"] in [d["reason"] for d in letters]


async def test_online_reports_are_presence_and_offline_ones_leave_a_sleeper_online(
    ct: CtLink,
) -> None:
    """An NB-IoT device sleeps between its reports, and CTWing reports it offline within
    minutes of each: the device stays online until 3 × its report interval pass in silence."""
    admin = ct.link.client("admin")

    async def state(**wanted: str) -> bool:
        device = (await admin.get("/api/v1/devices/nb-2")).json()
        return all(device[k] == v for k, v in wanted.items())

    r = await ct.push("oldco", online_report("nb-2", 1, ct.link.ts()))
    assert r.status_code == 200, r.text
    await until(lambda: state(status="online", link="ctwing"), 15, "nb-2 online by ctwing")
    r = await ct.push("oldco", online_report("nb-2", 0, ct.link.ts()))
    assert r.status_code == 200, r.text
    # Answered once handled: the ingest's presence has taken the report in already.
    presence = ct.link.running.ingest.intake.presence
    assert "nb-2" in presence.online and "nb-2" not in presence.went_offline
    assert await state(status="online")


async def test_a_wrong_or_missing_token_is_401_and_nothing_is_stored(ct: CtLink) -> None:
    ts = ct.link.ts()
    message = data_report("nb-1", {"serviceData": {"lvl": 7.0}}, ts, next(_sn))
    for token in (None, "x" * 32, ct.tokens["oldco"]):  # oldco's token is not ctco's
        r = await ct.push("ctco", message, token=token)
        assert r.status_code == 401, r.text
        assert "intake token" in r.json()["detail"]
    # The token comes first: a body that is not even JSON is not looked at without it.
    r = await ct.link.client(None).post("/api/v1/intake/ctwing/ctco", content=b"{not json")
    assert r.status_code == 401, r.text
    # Taken with the right token afterwards: the refused pushes left nothing behind.
    r = await ct.push("ctco", message)
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert ts in await ct.link.points("manhole", "nb-1", "water_level_cm")
    r = await ct.push("ctco", message)
    assert r.json()["duplicates"] == 1


async def test_an_unknown_imei_or_another_vendors_is_a_dead_letter_answered_200(
    ct: CtLink,
) -> None:
    for imei in (UNKNOWN_IMEI, IMEIS["nb-2"]):  # nb-2 is oldco's, not ctco's
        message = data_report(imei, {"serviceData": {"lvl": 1.0}}, ct.link.ts(), next(_sn))
        r = await ct.push("ctco", message)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["stored"] == 0
        [refused] = answer["rejected"]
        assert f"IMEI '{imei}' is not registered to vendor ctco" in refused["reason"]
    r = await ct.link.client("admin").get("/api/v1/deadletters", params={"vendor": "ctco"})
    reasons = [d["reason"] for d in r.json()["items"]]
    assert any(UNKNOWN_IMEI in reason for reason in reasons)
    assert any(IMEIS["nb-2"] in reason for reason in reasons)


async def test_not_a_ctwing_message_is_400_and_other_types_are_200(ct: CtLink) -> None:
    client = ct.link.client(None)
    url = "/api/v1/intake/ctwing/ctco"
    r = await client.post(url, content=b"{not json", params={"token": ct.tokens["ctco"]})
    assert r.status_code == 400 and "messageType" in r.json()["detail"], r.text
    response = {
        "messageType": "commandResponse",
        "IMEI": IMEIS["nb-1"],
        "timestamp": ct.link.ts(),
        "taskId": 12,
        "result": {"resultCode": "SUCCESSFUL", "resultDetail": {}},
    }
    r = await ct.push("ctco", response)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 0, "rejected": [], "duplicates": 0}
