"""The rules stage assembled from settings: engine, dispatcher, durable delivery, control.

In ``cityiot run`` it hangs off the ingest (readings handed over in process, alert events
published through the ingest's MQTT link). ``cityiot rules`` runs it alone: it then takes
readings from its own subscription (a persistent session of its own), decoded and
validated by the same intake code, without storing them.

The rules are the catalogue files (``CITYIOT_RULES_PATH``) with the rules put through the
API (``rule_overrides``) replacing those of the same id or adding to them. Every few seconds
the stage takes changed kinds into the model (``refresh_kinds``: kinds put through the API,
changed kind files) and, when the overrides, the kinds or the rule files changed, reloads the
rules and swaps them into the running evaluator, keeping the state of every rule that still
exists: a rule refused for a metric its kind lacked loads once the kind has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cityiot.domain.catalogue import MODEL
from cityiot.domain.settings import Settings
from cityiot.ingest.devices import DeviceMap
from cityiot.rules.control import CommandSender, group_targets
from cityiot.rules.definitions import (
    ROUTING_FILE,
    Rule,
    RuleError,
    catalogue_path,
    load_rules,
    parse_rule,
)
from cityiot.rules.delivery import Deliverer, enqueue
from cityiot.rules.dispatch import Dispatcher
from cityiot.rules.engine import Publish, RulesEngine
from cityiot.rules.events import Clock, wall_clock
from cityiot.rules.notifiers import Channel, build_channel
from cityiot.rules.routing import Router, load_routing
from cityiot.rules.workorders import SlaPolicy, open_grouped_work_orders, open_work_order
from cityiot.storage.kinds import refresh_kinds
from cityiot.storage.tables.rules import RuleOverride

log = logging.getLogger("cityiot.rules")

DEFAULT_ROUTING = Path(__file__).resolve().parent / "routing.yaml"
RULES_RELOAD_S = 2.0  # how often the stage looks for rules changed through the API

# Which overrides are stored: their number and newest change (a change moves either).
OverridesVersion = tuple[int, Any]


@dataclass
class RulesStage:
    engine: RulesEngine
    dispatcher: Dispatcher
    deliverer: Deliverer
    commands: CommandSender
    router: Router
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def routing_path(settings: Settings) -> Path:
    """``routing.yaml`` beside the rule files when there is one, else the shipped one."""
    if settings.rules_path is None:
        return DEFAULT_ROUTING
    rules_path = Path(settings.rules_path)
    beside = (rules_path if rules_path.is_dir() else rules_path.parent) / ROUTING_FILE
    return beside if beside.exists() else DEFAULT_ROUTING


def channels_of(
    router: Router,
    settings: Settings,
    http: httpx.AsyncClient,
    publish: Callable[[str, bytes], Awaitable[None]],
) -> dict[str, Channel]:
    """Every channel of the routing file, built once and shared by the deliverer."""
    smtp: dict[str, Any] | None = None
    if settings.smtp_host:
        smtp = {
            "host": settings.smtp_host,
            "port": settings.smtp_port,
            "from": settings.smtp_from,
            "starttls": settings.smtp_starttls,
        }
        if settings.smtp_username:
            smtp.update(username=settings.smtp_username, password=settings.smtp_password)
    channels: dict[str, Channel] = {}
    for receiver in router.receivers.values():
        for config in receiver.channels:
            deps: dict[str, Any] = {"http": http, "publish": publish}
            if smtp is not None:
                deps["smtp"] = smtp
            channels[config["name"]] = build_channel(config, **deps)
    return channels


async def overrides_version(session_factory: Any) -> OverridesVersion:
    """The count and newest ``updated_at`` of the stored rule overrides."""
    async with session_factory() as session:
        row = (await session.execute(select(func.count(), func.max(RuleOverride.updated_at)))).one()
    return int(row[0]), row[1]


async def current_rules(settings: Settings, session_factory: Any, *, strict: bool) -> list[Rule]:
    """The catalogue files with the API's overrides applied (same id: replaced; new: added).

    A stored override that no longer parses (the catalogue changed under it) raises
    :class:`RuleError` when ``strict``, else is logged and the file's rule stands.
    """
    rules = {r.id: r for r in load_rules(catalogue_path(settings.rules_path))}
    async with session_factory() as session:
        overrides = list(await session.scalars(select(RuleOverride).order_by(RuleOverride.id)))
    for override in overrides:
        try:
            rule = parse_rule({**override.definition, "id": override.id}, "api", 0)
        except RuleError as exc:
            if strict:
                raise
            log.error("event=rule_override_invalid rule=%s error=%s", override.id, exc)
            continue
        rules[rule.id] = rule
    return list(rules.values())


def files_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What the rule files look like now (names, times, sizes): a change reloads them."""
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        return tuple(
            (f.name, f.stat().st_mtime_ns, f.stat().st_size)
            for f in files
            if f.suffix in (".yaml", ".yml")
        )
    except OSError:  # being replaced: the next round looks again
        return ()


@dataclass(frozen=True)
class RulesVersion:
    """What the running rules were made from: the overrides, the kinds' generation and the
    rule files. Any of them changing reloads the rules."""

    overrides: OverridesVersion
    kinds: int
    files: tuple[tuple[str, int, int], ...]


