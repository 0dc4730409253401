"""Offline detection at a million devices: the real rules engine, in-process, on a clock moved
by hand. Half the devices report on schedule, half have fallen silent at known times; report
intervals run from 60 s to 24 h. Every check period (the engine's ``tick_s``) the readings due
are submitted and the engine's absence check runs, as ``RulesEngine.run`` does.

Counted, in simulated time: offline alerts per silent device (exactly one each, at most one
check period after its deadline, 3 × its report interval after its last reading) and for the
reporting devices (none). Measured: CPU seconds (``time.process_time``) of the absence checks
per simulated minute, against one full scan of every device — what the check cost before the
silence wheel (``rules/deadlines.py``), when a fleet with 60 s devices made every tick scan.

The engine records no alert here (its ``apply`` counts the transitions instead of writing them
to a database): this measures the check; recording an alert is the storm's and the latency
bench's business.

    python -m bench.scale_offline --devices 1000000 --out offline.json
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.section_cli import run_section
from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.validate import Reading
from cityiot.rules.definitions import SHIPPED_CATALOGUE, load_rules
from cityiot.rules.engine import RulesEngine
from cityiot.rules.evaluation import Transition
from cityiot.simulators.fleet import Fleet
from cityiot.storage.registry import DeviceEntry

TEMPLATES = 10_000  # distinct simulated devices; the rest are copies under new ids
FACTOR = 3  # device_offline: silent for 3 × the report interval
# Report intervals and their share of the fleet: most city sensors report every 5–15 min,
# meters and slow sensors hourly to daily, a few fast ones every minute.
INTERVALS: tuple[tuple[int, float], ...] = (
    (60, 0.05),
    (300, 0.25),
    (900, 0.25),
    (3600, 0.20),
    (21600, 0.15),
    (86400, 0.10),
)
START_S = dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()


@dataclass(slots=True)
class ScaleOfflineResult:
    devices: int
    minutes: float  # simulated
    tick_s: float
    intervals: dict[str, float]  # report interval (s) → share of the fleet
    silent: int = 0
    reporting: int = 0
    readings: int = 0  # submitted during the run
    silent_due: int = 0  # silent devices whose deadline fell within the run
    fired_once_in_time: int = 0  # of those: one offline alert, within one check period
    fired_late: int = 0  # more than one check period after the deadline
    fired_early: int = 0  # before the deadline
    fired_twice: int = 0
    missed: int = 0  # due and never fired
    fired_not_due: int = 0  # silent devices whose deadline is after the run, fired anyway
    reporting_fired: int = 0  # must be 0
    max_lateness_s: float = 0.0  # simulated seconds after the deadline, worst device
    plan_cpu_s: float = 0.0  # the first check: every device filed in the wheel
    check_cpu_s: float = 0.0  # every later check
    checks: int = 0
    check_cpu_per_minute_s: float = 0.0
    full_scan_cpu_s: float = 0.0  # one scan of every device (the check before the wheel)
    full_scan_cpu_per_minute_s: float = 0.0  # ... made every check period
    feed_cpu_s: float = 0.0  # submitting the readings (not the check)
    setup_s: float = 0.0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.fired_once_in_time == self.silent_due
            and self.reporting_fired == 0
            and self.fired_not_due == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


class CountingEngine(RulesEngine):
    """The real engine, whose recording step notes each offline firing (simulated time)
    instead of writing alerts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fired: defaultdict[str, list[float]] = defaultdict(list)

    async def apply(self, transitions: list[Transition]) -> None:
        for t in transitions:
            if t.rule.type == "absence" and t.to == "firing":
                self.fired[t.device_id].append(t.at_ms / 1000)


def _intervals(devices: int, rng: random.Random) -> list[int]:
    values = [v for v, _ in INTERVALS]
    weights = [w for _, w in INTERVALS]
    return rng.choices(values, weights, k=devices)


