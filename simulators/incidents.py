"""Scripted incidents and malformed messages: what the platform must catch.

An :class:`Incident` makes chosen devices misbehave for a time span, with values the
default rule catalogue (docs/design.md §5) would alert on. Each scenario
(:data:`SCENARIOS`) names the metrics a device must have to suffer it, never a kind: a
rainstorm floods any device with ``water_depth_cm`` and ``rainfall_mmh``. Some follow a
course over their span (water rises past the warning and closing depths, then recedes);
given no duration, those last their scenario's own. Malformed payloads, each labelled,
exercise the ingest's rejection and dead-letter path.

Incident specs on the command line read ``name[:devices[:after_s[:duration_s]]]``, e.g.
``cover_open``, ``flooding:3``, ``pressure_drop:2:60:600`` or ``rainstorm:1:60:900``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cityiot.domain.catalogue import KINDS, Kind
from cityiot.ingest.codecs.hexframe import encode as encode_frame
from cityiot.simulators.behaviour import DeviceState, Metrics, vacate
from cityiot.simulators.fleet import Fleet, SimDevice

# An incident's effect on one reading: the device, its metrics (changed in place), the
# random generator and how far through its course the incident is (0 to 1).
Effect = Callable[[SimDevice, Metrics, random.Random, float], None]
# What an incident leaves behind on the device when it ends (at the time given).
Aftermath = Callable[[SimDevice, DeviceState, int, random.Random], None]


@dataclass(frozen=True, slots=True)
class Scenario:
    """What an incident does: its names for the log, the metrics a device needs to suffer it
    (an attribute too, when it reads one), what it does, for one that follows a course how
    long it lasts when the spec gives no duration, and what it leaves behind."""

    title_zh: str
    title_en: str
    needs: frozenset[str]
    effect: Effect | None  # None: the device falls silent
    course_s: float | None = None
    aftermath: Aftermath | None = None

    def fits(self, kind: Kind) -> bool:
        return all(kind.metric(n) is not None or kind.attribute(n) is not None for n in self.needs)

    def kinds(self) -> tuple[str, ...]:
        """The kinds in force whose devices can suffer it."""
        return tuple(sorted(k for k, spec in KINDS.items() if self.fits(spec)))


def _course(progress: float, points: Sequence[tuple[float, float]]) -> float:
    """The value at ``progress`` of a course through (progress, value) points, linearly."""
    if progress <= points[0][0]:
        return points[0][1]
    for (p0, v0), (p1, v1) in zip(points, points[1:], strict=False):
        if progress <= p1:
            return v0 + (v1 - v0) * (progress - p0) / (p1 - p0)
    return points[-1][1]


def _cover_open(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["cover_open"] = True
    m["tilt_deg"] = round(rng.uniform(20.0, 70.0), 2)


def _flooding(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["water_level_cm"] = round(device.number("depth_cm", 200.0) * rng.uniform(0.85, 0.97), 1)


def _pressure_drop(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    pressure = float(m["pressure_mpa"])
    if "flow_m3h" in m:  # a burst main: pressure halves, flow surges
        m["pressure_mpa"] = round(pressure * rng.uniform(0.4, 0.5), 3)
        m["flow_m3h"] = round(float(m["flow_m3h"]) * 2.5, 2)
    else:  # a hydrant on a failing main: below the firefighting minimum
        m["pressure_mpa"] = round(min(pressure * 0.4, rng.uniform(0.06, 0.12)), 3)


def _lamp_out(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["power_w"] = round(rng.uniform(0.0, 1.0), 1)
    if "current_a" in m:
        voltage = float(m.get("voltage_v") or 220.0)
        m["current_a"] = round(float(m["power_w"]) / voltage, 3)
    m["lamp_fault"] = True


def _leakage(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["leakage_ma"] = round(rng.uniform(35.0, 80.0), 2)


def _valve_open(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["valve_open"] = True
    m["flow_lps"] = round(rng.uniform(6.0, 15.0), 2)
    if "pressure_mpa" in m:
        m["pressure_mpa"] = round(float(m["pressure_mpa"]) * 0.75, 3)


def _hydrant_knocked(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["tilt_deg"] = round(rng.uniform(15.0, 45.0), 2)


def _water_quality(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["ph"] = round(rng.uniform(8.8, 9.3), 2)
    m["turbidity_ntu"] = round(rng.uniform(1.5, 4.0), 3)
    m["chlorine_mgl"] = round(rng.uniform(0.0, 0.04), 3)


def _battery_low(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["battery_pct"] = round(rng.uniform(8.0, 15.0), 1)


def _overstay(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["occupied"] = True


# A rainstorm over a low point (GB 51222-2017: more than 15 cm on a lane is waterlogging;
# underpass plans close the road at 27 cm): rain comes first, the water follows it up past
# both depths, stands, and drains away after the rain stops.
RAIN_MMH = ((0.0, 0.0), (0.1, 70.0), (0.4, 85.0), (0.6, 5.0), (0.75, 0.0))
PONDING_CM = ((0.0, 0.0), (0.1, 2.0), (0.45, 38.0), (0.6, 38.0), (0.9, 0.0))


def _rainstorm(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    rain = _course(progress, RAIN_MMH)
    depth = _course(progress, PONDING_CM)
    m["rainfall_mmh"] = round(max(0.0, rain + rng.gauss(0, 1.0)) if rain else 0.0, 1)
    m["water_depth_cm"] = round(max(0.0, depth + rng.gauss(0, 0.2)) if depth else 0.0, 1)


# Methane near a leaking pipe (%LEL; GB/T 50493-2019 §5.5: first alarm at most 25, second
# at most 50): it builds past both, the shut-off valve closes halfway through, and it
# clears. The detector's own state follows its alarm levels.
METHANE_LEL = ((0.0, 1.0), (0.4, 65.0), (0.5, 68.0), (0.6, 30.0), (0.8, 2.0), (1.0, 1.0))
DETECTOR_ALARMS = ((50.0, "high"), (20.0, "low"))  # %LEL at or above → alarm_state
VALVE_CLOSES_AT = 0.5


def _gas_leak(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    methane = round(max(0.0, _course(progress, METHANE_LEL) + rng.gauss(0, 0.3)), 2)
    m["ch4_lel_pct"] = methane
    if "alarm_state" in m:
        m["alarm_state"] = next((s for level, s in DETECTOR_ALARMS if methane >= level), "normal")
    if "valve_closed" in m:
        m["valve_closed"] = progress >= VALVE_CLOSES_AT
    if "pressure_kpa" in m:  # the leak bleeds a little pressure off the pipe
        m["pressure_kpa"] = round(float(m["pressure_kpa"]) * (1 - methane / 2000), 2)


# A utility tunnel compartment (GB 50838-2015 §7.5: oxygen below 19.5 %, hydrogen sulphide
# above 10 ppm): stale sewer gas seeps in, the fans go to high ventilation, the air recovers.
OXYGEN_PCT = ((0.0, 20.9), (0.35, 18.2), (0.6, 18.2), (0.9, 20.9))
H2S_PPM = ((0.0, 0.5), (0.35, 22.0), (0.6, 22.0), (0.9, 0.5))
HIGH_VENTILATION = (0.15, 0.9)  # the fans on high: from the first alarm until the air is back


def _tunnel_air(device: SimDevice, m: Metrics, rng: random.Random, progress: float) -> None:
    m["o2_pct"] = round(_course(progress, OXYGEN_PCT) + rng.gauss(0, 0.02), 2)
    m["h2s_ppm"] = round(max(0.0, _course(progress, H2S_PPM) + rng.gauss(0, 0.1)), 2)
    if "ventilation" in m and HIGH_VENTILATION[0] <= progress < HIGH_VENTILATION[1]:
        m["ventilation"] = "high"


def _needs(*names: str) -> frozenset[str]:
    return frozenset(names)


SCENARIOS: Mapping[str, Scenario] = {
    # cover lifted and tilted > 15°
    "cover_open": Scenario("井盖开启", "cover opened", _needs("cover_open", "tilt_deg"),
                           _cover_open),
    # water level > 80% of depth_cm
    "flooding": Scenario("井内水位过高", "water near the cover",
                         _needs("water_level_cm", "depth_cm"), _flooding),
    # burst: > 30% drop at once; hydrant < 0.14 MPa
    "pressure_drop": Scenario("管网失压", "pressure drop", _needs("pressure_mpa"), _pressure_drop),
    # < 5 W while it should burn, lamp_fault
    "lamp_out": Scenario("路灯熄灭", "lamp out", _needs("power_w", "lamp_fault"), _lamp_out),
    # earth leakage > 30 mA
    "leakage": Scenario("漏电", "earth leakage", _needs("leakage_ma"), _leakage),
    # outlet opened: water drawn
    "valve_open": Scenario("消火栓被开启", "hydrant opened", _needs("valve_open", "flow_lps"),
                           _valve_open),
    # body tilted > 10°
    "hydrant_knocked": Scenario("消火栓被撞", "hydrant knocked",
                                _needs("tilt_deg", "valve_open"), _hydrant_knocked),
    # pH > 8.5, turbidity > 1 NTU, chlorine < 0.05 mg/L
    "water_quality": Scenario("水质异常", "water quality fault",
                              _needs("ph", "turbidity_ntu", "chlorine_mgl"), _water_quality),
    # battery < 20%
    "battery_low": Scenario("电池电量低", "battery low", _needs("battery_pct"), _battery_low),
    # space held past max_stay_min
    "overstay": Scenario("超时停车", "overstay", _needs("occupied", "max_stay_min"), _overstay,
                         aftermath=vacate),  # the car leaves: the space reads free
    # the device stops publishing
    "silent": Scenario("设备失联", "device silent", _needs(), None),
    # water past 15 cm (warning) and 27 cm (closing), then gone
    "rainstorm": Scenario("暴雨致下穿通道积水", "rainstorm floods an underpass",
                          _needs("water_depth_cm", "rainfall_mmh"), _rainstorm, 1200.0),
    # methane past 20 and 50 %LEL, valve shut, clears
    "gas_leak": Scenario("燃气管道泄漏", "gas leak near a pipe",
                         _needs("ch4_lel_pct", "pressure_kpa"), _gas_leak, 1200.0),
    # oxygen below 19.5 %, H2S above 10 ppm, fans on high, recovers
    "tunnel_air": Scenario("综合管廊缺氧、硫化氢超标", "utility tunnel: oxygen falls, H2S rises",
                           _needs("o2_pct", "h2s_ppm"), _tunnel_air, 1200.0),
}  # fmt: skip


class _IncidentKinds(Mapping[str, tuple[str, ...]]):
    """Incident name → the kinds in force whose devices it can affect (live)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return SCENARIOS[name].kinds()

    def __iter__(self) -> Iterator[str]:
        return iter(SCENARIOS)

    def __len__(self) -> int:
        return len(SCENARIOS)


