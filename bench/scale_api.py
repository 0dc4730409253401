"""``python -m bench.scale_api``: the API at city scale — latency of the console's and the
departments' reads with a million registered devices, on SQLite or PostgreSQL.

The registry is built once per database: the schema by the project's own migrations, a
template fleet (every kind, realistic attributes: :func:`bench.load.bench_fleet`) registered
through the device import itself (:func:`cityiot.storage.registry.import_devices`), and the
rest of the ``devices`` copied from those templates row for row with new ids and jittered
positions — the rows the import writes, inserted in bulk. Then every device gets a latest
reading of each of its kind's metrics and a status (85 % online, 10 % offline, 5 % never
heard), 1 % of the devices an open alert (and twice as many resolved ones), and half of those
alerts a work order created in the last 30 days. Parking lots are the parking devices'
``lot_id`` attribute.

The real API server (``cityiot api``, uvicorn) is started as its own process with an admin
key and the rate limit raised; after a warm-up, ``clients`` concurrent httpx clients (each
its own connection, closed loop: a client sends its next request when the last is answered)
drive one endpoint at a time: device pages (no filter, kind, district, status and kind with
district, ``limit=100``, each first page followed along ``next_cursor`` for up to three more
pages), a random device's latest values, the overview, parking availability (the city, a
district, a lot) and alerts (open ones by state, kind, district, severity). Per endpoint:
latency percentiles, errors (non-200 answers and timeouts), requests and the server's RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from bench.options import REPO

ENDPOINTS = ("devices", "latest", "overview", "parking", "alerts")
PAGE_LIMIT = 100
FOLLOW_PAGES = 3  # next_cursor pages a client follows after a first page
TEMPLATES = 20_000  # devices registered through the import; the rest are their copies
REQUEST_TIMEOUT_S = 15.0
PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"


@dataclass(slots=True)
class EndpointResult:
    """One endpoint's run: latency in milliseconds, requests answered, errors, server RSS."""

    endpoint: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: float
    per_s: float = 0.0  # requests answered per second
    cpu_ms: float = 0.0  # the server process's CPU time per request (not the database's)
    error_samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ScaleApiResult:
    """The section's result: the settings and each endpoint's figures."""

    devices: int
    db: str
    clients: int
    requests: int
    think_ms: float
    build_s: float
    start_rss_mb: float
    endpoints: list[EndpointResult]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints)


# --- The registry --------------------------------------------------------------------


def database_url(db: str, work: Path, pg_database: str) -> str:
    if db == "sqlite":
        return f"sqlite+aiosqlite:///{work / 'registry.db'}"
    if db == "postgres":
        return f"{PG_ADMIN_URL}{pg_database}"
    raise typer.BadParameter(f"--db is sqlite or postgres, not {db!r}")


async def _ensure_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _registered(url: str) -> int:
    from sqlalchemy import func, select

    from cityiot.storage.engine import make_engine, sessionmaker
    from cityiot.storage.tables.registry import Device

    engine = make_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            return int((await session.execute(select(func.count()).select_from(Device))).scalar())
    except Exception:  # no schema yet
        return 0
    finally:
        await engine.dispose()


def _metric_values(kind: Any, rng: random.Random, ts_ms: int) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for metric in kind.metrics:
        if metric.type == "bool":
            value: Any = rng.random() < 0.5
        elif metric.type == "enum":
            value = rng.choice(metric.values)
        else:
            low, high = metric.low or 0.0, metric.high or 100.0
            value = round(low + (high - low) * rng.uniform(0.2, 0.8), 3)
        values[metric.name] = [value, ts_ms]
    return values