def _registry(devices: int, intervals: list[int]) -> DeviceMap:
    templates = Fleet.generate(min(devices, TEMPLATES), seed=29).devices
    registry = DeviceMap(None)
    stamp = dt.datetime.now(dt.UTC)
    for i in range(devices):
        t = templates[i % len(templates)]
        entry = DeviceEntry(
            device_id=f"{t.device_id}-{i}",
            vendor=t.vendor,
            kind=t.kind,
            district=t.district,
            report_interval_s=intervals[i],
            attributes=dict(t.attributes),
            decommissioned=False,
            updated_at=stamp,
        )
        registry.devices[entry.device_id] = KnownDevice.from_entry(entry)
    return registry


def run_scale_offline(
    devices: int = 1_000_000,
    minutes: float = 60.0,
    tick_s: float = 5.0,
    seed: int = 29,
    say: Callable[[str], None] = lambda _: None,
) -> ScaleOfflineResult:
    """Run the engine's absence check over ``minutes`` of simulated time; see the module."""
    return asyncio.run(_run(devices, minutes, tick_s, seed, say))


async def _run(
    devices: int, minutes: float, tick_s: float, seed: int, say: Callable[[str], None]
) -> ScaleOfflineResult:
    started = time.perf_counter()
    result = ScaleOfflineResult(devices, minutes, tick_s, {str(v): w for v, w in INTERVALS})
    rng = random.Random(seed)
    say(f"offline: registering {devices:,} devices…")
    intervals = _intervals(devices, rng)
    registry = _registry(devices, intervals)
    ids = list(registry.devices)
    kinds = [registry.devices[d].kind for d in ids]
    horizon_s = minutes * 60
    end_s = START_S + horizon_s
    clock = [START_S]
    engine = CountingEngine(
        load_rules(SHIPPED_CATALOGUE),
        registry,
        None,
        publish=lambda _t, _p: None,
        clock=lambda: clock[0],
        tick_s=tick_s,
    )
    evaluator = engine.evaluator
    # Before the run: each device's last reading. A reporting device last reported up to one
    # interval ago; a silent one so long ago that its deadline falls in the run's first 90%
    # (a few after it: they must not fire yet).
    say("offline: the devices' last readings before the run…")
    silent = [i % 2 == 1 for i in range(devices)]
    deadline: dict[int, float] = {}
    next_report: defaultdict[int, list[int]] = defaultdict(list)  # tick → devices due
    last: list[tuple[float, int]] = []
    for i in range(devices):
        interval = intervals[i]
        if silent[i]:
            due = START_S + rng.uniform(0.0, 1.0) * horizon_s * 1.1 - horizon_s * 0.05
            deadline[i] = due
            last.append((due - FACTOR * interval, i))
        else:
            at = START_S - rng.uniform(0.0, interval)
            last.append((at, i))
            next_report[int((at + interval - START_S) // tick_s) + 1].append(i)
    last.sort()
    for at, i in last:
        facts = engine._facts_of(ids[i])
        assert facts is not None
        evaluator.feed(facts, int(at * 1000), {}, at)
    del last
    result.silent = sum(silent)
    result.reporting = devices - result.silent
    result.setup_s = round(time.perf_counter() - started, 1)
    gc.collect()
    gc.freeze()  # the fleet is built: the collector's passes over it are not the check's cost

    say("offline: the first check (every device filed)…")
    cpu = time.process_time()
    await engine.tick()
    result.plan_cpu_s = round(time.process_time() - cpu, 3)
    ticks = int(horizon_s // tick_s)
    check_cpu = feed_cpu = 0.0
    for k in range(1, ticks + 1):
        now = START_S + k * tick_s
        clock[0] = now
        due_now = next_report.pop(k, [])
        if due_now:
            cpu = time.process_time()
            await engine.submit([Reading(ids[i], kinds[i], int(now * 1000), {}) for i in due_now])
            feed_cpu += time.process_time() - cpu
            result.readings += len(due_now)
            for i in due_now:
                # On schedule, from when it was due (not from the check that sent it).
                nxt = START_S + k * tick_s + intervals[i]
                next_report[int((nxt - START_S) // tick_s)].append(i)
        cpu = time.process_time()
        await engine.tick()
        check_cpu += time.process_time() - cpu
        result.checks += 1
        if k % max(1, ticks // 20) == 0:
            say(f"offline: {k * tick_s / 60:.0f} of {minutes:.0f} simulated minutes…")
    result.check_cpu_s = round(check_cpu, 3)
    result.feed_cpu_s = round(feed_cpu, 3)
    result.check_cpu_per_minute_s = round(check_cpu / minutes, 4)

    say("offline: one full scan of every device, as the check was before…")
    facts = [f for d in ids if (f := engine._facts_of(d)) is not None]
    cpu = time.process_time()
    evaluator.scan(end_s, facts, [])
    result.full_scan_cpu_s = round(time.process_time() - cpu, 3)
    result.full_scan_cpu_per_minute_s = round(result.full_scan_cpu_s * 60 / tick_s, 2)
    gc.unfreeze()

    fired = engine.fired
    for i in range(devices):
        times = fired.get(ids[i], [])
        if not silent[i]:
            result.reporting_fired += len(times)
            continue
        due = deadline[i]
        # Due within the run: the last check at or before the end sees it past its deadline.
        if due >= START_S + ticks * tick_s:
            result.fired_not_due += len(times)
            continue
        result.silent_due += 1
        if not times:
            result.missed += 1
            continue
        if len(times) > 1:
            result.fired_twice += 1
        late = times[0] - max(due, START_S)
        result.max_lateness_s = max(result.max_lateness_s, round(late, 3))
        if times[0] <= due:
            result.fired_early += 1
        elif late > tick_s:
            result.fired_late += 1
        elif len(times) == 1:
            result.fired_once_in_time += 1
    result.notes.append(
        "silent devices whose deadline fell before the run are found by the first check: "
        "their lateness is counted from the run's start"
    )
    result.wall_s = round(time.perf_counter() - started, 1)
    return result


def print_scale_offline(result: ScaleOfflineResult, console: Console) -> None:
    table = Table(
        title=f"offline detection: {result.devices:,} devices, "
        f"{result.minutes:g} simulated min, check every {result.tick_s:g} s"
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = (
        ("devices silent / reporting", f"{result.silent:,} / {result.reporting:,}"),
        ("readings submitted", f"{result.readings:,}"),
        ("silent devices due in the run", f"{result.silent_due:,}"),
        ("… one alert, within one check period", f"{result.fired_once_in_time:,}"),
        ("… late / early / twice / missed",
         f"{result.fired_late} / {result.fired_early} / {result.fired_twice} / {result.missed}"),
        ("… worst, s after the deadline", f"{result.max_lateness_s:.1f}"),
        ("silent, not due yet, fired (must be 0)", f"{result.fired_not_due}"),
        ("reporting devices fired (must be 0)", f"{result.reporting_fired}"),
        ("first check (files every device), CPU s", f"{result.plan_cpu_s:.2f}"),
        ("checks: CPU s per simulated minute", f"{result.check_cpu_per_minute_s:.4f}"),
        ("a full scan of every device, CPU s", f"{result.full_scan_cpu_s:.2f}"),
        ("… every check period: CPU s per minute", f"{result.full_scan_cpu_per_minute_s:.1f}"),
        ("readings' evaluation, CPU s (all)", f"{result.feed_cpu_s:.1f}"),
        ("setup / wall, s", f"{result.setup_s:.0f} / {result.wall_s:.0f}"),
    )  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if not result.ok:
        console.print("[bold red]goal missed[/]: see the counts above")


def main(
    devices: Annotated[int, typer.Option(help="Devices in the registry.")] = 1_000_000,
    minutes: Annotated[float, typer.Option(help="Simulated minutes to run.")] = 60.0,
    tick_s: Annotated[float, typer.Option(help="Check period, simulated s.")] = 5.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 29,
    out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
) -> None:
    """Offline detection over DEVICES devices in simulated time; prints the figures."""
    run_section(
        lambda say: run_scale_offline(devices, minutes, tick_s, seed, say=say),
        print_scale_offline,
        out,
    )


if __name__ == "__main__":
    typer.run(main)
