"""Scripted incidents and malformed messages: what the platform must catch.

An :class:`Incident` makes chosen devices misbehave for a time span, with values the
default rule catalogue (docs/design.md §5) would alert on. Malformed payloads, each labelled,
exercise the ingest's rejection and dead-letter path.

Incident specs on the command line read ``name[:devices[:after_s[:duration_s]]]``, e.g.
``cover_open``, ``flooding:3`` or ``pressure_drop:2:60:600``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.hexframe import encode as encode_frame
from cityiot.simulators.behaviour import Metrics
from cityiot.simulators.fleet import Fleet, SimDevice

_BATTERY_KINDS = tuple(k for k, spec in KINDS.items() if spec.metric("battery_pct") is not None)

INCIDENT_KINDS: Mapping[str, tuple[str, ...]] = {
    "cover_open": ("manhole",),  # cover lifted and tilted > 15°
    "flooding": ("manhole",),  # water level > 80% of depth_cm
    "pressure_drop": ("water", "hydrant"),  # burst: > 30% drop at once; hydrant < 0.14 MPa
    "lamp_out": ("streetlight",),  # < 5 W while it should burn, lamp_fault
    "leakage": ("streetlight",),  # earth leakage > 30 mA
    "valve_open": ("hydrant",),  # outlet opened: water drawn
    "hydrant_knocked": ("hydrant",),  # body tilted > 10°
    "water_quality": ("water",),  # pH > 8.5, turbidity > 1 NTU, chlorine < 0.05 mg/L
    "battery_low": _BATTERY_KINDS,  # battery < 20%
    "overstay": ("parking",),  # space held past max_stay_min
    "silent": tuple(KINDS),  # the device stops publishing
}

# Malformed messages, by label. Hex frames have no JSON to break: their own labels.
MALFORMED_LABELS = ("invalid_json", "wrong_type", "unknown_metric", "out_of_range", "future_ts")
FRAME_MALFORMED_LABELS = ("bad_crc", "out_of_range", "future_ts")
UNKNOWN_METRIC = "humidity_pct"
FUTURE_MS = 3_600_000
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Incident:
    """``name`` on ``device_ids``, from ``after_s`` seconds into the simulation.

    ``duration_s`` None lasts until the simulation ends. Rules judge incidents over time:
    an ``overstay`` needs to last longer than the space's ``max_stay_min``, a
    ``pressure_drop`` must start after the device's first normal readings.
    """

    name: str
    device_ids: tuple[str, ...]
    after_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.name not in INCIDENT_KINDS:
            raise ValueError(
                f"unknown incident {self.name!r}; use one of {', '.join(INCIDENT_KINDS)}"
            )
        if self.after_s < 0:
            raise ValueError(f"incident {self.name}: after_s must be 0 or more, got {self.after_s}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(
                f"incident {self.name}: duration_s must be more than 0, got {self.duration_s}"
            )

    def window_ms(self, origin_ms: int) -> tuple[int, int | None]:
        """(start, end or None) in epoch ms for a simulation that began at ``origin_ms``."""
        start = origin_ms + round(self.after_s * 1000)
        end = None if self.duration_s is None else start + round(self.duration_s * 1000)
        return start, end

    def check(self, fleet: Fleet) -> None:
        """Raise ValueError when a device is not in ``fleet`` or of a kind it cannot affect."""
        kinds = INCIDENT_KINDS[self.name]
        by_id = {d.device_id: d for d in fleet.devices}
        for device_id in self.device_ids:
            device = by_id.get(device_id)
            if device is None:
                raise ValueError(f"incident {self.name}: no device {device_id!r} in the fleet")
            if device.kind not in kinds:
                raise ValueError(
                    f"incident {self.name} applies to {', '.join(kinds)} devices; "
                    f"{device_id} is a {device.kind}"
                )


def plan_incident(
    fleet: Fleet,
    name: str,
    devices: int = 1,
    after_s: float = 0.0,
    duration_s: float | None = None,
    seed: int = 0,
) -> Incident:
    """An incident on ``devices`` devices of the fleet it can affect, chosen by ``seed``."""
    if name not in INCIDENT_KINDS:
        raise ValueError(f"unknown incident {name!r}; use one of {', '.join(INCIDENT_KINDS)}")
    if devices < 1:
        raise ValueError(f"incident {name}: devices must be 1 or more, got {devices}")
    kinds = INCIDENT_KINDS[name]
    candidates = [d.device_id for d in fleet.devices if d.kind in kinds]
    if not candidates:
        raise ValueError(f"incident {name} needs a {' or '.join(kinds)} device; the fleet has none")
    chosen = random.Random(f"cityiot-incident:{seed}:{name}").sample(
        candidates, min(devices, len(candidates))
    )
    return Incident(name, tuple(chosen), after_s, duration_s)


def parse_incident(
    spec: str, fleet: Fleet, default_after_s: float = 0.0, seed: int = 0
) -> Incident:
    """An incident from ``name[:devices[:after_s[:duration_s]]]``, e.g. ``flooding:2:60:600``."""
    name, *numbers = spec.strip().split(":")
    if len(numbers) > 3:
        raise ValueError(f"incident {spec!r}: write name[:devices[:after_s[:duration_s]]]")
    try:
        devices = int(numbers[0]) if numbers and numbers[0] else 1
        after_s = float(numbers[1]) if len(numbers) > 1 and numbers[1] else default_after_s
        duration_s = float(numbers[2]) if len(numbers) > 2 and numbers[2] else None
    except ValueError:
        raise ValueError(
            f"incident {spec!r}: devices must be a whole number and after_s, duration_s "
            "seconds, e.g. flooding:2:60:600"
        ) from None
    return plan_incident(fleet, name, devices, after_s, duration_s, seed)


def apply_incident(
    name: str, device: SimDevice, metrics: Metrics, rng: random.Random
) -> Metrics | None:
    """``metrics`` as the incident changes them (in place); None when the device is silent."""
    if name == "silent":
        return None
    _EFFECTS[name](device, metrics, rng)
    return metrics


def _cover_open(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["cover_open"] = True
    m["tilt_deg"] = round(rng.uniform(20.0, 70.0), 2)


def _flooding(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["water_level_cm"] = round((device.depth_cm or 200.0) * rng.uniform(0.85, 0.97), 1)


def _pressure_drop(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    pressure = float(m["pressure_mpa"])
    if device.kind == "hydrant":
        m["pressure_mpa"] = round(min(pressure * 0.4, rng.uniform(0.06, 0.12)), 3)
    else:  # a burst main: pressure halves, flow surges
        m["pressure_mpa"] = round(pressure * rng.uniform(0.4, 0.5), 3)
        m["flow_m3h"] = round(float(m["flow_m3h"]) * 2.5, 2)


def _lamp_out(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["power_w"] = round(rng.uniform(0.0, 1.0), 1)
    m["current_a"] = round(float(m["power_w"]) / float(m["voltage_v"] or 220.0), 3)
    m["lamp_fault"] = True


def _leakage(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["leakage_ma"] = round(rng.uniform(35.0, 80.0), 2)


def _valve_open(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["valve_open"] = True
    m["flow_lps"] = round(rng.uniform(6.0, 15.0), 2)
    m["pressure_mpa"] = round(float(m["pressure_mpa"]) * 0.75, 3)


def _hydrant_knocked(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["tilt_deg"] = round(rng.uniform(15.0, 45.0), 2)


def _water_quality(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["ph"] = round(rng.uniform(8.8, 9.3), 2)
    m["turbidity_ntu"] = round(rng.uniform(1.5, 4.0), 3)
    m["chlorine_mgl"] = round(rng.uniform(0.0, 0.04), 3)


def _battery_low(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["battery_pct"] = round(rng.uniform(8.0, 15.0), 1)


def _overstay(device: SimDevice, m: Metrics, rng: random.Random) -> None:
    m["occupied"] = True


_EFFECTS: Mapping[str, Callable[[SimDevice, Metrics, random.Random], None]] = {
    "cover_open": _cover_open,
    "flooding": _flooding,
    "pressure_drop": _pressure_drop,
    "lamp_out": _lamp_out,
    "leakage": _leakage,
    "valve_open": _valve_open,
    "hydrant_knocked": _hydrant_knocked,
    "water_quality": _water_quality,
    "battery_low": _battery_low,
    "overstay": _overstay,
}


# --- malformed messages ----------------------------------------------------------------


def malformed_labels(device: SimDevice) -> tuple[str, ...]:
    """The ways a message of this device can be malformed."""
    return FRAME_MALFORMED_LABELS if device.codec == "hexframe" else MALFORMED_LABELS


def malformed_payload(
    label: str, device: SimDevice, metrics: Metrics, ts_ms: int, seq: int, rng: random.Random
) -> bytes:
    """A payload of ``device`` broken the way ``label`` says; the platform must reject it.

    - ``invalid_json``: a JSON message cut in half;
    - ``wrong_type``: a number sent as a string;
    - ``unknown_metric``: an extra metric (``humidity_pct``) no kind has;
    - ``out_of_range``: a value beyond the kind's physical range;
    - ``future_ts``: a timestamp one hour ahead;
    - ``bad_crc`` (hex frames): a frame whose CRC does not match.
    """
    if label not in malformed_labels(device):
        raise ValueError(
            f"{label!r} is not a malformed message of a {device.codec} device; "
            f"use one of {', '.join(malformed_labels(device))}"
        )
    broken: dict[str, Any] = dict(metrics)
    if label == "future_ts":
        ts_ms += FUTURE_MS
    elif label in ("wrong_type", "out_of_range"):
        name = rng.choice(_float_metrics(device, frame=device.codec == "hexframe"))
        if label == "out_of_range":
            broken[name] = _beyond_range(device.kind, name)
        else:
            broken[name] = str(broken[name])
    elif label == "unknown_metric":
        broken[UNKNOWN_METRIC] = 55.0
    if device.codec == "hexframe":
        frame = encode_frame(device.kind, broken, ts_ms, seq)
        if label == "bad_crc":
            frame = frame[:-1] + (b"0" if frame[-1:] != b"0" else b"1")
        return frame
    payload = orjson.dumps({"ts": ts_ms, "seq": seq, "metrics": broken})
    return payload[: len(payload) // 2] if label == "invalid_json" else payload


def _float_metrics(device: SimDevice, frame: bool) -> list[str]:
    """Float metrics of the device's kind; for frames only those whose breach fits an int32."""
    return [
        m.name
        for m in KINDS[device.kind].metrics
        if m.type == "float"
        and (not frame or abs(_beyond_range(device.kind, m.name)) * 1000 < _INT32_MAX)
    ]


def _beyond_range(kind: str, name: str) -> float:
    """A value above the metric's physical range: by half the range, at least by 1."""
    metric = KINDS[kind].metric(name)
    assert metric is not None and metric.low is not None and metric.high is not None
    return metric.high + max(1.0, (metric.high - metric.low) / 2)