async def build_registry(url: str, devices: int, say: Callable[[str], None]) -> None:
    """The registry, latest values, alerts and work orders described in the module's doc."""
    from sqlalchemy import insert, select, update

    from bench.load import bench_fleet
    from cityiot.domain.catalogue import KINDS
    from cityiot.storage.device_csv import parse_device_csv
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.registry import import_devices
    from cityiot.storage.tables.alerts import Alert
    from cityiot.storage.tables.registry import Device, LatestReading
    from cityiot.storage.tables.workorders import WorkOrder
    from cityiot.storage.utc import utcnow

    rng = random.Random(29)
    await migrate(url)
    engine = make_engine(url)
    sessions = sessionmaker(engine)
    try:
        templates = min(devices, TEMPLATES)
        say(f"registering {templates:,} template devices through the import…")
        with tempfile.TemporaryDirectory() as tmp:
            fleet = bench_fleet(templates)
            path = Path(tmp) / "fleet.csv"
            fleet.write_csv(path)
            parsed = parse_device_csv(path.read_text(encoding="utf-8"))
        report = await import_devices(sessions, parsed.rows, create_vendors=True)
        if report.errors or parsed.errors:
            raise RuntimeError(f"template import failed: {(report.errors or parsed.errors)[:3]}")
        async with sessions() as session:
            rows = (await session.execute(select(Device).order_by(Device.id))).scalars().all()
        columns = [c.key for c in Device.__table__.columns]
        plain = [{c: getattr(d, c) for c in columns} for d in rows]
        say(f"copying them to {devices:,} devices…")
        chunk: list[dict[str, Any]] = []
        for i in range(templates, devices):
            row = dict(plain[i % templates])
            row["id"] = f"{row['kind']}-{row['district']}-{i:07d}"
            row["lat"] = round(row["lat"] + rng.uniform(-0.002, 0.002), 6)
            row["lon"] = round(row["lon"] + rng.uniform(-0.002, 0.002), 6)
            chunk.append(row)
            if len(chunk) == 10_000 or i == devices - 1:
                async with sessions() as session, session.begin():
                    await session.execute(insert(Device), chunk)
                chunk = []
                if (i + 1) % 100_000 == 0:
                    say(f"  {i + 1:,} devices")
        say("latest values and statuses…")
        now = utcnow()
        now_ms = int(now.timestamp() * 1000)
        async with sessions() as session:
            ids = (
                await session.execute(
                    select(Device.id, Device.kind, Device.district, Device.vendor_id)
                )
            ).all()
        latest: list[dict[str, Any]] = []
        statuses: dict[str, list[dict[str, Any]]] = {"online": [], "offline": []}
        for n, (device_id, kind, _district, _vendor) in enumerate(ids):
            share = n % 20
            if share == 0:
                continue  # never heard from
            ts = now_ms - rng.randint(0, 600_000)
            status = "offline" if share <= 2 else "online"
            statuses[status].append(
                {"b_id": device_id, "status": status, "last_seen": now - dt.timedelta(minutes=5)}
            )
            latest.append(
                {
                    "device_id": device_id,
                    "ts_ms": ts,
                    "metrics": _metric_values(KINDS[kind], rng, ts),
                    "updated_at": now,
                }
            )
            if len(latest) == 10_000:
                async with sessions() as session, session.begin():
                    await session.execute(insert(LatestReading), latest)
                latest = []
        if latest:
            async with sessions() as session, session.begin():
                await session.execute(insert(LatestReading), latest)
        from sqlalchemy import bindparam

        stmt = (
            update(Device.__table__)
            .where(Device.__table__.c.id == bindparam("b_id"))
            .values(status=bindparam("status"), last_seen=bindparam("last_seen"))
        )
        for entries in statuses.values():
            for start in range(0, len(entries), 10_000):
                async with engine.begin() as conn:
                    await conn.execute(stmt, entries[start : start + 10_000])
        say("alerts and work orders…")
        severities = ("critical", "major", "minor", "warning")
        alerts: list[dict[str, Any]] = []
        orders: list[dict[str, Any]] = []
        for n, (device_id, kind, district, vendor) in enumerate(ids[::33]):
            open_ = n % 3 == 0
            started = now - dt.timedelta(minutes=rng.randint(1, 30 * 24 * 60))
            alert_id = f"a{n:011d}"
            rule = f"bench-{kind}"
            alerts.append(
                {
                    "id": alert_id,
                    "rule": rule,
                    "device_id": device_id,
                    "kind": kind,
                    "district": district,
                    "vendor": vendor,
                    "severity": severities[n % 4],
                    "state": ("firing" if n % 2 else "acknowledged") if open_ else "resolved",
                    "started_at": started,
                    "fired_at": started,
                    "resolved_at": None if open_ else started + dt.timedelta(minutes=30),
                    "values": {},
                    "summary": f"bench alert on {device_id}",
                    "open_key": f"{rule}/{device_id}" if open_ else None,
                    "updated_at": now,
                }
            )
            if n % 2 == 0:
                state = ("dispatched", "accepted", "on_site", "resolved", "closed")[n % 5]
                later = started + dt.timedelta(minutes=20)
                orders.append(
                    {
                        "id": f"w{n:011d}",
                        "alert_id": alert_id,
                        "team": "bench",
                        "state": state,
                        "device_id": device_id,
                        "kind": kind,
                        "district": district,
                        "severity": severities[n % 4],
                        "title": "bench",
                        "created_at": started,
                        "accepted_at": later if state != "dispatched" else None,
                        "on_site_at": later if state in ("on_site", "resolved", "closed") else None,
                        "resolved_at": later if state in ("resolved", "closed") else None,
                        "closed_at": later if state == "closed" else None,
                        "verify_due_at": started + dt.timedelta(hours=1),
                        "close_due_at": started + dt.timedelta(hours=24),
                        "note": "",
                        "updated_at": now,
                    }
                )
        for table, batch in ((Alert, alerts), (WorkOrder, orders)):
            for start in range(0, len(batch), 5_000):
                async with sessions() as session, session.begin():
                    await session.execute(insert(table), batch[start : start + 5_000])
        say(f"built: {len(ids):,} devices, {len(alerts):,} alerts, {len(orders):,} work orders")
    finally:
        await engine.dispose()