INCIDENT_KINDS: Mapping[str, tuple[str, ...]] = _IncidentKinds()

# Malformed messages, by label. Hex frames have no JSON to break: their own labels.
MALFORMED_LABELS = ("invalid_json", "wrong_type", "unknown_metric", "out_of_range", "future_ts")
FRAME_MALFORMED_LABELS = ("bad_crc", "out_of_range", "future_ts")
UNKNOWN_METRIC = "sensor_humidity_pct"  # sent as a metric its kind lacks
FUTURE_MS = 3_600_000
_INT32_MAX = 2**31 - 1


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown incident {name!r}; use one of {', '.join(SCENARIOS)}")


def _applies_to(scenario: Scenario) -> str:
    kinds = scenario.kinds()
    if kinds:
        return " or ".join(kinds)
    return "a kind with " + ", ".join(sorted(scenario.needs))


@dataclass(frozen=True, slots=True)
class Incident:
    """``name`` on ``device_ids``, from ``after_s`` seconds into the simulation.

    ``duration_s`` None lasts until the simulation ends, or for a scenario that follows a
    course, the scenario's own length. Rules judge incidents over time: an ``overstay``
    needs to last longer than the space's ``max_stay_min``, a ``pressure_drop`` must start
    after the device's first normal readings.
    """

    name: str
    device_ids: tuple[str, ...]
    after_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise _unknown(self.name)
        if self.after_s < 0:
            raise ValueError(f"incident {self.name}: after_s must be 0 or more, got {self.after_s}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(
                f"incident {self.name}: duration_s must be more than 0, got {self.duration_s}"
            )

    @property
    def scenario(self) -> Scenario:
        return SCENARIOS[self.name]

    @property
    def lasts_s(self) -> float | None:
        """How long it lasts: its duration, else its scenario's course, else to the end."""
        return self.duration_s if self.duration_s is not None else self.scenario.course_s

    def window_ms(self, origin_ms: int) -> tuple[int, int | None]:
        """(start, end or None) in epoch ms for a simulation that began at ``origin_ms``."""
        start = origin_ms + round(self.after_s * 1000)
        lasts = self.lasts_s
        return start, None if lasts is None else start + round(lasts * 1000)

    def check(self, fleet: Fleet) -> None:
        """Raise ValueError when a device is not in ``fleet`` or of a kind it cannot affect."""
        scenario = self.scenario
        by_id = {d.device_id: d for d in fleet.devices}
        for device_id in self.device_ids:
            device = by_id.get(device_id)
            if device is None:
                raise ValueError(f"incident {self.name}: no device {device_id!r} in the fleet")
            kind = KINDS.get(device.kind)
            if kind is None or not scenario.fits(kind):
                raise ValueError(
                    f"incident {self.name} applies to {_applies_to(scenario)} devices "
                    f"(their kind has {', '.join(sorted(scenario.needs))}); "
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
    if name not in SCENARIOS:
        raise _unknown(name)
    if devices < 1:
        raise ValueError(f"incident {name}: devices must be 1 or more, got {devices}")
    scenario = SCENARIOS[name]
    fitting = set(scenario.kinds())
    candidates = [d.device_id for d in fleet.devices if d.kind in fitting]
    if not candidates:
        raise ValueError(
            f"incident {name} needs a {_applies_to(scenario)} device; the fleet has none"
        )
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
    name: str, device: SimDevice, metrics: Metrics, rng: random.Random, progress: float = 0.0
) -> Metrics | None:
    """``metrics`` as the incident changes them (in place), ``progress`` (0 to 1) through
    its course; None when the device is silent."""
    effect = SCENARIOS[name].effect
    if effect is None:
        return None
    effect(device, metrics, rng, progress)
    return metrics


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
    - ``unknown_metric``: an extra metric its kind lacks (:func:`unknown_metric`);
    - ``out_of_range``: a value beyond the kind's physical range (or, for a kind without
      numbers, an enum value it does not list);
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
        numbers = _float_metrics(device, frame=device.codec == "hexframe")
        if numbers:
            name = rng.choice(numbers)
            if label == "out_of_range":
                broken[name] = _beyond_range(device.kind, name)
            else:
                broken[name] = str(broken[name])
        else:  # flags and enums only: a flag gets a number (a frame: neither 0 nor 1000)
            kind = KINDS[device.kind]
            flags = [m.name for m in kind.metrics if m.type == "bool"]
            if flags:
                broken[rng.choice(flags)] = 2.0
            else:
                name = rng.choice(list(broken))
                broken[name] = "not_a_listed_value" if label == "out_of_range" else 1.0
    elif label == "unknown_metric":
        broken[unknown_metric(KINDS[device.kind])] = 55.0
    if device.codec == "hexframe":
        frame = encode_frame(device.kind, broken, ts_ms, seq)
        if label == "bad_crc":
            frame = frame[:-1] + (b"0" if frame[-1:] != b"0" else b"1")
        return frame
    payload = orjson.dumps({"ts": ts_ms, "seq": seq, "metrics": broken})
    return payload[: len(payload) // 2] if label == "invalid_json" else payload


def unknown_metric(kind: Kind) -> str:
    """A metric name ``kind`` does not have: :data:`UNKNOWN_METRIC`, or a variant of it."""
    name, n = UNKNOWN_METRIC, 1
    while kind.metric(name) is not None:
        n += 1
        name = f"{UNKNOWN_METRIC}_{n}"
    return name


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
