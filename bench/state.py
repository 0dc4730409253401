"""Rule state per device: what the rules engine keeps in memory for each device it has seen.

The engine keeps, per device, the facts rules read (a small object sharing the registry's
attributes), the time of its last reading (absence rules), the last values of the metrics
that multi-metric rules combine, and, only while a rule is not idle, its timer or rate
window. Measured with ``tracemalloc`` around feeding every device of a large fleet its
readings through the real :class:`~cityiot.rules.engine.RulesEngine` and its evaluator; the
registry map the engine reads (shared with the ingest) is built before and not counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.rules.definitions import SHIPPED_CATALOGUE as CATALOGUE
from cityiot.rules.definitions import load_rules
from cityiot.rules.engine import RulesEngine
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet
from cityiot.storage.registry import DeviceEntry

TEMPLATES = 10_000  # distinct simulated devices; the rest are copies under new ids
STEP_MS = 60_000


@dataclass(frozen=True, slots=True)
class RuleState:
    devices: int
    readings: int
    bytes_total: int
    bytes_per_device: float
    open_tracks: int  # rules not idle (timers, open alerts, rate windows) at the end
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def measure_rule_state(
    devices: int, readings_per_device: int = 2, say: Callable[[str], None] = lambda _: None
) -> RuleState:
    """Feed ``devices`` devices ``readings_per_device`` readings each; bytes held after."""
    started = time.perf_counter()
    templates = Fleet.generate(min(devices, TEMPLATES), seed=11).devices
    rng = random.Random(11)
    now_ms = int(time.time() * 1000)
    first_ms = now_ms - readings_per_device * STEP_MS
    say(f"rule state: simulating {len(templates):,} devices' readings…")
    series = []
    for device in templates:
        state = new_state(device)
        series.append(
            [
                reading(device, first_ms + k * STEP_MS, state, rng)
                for k in range(readings_per_device)
            ]
        )
    say(f"rule state: registering {devices:,} devices…")
    registry = DeviceMap(None)
    stamp = dt.datetime.now(dt.UTC)
    for i in range(devices):
        t = templates[i % len(templates)]
        entry = DeviceEntry(
            device_id=f"{t.device_id}-{i}",
            vendor=t.vendor,
            kind=t.kind,
            district=t.district,
            report_interval_s=t.report_interval_s,
            attributes=dict(t.attributes),
            decommissioned=False,
            updated_at=stamp,
        )
        registry.devices[entry.device_id] = KnownDevice.from_entry(entry)
    engine = RulesEngine(load_rules(CATALOGUE), registry, None, publish=lambda _t, _p: None)
    ids = list(registry.devices)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    feed = engine.evaluator.feed
    arrived = time.time()
    for k in range(readings_per_device):
        say(f"rule state: readings round {k + 1} of {readings_per_device}…")
        ts_ms = first_ms + k * STEP_MS
        for i, device_id in enumerate(ids):
            facts = engine._facts_of(device_id)
            assert facts is not None
            # Copies: each device holds its own values, as decoded payloads would be.
            feed(facts, ts_ms, dict(series[i % len(series)][k]), arrived)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return RuleState(
        devices=devices,
        readings=devices * readings_per_device,
        bytes_total=held,
        bytes_per_device=round(held / devices, 1),
        open_tracks=len(engine.evaluator.tracks),
        seconds=round(time.perf_counter() - started, 1),
    )
