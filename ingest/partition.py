"""Scale-out: several ingest workers share the subscription; devices are partitioned among them.

Each worker is ``cityiot ingest --rules`` with ``CITYIOT_SHARE_GROUP`` (its telemetry and
status subscriptions become ``$share/<group>/…``, so the broker hands each message to one
worker of the group), ``CITYIOT_WORKERS`` = N and ``CITYIOT_WORKER_INDEX`` = k. Storage needs
no coordination: a message is stored by the worker that received it, acknowledged after
that, and redelivered to its session if the worker dies first.

Rule state and presence need one home per device. Mosquitto's ``$share`` is round-robin, so
a device's messages reach every worker; the home is :func:`owner` (a stable hash of the
device id, the same in every process). After storing a batch a worker hands the readings
of its own devices to its rules engine and publishes the others, one message per owning
worker (:class:`Forwarded`, msgspec JSON, QoS 1), on ``cityiot/rules/{owner}``; each worker
reads its own topic through a persistent session of its own (``<client id>-rules``) and
feeds the readings to its rules engine and presence. Status messages (``{"online": …}``)
of another worker's devices travel the same way. With one worker nothing is forwarded.

Start N workers by hand::

    CITYIOT_SHARE_GROUP=cityiot CITYIOT_WORKERS=3 CITYIOT_WORKER_INDEX=0 cityiot ingest --rules
    … CITYIOT_WORKER_INDEX=1 …, … CITYIOT_WORKER_INDEX=2 …

or from Python with :func:`start_workers` (used by the scale-out tests and the benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cityiot.domain.settings import Settings
from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.pipeline import Ingest
from cityiot.ingest.presence import NETWORK_LINKS, Presence
from cityiot.ingest.validate import Reading
from cityiot.storage.influx import InfluxError

log = logging.getLogger("cityiot.ingest.partition")

RULES_TOPIC = "cityiot/rules/{index}"  # readings (and statuses) for worker {index}

ReadingsSink = Callable[[list[Reading]], Awaitable[None]]


def owner(device_id: str, workers: int) -> int:
    """The worker, ``0..workers-1``, that owns ``device_id``: its rule state and presence.

    CRC-32 of the UTF-8 id modulo ``workers``: stable across processes, machines and Python
    versions (never the salted built-in ``hash``), so every worker agrees without talking.
    """
    if workers <= 1:
        return 0
    return zlib.crc32(device_id.encode()) % workers


def rules_topic(index: int) -> str:
    """The internal topic on which worker ``index`` receives its devices' readings."""
    return RULES_TOPIC.format(index=index)


def shared_topics(topics: Iterable[str], group: str) -> tuple[str, ...]:
    """``topics`` as shared subscriptions of ``group`` (``$share/<group>/<topic>``);
    unchanged when ``group`` is empty."""
    return tuple(f"$share/{group}/{t}" if group else t for t in topics)


@dataclass(frozen=True, slots=True)
class Partition:
    """Worker ``index`` of ``workers``: which devices are its own."""

    workers: int
    index: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Partition:
        return cls(settings.workers, settings.worker_index)

    def owner_of(self, device_id: str) -> int:
        """:func:`owner` of ``device_id`` among these workers."""
        return owner(device_id, self.workers)

    def owns(self, device_id: str) -> bool:
        return owner(device_id, self.workers) == self.index

    @property
    def topic(self) -> str:
        return rules_topic(self.index)


class StatusChange(msgspec.Struct, array_like=True):
    """A device's own ``{"online": …}`` message, for the worker owning its presence."""

    device_id: str
    online: bool
    at_ms: int


class Forwarded(msgspec.Struct, omit_defaults=True):
    """One message on ``cityiot/rules/{k}``: stored readings and status changes of the
    devices worker ``k`` owns, from one stored batch (or one status flush) of another."""

    readings: list[Reading] = []
    statuses: list[StatusChange] = []


class PartitionedPresence(Presence):
    """Presence (online/offline) tracked only for the devices this worker owns.

    A round-robin share gives each worker a fraction of a device's messages, so every
    worker's own silence timer would see it go quiet and come back again and again. Here a
    device another worker owns only advances its ``last_seen``; its status messages wait in
    :attr:`outbox` for the owner, and the owner learns of its traffic from the forwarded
    readings (:meth:`Partitioner.take`).
    """

    def __init__(self, owns: Callable[[str], bool]) -> None:
        super().__init__()
        self.owns = owns
        self.outbox: list[StatusChange] = []

    def seen(self, device_id: str, at_ms: int, interval_s: int) -> bool:
        if self.owns(device_id):
            return super().seen(device_id, at_ms, interval_s)
        self.dirty_seen[device_id] = at_ms
        return False

    def resume(self, device_id: str, now_ms: int, interval_s: int) -> bool:
        return self.owns(device_id) and super().resume(device_id, now_ms, interval_s)

    def says(
        self, device_id: str, online: bool, at_ms: int, interval_s: int, link: str = "mqtt"
    ) -> bool:
        if self.owns(device_id):
            return super().says(device_id, online, at_ms, interval_s, link)
        if online or link not in NETWORK_LINKS:  # a network's "offline": see Presence.says
            self.outbox.append(StatusChange(device_id, online, at_ms))
        return False


