"""The fleet beyond MQTT (docs/design.md §4a): LoRaWAN devices as a ChirpStack v4's events,
NB-IoT devices as CTWing's and OneNET's pushes. Each message is parsed back as the platform
would: the envelope's fields, the frame inside decoded by the shipped codec into the reading
the device made, OneNET's signature checked with the token, the registry CSV imported."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import PayloadError, RawReading, default_codecs
from cityiot.ingest.codecs.hexframe import encode as FRAME_ENCODE  # noqa: N812
from cityiot.simulators import (
    DEFAULT_VENDORS,
    LINK_VENDORS,
    Fleet,
    SimDevice,
    iter_reports,
    status_messages,
)
from cityiot.simulators import links as link_messages
from cityiot.simulators.fleet import imei
from cityiot.simulators.messages import on_link
from cityiot.storage.device_csv import parse_device_csv

START_MS = 1_763_856_000_000
FRAME_CODEC = default_codecs()["hexframe"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.generate(300, seed=3, vendors=(*DEFAULT_VENDORS, *LINK_VENDORS))


def _reports(fleet: Fleet, count: int = 900) -> list[tuple[int, Any]]:
    return [(ts, r) for ts, r in iter_reports(fleet, START_MS, count, seed=3) if r is not None]


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def test_link_devices_carry_their_identities_and_the_registry_takes_them(
    fleet: Fleet, tmp_path: Path
) -> None:
    by_link = Counter(d.link for d in fleet)
    assert set(by_link) == {"mqtt", "chirpstack", "ctwing", "onenet"}, by_link
    for device in fleet:
        assert bool(device.dev_eui) == (device.link == "chirpstack")
        assert bool(device.imei) == (device.link in ("ctwing", "onenet"))
        assert bool(device.onenet_dev_id) == (device.link == "onenet")
        if device.dev_eui:
            assert re.fullmatch(r"[0-9A-F]{16}", device.dev_eui)
        if device.imei:
            assert re.fullmatch(r"\d{15}", device.imei) and _luhn_ok(device.imei)
    for name in ("dev_eui", "imei", "onenet_dev_id"):
        values = [getattr(d, name) for d in fleet if getattr(d, name)]
        assert len(values) == len(set(values)), f"{name} repeated"
    # The registry's own CSV parser takes every row, identities checked by its rules.
    parsed = parse_device_csv(fleet.csv_text())
    assert parsed.errors == []
    rows = {row.device_id: row for row in parsed.rows}
    for device in fleet:
        row = rows[device.device_id]
        assert (row.dev_eui or "", row.imei or "", row.onenet_dev_id or "") == (
            device.dev_eui,
            device.imei,
            device.onenet_dev_id,
        )
    # Read back, a device keeps its link and identities.
    fleet.write_csv(tmp_path / "fleet.csv")
    again = Fleet.from_csv(tmp_path / "fleet.csv", vendors=fleet.vendors)
    identities = [(d.device_id, d.link, d.dev_eui, d.imei, d.onenet_dev_id) for d in fleet]
    assert [(d.device_id, d.link, d.dev_eui, d.imei, d.onenet_dev_id) for d in again] == identities


def test_an_mqtt_only_fleet_is_unchanged() -> None:
    fleet = Fleet.generate(50, seed=1)
    assert {d.link for d in fleet} == {"mqtt"}
    assert "dev_eui" not in fleet.csv_columns


def test_imeis_of_other_seeds_and_the_millionth_device_do_not_clash() -> None:
    assert len({imei(seed, i) for seed in range(3) for i in (0, 1, 999_999, 1_000_000)}) == 12


def _frame_reading(frame: bytes, device: SimDevice) -> RawReading:
    (decoded,) = FRAME_CODEC.decode(frame, KINDS[device.kind])
    return decoded


def test_chirpstack_uplinks_are_v4_events_with_the_frame_in_data(fleet: Fleet) -> None:
    counts: dict[str, list[int]] = {}
    dedup: set[str] = set()
    for ts, report in _reports(fleet):
        device = report.device
        if device.link != "chirpstack":
            continue
        assert report.message.topic == (
            f"application/{link_messages.APPLICATION_ID}/device/{device.dev_eui.lower()}/event/up"
        )
        event = orjson.loads(report.message.payload)
        assert UUID.match(event["deduplicationId"]) and event["deduplicationId"] not in dedup
        dedup.add(event["deduplicationId"])
        assert RFC3339_UTC.match(event["time"])
        when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        assert event["time"] == when.isoformat(timespec="microseconds")
        info = event["deviceInfo"]
        assert set(info) == {
            "tenantId", "tenantName", "applicationId", "applicationName", "deviceProfileId",
            "deviceProfileName", "deviceName", "devEui", "tags",
        }  # fmt: skip
        assert info["devEui"] == device.dev_eui.lower() and info["deviceName"] == device.device_id
        assert info["applicationId"] == link_messages.APPLICATION_ID
        assert re.fullmatch(r"[0-9a-f]{8}", event["devAddr"])
        assert isinstance(event["adr"], bool) and event["confirmed"] is False
        assert event["fPort"] == link_messages.FPORT and 0 <= event["dr"] <= 5
        counts.setdefault(device.device_id, []).append(event["fCnt"])
        assert event["rxInfo"] and all(
            -140 <= rx["rssi"] < 0 and isinstance(rx["snr"], float) for rx in event["rxInfo"]
        )
        tx = event["txInfo"]
        assert 470_000_000 <= tx["frequency"] <= 510_000_000
        assert tx["modulation"]["lora"]["bandwidth"] == 125000
        # The frame is the device's reading in its vendor's codec, as the platform decodes it.
        frame = base64.b64decode(event["data"])
        decoded = _frame_reading(frame, device)
        assert decoded.metrics and set(decoded.metrics) <= {
            m.name for m in KINDS[device.kind].metrics
        }
        assert decoded.seq == event["fCnt"] and decoded.ts == ts // 1000 * 1000
    assert counts, "no LoRaWAN uplink in the stream"
    for f_cnts in counts.values():  # each device's frame counter goes up by one
        assert f_cnts == list(range(f_cnts[0], f_cnts[0] + len(f_cnts)))


def test_chirpstack_status_events_give_the_battery(fleet: Fleet) -> None:
    found = 0
    for report in status_messages(fleet, online=True, now_ms=START_MS, seed=3):
        if report.device.link != "chirpstack":
            continue
        found += 1
        assert report.message.topic.endswith(
            f"/device/{report.device.dev_eui.lower()}/event/status"
        )
        event = orjson.loads(report.message.payload)
        assert UUID.match(event["deduplicationId"])
        assert event["deviceInfo"]["devEui"] == report.device.dev_eui.lower()
        assert 0 <= event["batteryLevel"] <= 100 and event["batteryLevelUnavailable"] is False
        assert isinstance(event["margin"], int) and event["externalPowerSource"] is False
    assert found


def test_ctwing_data_reports_carry_app_data_frames_or_service_data(fleet: Fleet) -> None:
    seen = Counter()
    sns: dict[str, list[int]] = {}
    for ts, report in _reports(fleet):
        device = report.device
        if device.link != "ctwing":
            continue
        assert report.message.topic == f"/api/v1/intake/ctwing/{device.vendor}"
        message = orjson.loads(report.message.payload)
        assert message["messageType"] == "dataReport"
        assert message["IMEI"] == device.imei and message["deviceId"].endswith(device.imei)
        assert message["timestamp"] == ts
        sns.setdefault(device.device_id, []).append(message["upPacketSN"])
        payload = message["payload"]
        if device.codec == "hexframe":
            seen["APPdata"] += 1
            decoded = _frame_reading(base64.b64decode(payload["APPdata"]), device)
            assert decoded.metrics and decoded.seq == message["upPacketSN"]
        else:
            seen["serviceData"] += 1
            names = {m.name for m in KINDS[device.kind].metrics}
            assert payload["serviceData"] and set(payload["serviceData"]) <= names
    assert seen["APPdata"] and seen["serviceData"], seen
    for numbers in sns.values():
        assert numbers == sorted(set(numbers))
    online = [r for r in status_messages(fleet, now_ms=START_MS) if r.device.link == "ctwing"]
    message = orjson.loads(online[0].message.payload)
    assert message["messageType"] == "deviceOnlineOfflineReport"
    assert message["eventType"] == 1 and message["IMEI"] == online[0].device.imei


def _verify_onenet(body: bytes, token: str) -> Any:
    """What the platform does with a OneNET push: check the signature, then read msg."""
    push = orjson.loads(body)
    assert set(push) == {"msg", "nonce", "msg_signature"}
    assert isinstance(push["msg"], str)
    signed = (token + push["nonce"] + push["msg"]).encode()
    digest = hashlib.md5(signed, usedforsecurity=False).digest()
    assert push["msg_signature"] == base64.b64encode(digest).decode()
    return orjson.loads(push["msg"])


def test_onenet_pushes_are_signed_data_points_and_presence(fleet: Fleet) -> None:
    token = "T0kenOfTheVendor0000000000000001"
    rng = random.Random(1)
    points = 0
    for ts, report in _reports(fleet):
        device = report.device
        if device.link != "onenet":
            continue
        assert report.message.topic == f"/api/v1/intake/onenet/{device.vendor}"
        body = link_messages.onenet_body(report.message.payload, token, rng)
        messages = _verify_onenet(body, token)
        assert isinstance(messages, list) and messages
        names = {m.name for m in KINDS[device.kind].metrics}
        for message in messages:
            assert message["type"] == 1 and message["at"] == ts
            assert message["imei"] == device.imei
            assert str(message["dev_id"]) == device.onenet_dev_id
            assert message["ds_id"] in names
            points += 1
        # A token it was not signed with does not verify.
        with pytest.raises(AssertionError):
            _verify_onenet(body, token[:-1] + "2")
    assert points
    presence = [r for r in status_messages(fleet, now_ms=START_MS) if r.device.link == "onenet"]
    body = link_messages.onenet_body(presence[0].message.payload, token, rng)
    message = _verify_onenet(body, token)
    assert message["type"] == 2 and message["status"] == 1
    assert message["imei"] == presence[0].device.imei


def test_a_pass_through_onenet_device_sends_its_frame_as_hex(fleet: Fleet) -> None:
    onenet = next(d for d in fleet if d.link == "onenet")
    device = SimDevice(**{**_fields(onenet), "codec": "hexframe", "kind": "manhole"})
    frame = FRAME_ENCODE("manhole", {"tilt_deg": 2.5, "cover_open": False}, START_MS, 7)
    message = on_link(device, frame, START_MS, 7, "ok", random.Random(1))
    (point,) = orjson.loads(message.payload)
    assert point["type"] == 1 and point["ds_id"] == "data"
    # The string value is hex of the bytes the decoder takes (OneNET's pass-through).
    decoded = _frame_reading(bytes.fromhex(point["value"]), device)
    assert decoded.metrics == {"tilt_deg": 2.5, "cover_open": False} and decoded.seq == 7


def test_malformed_frames_of_link_devices_go_inside_a_well_formed_envelope(fleet: Fleet) -> None:
    labels = Counter()
    for _ts, report in iter_reports(fleet, START_MS, 1500, seed=3, malformed_share=0.3):
        if report is None or report.device.link == "mqtt":
            continue
        device, message = report.device, report.message
        labels[message.label] += 1
        if message.label == "ok":
            continue
        # Only frame devices get broken frames; the envelope still parses.
        assert device.codec == "hexframe"
        envelope = orjson.loads(message.payload)
        data = envelope["data"] if device.link == "chirpstack" else envelope["payload"]["APPdata"]
        if message.label == "bad_crc":  # refused by the codec itself; the rest by validation
            with pytest.raises(PayloadError, match="CRC"):
                _frame_reading(base64.b64decode(data), device)
    assert labels["ok"] and labels["bad_crc"], labels


def test_the_same_seed_gives_the_same_link_messages(fleet: Fleet) -> None:
    first = [r.message for _t, r in _reports(fleet, 200)]
    again = [r.message for _t, r in _reports(fleet, 200)]
    assert first == again


def _fields(device: SimDevice) -> dict[str, Any]:
    return {name: getattr(device, name) for name in SimDevice.__dataclass_fields__}
