"""What the networks beyond MQTT send for a simulated device (docs/design.md §4a).

A LoRaWAN device's uplink reaches the platform as a ChirpStack v4 integration event (JSON
marshaler) on ``application/{applicationId}/device/{devEui}/event/up``; its battery as a
status event on ``…/event/status``. An NB-IoT device's reading reaches it as an HTTP push of
China Telecom's CTWing (AEP) or China Mobile's OneNET, to the platform's intake. The shapes
are the platforms' own, field for field, so the platform meets here what it meets in a city.

The builders are pure: the random parts (a deduplication id, radio figures, a nonce) come
from the ``rng`` given, so a seeded stream gives the same messages. OneNET's signature needs
the vendor's intake token, known only where the simulator runs: :func:`onenet_body` signs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
import string
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from cityiot.simulators.fleet import SimDevice

# One simulated ChirpStack tenant and application for the whole fleet: ids are UUIDs as
# ChirpStack gives them, fixed so topics stay the same between runs.
TENANT_ID = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
TENANT_NAME = "驻马店市城市物联网"
APPLICATION_ID = "17c82e96-be03-4f38-aef3-f83d48582d97"
APPLICATION_NAME = "city-sensors"
DEVICE_PROFILE_ID = "14855bf7-d10d-4aee-b618-ebfcb64dc7ad"
GATEWAY_IDS = ("0016c001f153a14c", "0016c001f153a14d", "0016c001f1540a02")
# CN470 (GB/T uplink channels 470.3 MHz + 0.2 MHz × n), the band of LoRaWAN in China.
_CN470_UPLINK_HZ = tuple(470_300_000 + 200_000 * n for n in range(96))
FPORT = 2  # the simulated devices' application port for readings

# CTWing's fields that name the product and tenant a device is registered under.
CTWING_TENANT_ID = "2000031234"
CTWING_PRODUCT_ID = "15012345"

ONENET_NONCE_CHARS = string.ascii_letters + string.digits

INTAKE_PATHS = {
    "ctwing": "/api/v1/intake/ctwing/{vendor}",
    "onenet": "/api/v1/intake/onenet/{vendor}",
}


def chirpstack_topic(device: SimDevice, event: str = "up") -> str:
    """``application/{applicationId}/device/{devEui}/event/{event}``; ChirpStack writes the
    DevEUI in lower case."""
    return f"application/{APPLICATION_ID}/device/{device.dev_eui.lower()}/event/{event}"


def _device_info(device: SimDevice) -> dict[str, Any]:
    return {
        "tenantId": TENANT_ID,
        "tenantName": TENANT_NAME,
        "applicationId": APPLICATION_ID,
        "applicationName": APPLICATION_NAME,
        "deviceProfileId": DEVICE_PROFILE_ID,
        "deviceProfileName": f"{device.vendor} {device.kind} CN470",
        "deviceName": device.device_id,
        "devEui": device.dev_eui.lower(),
        "tags": {"kind": device.kind, "district": device.district},
    }


def _time(ts_ms: int) -> str:
    """ChirpStack's RFC 3339 time with microseconds and ``+00:00``."""
    when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    return when.isoformat(timespec="microseconds")


def _dedup_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def chirpstack_uplink(
    device: SimDevice, frame: bytes, ts_ms: int, f_cnt: int, rng: random.Random
) -> bytes:
    """A ChirpStack v4 uplink event carrying ``frame`` (FRMPayload) on :data:`FPORT`."""
    dr = rng.choice((2, 3, 4, 5))
    gateways = rng.sample(GATEWAY_IDS, rng.randint(1, 2))
    event = {
        "deduplicationId": _dedup_id(rng),
        "time": _time(ts_ms),
        "deviceInfo": _device_info(device),
        "devAddr": f"{int(device.dev_eui[-8:], 16) & 0x01FFFFFF | 0x26000000:08x}",
        "adr": True,
        "dr": dr,
        "fCnt": f_cnt,
        "fPort": FPORT,
        "confirmed": False,
        "data": base64.b64encode(frame).decode("ascii"),
        "rxInfo": [
            {
                "gatewayId": gateway,
                "uplinkId": rng.getrandbits(32),
                "time": _time(ts_ms),
                "rssi": rng.randint(-118, -62),
                "snr": round(rng.uniform(-12.0, 9.5), 1),
                "channel": rng.randrange(8),
                "context": base64.b64encode(rng.randbytes(4)).decode("ascii"),
                "metadata": {"region_config_id": "cn470_10", "region_common_name": "CN470"},
                "crcStatus": "CRC_OK",
            }
            for gateway in gateways
        ],
        "txInfo": {
            "frequency": rng.choice(_CN470_UPLINK_HZ),
            "modulation": {
                "lora": {"bandwidth": 125000, "spreadingFactor": 12 - dr, "codeRate": "CR_4_5"}
            },
        },
    }
    return orjson.dumps(event)


