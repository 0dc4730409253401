"""``cityiot``: the one console script (DESIGN §7).

Scriptable: results on stdout, details and progress on stderr, errors exit non-zero with
a message naming what to fix.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from cityiot.settings import Settings

app = typer.Typer(
    help="Unified IoT access platform for Zhumadian's city operations centre.",
    no_args_is_help=True,
    add_completion=False,
)
devices_app = typer.Typer(help="The device registry.", no_args_is_help=True)
vendors_app = typer.Typer(help="Device vendors.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(vendors_app, name="vendors")
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
grafana_app = typer.Typer(help="Grafana dashboards (cityiot/grafana).", no_args_is_help=True)
app.add_typer(grafana_app, name="grafana")
docs_app = typer.Typer(help="Docs generated from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

err = Console(stderr=True)

# What `cityiot run` shows unless told otherwise: incidents from the first minute, each
# raising its rule, with notifications and work orders (name:devices:after_s:duration_s).
DEFAULT_INCIDENTS = (
    "cover_open:2:20:240",
    "leakage:1:30:240",
    "valve_open:1:40:180",
    "pressure_drop:1:60:300",
    "water_quality:1:90:300",
)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def show_version(value: bool) -> None:
    if value:
        from cityiot.version import platform_version

        print(f"cityiot {platform_version()}")
        raise typer.Exit()


@app.callback()
def root_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of `cityiot` itself; --version is handled (and ends) in its own callback."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CITYIOT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"invalid settings: {problems}")


def configure_logging(settings: Settings, log_file: Path | None = None) -> None:
    """Structured lines to stderr; with ``log_file``, everything there and warnings on stderr.

    The lines are written by a thread of their own (a ``QueueListener``): a write to a disk
    busy with InfluxDB's snapshots can block for a while, and the event loop must not wait.
    """
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(fmt)
        handlers.append(to_file)
        console.setLevel(logging.WARNING)  # the live counters own the terminal
    handlers.append(console)
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.handlers.QueueListener(lines, *handlers, respect_handler_level=True)
    writer.start()
    atexit.register(writer.stop)  # writes what is queued before the process ends
    root.addHandler(logging.handlers.QueueHandler(lines))
    # One line per HTTP request to InfluxDB is noise, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a long-running stage runs on: libuv's through uvloop (the default),
    or None for Python's own.

    uvloop's transports, timers and callbacks are C: in interleaved bench drains the
    ingest spent about 4 % less CPU on the same readings (see the README's benchmark)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run_until_signal(
    main: Coroutine[Any, Any, None], stop: asyncio.Event, settings: Settings
) -> None:
    """Run ``main`` until it ends; SIGINT/SIGTERM set ``stop`` so it can finish cleanly.
    The garbage collector follows cityiot/gcpolicy.py meanwhile, on the event loop that
    ``CITYIOT_EVENT_LOOP`` names (uvloop by default)."""
    from cityiot.gcpolicy import collect_on_schedule, young_only

    young_only(settings.gc_full_every_s)

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        collector = asyncio.create_task(collect_on_schedule(stop, settings.gc_full_every_s))
        try:
            await main
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as loop:
            loop.run(runner())
    except (ConnectionError, ValueError, OSError) as exc:  # RuleError, RoutingError are ValueErrors
        fail(str(exc))


@app.command()
def run(
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 2000,
    rate: Annotated[float, typer.Option(help="Simulated messages per second.")] = 500.0,
    seed: Annotated[int, typer.Option(help="Simulator seed (same seed, same fleet).")] = 1,
    no_simulator: Annotated[
        bool, typer.Option("--no-simulator", help="Run the platform without the simulated fleet.")
    ] = False,
    incidents: Annotated[
        list[str] | None,
        typer.Option(
            "--incident",
            help="Scripted incident, name[:devices[:after_s[:duration_s]]]; "
            "default: a few, so alerts show. --incident none for a quiet city.",
        ),
    ] = None,
    malformed: Annotated[float, typer.Option(help="Share of malformed simulated messages.")] = 0.0,
) -> None:
    """All stages in one process; starts a local broker and InfluxDB unless URLs are given."""
    from cityiot.launcher import Launch, run_platform

    settings = load_settings()
    # Owner only: the database, log and secrets in the run dir, and the local broker's and
    # InfluxDB's files (the children inherit it); they all run as this user.
    os.umask(0o077)
    configure_logging(settings, settings.run_dir / "cityiot.log")
    launch = Launch(
        devices=devices,
        rate=rate,
        seed=seed,
        simulate=not no_simulator,
        incidents=[] if incidents == ["none"] else incidents or list(DEFAULT_INCIDENTS),
        malformed_share=malformed,
    )
    stop = asyncio.Event()
    run_until_signal(run_platform(settings, launch, stop, err), stop, settings)


def serve_metrics(settings: Settings, sources: dict[str, Any]) -> None:
    """With CITYIOT_METRICS_PORT, serve the stage's counters for Prometheus (a thread)."""
    if settings.metrics_port is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    from api.metrics import StageCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StageCollector(lambda: sources))  # type: ignore[arg-type]
    start_http_server(settings.metrics_port, addr=settings.api_host, registry=registry)
    err.print(f"metrics at http://{settings.api_host}:{settings.metrics_port}/metrics")


