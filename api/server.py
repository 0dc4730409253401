"""Serving the app with uvicorn inside an event loop we own (``cityiot run``, ``cityiot api``
and the tests): signals stay with the caller, which decides when to stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

import uvicorn

from api.app import create_app
from cityiot.settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the caller handles SIGINT/SIGTERM
        yield


class ApiServer:
    """``async with ApiServer(settings) as api:`` — serving at ``api.url`` until the block ends."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host=settings.api_host,
            port=settings.api_port if port is None else port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.server.config.port}"

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self.server.serve(), name="api")
        while not self.server.started:
            if self._task.done():
                # uvicorn says SystemExit when it cannot bind; say what to change instead.
                with contextlib.suppress(SystemExit):
                    self._task.result()
                raise OSError(
                    f"the API could not listen on {self.settings.api_host}:"
                    f"{self.server.config.port}; set CITYIOT_API_PORT to a free port"
                )
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Open SSE streams would hold the shutdown for seconds: end them first.
        ctx = getattr(self.app.state, "ctx", None)
        if ctx is not None and ctx.hub is not None:
            ctx.hub.drain()
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    async def wait(self) -> None:
        """Until the server stops by itself (it failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)
