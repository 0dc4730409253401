"""A million devices registered and loaded: ``cityiot devices import`` of the fleet's CSV, the
same file with bad rows mixed in, the ingest's start-up with the registry loaded and its
memory, and what it costs the ingest to pick up 1,000 devices changed in the registry.

Everything runs as a city runs it: the import is ``cityiot devices import`` (a process of its
own, its peak RSS polled from /proc), the ingest is ``cityiot ingest`` on a Mosquitto and an
InfluxDB started here, reading the registry on SQLite (a file in the work dir) or PostgreSQL
(a database of its own, made afresh and dropped afterwards).

    python -m bench.scale_registry --devices 1000000 --db sqlite --out sqlite.json
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.machine import hardware, utc_stamp
from bench.measure import HighWater, cpu_seconds
from bench.options import BENCH_HOME, REPO, BenchError
from bench.section_cli import run_section
from bench.services import BROKER_TEMPLATE
from cityiot.simulators.fleet import Fleet

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/scale_registry"
BAD_ROWS = 100
SEED = 29
CHANGED_DEVICES = 1_000
READY_TIMEOUT_S = 600.0
PICKUP_TIMEOUT_S = 120.0
REFRESH_S = 2.0  # CITYIOT_REGISTRY_REFRESH_S of the measured ingest (the default)
SETTLE_S = 12.0
# Ready: the device map loaded, and subscribed (the two come in either order).
READY_EVENTS = (
    "ingest_starting",
    "mqtt_connected",
)  # past the ingest's re-read margin (10 s) after an import
# How each planted bad row is spoilt: the column, its wrong value.
SPOILERS = (("lat", "north"), ("kind", "manhol"), ("district", "atlantis"), ("lon", "999"))
_ROW_ERROR = re.compile(r":line (\d+)(?:, (\w+))?: ")
_REFRESHED = re.compile(r"event=registry_refreshed changed=(\d+) total=(\d+)(.*)")


@dataclass(slots=True)
class ScaleRegistryResult:
    """What one run measured; None where a step did not get that far (``error`` says why)."""

    devices: int
    db: str
    import_s: float | None = None
    import_cpu_s: float | None = None
    import_peak_rss_mb: float | None = None
    import_created: int | None = None
    reimport_s: float | None = None  # the same file with bad rows, over the registered fleet
    reimport_peak_rss_mb: float | None = None
    bad_rows_planted: int = 0
    bad_rows_reported: int | None = None  # planted rows reported with their line and column
    bad_rows_stray: int | None = None  # reported lines that were not planted
    ingest_ready_s: float | None = None  # process start → subscribed (event=mqtt_connected)
    ingest_loaded_s: float | None = None  # process start → device map loaded
    ingest_rss_mb: float | None = None  # VmRSS once loaded and idle
    ingest_hwm_mb: float | None = None  # VmHWM by then
    changed_devices: int = 0
    # The change's import returned → the ingest's map has them (0: taken before it returned;
    # the refresh every REFRESH_S bounds it from above).
    refresh_pickup_s: float | None = None
    refresh_cpu_s: float | None = None  # the ingest's CPU over that time
    refresh_load_s: float | None = None  # the refresh that took them, as the ingest timed it
    refresh_load_cpu_s: float | None = None
    refresh_idle_cpu_s_per_min: float | None = None  # the ingest idle, registry unchanged
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.bad_rows_reported == self.bad_rows_planted
            and self.bad_rows_stray == 0
        )


# --- The files -------------------------------------------------------------------------


def fleet_of(devices: int, seed: int = SEED) -> Fleet:
    """Every kind in equal shares, from every default vendor (MQTT, LoRaWAN and NB-IoT ones:
    devices with a dev_eui, an imei or a OneNET id among them), with their attributes."""
    return Fleet.generate(devices, seed)


def bad_lines(rows: int, count: int) -> list[int]:
    """``count`` file lines (2 is the first device) spread evenly over ``rows`` rows."""
    count = min(count, rows)
    if count == 0:
        return []
    step = rows / count
    return sorted({2 + int(step * k + step / 2) for k in range(count)})


def spoil_csv(source: Path, target: Path, lines: Sequence[int]) -> dict[int, str]:
    """``source`` with the rows on ``lines`` spoilt, one column each (in turn from
    ``SPOILERS``); returns line → the spoilt column."""
    wanted = set(lines)
    spoilt: dict[int, str] = {}
    with (
        source.open(newline="", encoding="utf-8") as f_in,
        target.open("w", newline="", encoding="utf-8") as f_out,
    ):
        reader = csv.reader(f_in)
        writer = csv.writer(f_out, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        for line, row in enumerate(reader, start=2):
            if line in wanted:
                column, value = SPOILERS[len(spoilt) % len(SPOILERS)]
                row[header.index(column)] = value
                spoilt[line] = column
            writer.writerow(row)
    return spoilt


def fleet_csv(devices: int, folder: Path, say: Callable[[str], None]) -> Path:
    """The fleet's CSV, written once into ``folder`` and reused by later runs of the same
    size (generating a million devices takes minutes)."""
    path = folder / f"fleet-{devices}-{SEED}.csv"
    if not path.exists():
        say(f"generating {devices:,} devices…")
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        fleet_of(devices).write_csv(partial)
        partial.replace(path)
    return path


def change_csv(source: Path, target: Path, count: int, rows: int) -> int:
    """``count`` rows of ``source`` spread over its ``rows`` rows, moved to a new address
    with a longer report interval (a registry change of each device), into ``target``;
    returns how many."""
    step = max(1, rows // max(count, 1))
    written = 0
    with (
        source.open(newline="", encoding="utf-8") as f_in,
        target.open("w", newline="", encoding="utf-8") as f_out,
    ):
        reader = csv.reader(f_in)
        writer = csv.writer(f_out, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        address, interval = header.index("address"), header.index("report_interval_s")
        for k, row in enumerate(reader):
            if k % step or written >= count:
                continue
            row[address] += " (moved)"
            row[interval] = str(int(row[interval]) + 60)
            writer.writerow(row)
            written += 1
    return written


# --- The processes ---------------------------------------------------------------------


def cityiot_env(url: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env["CITYIOT_DATABASE_URL"] = url
    env.update(more)
    return env


@dataclass(frozen=True, slots=True)
class Imported:
    seconds: float
    cpu_s: float
    peak_rss_mb: float | None
    code: int
    stdout: str
    stderr: str


def run_import(url: str, csv_path: Path, work: Path) -> Imported:
    """``cityiot devices import csv_path`` as a process, timed, its peak RSS polled."""
    err_path = work / f"{csv_path.stem}.stderr"
    with err_path.open("wb") as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cityiot", "devices", "import", str(csv_path)],
            env=cityiot_env(url),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
        watch = HighWater(process.pid)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        peak = watch.stop()
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        process.stdout.close()
    return Imported(
        seconds,
        usage.ru_utime + usage.ru_stime,
        peak,
        process.returncode,
        stdout,
        err_path.read_text(encoding="utf-8", errors="replace"),
    )


def counted(stdout: str, name: str) -> int | None:
    found = re.search(rf"\b{name}=(\d+)", stdout)
    return int(found.group(1)) if found else None


def reported_rows(stderr: str, file: Path) -> dict[int, str | None]:
    """Line → column of each problem ``cityiot devices import`` reported for ``file``."""
    prefix = str(file)
    found: dict[int, str | None] = {}
    for text in stderr.splitlines():
        if not text.startswith(prefix):
            continue
        match = _ROW_ERROR.match(text, len(prefix))
        if match:
            found[int(match.group(1))] = match.group(2)
    return found


@contextlib.contextmanager
def database(db: str, work: Path, pg_url: str) -> Iterator[str]:
    """The registry's URL: a SQLite file in ``work``, or ``pg_url``'s database made afresh
    (and dropped afterwards)."""
    if db == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'registry.db'}"
        return
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    name = url.database
    if not name:
        raise BenchError(f"{pg_url} names no database")
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )

    async def admin_sql(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str) -> None:
    """The schema made before the import is timed: what is measured is the import."""
    from cityiot.storage.engine import migrate as upgrade

    asyncio.run(upgrade(url))


def memory_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of ``pid`` in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class IngestLog:
    """The measured ingest's log (logfmt), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.lines: list[str] = []

    def read(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offset += end
            fresh = chunk[:end].decode(errors="replace").splitlines()
            self.lines += fresh
            return fresh
        return []

    def tail(self) -> str:
        return "\n".join(self.lines[-20:])


def wait_for(
    log: IngestLog,
    process: subprocess.Popen[bytes],
    found: Callable[[str], bool],
    timeout_s: float,
    what: str,
) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        for line in log.read():
            if found(line):
                return line
        if process.poll() is not None:
            raise BenchError(f"cityiot ingest exited ({process.returncode}) {what}:\n{log.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"cityiot ingest not {what} within {timeout_s:g} s:\n{log.tail()}")
        time.sleep(0.02)


def refreshed(line: str) -> tuple[int, dict[str, str]] | None:
    """(devices changed, the other fields) of an ``event=registry_refreshed`` line."""
    match = _REFRESHED.search(line)
    if match is None:
        return None
    fields = dict(part.split("=", 1) for part in match.group(3).split() if "=" in part)
    return int(match.group(1)), fields


# --- The run ---------------------------------------------------------------------------


def run_scale_registry(
    devices: int,
    db: str = "sqlite",
    *,
    pg_url: str = DEFAULT_PG_URL,
    bad_rows: int = BAD_ROWS,
    changed: int = CHANGED_DEVICES,
    work: Path | None = None,
    cache: Path = BENCH_HOME / "scale-registry",
    keep: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> ScaleRegistryResult:
    """Import ``devices`` devices into a fresh registry on ``db`` (``sqlite`` or
    ``postgres``), import the file again with ``bad_rows`` rows spoilt, start the ingest on
    it and change ``changed`` devices (the fleet's CSV kept in ``cache`` for the next run);
    see :class:`ScaleRegistryResult` for the figures."""
    if db not in ("sqlite", "postgres"):
        raise BenchError(f"--db {db!r}: use sqlite or postgres")
    from cityiot.platform.local_services import LocalBroker, LocalInflux

    result = ScaleRegistryResult(devices, db, started=utc_stamp())
    result.machine = hardware()
    work = work or BENCH_HOME / "runs" / f"scale-registry-{utc_stamp()}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with database(db, work, pg_url) as url:
            fleet_path = fleet_csv(devices, cache, say)
            migrate(url)

            say(f"cityiot devices import: {devices:,} rows…")
            done = run_import(url, fleet_path, work)
            if done.code != 0:
                raise BenchError(f"the import failed ({done.code}):\n{done.stderr[-2000:]}")
            result.import_s, result.import_cpu_s = done.seconds, done.cpu_s
            result.import_peak_rss_mb = done.peak_rss_mb
            result.import_created = counted(done.stdout, "created")

            lines = bad_lines(devices, bad_rows)
            bad_csv = work / "fleet-bad.csv"
            planted = spoil_csv(fleet_path, bad_csv, lines)
            result.bad_rows_planted = len(planted)
            say(f"cityiot devices import: {devices:,} rows, {len(planted)} of them bad…")
            done = run_import(url, bad_csv, work)
            result.reimport_s, result.reimport_peak_rss_mb = done.seconds, done.peak_rss_mb
            reported = reported_rows(done.stderr, bad_csv)
            result.bad_rows_reported = sum(
                1 for line, column in planted.items() if reported.get(line) == column
            )
            result.bad_rows_stray = len(set(reported) - set(planted))
            bad_csv.unlink()

            changes_csv = work / "changed.csv"
            result.changed_devices = change_csv(fleet_path, changes_csv, changed, devices)
            settle_until = time.monotonic() + SETTLE_S
            with LocalBroker(work, template=BROKER_TEMPLATE) as broker, LocalInflux(work) as influx:
                while (left := settle_until - time.monotonic()) > 0:
                    say(f"letting the imports settle ({left:.0f} s)…")
                    time.sleep(min(left, 1.0))
                _measure_ingest(result, url, broker.url, influx.url, work, changes_csv, say)
    except BenchError as exc:
        result.error = str(exc).splitlines()[0][:300]
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _measure_ingest(
    result: ScaleRegistryResult,
    url: str,
    mqtt_url: str,
    influx_url: str,
    work: Path,
    changes_csv: Path,
    say: Callable[[str], None],
) -> None:
    log_path = work / "ingest.log"
    env = cityiot_env(
        url,
        CITYIOT_MQTT_URL=mqtt_url,
        CITYIOT_INFLUX_URL=influx_url,
        CITYIOT_INFLUX_DB="scale_registry",
        CITYIOT_RUN_DIR=str(work / "ingest"),
        CITYIOT_MQTT_CLIENT_ID=f"scale-registry-{os.getpid()}",
        CITYIOT_LOG_FORMAT="logfmt",
        CITYIOT_LOG_LEVEL="INFO",
        CITYIOT_REGISTRY_REFRESH_S=str(REFRESH_S),
    )
    say("starting cityiot ingest on the registry…")
    with log_path.open("ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cityiot", "ingest"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    log = IngestLog(log_path)
    try:
        seen: dict[str, float] = {}  # event → seconds since the start, as its line came

        def ready(line: str) -> bool:
            for event in READY_EVENTS:
                if f"event={event} " in line:
                    seen.setdefault(event, time.perf_counter() - started)
            return len(seen) == len(READY_EVENTS)

        wait_for(log, process, ready, READY_TIMEOUT_S, "ready")
        result.ingest_loaded_s = seen["ingest_starting"]
        result.ingest_ready_s = max(seen.values())
        say("the ingest is ready; letting it idle…")
        time.sleep(3 * REFRESH_S)  # a few refreshes of an unchanged registry
        cpu_idle, idle_from = cpu_seconds(process.pid), time.perf_counter()
        time.sleep(5 * REFRESH_S)
        idle_s = time.perf_counter() - idle_from
        result.refresh_idle_cpu_s_per_min = (cpu_seconds(process.pid) - cpu_idle) / idle_s * 60
        result.ingest_rss_mb, result.ingest_hwm_mb = memory_mb(process.pid)

        say(f"changing {result.changed_devices:,} devices (cityiot devices import)…")
        log.read()
        done = run_import(url, changes_csv, work)
        if done.code != 0 or counted(done.stdout, "updated") != result.changed_devices:
            raise BenchError(f"the change did not update every device: {done.stdout.strip()}")
        committed, cpu_before = time.perf_counter(), cpu_seconds(process.pid)
        taken = 0
        fields: dict[str, str] = {}

        def picked_up(line: str) -> bool:
            nonlocal taken, fields
            got = refreshed(line)
            if got is not None:
                taken += got[0]
                fields = got[1]
            return taken >= result.changed_devices

        wait_for(log, process, picked_up, PICKUP_TIMEOUT_S, "picking up the change")
        result.refresh_pickup_s = time.perf_counter() - committed
        result.refresh_cpu_s = cpu_seconds(process.pid) - cpu_before
        with contextlib.suppress(KeyError, ValueError):
            result.refresh_load_s = float(fields["seconds"])
            result.refresh_load_cpu_s = float(fields["cpu_s"])
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Showing it ------------------------------------------------------------------------


def _n(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def print_scale_registry(result: ScaleRegistryResult, console: Console) -> None:
    """The run's figures as a table, and its error if any."""
    table = Table(title=f"A registry of {result.devices:,} devices on {result.db}")
    table.add_column("")
    table.add_column("measured", justify="right")
    rows = (
        ("import: seconds", _n(result.import_s)),
        ("import: CPU s", _n(result.import_cpu_s)),
        ("import: peak RSS MB", _n(result.import_peak_rss_mb, 0)),
        ("import: devices created", _n(result.import_created)),
        ("again with bad rows: seconds", _n(result.reimport_s)),
        ("again with bad rows: peak RSS MB", _n(result.reimport_peak_rss_mb, 0)),
        (
            "bad rows reported with line and column",
            f"{_n(result.bad_rows_reported)} of {result.bad_rows_planted}"
            f" (stray {_n(result.bad_rows_stray)})",
        ),
        ("ingest: start → map loaded, s", _n(result.ingest_loaded_s)),
        ("ingest: start → subscribed, s", _n(result.ingest_ready_s)),
        ("ingest: RSS MB (peak)", f"{_n(result.ingest_rss_mb, 0)} ({_n(result.ingest_hwm_mb, 0)})"),
        ("ingest idle: CPU s per minute", _n(result.refresh_idle_cpu_s_per_min, 2)),
        (
            f"{result.changed_devices:,} changed: import done → in the map, s",
            _n(result.refresh_pickup_s, 2),
        ),
        ("… ingest CPU s meanwhile", _n(result.refresh_cpu_s, 3)),
        ("… the refresh itself: s / CPU s", f"{_n(result.refresh_load_s, 3)} / "
         f"{_n(result.refresh_load_cpu_s, 3)}"),
    )  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if result.error:
        console.print(f"[bold red]error:[/] {result.error}")


def main(
    devices: Annotated[int, typer.Option(help="Devices in the registry.")] = 1_000_000,
    db: Annotated[str, typer.Option(help="sqlite or postgres.")] = "sqlite",
    pg_url: Annotated[
        str, typer.Option(help="PostgreSQL database to make afresh and drop (--db postgres).")
    ] = DEFAULT_PG_URL,
    bad_rows: Annotated[int, typer.Option(help="Rows spoilt in the second import.")] = BAD_ROWS,
    changed: Annotated[
        int, typer.Option(help="Devices changed while the ingest runs.")
    ] = CHANGED_DEVICES,
    out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
    cache: Annotated[
        Path, typer.Option(help="Folder of the fleet's CSV, written once per size.")
    ] = BENCH_HOME / "scale-registry",
    keep: Annotated[bool, typer.Option("--keep", help="Keep the work dir.")] = False,
) -> None:
    """Import a fleet's CSV of DEVICES rows, again with bad rows, start the ingest on the
    registry and change devices under it; prints the figures, writes them with --out."""
    run_section(
        lambda say: run_scale_registry(
            devices,
            db,
            pg_url=pg_url,
            bad_rows=bad_rows,
            changed=changed,
            cache=cache,
            keep=keep,
            say=say,
        ),
        print_scale_registry,
        out,
    )


if __name__ == "__main__":
    typer.run(main)
