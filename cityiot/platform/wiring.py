"""One platform: the ingest, its partition, the rules and the API, wired once.

``cityiot run``, ``cityiot ingest [--rules]`` and the tests start the stages through
:func:`platform`, so which stage feeds which, and in what order they stop, is written here
and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cityiot.api.metrics import MetricsSource, add_source, counters_source
from cityiot.api.server import ApiServer
from cityiot.domain.settings import Settings
from cityiot.ingest.partition import Partitioner, partition_stage
from cityiot.ingest.pipeline import Ingest
from cityiot.ingest.service import ingest_stage
from cityiot.rules.service import RulesStage, rules_stage


@dataclass
class Platform:
    """The started stages. :meth:`start` sets them running; leaving :func:`platform` stops
    them in order: the ingest first (its last batches still reach the rules), then what other
    workers forwarded, then the rules."""

    settings: Settings
    ingest: Ingest
    partition: Partitioner
    rules: RulesStage | None
    api: ApiServer | None
    _partition_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _rules_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ingesting: asyncio.Task[None] | None = None
    _receiving: asyncio.Task[None] | None = None

    def sources(self) -> dict[str, MetricsSource]:
        """The stages' counters and queue depths, by stage, for Prometheus."""
        ingest, rules = self.ingest, self.rules

        def queue() -> dict[str, float]:
            depths = ingest.depths()
            if rules is not None:
                depths["rules_waiting"] = float(len(rules.engine.waiting))
            return depths

        sources: dict[str, MetricsSource] = {
            "ingest": counters_source(ingest.counters),
            "broker": lambda: counters_source(ingest.broker_stats())(),
            "queue": queue,  # type: ignore[dict-item]
            "partition": counters_source(self.partition.counters),
        }
        if rules is not None:
            sources["rules"] = counters_source(rules.engine.counters)
            sources["delivery"] = counters_source(rules.deliverer.counters)
        return sources

    def start(self) -> asyncio.Task[None]:
        """Start taking readings (and other workers' forwarded ones); returns the ingest's task."""
        if self._ingesting is None:
            self._ingesting = asyncio.create_task(self.ingest.run(), name="ingest")
            self._receiving = asyncio.create_task(
                self.partition.run(self._partition_stop), name="partition"
            )
        return self._ingesting

    async def stop(self) -> None:
        """Stop in order; safe to call twice, and before :meth:`start`."""
        await self.ingest.stop()
        if self._ingesting is not None:
            await self._ingesting
        self._partition_stop.set()
        if self._receiving is not None:
            await self._receiving
        self._rules_stop.set()


@contextlib.asynccontextmanager
async def platform(
    settings: Settings, *, rules: bool = True, api: bool = False
) -> AsyncIterator[Platform]:
    """The ingest with its partition, and the rules and the API when asked, ready to
    :meth:`~Platform.start`. With the API, the stages' counters are on its ``/metrics``."""
    partition_stop, rules_stop = asyncio.Event(), asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        ingest = await stack.enter_async_context(ingest_stage(settings))
        partition = await stack.enter_async_context(partition_stage(settings, ingest))
        stage = None
        if rules:
            stage = await stack.enter_async_context(
                rules_stage(
                    settings,
                    ingest.devices,
                    ingest.sessions,
                    ingest.link.publish,
                    stop=rules_stop,
                    owns=partition.owns,
                )
            )
            partition.rules = stage.engine.submit
        server = await stack.enter_async_context(ApiServer(settings)) if api else None
        running = Platform(
            settings,
            ingest,
            partition,
            stage,
            server,
            _partition_stop=partition_stop,
            _rules_stop=rules_stop,
        )
        if server is not None:
            for name, source in running.sources().items():
                add_source(server.app.state.ctx, name, source)
            # POST /telemetry/… goes into this ingest (answered once stored or spooled).
            server.app.state.ctx.telemetry = ingest.http_link
        try:
            yield running
        finally:
            await running.stop()