@dataclass(slots=True)
class PartitionCounters:
    """Running totals of the partition's traffic (``cityiot_partition_*`` on /metrics)."""

    local: int = 0  # stored readings of own devices, handed straight to the rules engine
    forwarded: int = 0  # stored readings published to the worker owning their device
    forward_messages: int = 0
    received: int = 0  # readings other workers forwarded here
    received_messages: int = 0
    statuses_forwarded: int = 0
    statuses_received: int = 0
    misrouted: int = 0  # forwarded here for a device another worker owns: check CITYIOT_WORKERS
    undecodable: int = 0  # messages on our topic that are not a Forwarded: dropped
    status_points_dropped: int = 0  # presence points InfluxDB did not take (state, not data)


class Partitioner:
    """Routes each sealed batch's readings to the worker owning their devices.

    Hang :meth:`on_readings` on the ingest (``ingest.on_readings``) and set :attr:`rules` to
    the rules engine's ``submit``; run :meth:`run` to receive what other workers forward.
    With one worker it only hands every reading to :attr:`rules`.
    """

    def __init__(
        self,
        partition: Partition,
        ingest: Ingest,
        link: BrokerLink | None,
        *,
        rules: ReadingsSink | None = None,
        flush_s: float = 0.2,
    ) -> None:
        self.partition = partition
        self.ingest = ingest
        self.link = link  # our cityiot/rules/{k} subscription; None with one worker
        self.rules = rules
        self.flush_s = flush_s
        self.counters = PartitionCounters()
        presence = ingest.presence
        self.presence = presence if isinstance(presence, PartitionedPresence) else None
        self._encode = msgspec.json.Encoder()
        self._decode = msgspec.json.Decoder(Forwarded)
        self._status_lines: list[str] = []

    @property
    def owns(self) -> Callable[[str], bool] | None:
        """The ownership test the rules engine filters its state by; None: owns everything."""
        return self.partition.owns if self.partition.workers > 1 else None

    async def on_readings(self, readings: list[Reading]) -> None:
        """The ingest's sink: own devices' readings to the rules engine, the others published
        to their owners, one QoS 1 message per owner (as the batch goes to be stored)."""
        workers = self.partition.workers
        if workers == 1:
            if self.rules is not None:
                await self.rules(readings)
            return
        index = self.partition.index
        own: list[Reading] = []
        others: dict[int, list[Reading]] = {}
        for reading in readings:
            k = owner(reading.device_id, workers)
            if k == index:
                own.append(reading)
            else:
                others.setdefault(k, []).append(reading)
        for k, batch in others.items():
            self._publish(k, Forwarded(readings=batch))
            self.counters.forwarded += len(batch)
        self.counters.local += len(own)
        if own and self.rules is not None:
            await self.rules(own)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: take what other workers forward here (acked once handed to the
        rules engine) and send our status messages of their devices on. Call ``stop`` after
        the ingest has stopped, so its last batches are forwarded first; what others forward
        after that stays in our session for the next start."""
        link = self.link
        if link is None:
            await stop.wait()
            return
        done = asyncio.Event()
        writer = asyncio.create_task(self._write_status_points(done), name="partition-status")
        try:
            while not stop.is_set():
                self._flush_statuses()
                await self._receive(await link.next_batch(self.flush_s))
            await self._receive(await link.next_batch(0))  # what had arrived already
        except Exception:  # unacked, it comes back at the next start: say so now
            log.exception("event=partition_receiver_failed")
            raise
        finally:
            self._flush_statuses()
            done.set()  # the writer writes what is left, then returns
            await writer

    async def _receive(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            assert self.link is not None
            await self.take(deliveries)
            self.link.ack(deliveries)

    async def take(self, deliveries: Iterable[Delivery]) -> None:
        """Feed forwarded readings to presence and the rules engine, statuses to presence."""
        readings: list[Reading] = []
        for delivery in deliveries:
            try:
                message = self._decode.decode(delivery.payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                self.counters.undecodable += 1
                log.error("event=forward_undecodable topic=%s error=%s", delivery.topic, exc)
                continue
            self.counters.received_messages += 1
            self.counters.received += len(message.readings)
            self.counters.statuses_received += len(message.statuses)
            readings += message.readings
            self._presence(message)
        if readings and self.rules is not None:
            await self.rules(readings)

    # -- internals -----------------------------------------------------------------------

    def _publish(self, index: int, message: Forwarded) -> None:
        self.ingest.link.publish(rules_topic(index), self._encode.encode(message), qos=1)
        self.counters.forward_messages += 1

    def _flush_statuses(self) -> None:
        presence = self.presence
        if presence is None or not presence.outbox:
            return
        by_owner: dict[int, list[StatusChange]] = {}
        for change in presence.outbox:
            by_owner.setdefault(self.partition.owner_of(change.device_id), []).append(change)
        presence.outbox = []
        for k, changes in by_owner.items():
            self._publish(k, Forwarded(statuses=changes))
            self.counters.statuses_forwarded += len(changes)

    def _presence(self, message: Forwarded) -> None:
        presence = self.presence
        if presence is None:
            return
        devices = self.ingest.devices
        now_ms = int(time.time() * 1000)
        for reading in message.readings:
            device = devices.get(reading.device_id)
            if device is None:
                continue
            if not self.partition.owns(device.device_id):
                self._misrouted(device.device_id)
            if presence.seen(device.device_id, now_ms, device.report_interval_s):
                self._status_lines.append(f"{device.status_key} online=true {now_ms}\n")
        for change in message.statuses:
            device = devices.get(change.device_id)
            if device is not None and presence.says(
                device.device_id, change.online, change.at_ms, device.report_interval_s
            ):
                flag = "true" if change.online else "false"
                self._status_lines.append(f"{device.status_key} online={flag} {change.at_ms}\n")

    def _misrouted(self, device_id: str) -> None:
        self.counters.misrouted += 1
        if self.counters.misrouted % 1000 == 1:
            log.warning(
                "event=forward_misrouted device=%s owner=%d index=%d workers=%d count=%d "
                "hint=every worker needs the same CITYIOT_WORKERS",
                device_id,
                self.partition.owner_of(device_id),
                self.partition.index,
                self.partition.workers,
                self.counters.misrouted,
            )

    async def _write_status_points(self, done: asyncio.Event) -> None:
        """Presence points of forwarded traffic to InfluxDB, about once a second and once
        more when ``done``. They are state, not readings: when InfluxDB refuses them they
        are counted and dropped (the registry's online state is written by the ingest's
        presence flush regardless)."""
        influx = self.ingest.influx
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
            lines, self._status_lines = self._status_lines, []
            if lines and influx is not None:
                try:
                    await influx.write("".join(lines).encode())
                except (InfluxError, OSError) as exc:
                    self.counters.status_points_dropped += len(lines)
                    log.warning("event=status_points_dropped points=%d error=%s", len(lines), exc)
            if done.is_set():
                return


@asynccontextmanager
async def partition_stage(settings: Settings, ingest: Ingest) -> AsyncIterator[Partitioner]:
    """This worker's :class:`Partitioner`, hung on ``ingest``; with several workers also its
    ``cityiot/rules/{index}`` subscription (client ``<client id>-rules``, persistent session)
    and presence kept for its own devices only."""
    partition = Partition.from_settings(settings)
    if partition.workers == 1:
        partitioner = Partitioner(partition, ingest, None)
        ingest.on_readings = partitioner.on_readings
        yield partitioner
        return
    ingest.presence = PartitionedPresence(partition.owns)
    async with BrokerLink(
        settings.mqtt_target(), f"{settings.worker_client_id}-rules", [partition.topic]
    ) as link:
        partitioner = Partitioner(partition, ingest, link)
        ingest.on_readings = partitioner.on_readings
        log.info(
            "event=partition_started workers=%d index=%d topic=%s share_group=%s",
            partition.workers,
            partition.index,
            partition.topic,
            settings.share_group,
        )
        yield partitioner


# -- starting workers -------------------------------------------------------------------


def worker_env(
    index: int, workers: int, share_group: str = "cityiot", base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of worker ``index`` of ``workers``: ``base`` (default: this process's
    environment) with the share group, worker count and index set."""
    env = dict(os.environ if base is None else base)
    env.update(
        CITYIOT_SHARE_GROUP=share_group,
        CITYIOT_WORKERS=str(workers),
        CITYIOT_WORKER_INDEX=str(index),
    )
    return env


