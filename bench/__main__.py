"""``python -m bench`` (``make bench``): the benchmark, run from the checkout.

It lives outside the installed package: a city installs cityiot, not its benchmark or its
peer (Node-RED).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)


def bench(
    devices: Annotated[int, typer.Option(help="Fleet size (every kind in force).")] = 100_000,
    messages: Annotated[int, typer.Option(help="Backlog each system drains.")] = 500_000,
    systems: Annotated[
        str,
        typer.Option(
            help="Comma list of baseline,influxdb,cityiot-qos0,cityiot-qos1,peer,workers "
            "(none: no throughput columns)."
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
        bool, typer.Option("--keep", help="Keep .bench/runs/<time>-<pid>/ and its databases.")
    ] = False,
    state_devices: Annotated[
        int, typer.Option(help="Measure rule state per device at this many devices (0: skip).")
    ] = 1_000_000,
    map_devices: Annotated[
        int,
        typer.Option(help="Draw the console's map with this many devices, beside 1,000 (0: skip)."),
    ] = 100_000,
    rounds: Annotated[
        int,
        typer.Option(
            help="Throughput runs of each system, interleaved; the table shows the median one."
        ),
    ] = 1,
    mix: Annotated[
        str,
        typer.Option(
            help="Kinds of the fleet and their shares, kind=share,… (e.g. the five of the "
            "access standard: streetlight=0.3,parking=0.25,manhole=0.2,water=0.15,hydrant=0.1); "
            "empty: every kind in force, equal shares."
        ),
    ] = "",
    cold: Annotated[
        bool,
        typer.Option(
            "--cold",
            help="No warm-up before each throughput run: measure a city's first minutes "
            "(every series created, every device coming online).",
        ),
    ] = False,
    codec_messages: Annotated[
        int,
        typer.Option(
            help="Messages per drain of the codec section (a decoding codec against JSON on "
            "one ingest, and beside a looping codec); 0: skip it."
        ),
    ] = 100_000,
    codec_devices: Annotated[
        int, typer.Option(help="Manholes per load (JSON, frames) of the codec section.")
    ] = 10_000,
    codec_rounds: Annotated[
        int,
        typer.Option(
            help="Rounds of the codec section's three drains, in one order and its reverse "
            "in turn (an even number weighs both alike)."
        ),
    ] = 4,
    links_messages: Annotated[
        int,
        typer.Option(
            help="Readings a round by MQTT and by ChirpStack's MQTT integration in the links "
            "section (beside CTWing's HTTP push, into one platform); 0: skip the section."
        ),
    ] = 100_000,
    links_pushes: Annotated[
        int, typer.Option(help="Readings a round by CTWing's HTTP push in the links section.")
    ] = 10_000,
    links_devices: Annotated[
        int, typer.Option(help="Manholes per path of the links section.")
    ] = 1_000,
    links_pushers: Annotated[
        int, typer.Option(help="Concurrent CTWing pushers of the links section.")
    ] = 16,
    links_rounds: Annotated[
        int,
        typer.Option(help="Rounds of the links section's paths, in one order and its reverse."),
    ] = 3,
    window_messages: Annotated[
        int,
        typer.Option(
            help="Readings a drain of the window section (the ingest at QoS 1 on a broker "
            "with the default in-flight window, with a window of 32, and over mqtts://); "
            "0: skip the section."
        ),
    ] = 100_000,
    window_devices: Annotated[int, typer.Option(help="Manholes of the window section.")] = 1_000,
    window_rounds: Annotated[
        int,
        typer.Option(help="Rounds of the window section's brokers, in one order and its reverse."),
    ] = 3,
    window_sessions: Annotated[
        int,
        typer.Option(
            help="The ingest's sessions (CITYIOT_MQTT_SESSIONS) on the Mosquitto windows of 32."
        ),
    ] = 16,
    window_brokers: Annotated[
        str,
        typer.Option(
            help="The window section's brokers to measure, a comma list (default) with "
            "default in it; empty: all."
        ),
    ] = "",
    scale_devices: Annotated[
        int,
        typer.Option(
            help="Devices registered for the city-scale registry and API sections (import, "
            "ingest start-up and memory, API latency under concurrent clients); 0: skip them."
        ),
    ] = 1_000_000,
    scale_dbs: Annotated[
        str, typer.Option(help="Registries of the city-scale sections: sqlite,postgres.")
    ] = "sqlite,postgres",
    scale_clients: Annotated[
        int, typer.Option(help="Concurrent API clients of the city-scale API section.")
    ] = 50,
    scale_requests: Annotated[
        int, typer.Option(help="Requests per endpoint of the city-scale API section.")
    ] = 2_000,
    influx_devices: Annotated[
        int,
        typer.Option(
            help="Devices (two series each) of the InfluxDB index section, TSI against the "
            "in-memory index; 0: skip it."
        ),
    ] = 1_000_000,
    storm_lights: Annotated[
        int,
        typer.Option(
            help="Streetlights going dark in the alert storm section (their district's "
            "manholes alarm beside them); 0: skip it."
        ),
    ] = 10_000,
    storm_seconds: Annotated[
        float, typer.Option(help="Over how many seconds the storm's streetlights go dark.")
    ] = 60.0,
    offline_devices: Annotated[
        int, typer.Option(help="Devices of the offline detection section; 0: skip it.")
    ] = 1_000_000,
) -> None:
    """Throughput, CPU, memory and latency of the platform next to a bare subscriber and
    Node-RED, a vendor's decoding codec against JSON, and the CTWing and ChirpStack links
    beside MQTT, the broker's in-flight window and TLS, on a local Mosquitto and InfluxDB it
    starts itself; then the city's scale: a million devices registered and asked for through
    the API on SQLite and PostgreSQL, InfluxDB's index with their series, an alert storm and
    offline detection. Prints tables and writes the figures as JSON. Exits 1 when a system or
    a section failed, timed out, lost or duplicated."""
    from bench.options import (
        BenchError,
        BenchOptions,
        parse_mix,
        parse_systems,
        parse_workers,
    )
    from bench.report import print_report
    from bench.run import run_bench
    from cityiot.platform.local_services import ServiceError

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
            map_devices=map_devices,
            rounds=rounds,
            cold=cold,
            mix=parse_mix(mix),
            codec_messages=codec_messages,
            codec_devices=codec_devices,
            codec_rounds=codec_rounds,
            links_messages=links_messages,
            links_pushes=links_pushes,
            links_devices=links_devices,
            links_pushers=links_pushers,
            links_rounds=links_rounds,
            window_messages=window_messages,
            window_devices=window_devices,
            window_rounds=window_rounds,
            window_sessions=window_sessions,
            window_brokers=tuple(b for b in window_brokers.split(",") if b),
            scale_devices=scale_devices,
            scale_dbs=tuple(db.strip() for db in scale_dbs.split(",") if db.strip()),
            scale_clients=scale_clients,
            scale_requests=scale_requests,
            influx_devices=influx_devices,
            storm_lights=storm_lights,
            storm_seconds=storm_seconds,
            offline_devices=offline_devices,
        )
        options.check()
        with err.status("starting…") as status:
            report, written = run_bench(
                options, lambda text: status.update(text), lambda text: err.print(text)
            )
    except (BenchError, ServiceError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    print_report(report, console, written)
    if not report.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(bench)
