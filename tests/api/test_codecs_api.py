"""GET /codecs, GET/PUT /codecs/{name}, POST /codecs/{name}/decode over a running API and a
real database: the shipped codecs as their files say and put back unchanged; a vendor's
TS013 decoder with a mapping put, listed and decoding at once; a codec whose example fails
refused with the example named and nothing stored; admin-only puts, audited; decoding
validated exactly as the ingest validates, rejections with the ingest's reasons; vendors
set to any codec in force (POST and PATCH /vendors)."""

from __future__ import annotations

import copy
import time
from typing import Any

from sqlalchemy import select

from cityiot.ingest.codecs.hexframe import encode
from cityiot.storage.tables.codecs import CodecOverride
from tests.api.conftest import ROLES, Api

C = "/api/v1/codecs"
V = "/api/v1/vendors"

# A level sensor's decoder as vendors publish them (TS013): a big-endian uint16 distance in
# millimetres and a battery byte; a frame of another length is reported as an error.
LEVEL_JS = """
function decodeUplink(input) {
  var b = input.bytes;
  if (b.length !== 3) {
    return {errors: ["level frame of " + b.length + " bytes; a frame has 3"]};
  }
  return {data: {distance: (b[0] << 8) | b[1], battery: b[2]}};
}
"""
LEVEL = "acme-level"
LEVEL_SPEC: dict[str, Any] = {
    "codec": LEVEL,
    "description": "Acme ultrasonic level sensor",
    "uplinkDecoder": {
        "fileName": "acme-level.js",
        "examples": [
            {
                "description": "distance 500 mm, battery 92 %",
                "input": {"fPort": 1, "bytes": [0x01, 0xF4, 92]},
                "output": {"data": {"distance": 500, "battery": 92}},
            },
            {
                "description": "a frame cut short",
                "input": {"fPort": 1, "bytes": [0x01]},
                "output": {"errors": ["level frame of 1 bytes; a frame has 3"]},
            },
        ],
    },
    "metrics": {"water_level_cm": "depth_cm - distance / 10", "battery_pct": "battery"},
}
LEVEL_BODY = {"spec": LEVEL_SPEC, "scripts": {"acme-level.js": LEVEL_JS}}
# The vendor's JSON under its own names, nested: a mapping-only codec.
NESTED_SPEC: dict[str, Any] = {
    "codec": "acme-json",
    "metrics": {"water_level_cm": "level.cm", "battery_pct": "bat"},
}


async def put(api: Api, name: str, body: dict[str, Any], role: str = "admin") -> Any:
    return await api.client(role).put(f"{C}/{name}", json=body)


async def decode(api: Api, name: str, body: dict[str, Any], role: str = "admin") -> Any:
    return await api.client(role).post(f"{C}/{name}/decode", json=body)


async def listed(api: Api, role: str = "admin") -> dict[str, dict[str, Any]]:
    r = await api.client(role).get(C)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return {c["name"]: c for c in r.json()["items"]}


