"""OneNET's (China Mobile) HTTP push, ``GET/POST /api/v1/intake/onenet/{vendor}`` (design
§4a), against the real platform (the CTWing tests' platform and vendors): what OneNET sends,
signed as OneNET signs it, checked where it lands — InfluxDB, dead letters, the audit log.

ctco's codec maps its own names (acme-json: ``lvl``, ``bat``); oldco's is hexframe (a
pass-through device's value is its frame in hex); acme's is the access standard.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import orjson

from cityiot.ingest.codecs.hexframe import encode as hexframe
from tests.api.test_ctwing_intake import IMEIS, ONENET_IDS, UNKNOWN_IMEI, CtLink, ct
from tests.waiting import until

__all__ = ["ct"]  # the CTWing tests' platform, vendors, devices and tokens


def sign(token: str, nonce: str, msg: str) -> str:
    """What OneNET computes: base64(md5(token + nonce + msg))."""
    return base64.b64encode(hashlib.md5((token + nonce + msg).encode()).digest()).decode()


def point(device_id: str, ds_id: str, value: Any, at: int, by: str = "imei") -> dict[str, Any]:
    """A data point (type 1) as OneNET pushes it, naming the device by imei or dev_id."""
    message: dict[str, Any] = {"type": 1, "ds_id": ds_id, "value": value, "at": at}
    if by == "imei":
        message["imei"] = IMEIS.get(device_id, device_id)
    else:
        message["dev_id"] = int(ONENET_IDS[device_id])
    return message


async def push(ct: CtLink, vendor: str, msg: Any, token: str | None = None) -> Any:
    """POST ``msg`` (one message or a list) signed with the vendor's token (or ``token``)."""
    text = orjson.dumps(msg).decode()
    nonce = secrets.token_urlsafe(6)
    body = {
        "msg": text,
        "nonce": nonce,
        "msg_signature": sign(token or ct.tokens[vendor], nonce, text),
    }
    return await ct.link.client(None).post(f"/api/v1/intake/onenet/{vendor}", json=body)


async def test_the_url_check_answers_msg_when_signed_with_the_token(ct: CtLink) -> None:
    client = ct.link.client(None)
    url = "/api/v1/intake/onenet/ctco"
    msg = "aXb3kLq9"
    # A nonce whose signature holds a '+', which a query string may carry unescaped.
    nonce = next(
        n for n in (f"n{i}" for i in range(1000)) if "+" in sign(ct.tokens["ctco"], n, msg)
    )
    good = sign(ct.tokens["ctco"], nonce, msg)
    r = await client.get(url, params={"msg": msg, "nonce": nonce, "signature": good})
    assert r.status_code == 200, r.text
    assert r.text == msg and r.headers["content-type"].startswith("text/plain")
    # A '+' of the base64 left unescaped in the query reads as a space: still the signature.
    raw = f"{url}?msg={msg}&nonce={nonce}&signature={good}"
    r = await client.get(raw)
    assert r.status_code == 200 and r.text == msg, r.text
    for params in (
        {"msg": msg, "nonce": nonce, "signature": sign(ct.tokens["oldco"], nonce, msg)},
        {"msg": msg, "nonce": nonce, "signature": sign(ct.tokens["ctco"], nonce, msg + "x")},
        {"msg": msg, "nonce": nonce},
        {},
    ):
        r = await client.get(url, params=params)
        assert r.status_code == 401, r.text
        assert "intake-token" in r.json()["detail"]


async def test_data_points_of_one_time_are_one_reading_at_that_time(ct: CtLink) -> None:
    at = ct.link.ts()
    msg = [point("nb-1", "lvl", 31.5, at), point("nb-1", "bat", 77, at, by="dev_id")]
    r = await push(ct, "ctco", msg)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    # Answered once durable: one point carrying both fields, at OneNET's time.
    assert await ct.link.points("manhole", "nb-1", "water_level_cm") == [at]
    assert await ct.link.points("manhole", "nb-1", "battery_pct") == [at]
    # OneNET resends the push (our answer was lost): the point is written again in place.
    r = await push(ct, "ctco", msg)
    assert r.status_code == 200, r.text
    assert await ct.link.points("manhole", "nb-1", "water_level_cm") == [at]


