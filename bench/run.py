"""``cityiot bench``: the platform's throughput, CPU, memory and latency next to a bare
subscriber and a Node-RED peer, on one real local Mosquitto and InfluxDB.

The bench starts its own broker (``bench/mosquitto.conf``) and InfluxDB on free ports under
``.bench/runs/<stamp>-<pid>/``, registers the fleet once in a SQLite registry there, and runs each
system in turn on the same payloads:

- **throughput**: start the system and wait until it is subscribed; SIGSTOP it; publish the
  backlog at the run's QoS (the broker queues it for the stopped subscriber); SIGCONT it
  (t0). A storing system is done when InfluxDB's count of points (the sum over kinds of
  ``SELECT count(<COUNT_FIELD[kind]>) FROM <kind>``) reaches the number sent: the last
  ``SENTINELS`` messages of the backlog come from dedicated devices, cheap to count, which
  are watched first; when all are stored the exact count confirms (or, when it falls short,
  is polled until it is reached or stops moving). The baseline is done at its own last
  message. rate = messages / (t_end − t0). CPU seconds are utime + stime from
  ``/proc/<pid>/stat`` between t0 and t_end, for the system's processes, the broker and
  InfluxDB; peak RSS is the system's VmHWM.
- **latency** (bench/latency.py): the system running live under background load, probes
  timed from publish to stored and to the alert event, after a warm-up in which every fleet
  device reports once (its series exist, as in a running city).
- **codecs** (bench/codecs.py): one ingest draining JSON, a vendor's binary frames decoded by
  its JavaScript codec in the sandbox, and those frames beside a device whose codec loops
  forever; its own fleet, registry and database.
- **window** (bench/window.py): the ingest at QoS 1 on brokers of its own: the default
  in-flight window, Mosquitto's window of 32, a strict window of 32 (a relay) read by several
  sessions and by one, the relay alone, the default window over ``mqtts://``, and NATS with
  its widest window and with 32; its own fleet and registry.
- **links** (bench/links.py): one platform (ingest, rules, API) taking the same readings by
  MQTT, by CTWing's HTTP push (concurrent pushers) and by ChirpStack's MQTT integration;
  its own fleet, registry and database.

Each system writes to a database of its own (dropped after its run), gets fresh event times
and client ids, and its broker sessions are removed after it stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.backlog import Payloads
from bench.codec_result import CodecResult
from bench.codecs import CodecBench
from bench.latency_run import ALARMS, PROBES, LatencyRun
from bench.launch import Launcher
from bench.links import LinkBench, LinkResult
from bench.load import bench_fleet
from bench.machine import git_state, hardware, utc_stamp
from bench.options import BENCH_HOME, REPO, SENTINELS, BenchOptions
from bench.registry import REGISTRY_SETTLE_S, Registry, bench_device
from bench.report import BenchReport, SystemResult
from bench.services import BROKER_TEMPLATE, Services
from bench.stored import STALL_S
from bench.systems import SYSTEM_ERRORS, SystemSpec, system_specs
from bench.throughput import Throughput
from bench.window import WindowBench, WindowResult
from cityiot.domain.catalogue import KINDS
from cityiot.simulators.fleet import Fleet


@dataclass(frozen=True, slots=True)
class BenchRun:
    """One ``cityiot bench``'s runs, wired once onto its services, registry and payloads."""

    launcher: Launcher
    throughput: Throughput
    latency: LatencyRun

    @classmethod
    def prepare(
        cls,
        options: BenchOptions,
        services: Services,
        run_dir: Path,
        say: Callable[[str], None],
        log: Callable[[str], None],
    ) -> BenchRun:
        """The registry and the payloads, on the run's broker and InfluxDB."""
        fleet = bench_fleet(options.devices, mix=dict(options.mix))
        sentinels = [bench_device(f"bench-sentinel-{i:02d}") for i in range(SENTINELS)]
        extras = [
            *sentinels,
            *(bench_device(f"bench-probe-{i}") for i in range(PROBES)),
            *(bench_device(f"bench-alarm-{i}") for i in range(ALARMS)),
        ]
        registered = Fleet(
            devices=(*fleet.devices, *extras), vendors=fleet.vendors, seed=fleet.seed
        )
        say(f"importing {len(registered):,} devices…")
        registry = Registry.imported(registered, run_dir, say)
        log(f"registered {len(registered):,} devices ({len(fleet):,} fleet, {len(extras)} bench)")
        say(f"generating {options.messages:,} messages…")
        payloads = Payloads.generate(fleet, options.messages, sentinels)
        kinds = {d.device_id: d.kind for d in registered.devices}
        launcher = Launcher(services, registry, payloads, options.timeout_s, say, kinds)
        return cls(
            launcher,
            Throughput(options, services, registry, payloads, launcher, say, log),
            LatencyRun(options, services, registry, payloads, launcher, say),
        )

    def systems(
        self, specs: list[SystemSpec], log: Callable[[str], None]
    ) -> dict[str, SystemResult]:
        """Every system's throughput rounds and, for some, its latency run."""
        options = self.throughput.options
        # The baseline and the peer use no registry: they run while the import settles.
        order = sorted(
            specs, key=lambda s: {"baseline": 0, "influxdb": 1, "peer": 2}.get(s.kind, 3)
        )
        # Rounds interleaved (every system once, then again): a slow spell of the
        # machine falls on every system alike instead of on one system's rounds.
        rounds: dict[str, list[SystemResult]] = {s.name: [] for s in specs}
        for number in range(1, options.rounds + 1):
            if options.rounds > 1:
                log(f"round {number} of {options.rounds}")
            for spec in order:
                rounds[spec.name].append(self.throughput.run_system(spec))
        results = {name: representative(found) for name, found in rounds.items()}
        if not options.skip_latency:
            for spec in specs:
                if spec.name not in ("cityiot-qos1", "peer"):
                    continue
                try:
                    results[spec.name].latency = self.latency.run(spec)
                except SYSTEM_ERRORS as e:
                    results[spec.name].notes.append(f"latency run failed: {e}")
                    log(f"[red]{spec.name} latency failed:[/] {e}")
        return results