@app.command()
def ingest(
    with_rules: Annotated[
        bool,
        typer.Option(
            "--rules",
            help="Also run the rules stage in this process (a scale-out worker: "
            "CITYIOT_SHARE_GROUP, CITYIOT_WORKERS, CITYIOT_WORKER_INDEX).",
        ),
    ] = False,
) -> None:
    """The ingest stage alone: MQTT → validation → InfluxDB (needs the MQTT and InfluxDB URLs).

    With --rules it evaluates rules on what it stores, like `cityiot run`; with several
    workers each one evaluates its own devices and forwards the others' readings to them
    (ingest/partition.py). With CITYIOT_METRICS_PORT set, its counters, queue depths and
    spool are served for Prometheus."""
    from api.metrics import counters_source
    from cityiot.gcpolicy import settle
    from ingest.partition import partition_stage
    from ingest.service import ingest_stage
    from rules.service import rules_stage

    settings = load_settings()
    configure_logging(settings)
    stop = asyncio.Event()

    async def main() -> None:
        rules_stop = asyncio.Event()
        partition_stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            stage = await stack.enter_async_context(ingest_stage(settings))
            partition = await stack.enter_async_context(partition_stage(settings, stage))
            sources: dict[str, Any] = {
                "ingest": counters_source(stage.counters),
                "broker": counters_source(stage.link.stats),
                "queue": stage.depths,
                "partition": counters_source(partition.counters),
            }
            if with_rules:
                rules = await stack.enter_async_context(
                    rules_stage(
                        settings,
                        stage.devices,
                        stage.sessions,
                        stage.link.publish,
                        stop=rules_stop,
                        owns=partition.owns,
                    )
                )
                partition.rules = rules.engine.submit
                sources["rules"] = counters_source(rules.engine.counters)
                sources["delivery"] = counters_source(rules.deliverer.counters)
            serve_metrics(settings, sources)
            settle(settings.gc_full_every_s)  # registry and rule state loaded: before readings
            task = asyncio.create_task(stage.run())
            receiving = asyncio.create_task(partition.run(partition_stop))
            await stop.wait()
            await stage.stop()
            await task
            # After the ingest's last batches are forwarded: take what others sent us.
            partition_stop.set()
            await receiving
            rules_stop.set()

    run_until_signal(main(), stop, settings)


