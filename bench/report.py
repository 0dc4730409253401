"""The benchmark's results: per-system figures, the machine they were measured on, the
table ``cityiot bench`` prints and the JSON it writes for comparison across commits."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bench.codec_result import CodecResult, print_codecs
from bench.latency import LatencyResult, Percentiles
from bench.links import LinkResult, print_links
from bench.window import WindowResult, print_window

if TYPE_CHECKING:
    from bench.scale import ScaleResult

REPORT_VERSION = 1


@dataclass(slots=True)
class SystemResult:
    """One system's throughput run (and, for some, its latency run).

    ``rate`` is ``sent / drain_s`` once every message was stored (received, for the
    baseline); with a shortfall it is ``stored / drain_s`` and ``lost`` says how many are
    missing. ``drain_s`` runs from SIGCONT to the moment InfluxDB held them all.
    """

    name: str
    description: str
    publish_qos: int
    delivered_qos: int
    workers: int
    database: str | None
    sent: int = 0
    warmed: int = 0  # warm-up readings stored before t0, left out of every figure
    stored: int | None = None
    lost: int = 0
    duplicated: int = 0
    publish_s: float | None = None
    drain_s: float | None = None
    rate: float | None = None
    ratio: float | None = None
    cpu_s: float | None = None
    broker_cpu_s: float | None = None
    influx_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    end_by: str = ""  # how the end of the drain was found: sentinel, count, last_s, stall
    timed_out: bool = False
    error: str | None = None
    latency: LatencyResult | None = None
    notes: list[str] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # with --rounds: each round's

    def round_figures(self) -> dict[str, Any]:
        """This run's throughput figures, as one of several rounds."""
        return {
            "rate": self.rate,
            "drain_s": self.drain_s,
            "cpu_s": self.cpu_s,
            "broker_cpu_s": self.broker_cpu_s,
            "influx_cpu_s": self.influx_cpu_s,
            "stored": self.stored,
            "cpu_us_per_reading": self.cpu_us_per_reading,
            "cores_busy": self.cores_busy,
            "ok": self.ok,
        }

    @property
    def ok(self) -> bool:
        """Figures are valid: no error, no timeout, nothing lost or duplicated."""
        return self.error is None and not self.timed_out and not self.lost and not self.duplicated

    @property
    def machine_cpu_s(self) -> float | None:
        """CPU seconds of the drain on the measured processes together: the system's (the
        bench's own posting for the influxdb column, not measured, counts as none), the
        broker's and InfluxDB's."""
        if self.drain_s is None or self.broker_cpu_s is None or self.influx_cpu_s is None:
            return None
        return (self.cpu_s or 0.0) + self.broker_cpu_s + self.influx_cpu_s

    @property
    def cpu_us_per_reading(self) -> float | None:
        """:attr:`machine_cpu_s` per reading drained, in µs: what storing one costs the
        machine, comparable across systems and machines where rates are not."""
        total = self.machine_cpu_s
        readings = min(self.sent, self.stored or 0)
        return None if total is None or not readings else round(total / readings * 1e6, 1)

    @property
    def cores_busy(self) -> float | None:
        """:attr:`machine_cpu_s` ÷ drain time: how many cores the drain kept busy."""
        total = self.machine_cpu_s
        return None if total is None or not self.drain_s else round(total / self.drain_s, 2)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_us_per_reading"] = self.cpu_us_per_reading
        out["cores_busy"] = self.cores_busy
        out["latency"] = None if self.latency is None else self.latency.as_dict()
        out["ok"] = self.ok
        return out


