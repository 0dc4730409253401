"""InfluxDB through its v1 HTTP API: line protocol to ``/write``, InfluxQL on ``/query``.

That pair is served by InfluxDB 1.x, by 2.x (v1 compatibility) and by 3.x, so one tested
path serves every version a city may run (docs/design.md §3). There is no maintained async client
for the v1 API, so this is a thin layer over keep-alive HTTP: writes go through an
``httpcore`` connection pool, everything else through an ``httpx.AsyncClient``.

Why writes skip httpx: each httpx response holds its body stream and the stream holds the
response, a reference cycle that only the garbage collector frees. At a few hundred writes
a second that left ~40 objects of cyclic garbage per write, and every few seconds a
collection of 40,000–50,000 of them stopped the ingest for 50–160 ms, which went straight
into the alert latency's p99. ``httpcore`` (the transport under httpx, from the same
maintainers) leaves none.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlencode

import httpcore
import httpx
import orjson

_TAG_ESCAPE = re.compile(r"([,= ])")
_MEASUREMENT_ESCAPE = re.compile(r"([, ])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# InfluxDB 1.x keeps a backslash literally, except before , = or space (an escape), and
# a trailing one escapes the delimiter after it: neither has a faithful encoding.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\([,= ]|$)")


class InfluxError(RuntimeError):
    """InfluxDB refused a request; ``status`` is the HTTP status (0: not reachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def is_client_error(self) -> bool:
        """True when the data itself was refused (retrying the same data cannot help)."""
        return 400 <= self.status < 500


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol.

    Commas, equals signs and spaces are escaped. Line protocol has no escape for newlines
    and other control characters in tags, nor for a backslash at the end or before , = or
    space; such values are refused, as one could otherwise end the tag early or start a
    second, injected point. (Registry ids and districts never hold them.)
    """
    if not value:
        raise ValueError("a tag value cannot be empty in line protocol")
    if _CONTROL.search(value):
        raise ValueError(f"tag value {value!r} holds a control character (newline, tab, ...)")
    if _AMBIGUOUS_BACKSLASH.search(value):
        raise ValueError(f"tag value {value!r} has a backslash at its end or before , = or space")
    return _TAG_ESCAPE.sub(r"\\\1", value)


def escape_measurement(value: str) -> str:
    if _CONTROL.search(value) or _AMBIGUOUS_BACKSLASH.search(value):
        raise ValueError(f"measurement {value!r} cannot be written in line protocol")
    return _MEASUREMENT_ESCAPE.sub(r"\\\1", value)


def series_key(measurement: str, tags: dict[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key, as InfluxDB stores them."""
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items())]
    return ",".join(parts)


def format_field(name: str, value: float | bool | str) -> str:
    """One ``name=value`` field: floats in shortest round-trip form, flags as true/false,
    enum words as string fields."""
    if isinstance(value, str):
        return f'{name}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is True:
        return f"{name}=true"
    if value is False:
        return f"{name}=false"
    return f"{name}={float(value)!r}"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes, safe whatever it contains."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes, safe whatever it contains."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxDB:
    """A connection to one InfluxDB database. ``async with InfluxDB(...) as influx:``."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str = "",
        username: str = "",
        password: str = "",
        retention_policy: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"CITYIOT_INFLUX_URL must look like http://host:8086, got {url!r}")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        headers = {"Authorization": f"Token {token}"} if token else {}
        if username and not token:
            # Basic auth: InfluxDB 1.x reads u/p only from the URL, where proxies log them.
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )
        self._writes = httpcore.AsyncConnectionPool(max_connections=4, max_keepalive_connections=4)
        self._write_headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
        self._write_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        self._write_timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s}
        self._write_timeout["pool"] = timeout_s
        self._write_urls: dict[str, str] = {}

    async def __aenter__(self) -> InfluxDB:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        await self._writes.aclose()

    async def ping(self) -> bool:
        try:
            response = await self._http.get("/ping")
        except httpx.HTTPError:
            return False
        return response.status_code == 204

    async def write(self, body: bytes, precision: str = "ms") -> None:
        """Write line protocol. Raises :class:`InfluxError` unless every point was accepted."""
        url = self._write_urls.get(precision)
        if url is None:
            params: dict[str, str] = {"db": self.database, "precision": precision}
            if self.retention_policy:
                params["rp"] = self.retention_policy
            url = self._write_urls[precision] = f"{self.url}/write?{urlencode(params)}"
        try:
            response = await self._writes.request(
                "POST",
                url,
                headers=self._write_headers,
                content=body,
                extensions={"timeout": self._write_timeout},
            )
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise InfluxError(f"InfluxDB at {self.url} not reachable: {exc!r}") from exc
        if response.status != 204:
            raise InfluxError(
                f"InfluxDB refused the write ({response.status}): {_error_of(response.content)}",
                response.status,
            )

    async def query(
        self, q: str, *, params: dict[str, Any] | None = None, database: str | None = None
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the statements' ``results`` (each with ``series``).

        ``params`` are bound parameters (``$name`` in ``q``), sent apart from the query text.
        Timestamps come back as epoch milliseconds.
        """
        data: dict[str, str] = {"q": q, "db": database or self.database, "epoch": "ms"}
        if params:
            data["params"] = orjson.dumps(params).decode()
        try:
            response = await self._http.post("/query", data=data)
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB at {self.url} not reachable: {exc!r}") from exc
        if response.status_code != 200:
            raise InfluxError(
                f"InfluxDB query failed ({response.status_code}): {_error_text(response)}",
                response.status_code,
            )
        results: list[dict[str, Any]] = orjson.loads(response.content).get("results", [])
        for result in results:
            if "error" in result:
                raise InfluxError(f"InfluxQL error: {result['error']}", 400)
        return results

    async def setup(self, retention: str, policy: str = "cityiot") -> None:
        """Create the database and make ``policy`` (``retention`` long) its default.

        InfluxDB 2.x/3.x manage buckets themselves and refuse this DDL; the caller logs and
        goes on, as the bucket is then the administrator's to create.
        """
        db = quote_ident(self.database)
        await self.query(f"CREATE DATABASE {db}", database="")
        rp = quote_ident(policy)
        try:
            await self.query(
                f"CREATE RETENTION POLICY {rp} ON {db} DURATION {retention} REPLICATION 1 DEFAULT"
            )
        except InfluxError as exc:
            if "already exists" not in str(exc):
                raise
            await self.query(
                f"ALTER RETENTION POLICY {rp} ON {db} DURATION {retention} REPLICATION 1 DEFAULT"
            )

    async def count(self, measurement: str, field: str, where: str = "") -> int:
        """``SELECT count(field)`` over all time: how many points hold ``field``."""
        q = f"SELECT count({quote_ident(field)}) FROM {quote_ident(measurement)} {where}"
        results = await self.query(q)
        series = results[0].get("series") if results else None
        return int(series[0]["values"][0][1]) if series else 0


def _error_text(response: httpx.Response) -> str:
    return _error_of(response.content)


def _error_of(content: bytes) -> str:
    """InfluxDB's ``{"error": …}`` message, or the start of whatever else it answered."""
    text = content[:500].decode(errors="replace")
    try:
        message = orjson.loads(content)
    except orjson.JSONDecodeError:
        return text
    return str(message.get("error", text)) if isinstance(message, dict) else text
