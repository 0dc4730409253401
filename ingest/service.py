"""The ingest stage assembled from settings: database, InfluxDB, broker link, pipeline."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cityiot.domain.settings import Settings
from cityiot.ingest.broker import BrokerLink
from cityiot.ingest.chirpstack import COMMAND_TOPICS, UPLINK_TOPICS
from cityiot.ingest.partition import shared_topics
from cityiot.ingest.pipeline import TOPICS, Ingest, ReadingsSink
from cityiot.ingest.spool import Spool
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.influx import InfluxDB, InfluxError

log = logging.getLogger("cityiot.ingest")


def influx_from(settings: Settings) -> InfluxDB:
    return InfluxDB(
        settings.influx_url,
        settings.influx_db,
        token=settings.influx_token,
        username=settings.influx_user,
        password=settings.influx_password,
    )


async def prepare_influx(influx: InfluxDB, settings: Settings) -> None:
    """Create the database and retention policy (InfluxDB 1.x); say so when not possible."""
    if not await influx.ping():
        raise ConnectionError(
            f"InfluxDB at {settings.influx_url} does not answer /ping; check CITYIOT_INFLUX_URL"
        )
    try:
        await influx.setup(settings.retention)
    except InfluxError as exc:
        # 2.x/3.x: buckets are created by their administrator, not through InfluxQL.
        log.warning("event=influx_setup_skipped reason=%s", exc)


def open_spool(settings: Settings) -> Spool:
    """The ingest's spool under ``CITYIOT_SPOOL_DIR`` (default ``<run dir>/spool``)."""
    max_bytes = settings.spool_max_bytes
    try:
        return Spool(
            settings.spool_path,
            max_bytes=max_bytes,
            segment_bytes=min(16 * 1024**2, max_bytes // 4),
            fsync=settings.spool_fsync,
        )
    except OSError as exc:
        raise OSError(
            f"cannot open the spool at {settings.spool_path} ({exc}); another ingest may be "
            "using it: give each ingest its own CITYIOT_SPOOL_DIR"
        ) from exc


@asynccontextmanager
async def ingest_stage(
    settings: Settings,
    *,
    on_readings: ReadingsSink | None = None,
    store: bool = True,
    client_id: str | None = None,
) -> AsyncIterator[Ingest]:
    """A connected, ready :class:`Ingest`; ``await ingest.run()`` to start it.

    ``store=False`` gives a reader of the stream that stores nothing (a rules-only worker,
    with its own ``client_id`` and so its own persistent session).

    A storing ingest with ``CITYIOT_SHARE_GROUP`` subscribes as a member of that group
    (``$share/<group>/…``) under :attr:`Settings.worker_client_id`; a reader never joins
    the group (it would take messages from the storing workers, which then nobody stores).
    """
    if not settings.mqtt_url or (store and not settings.influx_url):
        raise ValueError(
            "the ingest needs CITYIOT_MQTT_URL and CITYIOT_INFLUX_URL "
            "(or use `cityiot run`, which starts local ones)"
        )
    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        async with contextlib.AsyncExitStack() as stack:
            influx = None
            if store:
                influx = await stack.enter_async_context(influx_from(settings))
                await prepare_influx(influx, settings)
            spool = None
            if store:
                spool = stack.enter_context(open_spool(settings))
            topics = shared_topics(TOPICS, settings.share_group) if store else TOPICS
            link = BrokerLink(
                settings.mqtt_target(),
                client_id or settings.worker_client_id,
                topics,
                inflight=settings.mqtt_inflight,
            )
            await stack.enter_async_context(link)
            members: list[BrokerLink] = []
            retiring: list[BrokerLink] = []
            sessions = SessionCount(settings, client_id or settings.worker_client_id)
            if store:  # a reader of the stream (the rules alone) takes it all on one session
                used = sessions.used()
                for number in range(1, max(used, settings.mqtt_sessions)):
                    member = BrokerLink(
                        settings.mqtt_target(),
                        sessions.client_id(number),
                        topics if number < settings.mqtt_sessions else (),
                        inflight=settings.mqtt_inflight,
                        member=number,
                        unsubscribe=() if number < settings.mqtt_sessions else topics,
                        into=link,
                    )
                    await stack.enter_async_context(member)
                    (members if number < settings.mqtt_sessions else retiring).append(member)
                if not retiring:
                    sessions.record(settings.mqtt_sessions)
            ingest = Ingest(
                settings,
                influx,  # type: ignore[arg-type]
                sessionmaker(engine),
                link,
                on_readings=on_readings,
                store=store,
                spool=spool,
            )
            if members or retiring:
                ingest.add_members(members, retiring, sessions.retired)
            if settings.chirpstack_mqtt_url:
                await _link_chirpstack(ingest, settings, client_id, stack, store=store)
            yield await stack.enter_async_context(ingest)
    finally:
        await engine.dispose()


class SessionCount:
    """How many MQTT sessions this ingest's client id has used (``CITYIOT_MQTT_SESSIONS``),
    kept in its run dir. A broker goes on handing a shared subscription's messages to a
    member that is away, so sessions no longer wanted are retired, not left: they leave the
    subscription, what was queued for them is stored, then they are removed."""

    def __init__(self, settings: Settings, own: str) -> None:
        self.settings = settings
        self.own = own
        self.path = settings.run_dir / f"mqtt-sessions-{own}"

    def client_id(self, number: int) -> str:
        """The client id of session ``number`` (0: the ingest's own)."""
        return self.own if number == 0 else f"{self.own}-s{number + 1}"

    def used(self) -> int:
        try:
            return max(1, int(self.path.read_text().strip()))
        except (OSError, ValueError):
            return 1

    def record(self, count: int) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{count}\n")

    async def retired(self, links: list[BrokerLink]) -> None:
        """``links`` are drained and closed: remove their sessions from the broker."""
        for link in links:
            async with BrokerLink(link.target, link.client_id, (), clean_session=True):
                pass
            log.info("event=mqtt_session_retired client_id=%s", link.client_id)
        self.record(self.settings.mqtt_sessions)


async def _link_chirpstack(
    ingest: Ingest,
    settings: Settings,
    client_id: str | None,
    stack: contextlib.AsyncExitStack,
    *,
    store: bool,
) -> None:
    """Connect the LoRaWAN link (docs/design.md §4a): ChirpStack's events from its broker,
    and, for a storing ingest, the commands to LoRaWAN devices from the platform's; each a
    persistent session of its own (a storing ingest's a member of CITYIOT_SHARE_GROUP, like
    its telemetry subscription). A reader of the stream (the rules alone) takes the events
    too: LoRaWAN readings reach the rules also when they run apart from the ingest."""
    own = client_id or settings.worker_client_id
    target = settings.chirpstack_mqtt_target()
    topics = shared_topics(UPLINK_TOPICS, settings.share_group) if store else UPLINK_TOPICS
    uplinks = BrokerLink(target, f"{own}-chirpstack", topics, inflight=settings.mqtt_inflight)
    try:
        await stack.enter_async_context(uplinks)
    except ConnectionError as exc:
        raise ConnectionError(
            f"{exc}; the broker is CITYIOT_CHIRPSTACK_MQTT_URL's ({target!r}), ChirpStack's "
            "MQTT integration"
        ) from None
    commands = None
    if store:
        commands = BrokerLink(
            settings.mqtt_target(),
            f"{own}-lorawan-commands",
            shared_topics(COMMAND_TOPICS, settings.share_group),
        )
        await stack.enter_async_context(commands)
    ingest.link_chirpstack(uplinks, commands)
    log.info("event=chirpstack_linked broker=%s:%s store=%s", target.host, target.port, store)
