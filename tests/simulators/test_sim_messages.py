"""The message stream: deterministic, on the access standard's topics and payloads, and
malformed exactly as labelled."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import orjson
import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import default_codecs
from cityiot.ingest.codecs.base import PayloadError, RawReading
from cityiot.ingest.codecs.standard import StandardJsonCodec
from cityiot.simulators import (
    FRAME_MALFORMED_LABELS,
    MALFORMED_LABELS,
    OK,
    Fleet,
    SimDevice,
    default_supply,
    iter_messages,
    iter_reports,
    new_state,
    reading,
)
from cityiot.simulators.incidents import FUTURE_MS, UNKNOWN_METRIC, unknown_metric
from cityiot.simulators.messages import encode

START_MS = 1_763_856_000_000  # 2025-11-23 08:00 in Zhumadian
JSON_CODEC = StandardJsonCodec()
FRAME_CODEC = default_codecs()["hexframe"]


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.generate(200, seed=12)


def _device_of(fleet: Fleet, topic: str) -> SimDevice:
    _city, vendor, device_id, leaf = topic.split("/")
    by_id = {d.device_id: d for d in fleet}
    device = by_id[device_id]
    assert (vendor, leaf) == (device.vendor, "telemetry")
    return device


def _decode(device: SimDevice, payload: bytes) -> list[RawReading]:
    codec = FRAME_CODEC if device.codec == "hexframe" else JSON_CODEC
    return codec.decode(payload, KINDS[device.kind])


def _problems(device: SimDevice, r: RawReading, sent_ms: int) -> list[str]:
    """Why the platform would reject this reading (empty: it is valid)."""
    kind = KINDS[device.kind]
    found = []
    if not isinstance(r.ts, int) or r.ts > sent_ms + 5 * 60_000:
        found.append("ts")
    for name, value in r.metrics.items():
        metric = kind.metric(name)
        if metric is None:
            found.append(f"unknown {name}")
        elif metric.type == "bool":
            if not isinstance(value, bool):
                found.append(f"type {name}")
        elif metric.type == "enum":
            if not isinstance(value, str):
                found.append(f"type {name}")
            elif value not in metric.values:
                found.append(f"range {name}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            found.append(f"type {name}")
        elif not metric.low <= value <= metric.high:  # type: ignore[operator]
            found.append(f"range {name}")
    return found


def test_same_seed_and_start_give_the_same_messages(fleet: Fleet) -> None:
    options = {"malformed_share": 0.1, "batch": True}
    a = list(iter_messages(fleet, START_MS, 3000, seed=4, **options))  # type: ignore[arg-type]
    b = list(iter_messages(fleet, START_MS, 3000, seed=4, **options))  # type: ignore[arg-type]
    assert a == b
    assert list(iter_messages(fleet, START_MS, 3000, seed=5, **options)) != a  # type: ignore[arg-type]
    assert list(iter_messages(fleet, START_MS + 1, 3000, seed=4, **options)) != a  # type: ignore[arg-type]


def test_messages_follow_the_access_standard(fleet: Fleet) -> None:
    last: dict[str, tuple[int, int]] = {}
    per_device: Counter[str] = Counter()
    for slot_ms, report in iter_reports(fleet, START_MS, 2000, seed=1, rate=100.0):
        assert report is not None
        topic, payload, label = report.message
        assert label == OK
        device = _device_of(fleet, topic)
        assert device is report.device
        per_device[device.device_id] += 1
        readings = _decode(device, payload)
        assert len(readings) == report.readings == 1
        r = readings[0]
        assert set(r.metrics) == {m.name for m in KINDS[device.kind].metrics}
        assert _problems(device, r, slot_ms) == []
        expected_ts = slot_ms // 1000 * 1000 if device.codec == "hexframe" else slot_ms
        assert r.ts == expected_ts
        assert r.seq is not None
        if device.device_id in last:
            assert r.seq == last[device.device_id][1] + 1
            assert r.ts > last[device.device_id][0]
        last[device.device_id] = (r.ts, r.seq)
    assert set(per_device.values()) == {10}, "round-robin: every device in turn"


def test_json_payload_shape(fleet: Fleet) -> None:
    topic, payload, _ = next(m for m in iter_messages(fleet, START_MS, 10) if m.payload[:1] == b"{")
    body = orjson.loads(payload)
    assert set(body) == {"ts", "seq", "metrics"}
    assert isinstance(body["ts"], int) and body["ts"] >= START_MS
    assert topic.startswith("city/") and topic.endswith("/telemetry")


def test_hex_frames_decode_to_the_same_metrics(fleet: Fleet) -> None:
    legacy = [d for d in fleet if d.codec == "hexframe"]
    (frames,) = [v.id for v in fleet.vendors if v.codec == "hexframe"]
    assert {d.kind for d in legacy} == set(default_supply(fleet.vendors)[frames])
    assert any(m.type == "enum" for d in legacy for m in KINDS[d.kind].metrics)
    rng = random.Random(3)
    for device in legacy:
        state = new_state(device)
        for k in range(24):
            ts = START_MS + k * 3_600_000
            metrics = reading(device, ts, state, rng)
            payload = encode(device, [(ts, k + 1, metrics)])
            assert payload.decode("ascii").isalnum()
            (decoded,) = FRAME_CODEC.decode(payload, KINDS[device.kind])
            assert decoded.ts == ts // 1000 * 1000 and decoded.seq == k + 1
            assert set(decoded.metrics) == set(metrics)
            for name, value in metrics.items():
                if isinstance(value, bool | str):
                    assert decoded.metrics[name] == value and type(decoded.metrics[name]) is type(
                        value
                    )
                else:
                    assert decoded.metrics[name] == pytest.approx(value, abs=0.001)


def test_batches_hold_readings_between_reports(fleet: Fleet) -> None:
    batches = 0
    last_ts: dict[str, int] = {}
    for slot_ms, report in iter_reports(fleet, START_MS, 4000, seed=2, rate=50.0, batch=True):
        assert report is not None
        device = report.device
        readings = _decode(device, report.message.payload)
        assert len(readings) == report.readings
        if len(readings) > 1:
            batches += 1
            assert device.codec == "json"
            assert set(orjson.loads(report.message.payload)) == {"readings"}
            assert 2 <= len(readings) <= 1000
        times = [int(r.ts) for r in readings]  # type: ignore[arg-type]
        sent_ms = slot_ms // 1000 * 1000 if device.codec == "hexframe" else slot_ms
        assert times == sorted(set(times)) and times[-1] == sent_ms
        if device.device_id in last_ts:
            assert times[0] > last_ts[device.device_id]
        last_ts[device.device_id] = times[-1]
        for r in readings:
            assert _problems(device, r, slot_ms) == []
    assert 200 < batches < 600  # about 10% of the JSON devices' messages


def test_malformed_share_and_labels(fleet: Fleet) -> None:
    labels = Counter(m.label for m in iter_messages(fleet, START_MS, 10_000, malformed_share=0.2))
    malformed = sum(n for label, n in labels.items() if label != OK)
    assert 1700 < malformed < 2300
    assert set(labels) == {OK, *MALFORMED_LABELS, *FRAME_MALFORMED_LABELS}


def test_malformed_messages_fail_as_labelled(fleet: Fleet) -> None:
    seen: Counter[str] = Counter()
    stream = iter_reports(fleet, START_MS, 6000, seed=3, malformed_share=0.3)
    for slot_ms, report in stream:
        assert report is not None
        topic, payload, label = report.message
        device = report.device
        seen[label] += 1
        if label == OK:
            assert all(_problems(device, r, slot_ms) == [] for r in _decode(device, payload))
        elif label == "invalid_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(payload)
            with pytest.raises(PayloadError, match="invalid JSON"):
                _decode(device, payload)
        elif label == "bad_crc":
            with pytest.raises(PayloadError, match="CRC"):
                _decode(device, payload)
        else:
            (r,) = _decode(device, payload)
            problems = _problems(device, r, slot_ms)
            assert len(problems) == 1, (label, problems)
            if label == "wrong_type":
                assert problems[0].startswith("type ")
                value = r.metrics[problems[0].removeprefix("type ")]
                float(str(value))  # a number, sent as a string
            elif label == "unknown_metric":
                assert problems == [f"unknown {unknown_metric(KINDS[device.kind])}"]
                assert UNKNOWN_METRIC in problems[0]
            elif label == "out_of_range":
                assert problems[0].startswith("range ")
            elif label == "future_ts":
                assert problems == ["ts"]
                assert r.ts >= slot_ms + FUTURE_MS - 1000  # type: ignore[operator]
            else:
                pytest.fail(f"unexpected label {label}")
    assert set(seen) == {OK, *MALFORMED_LABELS, *FRAME_MALFORMED_LABELS}


def test_iter_messages_rejects_bad_arguments(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="rate"):
        list(iter_messages(fleet, START_MS, 10, rate=0))
    with pytest.raises(ValueError, match="malformed_share"):
        list(iter_messages(fleet, START_MS, 10, malformed_share=1.5))
    with pytest.raises(ValueError, match="no devices"):
        list(iter_messages(Fleet.generate(0), START_MS, 10))


def test_each_device_reports_once_per_round(fleet: Fleet) -> None:
    reports = defaultdict(list)
    for slot_ms, report in iter_reports(fleet, START_MS, 1000, rate=20.0):
        assert report is not None
        reports[report.device.device_id].append(slot_ms)
    for times in reports.values():
        gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
        assert gaps == {10_000}  # 200 devices at 20 msg/s: every 10 s