async def audit_log(api: Api, action: str) -> list[dict[str, Any]]:
    r = await api.client("admin").get("/api/v1/audit", params={"action": action, "limit": 1000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def stored_codecs(api: Api) -> list[str]:
    async with api.sessions() as session:
        return list(await session.scalars(select(CodecOverride.name)))


# -- reading -------------------------------------------------------------------------------


async def test_every_role_lists_json_and_hexframe_with_their_vendors(api: Api) -> None:
    for role in ROLES:
        codecs = await listed(api, role)
        assert list(codecs) == ["hexframe", "json"], role
        hexframe, json = codecs["hexframe"], codecs["json"]
        assert (hexframe["source"], json["source"]) == ("package", "built-in")
        assert hexframe["has_decoder"] and not hexframe["has_encoder"]
        assert hexframe["examples"] == {"uplink": 3, "downlink": 0}
        assert hexframe["metrics"] is None  # its output fields are the metrics by name
        assert not json["has_decoder"] and json["examples"] == {"uplink": 0, "downlink": 0}
        # Who uses a codec, as far as the key may read vendors.
        users = {
            "admin": (["oldco"], ["acme"]),
            "operator": (["oldco"], ["acme"]),
            "vendor": ([], ["acme"]),  # its own vendor only
            "field": (None, None),
            "department": (None, None),
        }[role]
        assert (hexframe["vendors"], json["vendors"]) == users, role
    assert (await api.client(None).get(C)).status_code == 401


async def test_hexframe_is_served_as_its_file_and_put_back_unchanged(api: Api) -> None:
    r = await api.client("vendor").get(f"{C}/hexframe")  # a shipped codec: any key reads it
    assert r.status_code == 200, r.text
    served = r.json()
    assert (served["name"], served["source"], served["updated_at"]) == (
        "hexframe",
        "package",
        None,
    )
    assert served["spec"]["codec"] == "hexframe"
    assert served["spec"]["uplinkDecoder"]["fileName"] == "hexframe.js"
    assert "function decodeUplink" in served["scripts"]["hexframe.js"]

    again = await put(api, "hexframe", served)  # the GET answer as it is
    assert again.status_code == 200, again.text  # it replaced a codec in force
    assert again.json()["source"] == "api"
    assert again.json()["updated_by"].startswith("key:")
    assert again.json()["updated_by"].endswith("(test admin)")
    assert (again.json()["spec"], again.json()["scripts"]) == (served["spec"], served["scripts"])
    assert (await listed(api))["hexframe"]["source"] == "api"
    assert await stored_codecs(api) == ["hexframe"]
    [entry] = await audit_log(api, "codec.put")
    assert (entry["resource"], entry["role"]) == ("codecs/hexframe", "admin")
    assert entry["detail"]["replaced"] == "package"
    assert set(entry["detail"]["scripts"]["hexframe.js"]) == {"chars", "sha256"}


async def test_json_is_built_in_and_an_unknown_codec_is_a_404_naming_the_known(
    api: Api,
) -> None:
    r = await api.client("field").get(f"{C}/json")
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "built-in"
    assert r.json()["spec"] is None and r.json()["scripts"] == {}
    assert "access standard" in r.json()["note"]
    missing = await api.client("operator").get(f"{C}/em310")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    detail = missing.json()["detail"]
    assert "'em310'" in detail and "hexframe" in detail and "json" in detail
    refused = await put(api, "json", {"spec": {"codec": "json", "metrics": {"a": "b"}}})
    assert refused.status_code == 422
    assert "cannot be replaced" in refused.json()["detail"]


# -- putting -------------------------------------------------------------------------------


async def test_a_vendors_decoder_is_put_listed_and_read_back(api: Api) -> None:
    r = await put(api, LEVEL, LEVEL_BODY)
    assert r.status_code == 201, r.text  # a codec new to the platform
    assert (r.json()["source"], r.json()["spec"]) == ("api", LEVEL_SPEC)
    assert r.json()["scripts"] == {"acme-level.js": LEVEL_JS}
    summary = (await listed(api, "operator"))[LEVEL]
    assert summary == {
        "name": LEVEL,
        "description": "Acme ultrasonic level sensor",
        "source": "api",
        "has_decoder": True,
        "has_encoder": False,
        "metrics": LEVEL_SPEC["metrics"],
        "examples": {"uplink": 2, "downlink": 0},
        "vendors": [],
    }
    assert (await put(api, LEVEL, LEVEL_BODY)).status_code == 200  # now a replacement
    got = await api.client("operator").get(f"{C}/{LEVEL}")
    assert got.status_code == 200 and got.json()["spec"] == LEVEL_SPEC
    # Put through the API, another vendor's decoder is not the acme key's to read.
    assert (await api.client("vendor").get(f"{C}/{LEVEL}")).status_code == 403
    assert [e["detail"]["replaced"] for e in await audit_log(api, "codec.put")] == ["api", None]


async def test_a_codec_whose_example_fails_is_refused_naming_it_and_nothing_stored(
    api: Api,
) -> None:
    wrong = copy.deepcopy(LEVEL_BODY)
    wrong["spec"]["uplinkDecoder"]["examples"][0]["output"]["data"]["distance"] = 501
    r = await put(api, LEVEL, wrong)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "'distance 500 mm, battery 92 %'" in detail, detail
    assert "expected 501, got 500" in detail, detail
    assert (await api.client("admin").get(f"{C}/{LEVEL}")).status_code == 404
    assert LEVEL not in await listed(api)

    # The put-back hexframe with a broken script leaves the shipped one in force.
    hexframe = (await api.client("admin").get(f"{C}/hexframe")).json()
    hexframe["scripts"]["hexframe.js"] += "\nfunction decodeUplink(input) { throw 'broken'; }"
    broken = await put(api, "hexframe", hexframe)
    assert broken.status_code == 422 and "threw" in broken.json()["detail"]
    assert (await api.client("admin").get(f"{C}/hexframe")).json()["source"] == "package"
    assert await stored_codecs(api) == []

    refusals = await audit_log(api, "codec.put_refused")
    assert [(e["resource"], e["detail"]["status"]) for e in refusals] == [
        ("codecs/hexframe", 422),
        (f"codecs/{LEVEL}", 422),
    ]
    assert refusals[1]["detail"]["reason"] == detail
    assert await audit_log(api, "codec.put") == []


async def test_a_codec_put_is_checked_before_its_examples_run(api: Api) -> None:
    for body, words in (
        ({**LEVEL_BODY, "spec": {**LEVEL_SPEC, "codec": "other"}}, "differs from the path's"),
        (
            {**LEVEL_BODY, "spec": {k: v for k, v in LEVEL_SPEC.items() if k != "codec"}},
            "spec.codec is missing",
        ),
        ({"spec": LEVEL_SPEC, "scripts": {}}, "acme-level.js is missing"),
        (
            {**LEVEL_BODY, "scripts": {**LEVEL_BODY["scripts"], "extra.js": "var x = 1;"}},
            "no fileName of the spec names it",
        ),
        (
            {"spec": LEVEL_SPEC, "scripts": {"acme-level.js": "function decodeUplink( {"}},
            "does not load",
        ),
        (
            {**LEVEL_BODY, "spec": {**LEVEL_SPEC, "metrics": {"battery_pct": "battery +"}}},
            "metrics.battery_pct",
        ),
    ):
        r = await put(api, LEVEL, body)
        assert r.status_code == 422, (words, r.text)
        assert words in r.json()["detail"], r.json()["detail"]
    assert await stored_codecs(api) == []
    assert len(await audit_log(api, "codec.put_refused")) == 6


async def test_only_an_admin_key_may_put_a_codec(api: Api) -> None:
    for role in ("operator", "field", "department", "vendor"):
        r = await put(api, LEVEL, LEVEL_BODY, role)
        assert r.status_code == 403, role
        assert "admin" in r.json()["detail"]
    assert await stored_codecs(api) == []
    assert LEVEL not in await listed(api)


# -- decoding ------------------------------------------------------------------------------


async def test_decoding_for_a_device_gives_the_validated_reading(api: Api) -> None:
    assert (await put(api, LEVEL, LEVEL_BODY)).status_code == 201
    # mh-1 is a manhole 200 cm deep: 500 mm to the water is 150 cm of water.
    for role in ("admin", "operator"):
        r = await decode(
            api, LEVEL, {"fPort": 1, "bytes_hex": "01 F4 5C", "device_id": "mh-1"}, role
        )
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["codec"], got["device_id"], got["kind"]) == (LEVEL, "mh-1", "manhole")
        assert got["output"] == [{"distance": 500, "battery": 92}]
        [reading] = got["readings"]
        assert reading["metrics"] == {"water_level_cm": 150.0, "battery_pct": 92.0}
        assert reading["ts_assumed"] is True and reading["seq"] is None
        assert got["rejected"] == []
        # The device's vendor decodes with json: the answer says so.
        assert "vendor acme is set to codec json" in got["note"]

    # 2116 mm to the water in a 200 cm shaft: below the bottom, out of the kind's range.
    r = await decode(api, LEVEL, {"bytes_hex": "08445C", "device_id": "mh-1"})
    assert r.status_code == 200, r.text
    assert r.json()["readings"] == []
    assert r.json()["rejected"] == [
        {"index": 0, "reason": "water_level_cm=-11.6 is outside the physical range 0..2000 cm"}
    ]

    # Without a device: no attributes (depth_cm is unknown), nothing checked but the time.
    r = await decode(api, LEVEL, {"bytes_hex": "08445C"})
    assert r.status_code == 200, r.text
    assert r.json()["readings"][0]["metrics"] == {"battery_pct": 92}
    assert (r.json()["device_id"], r.json()["kind"]) == (None, None)
    assert "give device_id" in r.json()["note"]
    assert await stored_codecs(api) == [LEVEL]  # decoding stored nothing more


async def test_a_frame_the_decoder_cannot_take_is_a_422_naming_the_codec(api: Api) -> None:
    assert (await put(api, LEVEL, LEVEL_BODY)).status_code == 201
    r = await decode(api, LEVEL, {"bytes_hex": "01", "device_id": "mh-1"})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        f"codec {LEVEL}: the decoder reported: level frame of 1 bytes; a frame has 3"
    )
    for body, words in (
        ({"bytes_hex": "zz"}, "bytes_hex is not hex"),
        ({"json": {"distance": 1}}, "send the frame as bytes_hex"),
        ({}, "one of the two"),
        ({"bytes_hex": "01F45C", "json": {}}, "one of the two"),
    ):
        r = await decode(api, LEVEL, body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    r = await decode(api, "em310", {"bytes_hex": "01"})
    assert r.status_code == 404 and LEVEL in r.json()["detail"]
    r = await decode(api, LEVEL, {"bytes_hex": "01F45C", "device_id": "nosuch"})
    assert r.status_code == 404


async def test_hexframe_decodes_with_its_times_and_kinds_checked(api: Api) -> None:
    now_ms = int(time.time()) * 1000
    frame = encode("manhole", {"tilt_deg": 2.5, "cover_open": False}, now_ms - 60_000, seq=7)
    r = await decode(api, "hexframe", {"bytes_hex": frame.hex(), "device_id": "mh-2"}, "operator")
    assert r.status_code == 200, r.text
    [reading] = r.json()["readings"]
    assert (reading["ts"], reading["ts_assumed"], reading["seq"]) == (now_ms - 60_000, False, 7)
    assert reading["metrics"] == {"tilt_deg": 2.5, "cover_open": False}
    assert r.json()["note"] is None  # mh-2's vendor oldco is set to hexframe

    ahead = encode("manhole", {"tilt_deg": 2.5}, now_ms + 86_400_000, seq=8)
    r = await decode(api, "hexframe", {"bytes_hex": ahead.hex(), "device_id": "mh-2"})
    assert r.status_code == 200 and r.json()["readings"] == []
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 0 and "in the future" in rejected["reason"]

    # A streetlight's frame for a manhole: the ingest refuses the message, and so does decode.
    light = encode("streetlight", {"power_on": True}, now_ms, seq=9)
    r = await decode(api, "hexframe", {"bytes_hex": light.hex(), "device_id": "mh-2"})
    assert r.status_code == 422
    assert "the frame is of kind streetlight, the device is a manhole" in r.json()["detail"]
    assert r.json()["output"][0]["kind"] == "streetlight"


async def test_json_and_a_mapping_only_codec_decode_the_vendors_json(api: Api) -> None:
    assert (await put(api, "acme-json", {"spec": NESTED_SPEC})).status_code == 201
    message = {"level": {"cm": 42}, "bat": 80}
    as_json = await decode(api, "acme-json", {"json": message, "device_id": "mh-1"})
    as_bytes = await decode(
        api,
        "acme-json",
        {"bytes_hex": b'{"level": {"cm": 42}, "bat": 80}'.hex(), "device_id": "mh-1"},
    )
    for r in (as_json, as_bytes):
        assert r.status_code == 200, r.text
        assert r.json()["output"] == [message]
        assert r.json()["readings"][0]["metrics"] == {"water_level_cm": 42.0, "battery_pct": 80.0}

    standard = {"seq": 3, "metrics": {"tilt_deg": 1.5, "cover_open": True}}
    r = await decode(api, "json", {"json": standard, "device_id": "mh-1"}, "vendor")
    assert r.status_code == 200, r.text
    assert r.json()["readings"][0]["metrics"] == standard["metrics"]
    assert r.json()["readings"][0]["seq"] == 3
    r = await decode(api, "json", {"json": {"metrics": {"lux": 3}}, "device_id": "mh-1"})
    assert r.json()["rejected"][0]["reason"].startswith("unknown metric 'lux' for kind manhole")


# -- vendors -------------------------------------------------------------------------------


async def test_vendors_are_set_to_any_codec_in_force(api: Api) -> None:
    admin = api.client("admin")
    newco = {"id": "newco", "name": "New Co", "codec": LEVEL}
    before = await admin.post(V, json=newco)
    assert before.status_code == 422
    assert before.json()["detail"].startswith("unknown codec 'acme-level'; the codecs in force")
    assert "hexframe, json" in before.json()["detail"]
    assert (await put(api, LEVEL, LEVEL_BODY)).status_code == 201
    created = await admin.post(V, json=newco)
    assert created.status_code == 201, created.text
    assert created.json()["codec"] == LEVEL
    unknown = await admin.post(V, json={**newco, "id": "c2", "codec": "morse"})
    assert unknown.status_code == 422
    assert "unknown codec 'morse'" in unknown.json()["detail"]
    assert LEVEL in unknown.json()["detail"]

    # The acme key decodes with json until acme is set to the level codec.
    frame = {"bytes_hex": "01F45C", "device_id": "mh-1"}
    assert (await decode(api, LEVEL, frame, "vendor")).status_code == 403
    r = await admin.patch(f"{V}/acme", json={"codec": LEVEL})
    assert r.status_code == 200, r.text
    assert (r.json()["codec"], r.json()["name"]) == (LEVEL, "Acme Sensors")
    assert (await admin.get(f"{V}/acme")).json()["codec"] == LEVEL
    assert (await listed(api))[LEVEL]["vendors"] == ["acme", "newco"]
    mine = await decode(api, LEVEL, frame, "vendor")
    assert mine.status_code == 200 and mine.json()["note"] is None
    assert (await api.client("vendor").get(f"{C}/{LEVEL}")).status_code == 200
    # Its own devices only: oldco's manhole is as unknown to it as a missing one.
    assert (await decode(api, LEVEL, {**frame, "device_id": "mh-2"}, "vendor")).status_code == 404
    assert (await decode(api, "hexframe", {"bytes_hex": "00"}, "vendor")).status_code == 403
    for role in ("field", "department"):
        assert (await decode(api, LEVEL, frame, role)).status_code == 403

    renamed = await admin.patch(f"{V}/acme", json={"name": "Acme Sensors Ltd"})
    assert (renamed.json()["name"], renamed.json()["codec"]) == ("Acme Sensors Ltd", LEVEL)
    for body, status, words in (
        ({"codec": "morse"}, 422, "unknown codec 'morse'"),
        ({}, 422, "nothing to change"),
        ({"name": "two\nlines"}, 422, "printable"),
        ({"id": "other"}, 422, "body id"),
    ):
        r = await admin.patch(f"{V}/acme", json=body)
        assert r.status_code == status and words in r.json()["detail"], (body, r.text)
    assert (await admin.patch(f"{V}/nosuch", json={"codec": "json"})).status_code == 404
    for role in ("operator", "field", "department", "vendor"):
        assert (
            await api.client(role).patch(f"{V}/acme", json={"codec": "json"})
        ).status_code == 403
    assert (await admin.get(f"{V}/acme")).json()["codec"] == LEVEL

    updates = await audit_log(api, "vendor.update")
    assert [(e["resource"], e["detail"]) for e in updates] == [
        ("vendors/acme", {"name": "Acme Sensors Ltd", "before": {"name": "Acme Sensors"}}),
        ("vendors/acme", {"codec": LEVEL, "before": {"codec": "json"}}),
    ]