@app.command()
def rules() -> None:
    """The rules stage alone: reads the telemetry stream (its own persistent session),
    evaluates rules, records alerts, notifies and opens work orders."""
    from cityiot.gcpolicy import settle
    from ingest.service import ingest_stage
    from rules.service import rules_stage

    settings = load_settings()
    configure_logging(settings)
    stop = asyncio.Event()

    async def main() -> None:
        rules_stop = asyncio.Event()
        async with (
            ingest_stage(
                settings, store=False, client_id=f"{settings.mqtt_client_id}-rules"
            ) as intake,
            rules_stage(
                settings, intake.devices, intake.sessions, intake.link.publish, stop=rules_stop
            ) as stage,
        ):
            intake.on_readings = stage.engine.submit
            settle(settings.gc_full_every_s)  # registry and rule state loaded: before readings
            task = asyncio.create_task(intake.run())
            await stop.wait()
            await intake.stop()
            await task
            rules_stop.set()

    run_until_signal(main(), stop, settings)


@app.command()
def simulate(
    devices: Annotated[int, typer.Option(help="Number of simulated devices.")] = 1000,
    rate: Annotated[float, typer.Option(help="Messages per second, whole fleet.")] = 200.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same fleet.")] = 1,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    csv: Annotated[
        Path | None,
        typer.Option(help="Write the fleet's registry CSV here (and exit if no broker)."),
    ] = None,
    incidents: Annotated[
        list[str] | None, typer.Option("--incident", help="Scripted incident, e.g. cover_open.")
    ] = None,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages, 0..1.")] = 0.0,
) -> None:
    """Publish a simulated fleet to CITYIOT_MQTT_URL (and/or write its registry CSV)."""
    from cityiot.launcher import simulate_fleet
    from simulators import Fleet

    settings = load_settings()
    configure_logging(settings)
    fleet = Fleet.generate(devices, seed)
    if csv is not None:
        fleet.write_csv(csv)
        err.print(f"wrote {len(fleet.devices)} devices to {csv}")
    if not settings.mqtt_url:
        if csv is None:
            fail("set CITYIOT_MQTT_URL to publish (or give --csv to only write the registry CSV)")
        return
    stop = asyncio.Event()
    run_until_signal(
        simulate_fleet(
            settings, fleet, rate, seed, incidents or [], malformed, duration, stop, err
        ),
        stop,
        settings,
    )


@app.command()
def bench(
    devices: Annotated[int, typer.Option(help="Fleet size (all five kinds).")] = 100_000,
    messages: Annotated[int, typer.Option(help="Backlog each system drains.")] = 500_000,
    systems: Annotated[
        str,
        typer.Option(
            help="Comma list of baseline,influxdb,cityiot-qos0,cityiot-qos1,peer,workers."
        ),
    ] = "baseline,influxdb,cityiot-qos0,cityiot-qos1,peer,workers",
    workers: Annotated[str, typer.Option(help="Worker counts of the workers system.")] = "1,2,3",
    latency_seconds: Annotated[float, typer.Option(help="Length of each latency run.")] = 15.0,
    latency_rate: Annotated[
        float, typer.Option(help="Background load during latency runs, readings/s.")
    ] = 10_000.0,
    skip_latency: Annotated[bool, typer.Option("--skip-latency", help="Throughput only.")] = False,
    timeout: Annotated[float, typer.Option(help="Longest a system may take to drain, s.")] = 300.0,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON results file; default .bench/results/<UTC time>-<commit>.json."),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep .bench/runs/<time>/ and its databases.")
    ] = False,
    state_devices: Annotated[
        int, typer.Option(help="Measure rule state per device at this many devices (0: skip).")
    ] = 1_000_000,
    rounds: Annotated[
        int,
        typer.Option(
            help="Throughput runs of each system, interleaved; the table shows the median one."
        ),
    ] = 1,
    cold: Annotated[
        bool,
        typer.Option(
            "--cold",
            help="No warm-up before each throughput run: measure a city's first minutes "
            "(every series created, every device coming online).",
        ),
    ] = False,
) -> None:
    """Throughput, CPU, memory and latency of the platform next to a bare subscriber and
    Node-RED, on a local Mosquitto and InfluxDB it starts itself; prints a table and writes
    the figures as JSON. Exits 1 when a system failed, timed out, lost or duplicated."""
    from bench.report import print_report
    from bench.run import BenchError, BenchOptions, parse_systems, parse_workers, run_bench
    from cityiot.services import ServiceError

    try:
        options = BenchOptions(
            devices=devices,
            messages=messages,
            systems=parse_systems(systems),
            workers=parse_workers(workers),
            latency_seconds=latency_seconds,
            latency_rate=latency_rate,
            skip_latency=skip_latency,
            timeout_s=timeout,
            out=out,
            keep=keep,
            state_devices=state_devices,
            rounds=rounds,
            cold=cold,
        )
        options.check()
        with err.status("starting…") as status:
            report, written = run_bench(
                options, lambda text: status.update(text), lambda text: err.print(text)
            )
    except (BenchError, ServiceError) as exc:
        fail(str(exc))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    print_report(report, console, written)
    if not report.ok:
        raise typer.Exit(1)


