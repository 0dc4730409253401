"""InfluxDB's series index at a city's size: the on-disk index (TSI, the platform's) against
the in-memory one (InfluxDB 1.x's default), each on an InfluxDB of its own.

Each index gets the same writes: every device's newest reading and its ``device_status``
point (two series a device, as the ingest writes them), and 24 h of readings every 5 minutes
for a sample of devices. Measured: the time to write the fleet's series, InfluxDB's RSS once
written, its start-up time and RSS after a restart (the in-memory index is rebuilt from the
data files, TSI's is mapped from its own), and the time of a device's 24 h query (InfluxQL,
as the API's ``/devices/{id}/readings`` asks it) right after that restart and once warm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from bench.measure import cpu_seconds
from cityiot.domain.catalogue import KINDS
from cityiot.platform.local_services import INFLUX_INDEXES, LocalInflux
from cityiot.storage.influx import format_field, series_key

DB = "city"
HISTORY_STEP_MS = 300_000  # 24 h of readings every 5 minutes: 288 points a device
DAY_MS = 86_400_000
LINES_PER_POST = 5_000
DISTRICTS = ("yicheng", "xiping", "shangcai", "pingyu", "zhengyang", "queshan")
VENDORS = ("huawei-nb", "zte", "hikvision", "dahua", "acme")


@dataclass(slots=True)
class IndexResult:
    """One index's figures."""

    index: str
    series: int
    write_s: float
    write_cpu_s: float
    rss_written_mb: float
    start_s: float
    rss_started_mb: float
    query_cold_ms: list[float] = field(default_factory=list)
    query_warm_ms: list[float] = field(default_factory=list)
    rss_queried_mb: float = 0.0
    disk_mb: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("query_cold_ms", "query_warm_ms"):
            out[name] = percentiles(getattr(self, name))
        return out


@dataclass(slots=True)
class ScaleInflux:
    devices: int
    history_devices: int
    queries: int
    indexes: list[IndexResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "history_devices": self.history_devices,
            "queries": self.queries,
            "indexes": [r.as_dict() for r in self.indexes],
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}