async def _admin_key(url: str) -> str:
    from cityiot.api.keys import create_key
    from cityiot.storage.engine import make_engine, sessionmaker

    engine = make_engine(url)
    try:
        _row, key = await create_key(sessionmaker(engine), "admin", name="bench-scale-api")
        return key
    finally:
        await engine.dispose()


async def _samples(url: str, count: int) -> tuple[list[str], list[str]]:
    """Random device ids and parking lot ids."""
    from sqlalchemy import select

    from cityiot.storage.engine import make_engine, sessionmaker
    from cityiot.storage.tables.registry import Device

    engine = make_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            ids = list((await session.execute(select(Device.id))).scalars())
            lots = [
                a.get("lot_id")
                for a in (
                    await session.execute(
                        select(Device.attributes).where(Device.kind == "parking").limit(2000)
                    )
                ).scalars()
            ]
    finally:
        await engine.dispose()
    rng = random.Random(7)
    return rng.sample(ids, min(count, len(ids))), sorted({str(x) for x in lots if x})


# --- The server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def api_server(url: str, work: Path) -> Any:
    """``cityiot api`` on a free port, the rate limit out of the way; yields (base url, pid)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env |= {
        "CITYIOT_DATABASE_URL": url,
        "CITYIOT_API_HOST": "127.0.0.1",
        "CITYIOT_API_PORT": str(port),
        "CITYIOT_API_RATE_PER_S": "1000000",
        "CITYIOT_API_RATE_BURST": "1000000",
        "CITYIOT_LOG_LEVEL": "WARNING",
    }
    log = (work / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cityiot", "api"], env=env, cwd=REPO, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"cityiot api exited: see {work / 'api.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("cityiot api did not answer /healthz within 300 s")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- The load ------------------------------------------------------------------------


class Requests:
    """What a client asks of one endpoint, drawn at random."""

    def __init__(self, ids: Sequence[str], lots: Sequence[str], seed: int) -> None:
        from cityiot.domain.catalogue import DISTRICTS, KINDS

        self.ids = ids
        self.lots = lots or ["none"]
        self.kinds = sorted(KINDS)
        self.districts = sorted(DISTRICTS)
        self.rng = random.Random(seed)

    def devices(self) -> dict[str, Any]:
        rng = self.rng
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        shape = rng.randrange(5)
        if shape == 1:
            params["kind"] = rng.choice(self.kinds)
        elif shape == 2:
            params["district"] = rng.choice(self.districts)
        elif shape == 3:
            params["status"] = rng.choice(("online", "offline", "unknown"))
        elif shape == 4:
            params["kind"] = rng.choice(self.kinds)
            params["district"] = rng.choice(self.districts)
        return params

    def path_and_params(self, endpoint: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        if endpoint == "devices":
            return "/api/v1/devices", self.devices()
        if endpoint == "latest":
            return f"/api/v1/devices/{rng.choice(self.ids)}/latest", {}
        if endpoint == "overview":
            return "/api/v1/stats/overview", {}
        if endpoint == "parking":
            shape = rng.randrange(3)
            if shape == 0:
                return "/api/v1/parking/availability", {}
            if shape == 1:
                return "/api/v1/parking/availability", {"district": rng.choice(self.districts)}
            return "/api/v1/parking/availability", {"lot_id": rng.choice(self.lots)}
        if endpoint == "alerts":
            params: dict[str, Any] = {}
            shape = rng.randrange(5)
            if shape == 1:
                params["state"] = rng.choice(("firing", "acknowledged"))
            elif shape == 2:
                params["kind"] = rng.choice(self.kinds)
            elif shape == 3:
                params["district"] = rng.choice(self.districts)
            elif shape == 4:
                params["severity"] = rng.choice(("critical", "major", "minor", "warning"))
            return "/api/v1/alerts", params
        raise ValueError(endpoint)


async def drive(
    base: str,
    key: str,
    endpoint: str,
    clients: int,
    requests: int,
    max_seconds: float,
    ids: Sequence[str],
    lots: Sequence[str],
    think_ms: float = 0.0,
) -> tuple[list[float], int, list[str], float]:
    """``clients`` clients on one endpoint until ``requests`` are answered (or
    ``max_seconds`` pass), each pausing a random time of mean ``think_ms`` between its
    requests (0: closed loop); latencies in ms, errors, a few error texts, seconds taken."""
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    issued = 0
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}

    async def client(number: int) -> None:
        nonlocal errors, issued
        draw = Requests(ids, lots, seed=number * 7919 + hash(endpoint) % 1000)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=REQUEST_TIMEOUT_S
        ) as http:
            follow: tuple[dict[str, Any], int] | None = None
            while issued < requests and time.monotonic() - started < max_seconds:
                issued += 1
                if think_ms > 0:
                    await asyncio.sleep(draw.rng.expovariate(1000.0 / think_ms))
                if follow is not None:
                    path, params = "/api/v1/devices", follow[0]
                else:
                    path, params = draw.path_and_params(endpoint)
                t0 = time.perf_counter()
                try:
                    answer = await http.get(path, params=params)
                    ms = (time.perf_counter() - t0) * 1000
                    ok = answer.status_code == 200
                    text = "" if ok else f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as exc:
                    ms = (time.perf_counter() - t0) * 1000
                    ok, answer, text = False, None, f"{type(exc).__name__} {exc}"[:200]
                latencies.append(ms)
                if not ok:
                    errors += 1
                    if len(samples) < 5:
                        samples.append(f"{path} {params}: {text}")
                    follow = None
                    continue
                follow = _next_page(endpoint, answer, params, follow, draw)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors, samples, time.monotonic() - started


def _next_page(
    endpoint: str,
    answer: Any,
    params: dict[str, Any],
    follow: tuple[dict[str, Any], int] | None,
    draw: Requests,
) -> tuple[dict[str, Any], int] | None:
    """The next device page to ask for, while a client follows a listing's cursor."""
    if endpoint != "devices" or answer is None:
        return None
    depth = follow[1] if follow is not None else 0
    cursor = orjson.loads(answer.content).get("next_cursor")
    if cursor is None or depth >= FOLLOW_PAGES or draw.rng.random() < 0.25:
        return None
    return ({**params, "cursor": cursor}, depth + 1)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def run_scale_api(
    devices: int,
    db: str,
    clients: int,
    requests: int,
    say: Callable[[str], None],
    *,
    endpoints: Sequence[str] = ENDPOINTS,
    max_seconds: float = 60.0,
    work_dir: Path | None = None,
    pg_database: str = "scale_api",
    reuse: bool = False,
    keep: bool = False,
    think_ms: float = 0.0,
) -> ScaleApiResult:
    """Build (or, with ``reuse``, take the already built) registry of ``devices`` on ``db``,
    start the API and measure each endpoint in turn under ``clients`` concurrent clients."""
    for name in endpoints:
        if name not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {name!r}; use some of {', '.join(ENDPOINTS)}")
    work = work_dir or Path(tempfile.mkdtemp(prefix="scale-api-"))
    work.mkdir(parents=True, exist_ok=True)
    url = database_url(db, work, pg_database)
    try:
        return _run(
            url, devices, db, clients, requests, say, endpoints, max_seconds, work, reuse, think_ms
        )
    finally:
        if not keep:
            if db == "postgres":
                asyncio.run(drop_pg_database(pg_database))
            if work_dir is None:
                import shutil

                shutil.rmtree(work, ignore_errors=True)


