"""The long-running commands: ``run`` (everything), ``ingest``, ``rules``, ``simulate``, ``api``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from cityiot.cli.app import app
from cityiot.cli.common import err, fail, load_settings, run_until_signal, serve_metrics
from cityiot.domain.settings import Settings
from cityiot.platform.logs import configure_logging


def _log_lines(ctx: typer.Context, settings: Settings, log_file: Path | None = None) -> None:
    """Logging for this command, its writer thread ended with the command: run in-process
    (a test's CliRunner), its last lines are written before the runner closes the streams."""
    ctx.call_on_close(configure_logging(settings, log_file))


# What `cityiot run` shows unless told otherwise: incidents from the first minute, each
# raising its rule, with notifications and work orders (name:devices:after_s:duration_s);
# then the city-lifeline ones, each rising past its alarm levels and recovering.
DEFAULT_INCIDENTS = (
    "cover_open:2:20:240",
    "leakage:1:30:240",
    "valve_open:1:40:180",
    "pressure_drop:1:60:300",
    "water_quality:1:90:300",
    "rainstorm:1:60:900",
    "gas_leak:1:100:900",
    "tunnel_air:1:140:900",
)


def check_codecs(settings: Settings) -> None:
    """Load the codec files (the shipped ones and ``CITYIOT_CODECS_PATH``'s), running their
    examples: a broken one ends the command naming the file, the field or the example."""
    from cityiot.ingest.codecs import CodecBook
    from cityiot.ingest.codecs.files import CodecFileError

    try:
        CodecBook.of(settings).load()
    except CodecFileError as exc:
        fail(f"invalid codec file: {exc}")


@app.command()
def run(
    ctx: typer.Context,
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
    simulator_tls: Annotated[
        bool,
        typer.Option(
            "--simulator-tls",
            help="The simulated MQTT devices connect to the local broker's TLS listener "
            "(trusting the CA made in the run dir) instead of its plain one.",
        ),
    ] = False,
) -> None:
    """All stages in one process; starts a local broker and InfluxDB unless URLs are given."""
    from cityiot.platform.launcher import Launch, run_platform

    settings = load_settings()
    check_codecs(settings)
    if simulator_tls and (no_simulator or settings.mqtt_url):
        fail(
            "--simulator-tls is for the simulated fleet on the local broker: drop "
            "--no-simulator, or, with CITYIOT_MQTT_URL set, leave the option out (the "
            "simulated fleet follows that URL: mqtts:// with CITYIOT_MQTT_CA_FILE)"
        )
    # Owner only: the database, log and secrets in the run dir, and the local broker's and
    # InfluxDB's files (the children inherit it); they all run as this user.
    os.umask(0o077)
    _log_lines(ctx, settings, settings.run_dir / "cityiot.log")
    launch = Launch(
        devices=devices,
        rate=rate,
        seed=seed,
        simulate=not no_simulator,
        incidents=[] if incidents == ["none"] else incidents or list(DEFAULT_INCIDENTS),
        malformed_share=malformed,
        simulator_tls=simulator_tls,
    )
    stop = asyncio.Event()
    run_until_signal(run_platform(settings, launch, stop, err), stop, settings)


@app.command()
def ingest(
    ctx: typer.Context,
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
    from cityiot.platform.gcpolicy import settle
    from cityiot.platform.wiring import platform

    settings = load_settings()
    check_codecs(settings)
    _log_lines(ctx, settings)
    stop = asyncio.Event()

    async def main() -> None:
        async with platform(settings, rules=with_rules) as running:
            serve_metrics(settings, running.sources())
            settle(settings.gc_full_every_s)  # registry and rule state loaded: before readings
            running.start()
            await stop.wait()

    run_until_signal(main(), stop, settings)


@app.command()
def rules(ctx: typer.Context) -> None:
    """The rules stage alone: reads the telemetry stream (its own persistent session),
    evaluates rules, records alerts, notifies and opens work orders."""
    from cityiot.ingest.service import ingest_stage
    from cityiot.platform.gcpolicy import settle
    from cityiot.rules.service import rules_stage

    settings = load_settings()
    _log_lines(ctx, settings)
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
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="Number of simulated devices.")] = 1000,
    rate: Annotated[float, typer.Option(help="Messages per second, whole fleet.")] = 200.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same fleet.")] = 1,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    csv: Annotated[
        Path | None,
        typer.Option(help="Write the fleet's registry CSV here (and exit if no broker)."),
    ] = None,
    incidents: Annotated[
        list[str] | None,
        typer.Option(
            "--incident",
            help="Scripted incident, name[:devices[:after_s[:duration_s]]], e.g. cover_open or "
            "rainstorm:1:60:900 (an unknown name is answered with the list).",
        ),
    ] = None,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages, 0..1.")] = 0.0,
    links: Annotated[
        list[str] | None,
        typer.Option(
            "--link",
            help="Links the fleet's devices report by (repeat it): mqtt (default), chirpstack "
            "(LoRaWAN: vendor tianzhong-lora, codec hexframe, devices with dev_eui; needs "
            "--chirpstack-url), ctwing (ct-nb-frame hexframe, ct-nb-model json; devices with "
            "imei) and onenet (cm-nb-onenet json; imei and onenet_dev_id), which need "
            "--api-url and --intake-token for their vendors. Register the vendors with those "
            "codecs and import --csv before publishing.",
        ),
    ] = None,
    chirpstack_url: Annotated[
        str,
        typer.Option(
            help="mqtt://user:pass@host:port (or mqtts://…:8883, trusting "
            "CITYIOT_MQTT_CA_FILE) where the simulated ChirpStack publishes its "
            "events (application/…/event/up and /status): an account that may publish "
            "application/#; the ingest reads them with CITYIOT_CHIRPSTACK_MQTT_URL.",
        ),
    ] = "",
    api_url: Annotated[
        str,
        typer.Option(
            help="The platform's API (http://host:port), where the simulated CTWing and OneNET "
            "post to /api/v1/intake/{ctwing,onenet}/{vendor}.",
        ),
    ] = "",
    intake_tokens: Annotated[
        list[str] | None,
        typer.Option(
            "--intake-token",
            help="VENDOR=TOKEN, a CTWing/OneNET vendor's intake token (repeat it per vendor; "
            "from `cityiot vendors intake-token VENDOR`).",
        ),
    ] = None,
) -> None:
    """Publish a simulated fleet to CITYIOT_MQTT_URL (and/or write its registry CSV); with
    --link, also LoRaWAN devices as a ChirpStack's events and NB-IoT ones as CTWing's and
    OneNET's HTTP pushes. An mqtts:// URL connects over TLS, verifying the broker against
    CITYIOT_MQTT_CA_FILE (default: the system's trust store) and its host name, with
    CITYIOT_MQTT_CERT_FILE / _KEY_FILE as the devices' client certificate when set."""
    from cityiot.domain.catalogue import KINDS
    from cityiot.domain.settings import MqttTarget
    from cityiot.platform.launcher import simulate_fleet
    from cityiot.simulators import (
        DEFAULT_VENDORS,
        LINK_VENDORS,
        LINKS,
        VENDOR_LINKS,
        ChirpStackTarget,
        Fleet,
        IntakeTarget,
        codec_carries,
    )

    chosen = list(dict.fromkeys(links or ["mqtt"]))
    unknown = [link for link in chosen if link not in LINKS]
    if unknown:
        fail(f"unknown --link {', '.join(unknown)}: use {', '.join(LINKS)}")
    tokens: dict[str, str] = {}
    for given in intake_tokens or []:
        vendor, sep, token = given.partition("=")
        if not sep or not vendor or not token:
            fail(f"--intake-token {given!r}: write it VENDOR=TOKEN, e.g. ct-nb-frame=AbC123…")
        tokens[vendor] = token
    settings = load_settings()
    _log_lines(ctx, settings)
    vendors = [v for v in DEFAULT_VENDORS if "mqtt" in chosen]
    vendors += [v for v in LINK_VENDORS if VENDOR_LINKS[v.id] in chosen]
    if not vendors:
        fail("no vendor reports by the links chosen: add --link mqtt or another")
    # Every kind some chosen vendor's codec can carry (a LoRaWAN frame holds no water meter).
    mix = {k: 1.0 for k in sorted(KINDS) if any(codec_carries(v.codec, KINDS[k]) for v in vendors)}
    fleet = Fleet.generate(devices, seed, mix=mix, vendors=vendors)
    if csv is not None:
        fleet.write_csv(csv)
        err.print(f"wrote {len(fleet.devices)} devices to {csv}")
        for maker in (v for v in vendors if v in LINK_VENDORS):
            err.print(f"  vendor {maker.id} ({VENDOR_LINKS[maker.id]}): codec {maker.codec}")
    if not settings.mqtt_url:
        if csv is None:
            fail("set CITYIOT_MQTT_URL to publish (or give --csv to only write the registry CSV)")
        return
    chirpstack = None
    if "chirpstack" in chosen:
        if not chirpstack_url:
            fail("--link chirpstack needs --chirpstack-url mqtt://user:pass@host:port")
        # mqtts:// trusts CITYIOT_MQTT_CA_FILE, as the platform's own ChirpStack link does.
        target = MqttTarget(chirpstack_url, tls=settings.mqtt_tls, setting="--chirpstack-url")
        chirpstack = ChirpStackTarget(
            target.host, target.port, target.username, target.password,
            tls=target if target.tls is not None else None,
        )  # fmt: skip
    intake = None
    if "ctwing" in chosen or "onenet" in chosen:
        if not api_url:
            fail("--link ctwing/onenet needs --api-url http://host:port of the platform's API")
        intake = IntakeTarget(api_url, tokens)
    stop = asyncio.Event()
    # A CTWing/OneNET vendor without its token ends it with a ValueError naming the vendor.
    run_until_signal(
        simulate_fleet(
            settings, fleet, rate, seed, incidents or [], malformed, duration, stop, err,
            chirpstack=chirpstack, intake=intake,
        ),
        stop,
        settings,
    )  # fmt: skip


@app.command()
def api(ctx: typer.Context) -> None:
    """The API alone (FastAPI on CITYIOT_API_HOST:CITYIOT_API_PORT, OpenAPI at /docs)."""
    from cityiot.api.server import ApiServer

    settings = load_settings()
    check_codecs(settings)
    _log_lines(ctx, settings)
    stop = asyncio.Event()

    async def main() -> None:
        async with ApiServer(settings) as server:
            err.print(f"API at {server.url}/api/v1 (docs at {server.url}/docs)")
            waiting = asyncio.create_task(stop.wait())
            serving = asyncio.create_task(server.wait())
            await asyncio.wait({waiting, serving}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()

    run_until_signal(main(), stop, settings)