@dataclass(frozen=True, slots=True)
class Fleet:
    """The devices' series: a kind, district and vendor for each, and one metric to write."""

    devices: int
    seed: int = 29

    def series(self, i: int) -> tuple[str, str, dict[str, str]]:
        """(kind, metric, tags) of device ``i``."""
        kinds = sorted(KINDS)
        kind = kinds[i % len(kinds)]
        tags = {
            "device_id": f"{kind[:3]}-{i:07d}",
            "district": DISTRICTS[(i // 7) % len(DISTRICTS)],
            "vendor": VENDORS[(i // 11) % len(VENDORS)],
        }
        return kind, _metric_of(kind), tags

    def fleet_lines(self, now_ms: int) -> Iterator[bytes]:
        """Every device's newest reading and its status point."""
        for i in range(self.devices):
            kind, metric, tags = self.series(i)
            at = now_ms - (i % 3_600) * 1_000
            yield (
                f"{series_key(kind, tags)} {format_field(metric, float(i % 97))} {at}\n"
                f"{series_key('device_status', {**tags, 'kind': kind})} "
                f"{format_field('online', True)},{format_field('link', 'mqtt')} {at}\n"
            ).encode()

    def history_lines(self, sample: list[int], now_ms: int) -> Iterator[bytes]:
        """24 h of readings every 5 minutes of each device in ``sample``."""
        for i in sample:
            kind, metric, tags = self.series(i)
            key = series_key(kind, tags)
            for at in range(now_ms - DAY_MS, now_ms, HISTORY_STEP_MS):
                yield f"{key} {format_field(metric, float(at % 1_000) / 10)} {at}\n".encode()


def _metric_of(kind: str) -> str:
    """A number metric of ``kind`` (its first)."""
    for metric in KINDS[kind].metrics:
        if metric.type in ("float", "int"):
            return metric.name
    return KINDS[kind].metrics[0].name


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _chunks(lines: Iterator[bytes], size: int) -> Iterator[bytes]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def _write(client: httpx.Client, url: str, lines: Iterator[bytes]) -> None:
    for body in _chunks(lines, LINES_PER_POST):
        response = client.post(
            f"{url}/write", params={"db": DB, "precision": "ms"}, content=body, timeout=120.0
        )
        if response.status_code != 204:
            raise RuntimeError(f"InfluxDB refused a write: {response.status_code} {response.text}")


def _query_ms(client: httpx.Client, url: str, fleet: Fleet, i: int, now_ms: int) -> float:
    kind, metric, tags = fleet.series(i)
    q = (
        f'SELECT "{metric}" FROM "{kind}" WHERE device_id = \'{tags["device_id"]}\' '
        f"AND time >= {now_ms - DAY_MS}ms AND time <= {now_ms}ms"
    )
    started = time.perf_counter()
    response = client.get(f"{url}/query", params={"db": DB, "q": q, "epoch": "ms"}, timeout=60.0)
    elapsed = (time.perf_counter() - started) * 1000
    body = response.json()
    values = body["results"][0].get("series", [{}])[0].get("values", [])
    # 288 points of history, and the fleet's newest reading unless it fell on one of them
    if response.status_code != 200 or len(values) < DAY_MS // HISTORY_STEP_MS:
        raise RuntimeError(f"device {tags['device_id']}'s 24 h came back as {len(values)} points")
    return elapsed


def _disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def measure_index(
    index: str,
    fleet: Fleet,
    history_devices: int,
    queries: int,
    work_dir: Path,
    say: Callable[[str], None],
) -> IndexResult:
    """One InfluxDB on ``index``: write, restart, query."""
    rng = random.Random(fleet.seed)
    sample = sorted(rng.sample(range(fleet.devices), min(history_devices, fleet.devices)))
    now_ms = int(time.time() * 1000)
    with (
        LocalInflux(work_dir / index, index=index, ready_timeout_s=600.0) as influx,
        httpx.Client() as client,
    ):
        client.post(f"{influx.url}/query", params={"q": f'CREATE DATABASE "{DB}"'})
        assert influx.pid is not None
        cpu0, started = cpu_seconds(influx.pid), time.perf_counter()
        say(f"{index}: writing {fleet.devices:,} devices' series…")
        _write(client, influx.url, fleet.history_lines(sample, now_ms))
        _write(client, influx.url, fleet.fleet_lines(now_ms))
        write_s = time.perf_counter() - started
        write_cpu = cpu_seconds(influx.pid) - cpu0
        rss_written = rss_mb(influx.pid)
        say(f"{index}: restarting…")
        influx.stop()
        started = time.perf_counter()
        influx.start()
        start_s = time.perf_counter() - started
        assert influx.pid is not None
        rss_started = rss_mb(influx.pid)
        picks = [rng.choice(sample) for _ in range(queries)]
        say(f"{index}: {queries} queries of a device's 24 h…")
        cold = [_query_ms(client, influx.url, fleet, i, now_ms) for i in picks]
        warm = [_query_ms(client, influx.url, fleet, i, now_ms) for i in picks]
        return IndexResult(
            index=index,
            series=2 * fleet.devices,
            write_s=write_s,
            write_cpu_s=write_cpu,
            rss_written_mb=rss_written,
            start_s=start_s,
            rss_started_mb=rss_started,
            query_cold_ms=cold,
            query_warm_ms=warm,
            rss_queried_mb=rss_mb(influx.pid),
            disk_mb=_disk_mb(influx.dir / "data"),
        )


def run_scale_influx(
    devices: int,
    history_devices: int = 1_000,
    queries: int = 200,
    indexes: tuple[str, ...] = INFLUX_INDEXES,
    work_dir: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> ScaleInflux:
    """Both indexes measured on ``devices`` devices, one after the other."""
    result = ScaleInflux(devices, history_devices, queries)
    fleet = Fleet(devices)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            temporary = tempfile.TemporaryDirectory(prefix="scale-influx-")
            work_dir = Path(stack.enter_context(temporary))
        for index in indexes:
            result.indexes.append(
                measure_index(index, fleet, history_devices, queries, work_dir, say)
            )
    return result


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def print_scale_influx(result: ScaleInflux, console: Console) -> None:
    table = Table(
        title=f"InfluxDB's index: {result.devices:,} devices ({2 * result.devices:,} series), "
        f"24 h of a device ({DAY_MS // HISTORY_STEP_MS} points) queried {result.queries}× "
        f"among {result.history_devices:,}"
    )
    table.add_column("")
    for r in result.indexes:
        table.add_column(r.index, justify="right")
    rows: list[tuple[str, Callable[[IndexResult], str]]] = [
        ("write every series, s", lambda r: _n(r.write_s, 1)),
        ("InfluxDB CPU s writing", lambda r: _n(r.write_cpu_s, 1)),
        ("RSS once written, MB", lambda r: _n(r.rss_written_mb)),
        ("start after a restart, s", lambda r: _n(r.start_s, 1)),
        ("RSS after the restart, MB", lambda r: _n(r.rss_started_mb)),
        ("24 h query after restart p50 / p99, ms", lambda r: _pair(r.query_cold_ms)),
        ("24 h query warm p50 / p99, ms", lambda r: _pair(r.query_warm_ms)),
        ("RSS after the queries, MB", lambda r: _n(r.rss_queried_mb)),
        ("data on disk, MB", lambda r: _n(r.disk_mb)),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(r) for r in result.indexes])
    console.print(table)


def _pair(values: list[float]) -> str:
    p = percentiles(values)
    return f"{_n(p['p50'], 1)} / {_n(p['p99'], 1)}"


def main(
    devices: Annotated[int, typer.Option(help="Devices (two series each).")] = 1_000_000,
    history_devices: Annotated[int, typer.Option(help="Devices with 24 h of readings.")] = 1_000,
    queries: Annotated[int, typer.Option(help="24 h queries, after the restart and warm.")] = 200,
    index: Annotated[str, typer.Option(help="Comma list of tsi1,inmem.")] = "tsi1,inmem",
    out: Annotated[Path | None, typer.Option(help="JSON results file.")] = None,
) -> None:
    """InfluxDB's on-disk index (TSI) against its in-memory one with a city's series."""
    err = Console(stderr=True)
    chosen = tuple(i for i in index.split(",") if i)
    for name in chosen:
        if name not in INFLUX_INDEXES:
            raise typer.BadParameter(f"{name!r}: one of {', '.join(INFLUX_INDEXES)}")
    result = run_scale_influx(devices, history_devices, queries, chosen, say=err.print)
    print_scale_influx(result, Console())
    if out is not None:
        out.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    typer.run(main)