@devices_app.command("import")
def devices_import(
    file: Annotated[Path, typer.Argument(help="CSV: device_id,vendor,kind,district,lat,lon,...")],
    create_vendors: Annotated[
        bool, typer.Option(help="Create vendors the file names that are not registered yet.")
    ] = True,
) -> None:
    """Register or update devices from a CSV file; every bad row is reported with its line."""
    from cityiot.db import make_engine, migrate, sessionmaker
    from cityiot.registry import import_devices, parse_device_csv

    settings = load_settings()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8 text; save the CSV as UTF-8")
    parsed = parse_device_csv(text)
    for problem in parsed.errors:
        err.print(f"[yellow]{file}:{problem}[/]")

    async def main() -> Any:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await import_devices(sessionmaker(engine), parsed.rows, create_vendors)
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    for problem in report.errors:
        err.print(f"[yellow]{file}:{problem}[/]")
    for warning in report.warnings:
        err.print(f"{file}:{warning}")
    errors = len(parsed.errors) + len(report.errors)
    print(
        f"created={report.created} updated={report.updated} unchanged={report.unchanged} "
        f"errors={errors}"
    )
    if errors:
        raise typer.Exit(2)


@vendors_app.command("add")
def vendors_add(
    vendor_id: Annotated[str, typer.Argument(help="Vendor id: [A-Za-z0-9_-]{1,64}.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    codec: Annotated[
        str, typer.Option(help="Payload codec of its devices: json or hexframe.")
    ] = "json",
) -> None:
    """Register a vendor (or update its name and codec)."""
    from cityiot.catalogue import is_valid_id, reserved_vendor
    from cityiot.db import make_engine, migrate, sessionmaker
    from cityiot.registry import upsert_vendor
    from ingest.codecs import default_codecs

    if not is_valid_id(vendor_id):
        fail(f"vendor id {vendor_id!r} is not allowed: use [A-Za-z0-9_-]{{1,64}}")
    problem = reserved_vendor(vendor_id)
    if problem is not None:
        fail(f"vendor id {problem}")
    if codec not in default_codecs():
        fail(f"unknown codec {codec!r}; available: {', '.join(default_codecs())}")
    settings = load_settings()

    async def main() -> None:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            await upsert_vendor(sessionmaker(engine), vendor_id, name or vendor_id, codec=codec)
        finally:
            await engine.dispose()

    asyncio.run(main())
    print(vendor_id)
    err.print(f"vendor {vendor_id} registered (codec {codec})")


@vendors_app.command("credentials")
def vendors_credentials(
    vendor_id: Annotated[str, typer.Argument(help="The vendor to issue an MQTT account for.")],
) -> None:
    """Issue an MQTT account for a vendor; prints USERNAME PASSWORD (the password only now).

    Writes the broker's password and ACL files (CITYIOT_BROKER_PASSWORD_FILE, _ACL_FILE)
    and reloads it (CITYIOT_BROKER_PID_FILE). Revoke with DELETE
    /api/v1/vendors/{id}/credentials/{username}.
    """
    from cityiot.access import BrokerAccess, BrokerAccessError, IssuedCredential, UnknownVendor
    from cityiot.db import make_engine, migrate, sessionmaker

    settings = load_settings()
    if settings.broker_password_file is None or settings.broker_acl_file is None:
        fail(
            "set CITYIOT_BROKER_PASSWORD_FILE and CITYIOT_BROKER_ACL_FILE to the files Mosquitto "
            "reads (and CITYIOT_BROKER_PID_FILE to its pid file, so it reloads at once)"
        )

    async def main() -> IssuedCredential:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            access = BrokerAccess.from_settings(settings, sessionmaker(engine))
            assert access is not None  # both files are set
            return await access.issue(vendor_id, actor="cli")
        finally:
            await engine.dispose()

    try:
        issued = asyncio.run(main())
    except UnknownVendor:
        fail(f"no vendor {vendor_id!r}; register it first: cityiot vendors add {vendor_id}")
    except BrokerAccessError as exc:
        fail(str(exc))
    print(f"{issued.username} {issued.password}")
    reload = "broker reloaded" if issued.broker_reloaded else "reload the broker (SIGHUP) to apply"
    err.print(f"MQTT account {issued.username} issued for vendor {vendor_id}; {reload}")


@app.command()
def api() -> None:
    """The API alone (FastAPI on CITYIOT_API_HOST:CITYIOT_API_PORT, OpenAPI at /docs)."""
    from api.server import ApiServer

    settings = load_settings()
    configure_logging(settings)
    stop = asyncio.Event()

    async def main() -> None:
        async with ApiServer(settings) as server:
            err.print(f"API at {server.url}/api/v1 (docs at {server.url}/docs)")
            waiting = asyncio.create_task(stop.wait())
            serving = asyncio.create_task(server.wait())
            await asyncio.wait({waiting, serving}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()

    run_until_signal(main(), stop, settings)


def _names(values: str | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for v in values.split(",") if v.strip()]


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(help="admin, operator, field, department (read-only) or vendor.")
    ],
    name: Annotated[str, typer.Option(help="Who holds the key, e.g. 'fire brigade'.")] = "",
    kinds: Annotated[
        str | None, typer.Option(help="Department keys: kinds granted, comma-separated.")
    ] = None,
    districts: Annotated[
        str | None, typer.Option(help="Department keys: districts granted, comma-separated.")
    ] = None,
    vendor: Annotated[str | None, typer.Option(help="Vendor keys: the vendor id.")] = None,
    team: Annotated[
        list[str] | None,
        typer.Option(
            "--team",
            help="Field keys: a team of the routing file it acts for; repeat or comma-separate.",
        ),
    ] = None,
) -> None:
    """Create an API key; prints the key alone on stdout (it is shown this once)."""
    from api.keys import KeyRequestError, create_key
    from api.teams import known_teams
    from cityiot.db import make_engine, migrate, sessionmaker
    from rules.routing import RoutingError, load_routing
    from rules.service import routing_path

    settings = load_settings()
    teams = _names(",".join(team)) if team else None
    known: list[str] = []
    if role == "field":
        # Only the teams matter here, not the channels dropped for unset variables.
        logging.getLogger("cityiot.rules.routing").setLevel(logging.ERROR)
        try:
            router = load_routing(routing_path(settings))
        except RoutingError as exc:
            fail(f"the routing file names the teams and cannot be read; fix it: {exc}")
        known = known_teams(router)

    async def main() -> tuple[Any, str]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await create_key(
                sessionmaker(engine),
                role,
                name=name,
                kinds=_names(kinds),
                districts=_names(districts),
                vendor=vendor,
                teams=teams,
                known_teams=known,
                created_by="cli",
            )
        finally:
            await engine.dispose()

    try:
        row, key = asyncio.run(main())
    except KeyRequestError as exc:
        fail(str(exc))
    print(key)
    grant = ""
    if row.kinds or row.districts:
        grant = (
            f" kinds={','.join(row.kinds or ['*'])} districts={','.join(row.districts or ['*'])}"
        )
    if row.vendor_id:
        grant = f" vendor={row.vendor_id}"
    if row.teams:
        grant = f" teams={','.join(row.teams)}"
    err.print(f"key {row.id} created: role={row.role}{grant} (store it now; it is not shown again)")


