"""Each system's latency run: started live, warmed up, idle, then probed under background
load (bench/latency.py measures)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from bench.backlog import Payloads
from bench.latency import LatencyResult, measure_latency
from bench.launch import Launcher
from bench.options import BenchOptions
from bench.registry import Registry, bench_device
from bench.services import Services
from bench.systems import SystemSpec

PROBES = 4  # probe manholes for publish → stored
ALARMS = 4  # probe manholes for publish → alert


@dataclass(slots=True)
class LatencyRun:
    """The latency runs of one bench, on its services, registry and payloads."""

    options: BenchOptions
    services: Services
    registry: Registry
    payloads: Payloads
    launcher: Launcher
    say: Callable[[str], None]

    def run(self, spec: SystemSpec) -> LatencyResult | None:
        """The system running live under ``--latency-rate`` background load, probed."""
        o = self.options
        database = self.services.database(f"latency-{spec.name}")
        probes = [bench_device(f"bench-probe-{i}") for i in range(PROBES)]
        alarms = [bench_device(f"bench-alarm-{i}") for i in range(ALARMS)]
        needed = int(o.latency_rate * o.latency_seconds * 1.1) + 1000
        fleet = len(self.payloads.fleet)
        self.say(f"{spec.name}: latency — preparing {fleet + needed:,} messages…")
        # The fleet round-robin: one reading per device first (the warm-up), then the load.
        stream = self.payloads.stream(fleet + needed)
        warm_up = list(itertools.islice(stream, fleet))

        def measure(with_alerts: bool) -> LatencyResult:
            self.say(
                f"{spec.name}: latency — {o.latency_rate:,.0f} readings/s for "
                f"{o.latency_seconds:g} s, probing…"
            )
            return measure_latency(
                host=self.services.broker.host,
                port=self.services.broker.port,
                influx_url=self.services.influx.url,
                database=database,
                background=stream,
                rate=o.latency_rate,
                seconds=o.latency_seconds,
                probes=probes,
                alarms=alarms if with_alerts else (),
                client_prefix=f"bench-latency-{self.services.run_id}",
            )

        try:
            if spec.kind == "peer":
                self.services.influx_query(f'CREATE DATABASE "{database}"')
                with self.launcher.peer(
                    spec, database, self.services.run_dir / f"latency-{spec.name}"
                ):
                    self.launcher.warm_up(spec, database, warm_up)
                    self.services.quiet([])
                    return measure(with_alerts=False)
            self.registry.settle()
            client_id = f"bench-{self.services.run_id}-latency-{spec.name}"
            with self.launcher.cityiot(
                spec, database, client_id, self.services.run_dir / f"latency-{spec.name}"
            ) as processes:
                self.launcher.warm_up(spec, database, warm_up)
                self.services.quiet([p.pid for p in processes])
                return measure(with_alerts=True)
        finally:
            self.services.drop(database)