async def test_a_msg_given_as_json_is_checked_over_its_compact_text(ct: CtLink) -> None:
    at = ct.link.ts()
    msg = point("nb-3", "tilt_deg", 6.5, at)
    nonce = "n0nce123"
    body = {
        "msg": msg,
        "nonce": nonce,
        "msg_signature": sign(ct.tokens["acme"], nonce, orjson.dumps(msg).decode()),
    }
    r = await ct.link.client(None).post("/api/v1/intake/onenet/acme", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    assert await ct.link.points("manhole", "nb-3", "tilt_deg") == [at]


async def test_a_pass_through_value_is_a_hex_frame_for_the_decoder(ct: CtLink) -> None:
    at = ct.link.ts()
    frame = hexframe("manhole", {"tilt_deg": 8.5, "cover_open": True}, None, 9)
    r = await push(ct, "oldco", point("nb-2", "3200_0_5750", frame.hex().upper(), at))
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    assert await ct.link.points("manhole", "nb-2", "tilt_deg") == [at]
    # A value that is no frame: refused by the codec, answered 200 and kept.
    r = await push(ct, "oldco", point("nb-2", "3200_0_5750", "zz-not-hex", ct.link.ts()))
    assert r.status_code == 200, r.text
    [refused] = r.json()["rejected"]
    assert refused["index"] == 0 and "hexframe" in refused["reason"]
    letters = await ct.link.dead_letters("nb-2")
    assert refused["reason"] in [d["reason"] for d in letters]


async def test_unknown_devices_and_bad_messages_are_dead_letters_beside_good_ones(
    ct: CtLink,
) -> None:
    at = ct.link.ts()
    msg = [
        point(UNKNOWN_IMEI, "lvl", 1.0, at),
        point("nb-2", "lvl", 1.0, at),  # oldco's device, pushed as ctco's
        {"type": 1, "imei": IMEIS["nb-1"], "at": at},  # no ds_id
        "not a message",
        point("nb-1", "lvl", 12.0, at),
        {"type": 7, "imei": IMEIS["nb-1"], "cmd_id": "c-1", "cmd_type": 1},
    ]
    r = await push(ct, "ctco", msg)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["stored"] == 1
    reasons = {item["index"]: item["reason"] for item in answer["rejected"]}
    assert sorted(reasons) == [0, 1, 2, 3]
    assert f"imei '{UNKNOWN_IMEI}' is not registered to vendor ctco" in reasons[0]
    assert IMEIS["nb-2"] in reasons[1]
    assert "ds_id" in reasons[2]
    assert "not a OneNET message" in reasons[3]
    assert at in await ct.link.points("manhole", "nb-1", "water_level_cm")
    r = await ct.link.client("admin").get("/api/v1/deadletters", params={"vendor": "ctco"})
    kept = [d["reason"] for d in r.json()["items"]]
    assert all(reason in kept for reason in reasons.values())


async def test_presence_reports_and_the_link_of_a_device(ct: CtLink) -> None:
    admin = ct.link.client("admin")
    r = await push(
        ct,
        "acme",
        {"type": 2, "imei": IMEIS["nb-3"], "status": 1, "login_type": 10, "at": ct.link.ts()},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 0, "rejected": [], "duplicates": 0}

    async def state() -> dict[str, Any]:
        device: dict[str, Any] = (await admin.get("/api/v1/devices/nb-3")).json()
        return device

    await until(lambda: _is(state(), status="online", link="onenet"), 15, "nb-3 online by onenet")


async def _is(device: Any, **wanted: Any) -> bool:
    got = await device
    return all(got.get(k) == v for k, v in wanted.items())


async def test_a_forged_signature_is_401_stores_nothing_and_is_audited_when_repeated(
    ct: CtLink,
) -> None:
    at = ct.link.ts()
    msg = point("nb-1", "lvl", 66.0, at)
    forged = "x" * 32
    for _ in range(5):
        r = await push(ct, "ctco", msg, token=forged)
        assert r.status_code == 401, r.text
    # Not even a JSON body is read further without a signature.
    r = await ct.link.client(None).post("/api/v1/intake/onenet/ctco", content=b"{not json")
    assert r.status_code == 401, r.text
    assert at not in await ct.link.points("manhole", "nb-1", "water_level_cm")
    r = await ct.link.client("admin").get(
        "/api/v1/audit", params={"action": "intake.token_failures"}
    )
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["items"] if e["detail"]["vendor"] == "ctco"]
    [entry] = [e for e in entries if e["detail"]["link"] == "onenet"]  # once, not per failure
    assert entry["detail"]["failures"] == 5 and entry["detail"]["wrong"] == "signature"
    assert forged not in str(entry)


async def test_a_push_over_the_message_cap_is_413_before_it_is_read(ct: CtLink) -> None:
    """A push is a device's message: capped by CITYIOT_MAX_PAYLOAD_BYTES, like one over
    MQTT or the HTTP link, on CTWing's path and OneNET's."""
    cap = ct.link.settings.max_payload_bytes
    client = ct.link.client(None)
    for url in (
        f"/api/v1/intake/ctwing/ctco?token={ct.tokens['ctco']}",
        "/api/v1/intake/onenet/ctco",
    ):
        r = await client.post(url, content=b" " * (cap + 1))
        assert r.status_code == 413, r.text
        assert "CITYIOT_MAX_PAYLOAD_BYTES" in r.json()["detail"]


async def test_a_pushed_reading_is_judged_by_the_rules(ct: CtLink) -> None:
    """Readings pushed by a network are alerted on like any: an open cover fires at once."""
    at = ct.link.ts()
    msg = [point("nb-3", "cover_open", True, at), point("nb-3", "tilt_deg", 21.0, at)]
    r = await push(ct, "acme", msg)
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    operator = ct.link.client("operator")

    async def fired() -> list[dict[str, Any]]:
        r = await operator.get("/api/v1/alerts", params={"device_id": "nb-3"})
        return [a for a in r.json()["items"] if a["rule"] == "manhole_cover_open"]

    [alert] = await until(fired, 15, "manhole_cover_open on nb-3")
    assert alert["vendor"] == "acme" and alert["values"]["tilt_deg"] == 21.0
