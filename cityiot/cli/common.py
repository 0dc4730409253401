"""What every command shares: errors on stderr, settings, running a stage until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cityiot.domain.catalogue import MODEL, ModelError
from cityiot.domain.settings import Settings

log = logging.getLogger("cityiot.cli")

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``message`` on stderr, as written: not read as markup (a kind
    file's ``[low, high]``), not wrapped (scripts grep it)."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings, with the kinds and the city they name loaded: a broken setting, kind
    file or city file ends the command with what to change."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            # An error of several settings together (no field) says which in its message.
            (f"CITYIOT_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        fail(f"invalid settings: {problems}")
    try:
        MODEL.use(settings)
    except ModelError as exc:
        fail(f"invalid kind or city file: {exc}")
    return settings


# How long a command waits for PostgreSQL before going on with the files alone.
DATABASE_WAIT_S = 10.0

T = TypeVar("T")


def database_absent(url: str) -> bool:
    """Whether ``url`` is a SQLite file that does not exist (yet): a command that only reads
    never creates a database."""
    if not url.startswith("sqlite"):
        return False
    path = url.split("///", 1)[-1]
    return not path or path == ":memory:" or not Path(path).is_file()


def read_database(
    settings: Settings,
    read: Callable[[Any], Awaitable[T]],
    what: str,
    fallback: str,
) -> T | None:
    """What ``read`` (given a session factory) takes from the database, as the running
    stages read what was put through the API. None when there is no SQLite file, or when the
    database cannot be read: then a warning on stderr says ``what`` was not read and that
    ``fallback`` alone serves."""
    from cityiot.storage.engine import make_engine, sessionmaker

    url = settings.database_url
    if database_absent(url):
        return None

    async def main() -> T:
        engine = make_engine(url)
        try:
            return await asyncio.wait_for(read(sessionmaker(engine)), DATABASE_WAIT_S)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except Exception as exc:  # any driver's error: the files still serve
        cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's wrapping
        err.print(
            f"[yellow]warning:[/] {what} were not read from the database "
            f"({escape(str(cause) or type(cause).__name__)}); using {fallback} only",
            soft_wrap=True,
        )
        return None


def load_model_from_database(settings: Settings) -> None:
    """Take the kinds put through the API (kept in the database) into the model, as the
    running stages do, so a command knows every kind in force. SQLite: only when the file
    exists. Otherwise, or when the database cannot be read, the kind files alone (with a
    warning on stderr when it could not be read)."""
    from cityiot.storage.kinds import kind_overrides

    overrides = read_database(
        settings, kind_overrides, "the kinds put through the API", "the kind files"
    )
    if overrides is not None:
        MODEL.refresh(overrides)


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a long-running stage runs on: libuv's through uvloop (the default),
    or None for Python's own.

    uvloop's transports, timers and callbacks are C: in interleaved bench drains the
    ingest spent less CPU on the same readings (docs/benchmark.md)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run_until_signal(
    main: Coroutine[Any, Any, None], stop: asyncio.Event, settings: Settings
) -> None:
    """Run ``main`` until it ends; SIGINT/SIGTERM set ``stop`` so it can finish cleanly, and
    a second one ends it at once (a drain that cannot finish: InfluxDB and the spool both
    refusing; what was not acknowledged, the broker sends again). The garbage collector
    follows cityiot/platform/gcpolicy.py meanwhile, on the event loop that
    ``CITYIOT_EVENT_LOOP`` names (uvloop by default)."""
    from cityiot.platform.gcpolicy import collect_on_schedule, young_only

    young_only(settings.gc_full_every_s)

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main)
        forced = False

        def on_signal() -> None:
            nonlocal forced
            if not stop.is_set():
                stop.set()
                return
            forced = True
            log.warning(
                "event=stop_forced reason=a second SIGINT/SIGTERM while draining; what was "
                "taken and not yet stored is not acknowledged: the broker sends it again"
            )
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        collector = asyncio.create_task(collect_on_schedule(stop, settings.gc_full_every_s))
        try:
            await task
        except asyncio.CancelledError:
            if not forced:
                raise
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as loop:
            loop.run(runner())
    except (ConnectionError, ValueError, OSError) as exc:  # RuleError, RoutingError are ValueErrors
        fail(str(exc))


def serve_metrics(settings: Settings, sources: dict[str, Any]) -> None:
    """With CITYIOT_METRICS_PORT, serve the stage's counters for Prometheus (a thread)."""
    if settings.metrics_port is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    from cityiot.api.metrics import StageCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StageCollector(lambda: sources))  # type: ignore[arg-type]
    start_http_server(settings.metrics_port, addr=settings.api_host, registry=registry)
    err.print(f"metrics at http://{settings.api_host}:{settings.metrics_port}/metrics")
