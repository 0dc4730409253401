"""``cityiot run``: the whole platform on one machine, with a simulated fleet.

Starts a local Mosquitto and InfluxDB under the run directory unless ``CITYIOT_MQTT_URL``
/ ``CITYIOT_INFLUX_URL`` are set, prepares the registry, runs the stages in one process
and shows live counters until Ctrl-C; then drains the ingest and stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cityiot.catalogue import KINDS
from cityiot.db import make_engine, migrate, sessionmaker
from cityiot.registry import import_devices, parse_device_csv, upsert_vendor
from cityiot.services import LocalBroker, LocalInflux
from cityiot.settings import MqttTarget, Settings
from ingest.pipeline import Ingest, IngestCounters
from ingest.service import ingest_stage
from rules.service import RulesStage, rules_stage
from simulators import Fleet, run_simulation


@dataclass(frozen=True)
class Launch:
    """What ``cityiot run`` was asked for beyond the settings."""

    devices: int = 2000
    rate: float = 500.0
    seed: int = 1
    simulate: bool = True
    incidents: list[str] = field(default_factory=list)
    malformed_share: float = 0.0


async def run_platform(
    settings: Settings, launch: Launch, stop: asyncio.Event, out: Console
) -> None:
    run_dir = settings.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as services:
        updates: dict[str, str] = {}
        if not settings.mqtt_url:
            out.print("starting Mosquitto …")
            broker = services.enter_context(LocalBroker(run_dir))
            updates["mqtt_url"] = broker.url
        if not settings.influx_url:
            out.print("starting InfluxDB …")
            influx = services.enter_context(LocalInflux(run_dir))
            updates["influx_url"] = influx.url
        settings = settings.model_copy(update=updates)
        fleet = await prepare_registry(settings, launch, run_dir, out) if launch.simulate else None
        rules_stop = asyncio.Event()
        async with (
            ingest_stage(settings) as ingest,
            rules_stage(
                settings, ingest.devices, ingest.sessions, ingest.link.publish, stop=rules_stop
            ) as rules,
        ):
            ingest.on_readings = rules.engine.submit
            tasks = [asyncio.create_task(ingest.run(), name="ingest")]
            if fleet is not None:
                tasks.append(
                    asyncio.create_task(
                        simulate_fleet(
                            settings,
                            fleet,
                            launch.rate,
                            launch.seed,
                            launch.incidents,
                            launch.malformed_share,
                            None,
                            stop,
                            out,
                        ),
                        name="simulator",
                    )
                )
            show_where(settings, run_dir, out)
            try:
                await watch(ingest, rules, stop, tasks, out)
            finally:
                stop.set()
                await ingest.stop()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                rules_stop.set()
        out.print("stopping local services …" if updates else "stopped.")
    if updates:
        out.print("stopped.")


async def prepare_registry(
    settings: Settings, launch: Launch, run_dir: Path, out: Console
) -> Fleet:
    """Generate the simulated fleet and register its vendors and devices."""
    fleet = Fleet.generate(launch.devices, launch.seed)
    csv_path = run_dir / "fleet.csv"
    fleet.write_csv(csv_path)
    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        sessions = sessionmaker(engine)
        for vendor_id, name, codec in fleet.vendors:
            await upsert_vendor(sessions, vendor_id, name, codec=codec)
        parsed = parse_device_csv(csv_path.read_text(encoding="utf-8"))
        if parsed.errors:
            raise ValueError(f"simulated fleet CSV has errors: {parsed.errors[:3]}")
        report = await import_devices(sessions, parsed.rows)
    finally:
        await engine.dispose()
    out.print(
        f"registry: {len(parsed.rows)} simulated devices from {csv_path} "
        f"(created {report.created}, updated {report.updated}, unchanged {report.unchanged})"
    )
    return fleet


async def simulate_fleet(
    settings: Settings,
    fleet: Fleet,
    rate: float,
    seed: int,
    incidents: list[str],
    malformed_share: float,
    duration_s: float | None,
    stop: asyncio.Event,
    out: Console,
) -> None:
    target = MqttTarget(settings.mqtt_url)
    out.print(f"simulator: {len(fleet.devices)} devices at {rate:g} msg/s, seed {seed}")
    await run_simulation(
        target.host,
        target.port,
        fleet,
        rate=rate,
        seed=seed,
        incidents=incidents,
        malformed_share=malformed_share,
        duration_s=duration_s,
        username=target.username,
        password=target.password,
        stop=stop,
    )


def show_where(settings: Settings, run_dir: Path, out: Console) -> None:
    db = settings.influx_db
    out.print(f"[bold]cityiot is running[/] — run directory {run_dir}")
    out.print(
        f"  MQTT broker   {settings.mqtt_url}  (publish to city/{{vendor}}/{{device_id}}/telemetry)"
    )
    out.print(f"  InfluxDB      {settings.influx_url}  database {db!r}")
    out.print(f"  registry      {settings.database_url}  (dead letters in table dead_letters)")
    port = settings.mqtt_url.rsplit(":", 1)[-1]
    out.print(f"  alerts        mosquitto_sub -p {port} -t 'city/alerts/#' -v")
    out.print("  query stored readings:")
    out.print(
        f"    curl -sG {settings.influx_url}/query --data-urlencode db={db} "
        '--data-urlencode "q=SELECT count(*) FROM manhole"'
    )
    out.print(f"  log           {run_dir / 'cityiot.log'}")
    out.print("  Ctrl-C stops everything.")


async def watch(
    ingest: Ingest,
    rules: RulesStage,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    out: Console,
) -> None:
    """Live counters (per second and totals) until ``stop`` or a stage fails."""
    last = _snapshot(ingest.counters)
    last_t = time.monotonic()
    rates = (0.0, 0.0, 0.0)
    with Live(
        _table(ingest, rules, rates), console=out, auto_refresh=False, redirect_stdout=False
    ) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
            now, snap = time.monotonic(), _snapshot(ingest.counters)
            rates = tuple((b - a) / (now - last_t) for a, b in zip(last, snap, strict=True))  # type: ignore[assignment]
            last, last_t = snap, now
            live.update(_table(ingest, rules, rates), refresh=True)
            if not out.is_terminal and int(now) % 5 == 0:
                c = ingest.counters
                out.print(
                    f"received/s={rates[0]:.0f} stored/s={rates[1]:.0f} "
                    f"rejected/s={rates[2]:.0f} stored={c.stored} rejected={c.rejected} "
                    f"alert_events={rules.engine.counters.events} "
                    f"notifications_sent={rules.deliverer.counters.sent}"
                )


def _snapshot(c: IngestCounters) -> tuple[int, int, int]:
    return (c.messages, c.stored, c.rejected)


def _table(ingest: Ingest, rules: RulesStage, rates: tuple[float, float, float]) -> Table:
    c = ingest.counters
    table = Table(title="cityiot ingest", title_justify="left")
    for column in ("", "per second", "total"):
        table.add_column(column, justify="right")
    table.add_row("received", f"{rates[0]:,.0f}", f"{c.messages:,}")
    table.add_row("stored", f"{rates[1]:,.0f}", f"{c.stored:,}")
    table.add_row("rejected", f"{rates[2]:,.0f}", f"{c.rejected:,}")
    table.add_row("duplicates", "", f"{c.duplicates:,}")
    for kind in KINDS:
        table.add_row(f"  {kind}", "", f"{c.stored_by_kind.get(kind, 0):,}")
    table.add_row("devices online", "", f"{len(ingest.presence.online):,}/{len(ingest.devices):,}")
    table.add_row("last write", "", f"{c.last_write_ms:.1f} ms")
    r, d = rules.engine.counters, rules.deliverer.counters
    table.add_row("alert events", "", f"{r.events:,}")
    table.add_row(
        "open alerts", "", f"{sum(1 for t in rules.engine.evaluator.tracks.values() if t.firing):,}"
    )
    table.add_row("notifications", "", f"{d.sent:,} sent, {d.failed:,} failed")
    if r.commands:
        table.add_row("commands sent", "", f"{r.commands:,}")
    if c.write_errors:
        table.add_row("[red]storage errors[/]", "", f"{c.write_errors:,}")
    return table