def representative(rounds: list[SystemResult]) -> SystemResult:
    """The round that stands for a system: a failed one when any failed (a loss is never
    outvoted), else the one of median rate; every round's figures go along with it."""
    failed = [r for r in rounds if not r.ok]
    if failed:
        chosen = failed[0]
    else:
        ranked = sorted(rounds, key=lambda r: r.rate or 0.0)
        chosen = ranked[(len(ranked) - 1) // 2]  # the lower median of an even count
    if len(rounds) > 1:
        chosen.rounds = [r.round_figures() for r in rounds]
        chosen.notes.append(
            f"round {rounds.index(chosen) + 1} of {len(rounds)} shown; rates of all rounds: "
            + ", ".join("–" if r.rate is None else f"{r.rate:,.0f}" for r in rounds)
        )
    return chosen


def run_bench(
    options: BenchOptions, say: Callable[[str], None], log: Callable[[str], None]
) -> tuple[BenchReport, Path]:
    """Run the whole bench; returns the report and where its JSON was written.

    ``say`` gets progress (a status line that replaces the previous one), ``log`` lines to
    keep. Raises ``BenchError`` when a service cannot start; a system that fails is
    reported in its column instead.
    """
    options.check()
    started = dt.datetime.now(dt.UTC)
    stamp = utc_stamp(started)
    # The process id too: two runs started in the same second (the tests') must not share
    # a directory, nor remove each other's.
    run_dir = BENCH_HOME / "runs" / f"{stamp}-{os.getpid()}"
    run_dir.mkdir(parents=True)
    git = git_state(REPO)
    out = options.out or BENCH_HOME / "results" / f"{stamp}-{git.get('sha') or 'nogit'}.json"
    specs = system_specs(options)
    results: dict[str, SystemResult] = {}
    run: BenchRun | None = None
    codecs: CodecResult | None = None
    links: LinkResult | None = None
    window: WindowResult | None = None
    try:
        with contextlib.ExitStack() as stack:
            services = Services(run_dir, say, keep=options.keep)
            services.start(stack)
            if specs:
                run = BenchRun.prepare(options, services, run_dir, say, log)
            # Registered early: the section's registry settles while the others run.
            section = (
                CodecBench.prepare(options, services, run_dir, say, log)
                if options.codec_messages
                else None
            )
            link_section = (
                LinkBench.prepare(options, services, run_dir, say, log)
                if options.links_messages
                else None
            )
            window_section = (
                WindowBench.prepare(options, services, run_dir, say, log)
                if options.window_messages
                else None
            )
            if run is not None:
                results = run.systems(specs, log)
            if section is not None:
                codecs = section.run()
            if link_section is not None:
                links = link_section.run()
            if window_section is not None:
                window = window_section.run()
    finally:
        if not options.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    rule_state = None
    if options.state_devices:
        from bench.state import measure_rule_state

        rule_state = measure_rule_state(options.state_devices, say=say)
        log(
            f"rule state: {rule_state.bytes_per_device:,.0f} bytes per device at "
            f"{rule_state.devices:,} devices"
        )
    map_draw = None
    if options.map_devices:
        from bench.map_draw import measure_map

        say(f"the console's map with {options.map_devices:,} devices")
        map_draw = measure_map(options.map_devices)
        log(
            f"map: {map_draw.city.first_draw_ms:,.0f} ms to the first drawing of "
            f"{options.map_devices:,} devices"
        )
    scale = None
    if options.scale().wanted:
        from bench.scale import run_scale

        scale = run_scale(options.scale(), say, log)
    systems = [results[s.name] for s in specs]
    baseline = results.get("baseline")
    if baseline is not None and baseline.rate:
        for s in systems:
            if s.rate is not None:
                s.ratio = round(s.rate / baseline.rate, 3)
    versions = run.launcher.versions if run is not None else {}
    extra = {"node_red": versions.get("node-red", "")} if versions else {}
    report = BenchReport(
        started_at=started.isoformat(timespec="seconds"),
        git=git,
        settings={
            **options.as_dict(),
            "kinds": sorted(dict(options.mix) or KINDS),
            "sentinels": SENTINELS,
            "registry_settle_s": REGISTRY_SETTLE_S,
            "stall_s": STALL_S,
            "broker_config": BROKER_TEMPLATE.read_text(),
            "versions": versions,
        },
        hardware=hardware(extra),
        systems=systems,
        rule_state=rule_state.as_dict() if rule_state else None,
        map_draw=map_draw.as_dict() if map_draw else None,
        codecs=codecs,
        links=links,
        window=window,
        scale=scale,
        method={
            "throughput": "unless cold: a warm-up (one reading per fleet device, waited for "
            "until stored, then until InfluxDB and the system are idle; not counted); "
            "SIGSTOP the subscribed system, publish the backlog at the run's "
            "QoS, SIGCONT (t0); rate = messages / (t_end - t0), t_end = when InfluxDB's "
            "count reached the number sent (baseline: its last message)",
            "end_by": "sentinel: the last 16 messages' devices all stored, exact count "
            "confirmed; count: exact count polled; stall: no progress for stall_s; last_s: "
            "the baseline's own clock",
            "cpu": "utime+stime from /proc/<pid>/stat between t0 and t_end (baseline: "
            "wait4 rusage minus t0)",
            "peak_rss": "VmHWM of the system's process at t_end (max over workers; "
            "baseline: polled every 50 ms until its last message)",
            "latency": "after a warm-up (one reading per fleet device, waited for until stored), "
            "background load via Publisher.publish_at (QoS 0), probes every 20 ms "
            "at QoS 1 with ts = publish time; stored = first poll (every ~8 ms) that returns "
            "the point; alert = arrival of the matching event on city/alerts/#",
            "codecs": "one cityiot ingest --rules (CITYIOT_CODECS_PATH=bench/codec_files), "
            "warmed up; each round drains, as the throughput columns, a backlog of JSON "
            "manholes, one of the same readings as 16-byte frames of a vendor whose codec "
            "decodes them in the sandbox (manhole-frame), and the frame backlog with messages "
            "of a device whose decoder loops forever (endless-loop) interleaved one every "
            "(frame rate / 10), so they reach the ingest at 10/s of its drain; rounds run "
            "json, frames, frames+hostile and the reverse in turn; drop = 1 - rate beside the "
            "hostile / rate without, per round; every figure is the median of each order's "
            "rounds averaged over the two orders; one decode timed in process over the "
            "frames (perf_counter_ns per call, gc off)",
            "links": "one platform process (ingest, rules and API, bench/link_platform.py; "
            "CITYIOT_CHIRPSTACK_MQTT_URL = the run's broker), warmed up; per round and path the "
            "same readings of as many manholes: mqtt (JSON) and chirpstack (ChirpStack v4 "
            "uplink events, hexframe data) drain a backlog queued at QoS 1 while the platform "
            "was SIGSTOPped (t0 = SIGCONT, end = InfluxDB holds it); ctwing (dataReport, "
            "serviceData) is pushed live by concurrent clients, one reading a request, resent "
            "after Retry-After on anything but 200 (t0 = the first request, end = the last "
            "200, each 200 given once stored; each 200's request timed from sent to "
            "answered); paths in one order and its reverse in turn, "
            "the median round shown, ratios to mqtt",
            "window": "six brokers of bench/mosquitto.conf and two NATS started by the "
            "section: the default max_inflight_messages; max_inflight_messages 32 (Mosquitto "
            "2.0 holds it only until the first PUBACK); twice the default behind "
            "bench/window_proxy.py holding QoS 1 deliveries while 32 are unacknowledged (a "
            "strict window, as EMQX's); the ingest reading both windows of 32 by "
            "--window-sessions sessions of one shared subscription (CITYIOT_MQTT_SESSIONS, a "
            "window each), and the strict one by one session too; the "
            "same relay holding nothing; the default over a TLS listener (CA and broker "
            "certificate made in the run; the ingest's CITYIOT_MQTT_URL "
            "mqtts://localhost:<port>, CITYIOT_MQTT_CA_FILE); NATS with max_ack_pending "
            "65,535 and 32; CITYIOT_MQTT_INFLIGHT=32 for the "
            "ingests of the windows of 32; one cityiot ingest --rules on each, warmed up; per "
            "round and broker the same backlog of JSON manholes queued at QoS 1 on the "
            "broker's plain port while its ingest was SIGSTOPped (t0 = SIGCONT, end = InfluxDB "
            "holds it); brokers in one order and its reverse in turn, the median round shown, "
            "ratios to the default window, the strict window's also to the relay's",
        },
    )
    report.write(out)
    return report, out
