"""The hexframe codec: its own fixed code table (never positions in a kind), frames sent by
devices in the field still decode the same, the lifeline kinds' frames, and dead letters
for a kind code or a kind the table does not know."""

from __future__ import annotations

import binascii
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import quickjs

from cityiot.domain.catalogue import KINDS, Kind
from cityiot.domain.thingmodel import parse_kind
from cityiot.ingest.broker import Delivery
from cityiot.ingest.codecs import default_codecs
from cityiot.ingest.codecs.base import PayloadError
from cityiot.ingest.codecs.files import SHIPPED
from cityiot.ingest.codecs.hexframe import (
    KIND_CODES,
    TABLE,
    CodeTableError,
    encode,
    parse_code_table,
)
from tests.ingest.conftest import offline_ingest
from tests.operator_files import NOISE, model, write_kind

CODEC = default_codecs()["hexframe"]
T0 = 1763856000

# Frames written by the positional encoder this table replaced (every metric of each of the
# five first kinds, and the docstring's example): devices in the field send exactly these
# bytes, so they must decode to exactly these readings, and encode back to the same bytes.
FIELD_FRAMES: list[tuple[str, str, dict[str, Any], int | None, int]] = [
    (
        "manhole",
        "A501010000006569224E81060100002BF2020000000003000B71B004000F43B7050000F42406FFFF6D844283",
        {
            "tilt_deg": 11.25,
            "cover_open": False,
            "water_level_cm": 750.0,
            "gas_ch4_ppm": 1000.375,
            "battery_pct": 62.5,
            "rssi_dbm": -37.5,
        },
        (T0 + 1) * 1000,
        101,
    ),
    (
        "streetlight",
        "A501020000006669224E820901000003E8020000470603000214AC0400008E0C05000F443406000F44B1"
        "07000F452E08000F45AB09000003E8AF2B",
        {
            "power_on": True,
            "dim_pct": 18.182,
            "voltage_v": 136.364,
            "current_a": 36.364,
            "power_w": 1000.5,
            "energy_kwh": 1000.625,
            "lux": 1000.75,
            "leakage_ma": 1000.875,
            "lamp_fault": True,
        },
        (T0 + 2) * 1000,
        102,
    ),
    (
        "hydrant",
        "A501030000006769224E8306010000019C0200000000030002DC6C040000AFC80500007A1206000124F89AA8",
        {
            "pressure_mpa": 0.412,
            "valve_open": False,
            "flow_lps": 187.5,
            "tilt_deg": 45.0,
            "temperature_c": 31.25,
            "battery_pct": 75.0,
        },
        (T0 + 3) * 1000,
        103,
    ),
    (
        "water",
        "A501040000006869224E8407010000016402FA1961BD03000F433A040000184E05000F44340600003415"
        "0700012FD2264F",
        {
            "pressure_mpa": 0.356,
            "flow_m3h": -98999.875,
            "volume_m3": 1000.25,
            "ph": 6.222,
            "turbidity_ntu": 1000.5,
            "chlorine_mgl": 13.333,
            "battery_pct": 77.778,
        },
        (T0 + 4) * 1000,
        104,
    ),
    (
        "parking",
        "A501050000006969224E850301000003E80200009C4003FFFF15A064E5",
        {"occupied": True, "battery_pct": 40.0, "rssi_dbm": -60.0},
        (T0 + 5) * 1000,
        105,
    ),
    (
        "manhole",
        "A501010000000769224E800201000009C40200000000ABBA",
        {"tilt_deg": 2.5, "cover_open": False},
        T0 * 1000,
        7,
    ),
    ("parking", "A5010500000000000000000101000003E8C48E", {"occupied": True}, None, 0),
    (
        "water",
        "A50104FFFFFFFF69224E800207000030390400001B584327",
        {"battery_pct": 12.345, "ph": 7.0},
        T0 * 1000,
        4294967295,
    ),
]

LIFELINE = ("waterlogging", "drainage", "gas", "tunnel")


@pytest.mark.parametrize(
    ("kind", "frame", "metrics", "ts", "seq"),
    FIELD_FRAMES,
    ids=[f"{f[0]}-{f[4]}" for f in FIELD_FRAMES],
)
def test_frames_from_the_field_decode_as_before(
    kind: str, frame: str, metrics: dict[str, Any], ts: int | None, seq: int
) -> None:
    (reading,) = CODEC.decode(frame.encode(), KINDS[kind])
    assert reading.metrics == metrics
    assert list(reading.metrics) == list(metrics)  # in the frame's order
    assert (reading.ts, reading.seq) == (ts, seq)
    assert encode(kind, metrics, ts, seq).decode() == frame