@keys_app.command("list")
def keys_list() -> None:
    """The API keys (ids, roles and grants; never the secrets)."""
    from api.keys import list_keys
    from cityiot.db import make_engine, migrate, sessionmaker

    settings = load_settings()

    async def main() -> list[Any]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await list_keys(sessionmaker(engine))
        finally:
            await engine.dispose()

    for row in asyncio.run(main()):
        state = "revoked" if row.revoked_at else "active"
        grant = ",".join(row.kinds or ["*"]) + "/" + ",".join(row.districts or ["*"])
        print(f"{row.id}\t{row.role}\t{state}\t{grant}\t{row.vendor_id or '-'}\t{row.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (cityiot keys list).")],
) -> None:
    """Revoke an API key (never the last active admin key)."""
    from api.keys import LastAdminKey, revoke_key
    from cityiot.db import make_engine, migrate, sessionmaker

    settings = load_settings()

    async def main() -> Any:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await revoke_key(sessionmaker(engine), key_id, "cli", "admin")
        finally:
            await engine.dispose()

    try:
        revoked = asyncio.run(main())
    except LastAdminKey as exc:
        fail(str(exc))
    if revoked is None:
        fail(f"no API key {key_id!r}; cityiot keys list shows them")
    err.print(f"key {key_id} revoked")