def chirpstack_status(
    device: SimDevice, battery_pct: float, ts_ms: int, rng: random.Random
) -> bytes:
    """A ChirpStack v4 status event: the device's answer to DevStatusReq, its battery as a
    percentage (``batteryLevel``) and its link margin."""
    event = {
        "deduplicationId": _dedup_id(rng),
        "time": _time(ts_ms),
        "deviceInfo": _device_info(device),
        "margin": rng.randint(2, 20),
        "externalPowerSource": False,
        "batteryLevelUnavailable": False,
        "batteryLevel": round(battery_pct, 2),
    }
    return orjson.dumps(event)


def _ctwing_device_id(device: SimDevice) -> str:
    return f"{CTWING_PRODUCT_ID}{device.imei}"


def ctwing_data_report(
    device: SimDevice, payload: bytes | Mapping[str, Any], ts_ms: int, up_packet_sn: int
) -> bytes:
    """A CTWing ``dataReport``: a frame goes as ``payload.APPdata`` (base64), the readings of
    a thing-model product as ``payload.serviceData``."""
    body = (
        {"APPdata": base64.b64encode(payload).decode("ascii")}
        if isinstance(payload, bytes)
        else {"serviceData": dict(payload)}
    )
    message = {
        "upPacketSN": up_packet_sn,
        "upDataSN": -1,
        "topic": "v1/up/ad",
        "timestamp": ts_ms,
        "tenantId": CTWING_TENANT_ID,
        "serviceId": "" if isinstance(payload, bytes) else "1",
        "protocol": "lwm2m",
        "productId": CTWING_PRODUCT_ID,
        "payload": body,
        "messageType": "dataReport",
        "deviceType": "",
        "deviceId": _ctwing_device_id(device),
        "assocAssetId": "",
        "IMSI": "undefined",
        "IMEI": device.imei,
    }
    return orjson.dumps(message)


def ctwing_online(device: SimDevice, online: bool, ts_ms: int) -> bytes:
    """A CTWing ``deviceOnlineOfflineReport`` (``eventType`` 1 online, 0 offline)."""
    message = {
        "timestamp": ts_ms,
        "tenantId": CTWING_TENANT_ID,
        "protocol": "lwm2m",
        "productId": CTWING_PRODUCT_ID,
        "messageType": "deviceOnlineOfflineReport",
        "eventType": 1 if online else 0,
        "deviceId": _ctwing_device_id(device),
        "IMEI": device.imei,
    }
    return orjson.dumps(message)


def onenet_data_points(device: SimDevice, values: Mapping[str, Any], at_ms: int) -> bytes:
    """OneNET ``type`` 1 messages, one data point (``ds_id``, ``value``) per name, all at
    ``at_ms``, as the JSON text of the push's ``msg`` (an array)."""
    messages = [
        {
            "at": at_ms,
            "imei": device.imei,
            "type": 1,
            "ds_id": name,
            "value": value,
            "dev_id": int(device.onenet_dev_id),
        }
        for name, value in values.items()
    ]
    return orjson.dumps(messages)


def onenet_status(device: SimDevice, online: bool, at_ms: int) -> bytes:
    """A OneNET ``type`` 2 message (``status`` 1 online, 0 offline; ``login_type`` 10 is an
    NB-IoT LwM2M device), as the JSON text of the push's ``msg``."""
    message = {
        "at": at_ms,
        "login_type": 10,
        "imei": device.imei,
        "type": 2,
        "dev_id": int(device.onenet_dev_id),
        "status": 1 if online else 0,
    }
    return orjson.dumps(message)


def onenet_signature(token: str, nonce: str, msg: str) -> str:
    """base64(md5(token + nonce + msg)): how OneNET signs a push with the configured token."""
    digest = hashlib.md5((token + nonce + msg).encode("utf-8"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def onenet_body(msg: bytes, token: str, rng: random.Random) -> bytes:
    """The body OneNET posts: ``{"msg": "<JSON text>", "nonce", "msg_signature"}``, signed
    with ``token`` over a fresh eight-character nonce."""
    text = msg.decode("utf-8")
    nonce = "".join(rng.choices(ONENET_NONCE_CHARS, k=8))
    return orjson.dumps(
        {"msg": text, "nonce": nonce, "msg_signature": onenet_signature(token, nonce, text)}
    )


def intake_path(link: str, vendor: str) -> str:
    """Where a network platform posts a vendor's pushes (``/api/v1/intake/{link}/{vendor}``)."""
    return INTAKE_PATHS[link].format(vendor=vendor)


def hex_values(frame: bytes) -> dict[str, str]:
    """A pass-through device's frame as OneNET carries it: one string data point, hex."""
    return {"data": frame.hex().upper()}
