"""The API's edge under the attacks of issue 22 (findings 3, 4, 9, 12, 15), against the
real server: uvicorn with the edge's protocol and middleware, a real SQLite database, the
session's InfluxDB and Mosquitto.

Attacks on memory and connections run against ``cityiot api`` in its own process, so what
is measured (its memory from /proc, its connections) is the server's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cityiot.api.keys import create_key
from cityiot.api.ratelimit import RateLimiter
from cityiot.api.server import ApiServer
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from tests.api.conftest import REGISTRY_VENDORS, Api
from tests.api.console.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.ingest.conftest import REGISTRY_CSV
from tests.seeding import open_seeded

MiB = 1024 * 1024
ATTACK_BYTES = 300 * MiB  # the red team's body
RSS_BOUND_KIB = 50 * 1024  # what the server's peak memory may grow by during the attacks
UNREAD_BOUND = 64 * MiB  # far below the body: what kernel buffers on both sides can take
HEADER_TIMEOUT_S = 2.0
HALF_OPEN = 5000
CLI = Path(sys.executable).parent / "cityiot"


# -- a server in its own process ---------------------------------------------------------


@dataclass
class Served:
    """``cityiot api`` running in a child process."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    admin_key: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def status_kib(self, field: str) -> int:
        """A memory figure of the server process (VmRSS now, VmHWM the peak), in KiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match, f"no {field} in /proc/{self.proc.pid}/status"
        return int(match.group(1))

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """The edge's limits are the same on any database: SQLite only, not once per database."""
    return sqlite_url


async def _seed(db_url: str) -> str:
    engine, sessions = await open_seeded(db_url, REGISTRY_CSV, REGISTRY_VENDORS)
    try:
        _, key = await create_key(sessions, "admin", name="edge test")
        return key
    finally:
        await engine.dispose()


@contextlib.contextmanager
def serve(
    sqlite_url: str,
    influx: LocalInflux,
    influx_db: str,
    broker: LocalBroker,
    tmp_path: Path,
    **settings: str,
) -> Iterator[Served]:
    admin_key = asyncio.run(_seed(sqlite_url))
    port = free_port()
    env = {
        **os.environ,
        "CITYIOT_DATABASE_URL": sqlite_url,
        "CITYIOT_INFLUX_URL": influx.url,
        "CITYIOT_INFLUX_DB": influx_db,
        "CITYIOT_MQTT_URL": broker.url,
        "CITYIOT_API_HOST": "127.0.0.1",
        "CITYIOT_API_PORT": str(port),
        "CITYIOT_RUN_DIR": str(tmp_path / "run"),
        "CITYIOT_API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        **{f"CITYIOT_{k.upper()}": v for k, v in settings.items()},
    }
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([str(CLI), "api"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    served = Served(proc, "127.0.0.1", port, admin_key)
    try:
        while True:  # until it answers (or fails to start)
            assert proc.poll() is None, f"cityiot api exited: {(tmp_path / 'api.log').read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200:
                    break
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def served(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> Iterator[Served]:
    with serve(sqlite_url, influx, influx_db, broker, tmp_path) as server:
        yield server


def _push(served: Served, head: str, total: int, *, chunked: bool = False) -> tuple[int, int]:
    """Send ``head`` and then up to ``total`` body bytes, until the server closes; the
    answer's status (0 when none came) and the body bytes the socket took."""
    block = b"x" * MiB
    sent = 0
    with socket.create_connection((served.host, served.port)) as sock:
        sock.settimeout(120)  # a guard against a hang, not a measurement
        sock.sendall(head.encode())
        try:
            while sent < total:
                piece = block if not chunked else b"%x\r\n%b\r\n" % (len(block), block)
                sock.sendall(piece)
                sent += len(block)
        except OSError:
            pass  # the server closed the connection: the rest was never read
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(match.group(1)) if match else 0), sent


def _device(device_id: str) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "vendor": "acme",
        "kind": "manhole",
        "district": "yicheng",
        "lat": 32.98,
        "lon": 114.02,
        "address": "解放路 1 号",
        "report_interval_s": 300,
    }


def _post_head(path: str, key: str | None, length: int | None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return "\r\n".join(lines) + "\r\n\r\n"


# -- finding 3: bodies -------------------------------------------------------------------


def test_300mb_bodies_are_refused_before_they_are_read(served: Served) -> None:
    """Three unauthenticated 300 MB bodies at once (chunked: no length to judge them by) get
    401 unread; one saying Content-Length 300 MB gets 413 unread, with or without a key; a
    keyed chunked one is cut at the 1 MiB cap. Through all of it the server's peak memory
    grows by less than RSS_BOUND_KIB."""
    devices = "/api/v1/devices"
    httpx.get(f"{served.url}/api/v1/devices", timeout=30)  # warm: lazy imports done
    peak_before = served.status_kib("VmHWM")
    rss_before = served.status_kib("VmRSS")

    anonymous = _post_head(devices, None, None)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda _: _push(served, anonymous, ATTACK_BYTES, chunked=True), range(3))
        )
    for status, sent in results:
        assert status == 401
        assert sent < UNREAD_BOUND, f"the server read {sent} bytes of an unauthenticated body"
    for key in (None, served.admin_key):
        status, sent = _push(served, _post_head(devices, key, ATTACK_BYTES), ATTACK_BYTES)
        assert (status, sent < UNREAD_BOUND) == (413, True), sent
    status, sent = _push(
        served, _post_head(devices, served.admin_key, None), ATTACK_BYTES, chunked=True
    )
    assert (status, sent < UNREAD_BOUND) == (413, True), sent

    growth = served.status_kib("VmHWM") - peak_before
    print(f"server RSS before {rss_before} KiB, peak before {peak_before} KiB, growth {growth} KiB")
    assert growth < RSS_BOUND_KIB, f"the server's peak memory grew by {growth} KiB"
    assert served.metric("cityiot_api_edge_body_refused_unauthenticated_total") == 3
    assert served.metric("cityiot_api_edge_body_too_large_total") == 3
    # The server still answers, with a normal body.
    created = httpx.post(
        f"{served.url}/api/v1/devices",
        headers={"Authorization": f"Bearer {served.admin_key}"},
        json=_device("mh-edge"),
        timeout=30,
    )
    assert created.status_code == 201, created.text