def _run(
    url: str,
    devices: int,
    db: str,
    clients: int,
    requests: int,
    say: Callable[[str], None],
    endpoints: Sequence[str],
    max_seconds: float,
    work: Path,
    reuse: bool,
    think_ms: float,
) -> ScaleApiResult:
    if db == "postgres":
        asyncio.run(_ensure_pg_database(url.rsplit("/", 1)[1]))
    t0 = time.monotonic()
    have = asyncio.run(_registered(url)) if reuse else 0
    if have and have != devices:
        raise RuntimeError(f"the database holds {have:,} devices, not {devices:,}")
    if not have:
        if asyncio.run(_registered(url)):
            raise RuntimeError(f"{url} already holds devices; pass --reuse or another database")
        asyncio.run(build_registry(url, devices, say))
    build_s = time.monotonic() - t0
    key = asyncio.run(_admin_key(url))
    ids, lots = asyncio.run(_samples(url, 20_000))
    say("starting the API…")
    results: list[EndpointResult] = []
    with api_server(url, work) as (base, pid):
        start_rss = rss_mb(pid)
        for endpoint in endpoints:
            warm = max(clients, 10)
            say(f"{endpoint}: warming up ({warm} requests)…")
            asyncio.run(drive(base, key, endpoint, clients, warm, max_seconds, ids, lots))
            say(f"{endpoint}: {requests} requests by {clients} clients…")
            cpu_before = cpu_s(pid)
            latencies, errors, samples, seconds = asyncio.run(
                drive(base, key, endpoint, clients, requests, max_seconds, ids, lots, think_ms)
            )
            cpu = cpu_s(pid) - cpu_before
            results.append(
                EndpointResult(
                    endpoint=endpoint,
                    requests=len(latencies),
                    errors=errors,
                    seconds=round(seconds, 2),
                    p50_ms=round(statistics.median(latencies) if latencies else 0.0, 1),
                    p95_ms=round(percentile(latencies, 95), 1),
                    p99_ms=round(percentile(latencies, 99), 1),
                    max_ms=round(max(latencies, default=0.0), 1),
                    rss_mb=round(rss_mb(pid), 1),
                    per_s=round(len(latencies) / seconds, 1) if seconds else 0.0,
                    cpu_ms=round(1000 * cpu / len(latencies), 2) if latencies else 0.0,
                    error_samples=samples,
                )
            )
    return ScaleApiResult(
        devices=devices,
        db=db,
        clients=clients,
        requests=requests,
        think_ms=think_ms,
        build_s=round(build_s, 1),
        start_rss_mb=round(start_rss, 1),
        endpoints=results,
    )