@grafana_app.command("export")
def grafana_export(
    out: Annotated[
        Path, typer.Option(help="Directory for the dashboard JSON files (Grafana provisioning).")
    ] = Path("deploy/grafana/dashboards"),
) -> None:
    """Write every dashboard as JSON (deterministic: exporting again changes nothing)."""
    from cityiot.grafana.export import export

    try:
        written = export(out)
    except OSError as exc:
        fail(f"cannot write the dashboards to {out}: {exc.strerror}")
    for path in written:
        print(path)
    err.print(f"{len(written)} dashboards in {out}")


@grafana_app.command("push")
def grafana_push(
    url: Annotated[str, typer.Option(help="Grafana's root URL, e.g. http://grafana:3000.")],
    token: Annotated[
        str,
        typer.Option(
            help="Service account token (role Editor) of that Grafana.",
            envvar="CITYIOT_GRAFANA_TOKEN",
        ),
    ],
    folder: Annotated[str, typer.Option(help="Folder to put them in (created if missing).")] = (
        "cityiot"
    ),
) -> None:
    """Upload every dashboard to a running Grafana (overwriting older versions)."""
    from cityiot.grafana.push import GrafanaPushError, push

    try:
        report = push(url, token, folder)
    except GrafanaPushError as exc:
        fail(str(exc))
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for uid, address in report.saved.items():
        print(f"{uid}\t{address}")
    made = "created" if report.folder_created else "existing"
    err.print(f"{len(report.saved)} dashboards saved in folder {report.folder_uid} ({made})")


@docs_app.command("access-standard")
def docs_access_standard(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 naming each page whose tables are stale."
        ),
    ] = False,
    docs_dir: Annotated[
        Path, typer.Option(help="Folder holding access-standard.zh.md and access-standard.en.md.")
    ] = Path("docs"),
) -> None:
    """Write the kinds' metric and attribute tables into the vendors' access standard pages
    (between <!-- metrics:begin --> and <!-- metrics:end -->), from cityiot/catalogue.py."""
    from cityiot.accessdoc import AccessDocError, refresh

    def say(text: str) -> None:
        # One line each, never wrapped: CI logs and scripts look for the paths.
        err.print(text, soft_wrap=True, markup=False, highlight=False)

    try:
        states = refresh(docs_dir, write=not check)
    except AccessDocError as exc:
        say(f"error: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        say(f"error: cannot write the access standard pages in {docs_dir}: {exc}")
        raise typer.Exit(1) from None
    stale = [state.path for state in states if not state.current]
    if check:
        for path in stale:
            say(f"{path} is stale: run cityiot docs access-standard")
        if stale:
            raise typer.Exit(1)
        say(f"{len(states)} pages up to date")
        return
    for path in stale:
        print(path)
    say(f"{len(stale)} of {len(states)} pages rewritten")