# -- finding 4: connections --------------------------------------------------------------


def _raise_own_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_closed(socks: list[socket.socket]) -> int:
    """Wait until the server has closed every socket; how many it closed."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    while closed < len(socks):
        events = selector.select(timeout=120)  # a guard against a hang
        assert events, f"{len(socks) - closed} connections still open"
        for key, _ in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
    selector.close()
    return closed


def test_5000_half_open_connections_leave_healthz_answering(served: Served) -> None:
    """5,000 connections that send half a request line and wait: /healthz answers on a
    fresh connection, a write reaches the database, and the server closes every one of them
    (the oldest for newer connections past the cap, the rest after the header timeout)."""
    _raise_own_file_limit()
    socks: list[socket.socket] = []
    try:
        for _ in range(HALF_OPEN):
            sock = socket.create_connection((served.host, served.port))
            sock.sendall(b"GET /api/v1/devices HT")
            socks.append(sock)
        health = httpx.get(f"{served.url}/healthz", timeout=60)
        assert health.status_code == 200
        created = httpx.post(
            f"{served.url}/api/v1/devices",
            headers={"Authorization": f"Bearer {served.admin_key}"},
            json=_device("mh-flood"),
            timeout=60,
        )
        assert created.status_code == 201, created.text
        assert _wait_closed(socks) == HALF_OPEN
    finally:
        for sock in socks:
            sock.close()
    evicted = served.metric("cityiot_api_edge_connections_evicted_total")
    timed_out = served.metric("cityiot_api_edge_connections_timed_out_total")
    assert evicted >= HALF_OPEN - 1000  # the cap: api_max_connections
    assert evicted + timed_out >= HALF_OPEN
    limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()  # type: ignore[union-attr]
    assert soft == hard, "the server did not raise its open-file limit"


def test_busy_connections_past_the_cap_are_refused_at_once(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> None:
    """With every connection busy with a request (headers in, body slow), a new one is
    answered 503 and closed; the stalled bodies are closed after the timeout, and then new
    connections are served again."""
    with serve(sqlite_url, influx, influx_db, broker, tmp_path, api_max_connections="4") as s:
        busy = []
        for _ in range(4):
            sock = socket.create_connection((s.host, s.port))
            sock.sendall(_post_head("/api/v1/devices", s.admin_key, 100).encode())
            busy.append(sock)
        # The four are past their headers once each is authenticated (a cached key then).
        for sock in busy:
            sock.sendall(b"{")
        with socket.create_connection((s.host, s.port)) as extra:
            extra.settimeout(120)
            answer = b""
            while chunk := extra.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"CITYIOT_API_MAX_CONNECTIONS" in answer
        assert _wait_closed(busy) == 4
        for sock in busy:
            sock.close()
        assert httpx.get(f"{s.url}/healthz", timeout=60).status_code == 200
        assert s.metric("cityiot_api_edge_connections_refused_total") >= 1
        assert s.metric("cityiot_api_edge_connections_timed_out_total") >= 4


# -- finding 9: the docs pages -----------------------------------------------------------


async def test_docs_are_served_from_our_origin_under_a_csp(api: Api) -> None:
    client = api.client(None)
    for page in ("/docs", "/redoc"):
        answer = await client.get(page)
        assert answer.status_code == 200
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", answer.text), answer.text
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
    for name, kind in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-init.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "text/javascript"),
    ):
        asset = await client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(kind)
    assert (await client.get("/docs/assets/LICENSE.redoc")).status_code == 404


async def test_docs_render_in_chromium_without_other_origins(api: Api) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    origin = api.url
    elsewhere: list[str] = []
    problems: list[str] = []

    async def route(request: Any) -> None:
        url = request.request.url
        if not url.startswith(origin) and not url.startswith(("data:", "blob:")):
            elsewhere.append(url)
            await request.abort()
        else:
            await request.continue_()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            await page.route("**/*", route)
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(f"{origin}/docs")
            await page.wait_for_selector(".opblock-summary-path", timeout=60_000)
            assert await page.locator(".opblock").count() > 20
            await page.goto(f"{origin}/redoc")
            await page.wait_for_selector("[data-section-id^='tag/']", timeout=60_000)
        finally:
            await browser.close()
    assert not elsewhere, f"the docs asked another origin for {elsewhere}"
    # ReDoc's bundle names its own logo on its vendor's server; the CSP stops that request.
    blocked = [p for p in problems if "Content Security Policy" in p]
    assert all("img-src" in p and "/redoc/logo-mini.svg" in p for p in blocked), blocked


# -- finding 12: keys --------------------------------------------------------------------


BOGUS = 600  # 30 times the burst: what is refused past it, and that nothing is remembered


async def test_bogus_keys_are_not_cached_and_strangers_are_rate_limited(api: Api) -> None:
    """600 requests with made-up 10 KB keys (about the largest header the server takes):
    past the address's burst they are refused 429 before any lookup; none is remembered;
    a real key from another address is served."""
    burst = 20
    async with (
        _server(
            api,
            api_anonymous_rate_per_s=0.001,
            api_anonymous_rate_burst=burst,
            api_forwarded_allow_ips="127.0.0.1",  # the test stands for a local proxy
        ) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        statuses: dict[int, int] = {}
        retry_after = set()
        for i in range(BOGUS):
            fake = f"cik_{i:012x}_" + "A" * 10_000
            answer = await client.get(
                "/api/v1/devices", headers={"Authorization": f"Bearer {fake}"}
            )
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 429:
                retry_after.add(int(answer.headers["retry-after"]))
        assert statuses == {401: burst, 429: BOGUS - burst}
        assert retry_after and min(retry_after) >= 1
        metrics = (await client.get("/metrics")).text
        assert re.search(r"^cityiot_api_edge_cached_keys 0\.0$", metrics, re.M), metrics
        assert re.search(r"^cityiot_api_edge_anonymous_buckets 1\.0$", metrics, re.M)
        # A real key from elsewhere (X-Forwarded-For, believed from the trusted proxy).
        real = await client.get(
            "/api/v1/devices",
            headers={"Authorization": f"Bearer {api.keys['admin']}", "X-Forwarded-For": "10.1.2.3"},
        )
        assert real.status_code == 200
        metrics = (await client.get("/metrics")).text
        assert re.search(r"^cityiot_api_edge_cached_keys 1\.0$", metrics, re.M)


async def test_an_overlong_key_is_refused_without_a_lookup(api: Api) -> None:
    answer = await api.client(key="cik_1_" + "x" * 300).get("/api/v1/devices")
    assert answer.status_code == 401
    assert "longer than any key" in answer.json()["detail"]


def test_rate_buckets_stay_bounded_when_addresses_rotate() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_buckets=1000)
    for i in range(100_000):
        limiter.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=float(i))
    assert len(limiter) == 1000
    limiter.take("10.9.9.9", now=1e6)
    limiter.take("10.9.9.9", now=1e6)
    assert limiter.take("10.9.9.9", now=1e6) > 0  # a recent bucket is kept and enforced


# -- finding 15: no redirect carries the Host header --------------------------------------


REDIRECT_PATHS = (
    "/docs/",
    "/redoc/",
    "/api/v1/devices/",
    "/api/v1/",
    "/console",
    "/console/",
    "/healthz/",
    "/api/v1/devices/mh-1/",
    "/metrics/",
)


async def test_no_answer_redirects_to_the_host_header(api: Api) -> None:
    client = api.client("admin")
    for path in REDIRECT_PATHS:
        answer = await client.get(path, headers={"Host": "evil.example"})
        assert "location" not in answer.headers, (path, answer.headers.get("location"))
        assert "evil.example" not in answer.text, path
    answer = await client.get("/api/v1/devices/")
    assert answer.status_code == 404
    assert "did you mean /api/v1/devices?" in answer.json()["detail"]
    assert (await client.get("/api/v1/devices")).status_code == 200


@contextlib.asynccontextmanager
async def _server(api: Api, **extra: Any) -> AsyncIterator[str]:
    """A second API over the same database and services, with other edge settings."""
    settings = api.settings.model_copy(update={"api_port": free_port(), **extra})
    async with ApiServer(settings) as server:
        yield server.url


async def test_trusted_hosts_refuse_other_hosts(api: Api) -> None:
    async with (
        _server(api, api_trusted_hosts=["iot.city.test"]) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        bad = await client.get("/healthz", headers={"Host": "evil.example"})
        assert bad.status_code == 400 and "location" not in bad.headers
        good = await client.get("/healthz", headers={"Host": "iot.city.test"})
        assert good.status_code == 200


# -- finding 3: the CSV import's own cap, streamed ----------------------------------------


async def test_the_csv_import_streams_up_to_its_own_cap(api: Api) -> None:
    key = api.keys["admin"]
    cap = 2 * MiB
    async with (
        _server(api, api_max_import_bytes=cap) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client,
    ):
        header = "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        row = "mh-77,acme,manhole,yicheng,32.98,114.02,解放路 1 号,300,200\n"

        async def pieces(body: bytes) -> AsyncIterator[bytes]:
            for at in range(0, len(body), 64 * 1024):
                yield body[at : at + 64 * 1024]

        small = (header + row).encode()
        answer = await client.post("/api/v1/devices/import", content=pieces(small))
        assert answer.status_code == 200, answer.text
        assert answer.json()["errors"] == []
        # Over the 1 MiB body cap of other endpoints, within the import's cap: read.
        big = (header + row + "#" * int(1.5 * MiB) + "\n").encode()
        answer = await client.post("/api/v1/devices/import", content=pieces(big))
        assert answer.status_code == 200, answer.text
        over = b"x" * (cap + 1)
        answer = await client.post("/api/v1/devices/import", content=pieces(over))
        assert answer.status_code == 413, answer.text
        answer = await client.post("/api/v1/devices/import", content=over)
        assert answer.status_code == 413 and "MiB" in answer.json()["detail"]
        answer = await client.post("/api/v1/devices", content=pieces(b"{" * (MiB + 1)))
        assert answer.status_code == 413