def print_scale_api(result: ScaleApiResult, console: Console) -> None:
    table = Table(
        title=f"API at {result.devices:,} devices on {result.db}, {result.clients} clients, "
        + (f"{result.think_ms:g} ms mean pause" if result.think_ms else "closed loop")
        + f" (server RSS at start {result.start_rss_mb:.0f} MB)"
    )
    columns = ("endpoint", "requests", "errors", "req/s", "CPU ms/req")
    columns += ("p50 ms", "p95 ms", "p99 ms", "max ms")
    for column in columns:
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    table.add_column("RSS MB", justify="right")
    for e in result.endpoints:
        table.add_row(
            e.endpoint,
            f"{e.requests:,}",
            str(e.errors),
            f"{e.per_s:,.1f}",
            f"{e.cpu_ms:,.2f}",
            f"{e.p50_ms:,.1f}",
            f"{e.p95_ms:,.1f}",
            f"{e.p99_ms:,.1f}",
            f"{e.max_ms:,.1f}",
            f"{e.rss_mb:,.0f}",
        )
    console.print(table)
    for e in result.endpoints:
        for sample in e.error_samples:
            console.print(f"[red]{e.endpoint}[/red]: {sample}")


def main(
    devices: Annotated[int, typer.Option(help="Registered devices.")] = 1_000_000,
    db: Annotated[str, typer.Option(help="sqlite or postgres.")] = "sqlite",
    clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 50,
    think_ms: Annotated[
        float,
        typer.Option(help="Mean pause of a client between its requests, ms (0: closed loop)."),
    ] = 0.0,
    requests: Annotated[int, typer.Option(help="Measured requests per endpoint.")] = 1_000,
    endpoints: Annotated[
        str, typer.Option(help=f"Comma list of {','.join(ENDPOINTS)}.")
    ] = ",".join(ENDPOINTS),
    max_seconds: Annotated[
        float, typer.Option(help="Longest an endpoint's measured run (or warm-up) may last.")
    ] = 60.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where the SQLite file and the server log go.")
    ] = None,
    pg_database: Annotated[
        str, typer.Option(help="PostgreSQL database (127.0.0.1).")
    ] = "scale_api",
    reuse: Annotated[
        bool, typer.Option("--reuse", help="Use the registry already built there.")
    ] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the database afterwards.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
) -> None:
    """Latency of the API's reads at city scale, endpoint by endpoint."""
    console = Console()
    result = run_scale_api(
        devices,
        db,
        clients,
        requests,
        lambda text: console.print(f"[dim]{text}[/dim]"),
        endpoints=[e for e in endpoints.split(",") if e],
        max_seconds=max_seconds,
        work_dir=work_dir,
        pg_database=pg_database,
        reuse=reuse,
        keep=keep,
        think_ms=think_ms,
    )
    print_scale_api(result, console)
    if out is not None:
        out.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
    raise typer.Exit(1 if result.errors else 0)


if __name__ == "__main__":
    typer.run(main)
