"""The services a bench run starts once for every system: Mosquitto and InfluxDB, what they
cost, and one InfluxDB database per system's run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.measure import CpuMark, cpu_seconds
from cityiot.platform.local_services import LocalBroker, LocalInflux

BROKER_TEMPLATE = Path(__file__).resolve().parent / "mosquitto.conf"
QUIET_CPU = 0.2  # after the warm-up: idle below a fifth of a core …
QUIET_MAX_S = 60.0  # … waited for this long at most


@dataclass(slots=True)
class Services:
    """The run's broker and InfluxDB under ``run_dir``, once :meth:`start` has started them."""

    run_dir: Path
    say: Callable[[str], None]
    keep: bool  # --keep: each system's database stays
    broker: LocalBroker = field(init=False)
    influx: LocalInflux = field(init=False)

    @property
    def run_id(self) -> str:
        """The run's part of client ids: its directory's UTC stamp and process id."""
        return self.run_dir.name.replace("T", "").replace("Z", "").lower()

    def start(self, stack: contextlib.ExitStack) -> None:
        """Mosquitto and InfluxDB, stopped when ``stack`` closes."""
        self.say("starting Mosquitto and InfluxDB…")
        self.broker = stack.enter_context(LocalBroker(self.run_dir, template=BROKER_TEMPLATE))
        self.influx = stack.enter_context(LocalInflux(self.run_dir))

    def mark(self, pids: Sequence[int]) -> CpuMark:
        """CPU seconds so far of ``pids`` together (None once one is gone), broker, InfluxDB."""
        try:
            system: float | None = sum(cpu_seconds(p) for p in pids)
        except OSError:
            system = None
        assert self.broker.pid is not None and self.influx.pid is not None
        return CpuMark(
            time.time(), system, cpu_seconds(self.broker.pid), cpu_seconds(self.influx.pid)
        )

    def database(self, name: str) -> str:
        """The (empty) InfluxDB database of the run ``name``."""
        db = "bench_" + name.replace("-", "_")
        self.influx_query(f'DROP DATABASE "{db}"')
        return db

    def influx_query(self, q: str) -> None:
        response = httpx.post(f"{self.influx.url}/query", data={"q": q}, timeout=60.0)
        response.raise_for_status()

    def drop(self, database: str | None) -> None:
        """Drop a finished run's database (unless --keep): the next system's InfluxDB is
        not larger than the first's."""
        if database and not self.keep:
            with contextlib.suppress(httpx.HTTPError):
                self.influx_query(f'DROP DATABASE "{database}"')

    def quiet(self, pids: Sequence[int]) -> None:
        """Wait until InfluxDB and ``pids`` are idle (together under ``QUIET_CPU`` of a core
        for a second; at most ``QUIET_MAX_S``): after the warm-up InfluxDB compacts the
        100,000 new series' data and the system writes 100,000 devices' latest values and
        presence, and a run started then would measure that, not a running city."""
        assert self.influx.pid is not None
        watched = [self.influx.pid, *pids]
        deadline = time.monotonic() + QUIET_MAX_S
        before = sum(cpu_seconds(p) for p in watched)
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = sum(cpu_seconds(p) for p in watched)
            used, before = now - before, now
            if used < QUIET_CPU:
                return
            self.say(f"waiting for InfluxDB and the system to go idle ({used:.0%} CPU)")
        self.say(f"still busy after {QUIET_MAX_S:g} s; measuring anyway")