def test_the_first_kinds_keep_their_codes() -> None:
    assert {
        k: KIND_CODES[k] for k in ("manhole", "streetlight", "hydrant", "water", "parking")
    } == {
        "manhole": 1,
        "streetlight": 2,
        "hydrant": 3,
        "water": 4,
        "parking": 5,
    }


def test_the_table_agrees_with_the_shipped_kinds() -> None:
    """Every coded metric is its kind's, of the same type; an enum's listed values are the
    kind's (the table may lag behind values added later, never hold a foreign one)."""
    problems = []
    for name, entry in TABLE.by_name.items():
        kind = KINDS[name]
        for metric in entry.by_name.values():
            model = kind.metric(metric.name)
            if model is None or model.type != metric.type:
                problems.append(f"{name}.{metric.name}: {model and model.type} ≠ {metric.type}")
            elif set(metric.values) - set(model.values):
                problems.append(f"{name}.{metric.name}: {metric.values} ⊄ {model.values}")
    assert not problems


def _full_reading(kind: Kind, variant: int) -> dict[str, Any]:
    """A value for every metric of ``kind``: inside its range, each enum value in turn."""
    metrics: dict[str, Any] = {}
    for i, m in enumerate(kind.metrics):
        if m.type == "bool":
            metrics[m.name] = (i + variant) % 2 == 0
        elif m.type == "enum":
            metrics[m.name] = m.values[variant % len(m.values)]
        else:
            assert m.low is not None and m.high is not None
            metrics[m.name] = round(m.low + (m.high - m.low) * (variant + 1) / 7, 3)
    return metrics


@pytest.mark.parametrize("kind", LIFELINE)
def test_lifeline_frames_round_trip(kind: str) -> None:
    spec = KINDS[kind]
    assert kind in KIND_CODES
    for variant in range(4):  # covers every enum value of the lifeline kinds
        metrics = _full_reading(spec, variant)
        frame = encode(kind, metrics, (T0 + variant) * 1000, variant)
        assert frame[4:6] == f"{KIND_CODES[kind]:02X}".encode()
        (reading,) = CODEC.decode(frame, spec)
        assert reading.metrics == metrics
        assert (reading.ts, reading.seq) == ((T0 + variant) * 1000, variant)


def test_the_decoders_table_is_the_encoders() -> None:
    """hexframe.js carries the codes in its own file (a codec file is whole); the encoder
    reads hexframe_codes.yaml: the two hold the same codes, kinds and enum values."""
    script = (SHIPPED / "hexframe.js").read_text(encoding="utf-8")
    context = quickjs.Context()
    context.eval(script)
    decoded = json.loads(context.eval("JSON.stringify(KINDS)"))
    table = {
        str(kind.code): {
            "kind": kind.name,
            "metrics": {
                str(m.code): [m.name, m.type, *([list(m.values)] if m.values else [])]
                for m in kind.by_code.values()
            },
        }
        for kind in TABLE.by_name.values()
    }
    assert decoded == table and len(table) == 9


def test_an_enum_travels_as_its_index_times_1000() -> None:
    values = TABLE.by_name["gas"].by_name["alarm_state"].values
    frame = bytes.fromhex(encode("gas", {"alarm_state": "high"}, None, 1).decode())
    code, raw = frame[12], int.from_bytes(frame[13:17], "big", signed=True)
    assert (code, raw) == (TABLE.by_name["gas"].by_name["alarm_state"].code, 2000)
    assert values[2] == "high"
    with pytest.raises(ValueError, match="'leaking' is not one of normal, low, high, fault"):
        encode("gas", {"alarm_state": "leaking"}, None, 1)


def _frame(kind_code: int, items: list[tuple[int, int]], seq: int = 1) -> bytes:
    """A well-formed frame (right CRC) with any kind code and items."""
    body = bytearray(struct.pack(">BBBIIB", 0xA5, 1, kind_code, seq, T0, len(items)))
    for code, raw in items:
        body += struct.pack(">Bi", code, raw)
    body += struct.pack(">H", binascii.crc_hqx(bytes(body), 0))
    return body.hex().upper().encode()