async def rules_version(settings: Settings, session_factory: Any) -> RulesVersion:
    """The version of what the rules are made from now (after taking in changed kinds)."""
    try:
        await refresh_kinds(session_factory)
    except OSError as exc:  # a kind file being replaced: the next round looks again
        log.warning("event=kinds_refresh_deferred error=%s", exc)
    return RulesVersion(
        await overrides_version(session_factory),
        MODEL.generation(),
        files_stamp(catalogue_path(settings.rules_path)),
    )


async def watch_rules(
    engine: RulesEngine,
    settings: Settings,
    session_factory: Any,
    stop: asyncio.Event,
    *,
    every_s: float = RULES_RELOAD_S,
    seen: RulesVersion | None = None,
) -> None:
    """Until ``stop``: take changed kinds into the model, and reload the rules into
    ``engine`` whenever the overrides, the kinds or the rule files differ from ``seen``.
    Looks every ``every_s``, or ``registry_refresh_s`` when that is shorter.

    A reload that fails (an invalid override or rule file) is logged and the running rules
    stay, until the next change.
    """
    every_s = min(every_s, settings.registry_refresh_s)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            version = await rules_version(settings, session_factory)
            if version == seen:
                continue
            rules = await current_rules(settings, session_factory, strict=True)
        except (SQLAlchemyError, ConnectionError) as exc:  # database away: look again later
            log.warning("event=rules_reload_deferred error=%s", exc)
            continue
        except (RuleError, OSError) as exc:
            seen = version
            log.error("event=rules_reload_failed keeping=running_rules error=%s", exc)
            continue
        seen = version
        await engine.replace_rules(rules)
        log.info(
            "event=rules_reloaded rules=%d overrides=%d kinds_generation=%d",
            len(rules), version.overrides[0], version.kinds,
        )  # fmt: skip


@asynccontextmanager
async def rules_stage(
    settings: Settings,
    devices: DeviceMap,
    session_factory: Any,
    publish: Publish,
    *,
    clock: Clock = wall_clock,
    stop: asyncio.Event,
    rules_reload_s: float = RULES_RELOAD_S,
    owns: Callable[[str], bool] | None = None,
) -> AsyncIterator[RulesStage]:
    """A started rules stage; its background tasks run until ``stop`` is set.

    ``owns`` (a scale-out worker's partition): the devices whose rule state, absence checks
    and restored alerts live in this stage; None: every device.
    """
    seen = await rules_version(settings, session_factory)  # the API's kinds before their rules
    rules = await current_rules(settings, session_factory, strict=False)
    router = load_routing(routing_path(settings))
    for warning in router.warnings:
        log.warning("event=routing_warning %s", warning)

    async def publish_async(topic: str, payload: bytes) -> None:
        publish(topic, payload)

    async with httpx.AsyncClient(timeout=10.0) as http:
        deliverer = Deliverer(
            session_factory, channels_of(router, settings, http, publish_async), clock=clock
        )

        async def enqueue_and_wake(*args: Any, **kwargs: Any) -> int:
            row = await enqueue(*args, clock=clock, **kwargs)
            deliverer.notify()
            return row

        sla = SlaPolicy()
        dispatcher = Dispatcher(
            router,
            session_factory,
            enqueue_and_wake,
            clock,
            open_work_order=lambda event, team, group=None: open_work_order(
                session_factory, event, team, sla, clock, group
            ),
            open_work_orders=lambda asked: open_grouped_work_orders(
                session_factory, asked, sla, clock
            ),
        )
        commands = CommandSender(session_factory, lambda t, p, q: publish(t, p), clock)
        engine = RulesEngine(
            rules,
            devices,
            session_factory,
            publish=publish,
            dispatcher=dispatcher,
            commands=commands,
            group_targets=functools.partial(group_targets, session_factory),
            clock=clock,
            owns=owns,
        )
        open_events = await engine.start()
        dispatcher.restore([e for e in open_events if e["state"] in ("firing", "acknowledged")])
        stage = RulesStage(engine, dispatcher, deliverer, commands, router)
        target = settings.mqtt_target()
        stage.tasks = [
            asyncio.create_task(engine.run(stop), name="rules-engine"),
            asyncio.create_task(_dispatch_loop(dispatcher, stop), name="rules-dispatch"),
            asyncio.create_task(deliverer.run(stop), name="rules-delivery"),
            asyncio.create_task(
                watch_rules(
                    engine,
                    settings,
                    session_factory,
                    stop,
                    every_s=rules_reload_s,
                    seen=seen,
                ),
                name="rules-reload",
            ),
            asyncio.create_task(
                commands.listen_for_acks(
                    target.host,
                    target.port,
                    target.username,
                    target.password,
                    stop,
                    client_id=f"{settings.worker_client_id}-acks",  # a persistent session
                    tls_context=target.ssl_context(),
                ),
                name="rules-acks",
            ),
        ]
        try:
            yield stage
        finally:
            stop.set()
            for task in stage.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _dispatch_loop(dispatcher: Dispatcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await dispatcher.tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await dispatcher.tick()