@dataclass(slots=True)
class BenchReport:
    """Everything one ``cityiot bench`` run measured, with its settings and machine."""

    started_at: str
    git: dict[str, Any]
    settings: dict[str, Any]
    hardware: dict[str, Any]
    systems: list[SystemResult]
    method: dict[str, str]
    rule_state: dict[str, Any] | None = None  # bench/state.py: bytes per device
    map_draw: dict[str, Any] | None = None  # bench/map_draw.py: the console's map
    codecs: CodecResult | None = None  # bench/codecs.py: the codec section
    links: LinkResult | None = None  # bench/links.py: the links section
    window: WindowResult | None = None  # bench/window.py: the broker window and TLS section
    scale: ScaleResult | None = None  # bench/scale.py: the city-scale sections

    @property
    def ok(self) -> bool:
        return (
            all(s.ok for s in self.systems)
            and (self.codecs is None or self.codecs.ok)
            and (self.links is None or self.links.ok)
            and (self.window is None or self.window.ok)
            and (self.scale is None or self.scale.ok)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "started_at": self.started_at,
            "git": self.git,
            "settings": self.settings,
            "hardware": self.hardware,
            "method": self.method,
            "systems": [s.as_dict() for s in self.systems],
            "rule_state": self.rule_state,
            "map_draw": self.map_draw,
            "codecs": None if self.codecs is None else self.codecs.as_dict(),
            "links": None if self.links is None else self.links.as_dict(),
            "window": None if self.window is None else self.window.as_dict(),
            "scale_out": scale_out(self),
            "scale": None if self.scale is None else self.scale.as_dict(),
            "ok": self.ok,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")


# -- the table ----------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def table(report: BenchReport) -> Table:
    """Systems side by side, one figure per row."""
    t = Table(title="cityiot bench", title_justify="left")
    t.add_column("", style="bold", no_wrap=True)
    for s in report.systems:
        t.add_column(s.name, justify="right", no_wrap=True)
    systems = report.systems

    def row(label: str, cells: list[str]) -> None:
        t.add_row(label, *cells)

    def rate_cell(s: SystemResult) -> str:
        if s.error is not None:
            return "[red]error[/]"
        if s.timed_out:
            return "[red]timeout[/]"
        return _n(s.rate)

    def rounds_cell(s: SystemResult) -> str:
        rates = [r["rate"] for r in s.rounds if r["rate"] is not None]
        if len(rates) < 2:
            return "–"
        return f"{min(rates) / 1000:,.1f}–{max(rates) / 1000:,.1f}k"

    def stored_cell(s: SystemResult) -> str:
        if s.lost:
            return f"[red]{_n(s.stored)} (−{s.lost:,})[/]"
        if s.duplicated:
            return f"[red]{_n(s.stored)} (+{s.duplicated:,})[/]"
        return _n(s.stored)

    def latency_rows(label: str, pick: Callable[[LatencyResult], Percentiles | None]) -> None:
        found = [pick(s.latency) if s.latency is not None else None for s in systems]

        def cell(p: Percentiles | None, name: str) -> str:
            if p is None:
                return "n/a"
            value = getattr(p, f"{name}_ms")
            return f"> {p.beyond_ms:,.0f}" if value is None else _ms(value)

        for name in ("p50", "p95", "p99"):
            row(f"{label} {name} ms", [cell(p, name) for p in found])
        row(
            "  samples (missing)",
            [
                "n/a" if p is None else f"{p.samples:,}" + (f" ({p.missing})" if p.missing else "")
                for p in found
            ],
        )

    row("readings/s stored", [rate_cell(s) for s in systems])
    if any(len(s.rounds) > 1 for s in systems):
        row("  rounds' range", [rounds_cell(s) for s in systems])
    row("× baseline", [_n(s.ratio, 2) for s in systems])
    row("stored", [stored_cell(s) for s in systems])
    row("drain s", [_n(s.drain_s, 2 if (s.drain_s or 0) < 10 else 1) for s in systems])
    row("CPU s system", [_n(s.cpu_s, 1) for s in systems])
    row("CPU s broker", [_n(s.broker_cpu_s, 1) for s in systems])
    row("CPU s InfluxDB", [_n(s.influx_cpu_s, 1) for s in systems])
    row("CPU µs / reading, all", [_n(s.cpu_us_per_reading, 1) for s in systems])
    row("cores busy", [_n(s.cores_busy, 2) for s in systems])
    row("peak RSS MB", [_n(s.peak_rss_mb) for s in systems])
    latency_rows("→ stored", lambda r: r.stored)
    latency_rows("→ alert", lambda r: r.alert)
    return t


SCALE_OUT_GOAL = 0.10  # CPU per stored reading with more workers: within 10 % of one's


def scale_out(report: BenchReport) -> list[dict[str, Any]]:
    """The workers columns side by side: what one stored reading costs the machine with N
    workers against one worker, beside the rate and the cores it had."""
    runs = sorted(
        (s for s in report.systems if s.name.startswith("workers-")), key=lambda s: s.workers
    )
    one = next((s.cpu_us_per_reading for s in runs if s.workers == 1), None)
    rows = []
    for s in runs:
        cost = s.cpu_us_per_reading
        ratio = None if cost is None or not one else round(cost / one, 3)
        rows.append(
            {
                "workers": s.workers,
                "rate": s.rate,
                "cpu_us_per_reading": cost,
                "vs_one_worker": ratio,
                "within_goal": None if ratio is None else ratio <= 1 + SCALE_OUT_GOAL,
                "cores_busy": s.cores_busy,
                "machine_cores": report.hardware.get("cores"),
                "ok": s.ok,
            }
        )
    return rows


def scale_out_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(
        title=f"scale-out's cost: CPU per stored reading (workers, broker and InfluxDB) "
        f"against one worker; goal within {SCALE_OUT_GOAL:.0%}",
        title_justify="left",
    )
    for name in ("workers", "readings/s", "CPU µs / reading", "× one worker", "cores busy"):
        t.add_column(name, justify="right")
    t.add_column("machine cores", justify="right")
    for r in rows:
        ratio = _n(r["vs_one_worker"], 3)
        if r["within_goal"] is False:
            ratio = f"[red]{ratio}[/]"
        t.add_row(
            str(r["workers"]),
            _n(r["rate"]),
            _n(r["cpu_us_per_reading"], 1),
            ratio,
            _n(r["cores_busy"], 2),
            str(r["machine_cores"]),
        )
    return t


def print_report(report: BenchReport, console: Console, out: Path | None = None) -> None:
    """The tables, what each system is, the machine, and where the JSON went."""
    if report.systems:
        console.print(table(report))
    if len(rows := scale_out(report)) > 1:
        console.print(scale_out_table(rows))
    for s in report.systems:
        line = f"[bold]{s.name}[/]: {s.description}"
        if s.error:
            line += f" — [red]{s.error}[/]"
        console.print(line, highlight=False)
        for note in s.notes:
            console.print(f"  [yellow]note:[/] {note}", highlight=False)
    hw = report.hardware
    settings = report.settings
    state = report.rule_state
    if state:
        console.print(
            f"rule state: {state['bytes_per_device']:,.0f} bytes per device at "
            f"{state['devices']:,} devices ({state['readings']:,} readings fed; "
            f"{state['open_tracks']:,} rules not idle at the end), measured with tracemalloc",
            highlight=False,
        )
    drawn = report.map_draw
    if drawn:
        city, base = drawn["city"], drawn["baseline"]
        console.print(
            f"console map: {city['devices']:,} devices "
            f"({'in bubbles' if city['folded'] else 'as dots'}) first drawn in "
            f"{city['first_draw_ms']:,.0f} ms ({city['first_draw_ms'] / base['first_draw_ms']:.1f}"
            f" × {base['devices']:,} devices' {base['first_draw_ms']:,.0f} ms), a zoom step "
            f"redrawn in {city['zoom_ms']:,.0f} ms ({base['zoom_ms']:,.0f}), JavaScript heap "
            f"+{city['heap_mib']:.1f} MiB (+{base['heap_mib']:.1f}); headless Chromium",
            highlight=False,
        )
    if report.systems:
        console.print(
            f"load: {settings['messages']:,} messages of {settings['devices']:,} devices "
            f"({len(settings.get('kinds', ())) or '?'} kinds, JSON, one reading each); "
            + (
                "cold: no warm-up"
                if settings.get("cold")
                else "warm: before each storing system's drain, one reading per device stored "
                "(not counted)"
            )
            + f"; latency: {settings['latency_rate']:,.0f} "
            f"readings/s for {settings['latency_seconds']:g} s",
            highlight=False,
        )
    if report.codecs is not None:
        print_codecs(report.codecs, console)
    if report.links is not None:
        print_links(report.links, console)
    if report.window is not None:
        print_window(report.window, console)
    if report.scale is not None:
        from bench.scale import print_scale

        print_scale(report.scale, console)
    console.print(
        f"machine: {hw['cpu']} × {hw['cores']} cores, {hw['ram_gb']} GB RAM, "
        f"{hw['os']}; Python {hw['python']}, Mosquitto {hw['mosquitto']}, "
        f"InfluxDB {hw['influxdb']}, Node {hw.get('node') or 'n/a'}"
        + (f", Node-RED {hw['node_red']}" if hw.get("node_red") else ""),
        highlight=False,
    )
    git = report.git
    console.print(
        f"commit {git.get('sha') or '?'}{' (uncommitted changes)' if git.get('dirty') else ''}"
        + (f"; results in {out}" if out else ""),
        highlight=False,
    )