def start_workers(
    workers: int,
    *,
    indexes: Iterable[int] | None = None,
    share_group: str = "cityiot",
    base: Mapping[str, str] | None = None,
    rules: bool = True,
    metrics_ports: Sequence[int] | None = None,
    log_dir: Path | None = None,
    cwd: Path | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Start ``cityiot ingest [--rules]`` workers of a group of ``workers`` as subprocesses:
    every index ``0..workers-1``, or only ``indexes`` (e.g. one to restart).

    Each takes its settings from ``base`` (default: this environment) plus
    :func:`worker_env`; worker ``k`` serves its counters on ``metrics_ports[k]`` when given.
    With ``log_dir`` its output is appended to ``worker-<k>.log`` there, else it goes to this
    process's stderr. Stop them with SIGTERM (each drains what it took before exiting).
    """
    argv = [sys.executable, "-m", "cityiot", "ingest"]
    if rules:
        argv.append("--rules")
    processes = []
    for k in range(workers) if indexes is None else indexes:
        env = worker_env(k, workers, share_group, base)
        if metrics_ports is not None:
            env["CITYIOT_METRICS_PORT"] = str(metrics_ports[k])
        with contextlib.ExitStack() as files:
            out = None
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                out = files.enter_context((log_dir / f"worker-{k}.log").open("ab"))
            processes.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT if out is not None else None,
                )
            )
    return processes