@pytest.mark.parametrize(
    ("kind", "frame", "reason"),
    [
        ("gas", _frame(200, [(1, 1000)]), "kind code 200 (not in the code table)"),
        ("gas", _frame(KIND_CODES["manhole"], [(1, 1000)]), "of kind manhole, the device is a gas"),
        ("gas", _frame(KIND_CODES["gas"], [(99, 1000)]), "metric code 99 is not defined for gas"),
        ("gas", _frame(KIND_CODES["gas"], [(5, 4000)]), "alarm_state must be its value's index"),
        ("gas", _frame(KIND_CODES["gas"], [(5, 1500)]), "got 1500"),
        ("gas", _frame(KIND_CODES["gas"], [(5, -1000)]), "got -1000"),
        ("tunnel", _frame(KIND_CODES["tunnel"], [(8, 1)]), "flag door_open must be 0 or 1000"),
    ],
)
def test_a_frame_the_table_cannot_read_is_refused_with_the_reason(
    kind: str, frame: bytes, reason: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        CODEC.decode(frame, KINDS[kind])
    assert reason in str(caught.value)


def test_a_kind_without_codes_is_refused_naming_it() -> None:
    noise = parse_kind(NOISE, "test")
    with pytest.raises(PayloadError, match="frame is of kind manhole, the device is a noise"):
        CODEC.decode(_frame(KIND_CODES["manhole"], [(1, 1000)]), noise)
    with pytest.raises(ValueError, match="kind noise has no hexframe codes"):
        encode("noise", {"laeq_db": 50.0}, None, 1)


@pytest.fixture
def noise_model(tmp_path: Path) -> Iterator[None]:
    """The model with a noise kind from a kinds folder, as an operator adds one."""
    write_kind(tmp_path)
    with model(tmp_path):
        yield


def _dead_letters(ingest: Any, topic: str, payload: bytes) -> list[str]:
    batch = ingest.intake.batch
    before = len(batch.dead_letters)
    ingest.handle(Delivery(topic, payload, 1, 1, 0), int(time.time() * 1000))
    return [letter.reason for letter in batch.dead_letters[before:]]


@pytest.mark.usefixtures("noise_model")
def test_the_ingest_makes_dead_letters_of_what_the_table_lacks() -> None:
    ingest = offline_ingest()  # devices {kind}-oldco of every kind in force send hexframe
    assert "noise-oldco" in ingest.devices.devices
    unknown_code = _dead_letters(ingest, "city/oldco/gas-oldco/telemetry", _frame(200, [(1, 1000)]))
    assert len(unknown_code) == 1 and "kind code 200 (not in the code table)" in unknown_code[0]
    no_codes = _dead_letters(
        ingest, "city/oldco/noise-oldco/telemetry", _frame(KIND_CODES["manhole"], [(1, 1000)])
    )
    assert len(no_codes) == 1 and "the device is a noise" in no_codes[0]
    stored = len(ingest.intake.batch.lines)
    frame = encode("gas", {"alarm_state": "low", "ch4_lel_pct": 12.5}, T0 * 1000, 3)
    assert _dead_letters(ingest, "city/oldco/gas-oldco/telemetry", frame) == []
    line = ingest.intake.batch.lines[stored]
    assert b'alarm_state="low"' in line and b"ch4_lel_pct=12.5" in line


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"kinds": {"a": {"code": 1, "metrics": {}}, "b": {"code": 1, "metrics": {}}}}, "also a's"),
        (
            {
                "kinds": {
                    "a": {
                        "code": 1,
                        "metrics": {
                            "x": {"code": 1, "type": "float"},
                            "y": {"code": 1, "type": "bool"},
                        },
                    }
                }
            },
            "code 1 is also x's",
        ),
        ({"kinds": {"a": {"code": 256, "metrics": {}}}}, "from 1 to 255"),
        ({"kinds": {"a": {"code": 1, "metrics": {"x": {"code": 1, "type": "enum"}}}}}, "values"),
        ({"kinds": {"a": {"code": 1, "metrics": {"x": {"code": 1, "type": "int"}}}}}, "float"),
        ({}, "write kinds:"),
    ],
)
def test_a_broken_code_table_says_what_to_change(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CodeTableError) as caught:
        parse_code_table(table, "codes.yaml")
    assert str(caught.value).startswith("codes.yaml:") and fragment in str(caught.value)
