"""Linked control: rule actions that command devices, and the devices' acknowledgements
(docs/design.md §4).

A command goes to ``city/{vendor}/{device_id}/command`` as
``{"id": "<uuid hex>", "name": "...", "args": {...}}`` at QoS 1; the device answers on
``city/{vendor}/{device_id}/ack`` with ``{"id": "<command id>", "ok": true, "message": "..."}``.
Every command is a ``Command`` row, written before it is published, so an ack can never
arrive for a command the platform has not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiomqtt
import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.domain.catalogue import KINDS, RESERVED_VENDORS, is_valid_id
from cityiot.ingest.codecs import PayloadError, load_json
from cityiot.rules.events import Clock
from cityiot.storage.tables.control import Command
from cityiot.storage.tables.registry import Device
from cityiot.storage.writes import writing

log = logging.getLogger("cityiot.rules.control")

SessionFactory = async_sessionmaker[AsyncSession]
# paho's ``publish`` (returns at once) or aiomqtt's (a coroutine): topic, payload, qos.
Publish = Callable[[str, bytes, int], None | Awaitable[Any]]

ACK_SUBSCRIPTION = "city/+/+/ack"
COMMAND_QOS = 1
MAX_ACK_MESSAGE = 1000  # characters of a device's ack message kept


def command_topic(vendor: str, device_id: str) -> str:
    """``city/{vendor}/{device_id}/command``."""
    return f"city/{vendor}/{device_id}/command"


def _now(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock(), dt.UTC)


class CommandSender:
    """Sends commands to devices and records their acknowledgements.

    ``publish(topic, payload, qos)`` is the platform's MQTT client (sync or async);
    ``clock`` gives the ``sent_at`` and ``acked_at`` times.
    """

    def __init__(self, session_factory: SessionFactory, publish: Publish, clock: Clock) -> None:
        self._sessions = session_factory
        self._publish = publish
        self._clock = clock

    async def send(
        self,
        device_id: str,
        vendor: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        rule: str | None = None,
        alert_id: str | None = None,
    ) -> str:
        """Record the command, publish it at QoS 1 and return its id (uuid hex).

        Raises ``ValueError`` for an id outside the access standard or an empty name. When the
        publish fails the row is kept with ``ok=False`` and the reason, and the error re-raised.
        """
        if not is_valid_id(vendor) or vendor in RESERVED_VENDORS:
            raise ValueError(f"vendor id {vendor!r} is not valid: use [A-Za-z0-9_-]{{1,64}}")
        if not is_valid_id(device_id):
            raise ValueError(f"device id {device_id!r} is not valid: use [A-Za-z0-9_-]{{1,64}}")
        if not name or len(name) > 64:
            raise ValueError(f"command name {name!r} is not valid: give 1 to 64 characters")
        command_id = uuid.uuid4().hex
        arguments = dict(args or {})
        payload = orjson.dumps({"id": command_id, "name": name, "args": arguments})
        async with writing(self._sessions) as session:
            session.add(
                Command(
                    id=command_id,
                    device_id=device_id,
                    vendor=vendor,
                    name=name,
                    args=arguments,
                    rule=rule,
                    alert_id=alert_id,
                    sent_at=_now(self._clock),
                    message="",
                )
            )
        try:
            result = self._publish(command_topic(vendor, device_id), payload, COMMAND_QOS)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            async with writing(self._sessions) as session:
                await session.execute(
                    update(Command)
                    .where(Command.id == command_id)
                    .values(ok=False, message=f"not sent: {exc}"[:MAX_ACK_MESSAGE])
                )
            raise
        log.info(
            "event=command_sent id=%s device=%s vendor=%s name=%s rule=%s",
            command_id,
            device_id,
            vendor,
            name,
            rule,
        )
        return command_id

    async def send_many(
        self,
        targets: Iterable[tuple[str, str]],
        name: str,
        args: Mapping[str, Any] | None = None,
        rule: str | None = None,
        alert_id: str | None = None,
    ) -> list[str]:
        """``send`` to each ``(device_id, vendor)`` (e.g. from ``group_targets``), in order."""
        return [
            await self.send(device_id, vendor, name, args, rule=rule, alert_id=alert_id)
            for device_id, vendor in targets
        ]

    async def record_ack(self, topic: str, payload: bytes) -> bool:
        """Record a device's ack from ``city/{vendor}/{device_id}/ack``; True when recorded.

        An ack that cannot be matched — malformed topic or JSON, unknown command id, a command
        of another device, already acknowledged — is logged and answered False. Never raises.
        """
        try:
            return await self._record_ack(topic, payload)
        except Exception as exc:  # e.g. the database is down: the listener must go on
            log.warning("event=ack_not_recorded topic=%s error=%s", topic[:200], exc)
            return False

    async def _record_ack(self, topic: str, payload: bytes) -> bool:
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != "city" or parts[3] != "ack":
            log.warning("event=ack_ignored reason=bad_topic topic=%s", topic[:200])
            return False
        vendor, device_id = parts[1], parts[2]
        try:
            body = load_json(payload)  # the ingest's size and depth limits
        except PayloadError as exc:
            log.warning(
                "event=ack_ignored reason=malformed_json topic=%s error=%s", topic[:200], exc
            )
            return False
        if not isinstance(body, dict):
            log.warning("event=ack_ignored reason=not_an_object topic=%s", topic[:200])
            return False
        command_id, ok, message = body.get("id"), body.get("ok"), body.get("message", "")
        if not isinstance(command_id, str) or not command_id or not isinstance(ok, bool):
            log.warning(
                "event=ack_ignored reason=missing_id_or_ok topic=%s (need a string id and a "
                "boolean ok)",
                topic[:200],
            )
            return False
        if not isinstance(message, str):
            message = orjson.dumps(message).decode()
        async with writing(self._sessions) as session:
            result = await session.execute(
                update(Command)
                .where(
                    Command.id == command_id,
                    Command.device_id == device_id,
                    Command.vendor == vendor,
                    Command.acked_at.is_(None),
                )
                .values(acked_at=_now(self._clock), ok=ok, message=message[:MAX_ACK_MESSAGE])
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                log.info("event=command_acked id=%s device=%s ok=%s", command_id, device_id, ok)
                return True
            known = (
                await session.execute(
                    select(Command.device_id, Command.vendor, Command.acked_at).where(
                        Command.id == command_id[:64]
                    )
                )
            ).one_or_none()
        if known is None:
            reason = "unknown_command"
        elif (known.device_id, known.vendor) != (device_id, vendor):
            reason = "other_device"
        else:
            reason = "already_acked"
        log.warning(
            "event=ack_ignored reason=%s id=%s topic=%s", reason, command_id[:64], topic[:200]
        )
        return False

    async def listen_for_acks(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        stop: asyncio.Event,
        *,
        ready: asyncio.Event | None = None,
        client_id: str | None = None,
        reconnect_s: float = 5.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """Subscribe to ``city/+/+/ack`` and record every ack until ``stop`` is set.

        Reconnects after ``reconnect_s`` when the broker goes away. ``ready`` is set once the
        subscription is active. With a ``client_id`` the broker keeps a persistent session, so
        acks sent while the listener reconnects are delivered when it is back (QoS 1).
        """
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    hostname=host,
                    port=port,
                    username=username,
                    password=password,
                    identifier=client_id,
                    clean_session=client_id is None,
                    tls_context=tls_context,  # mqtts:// (MqttTarget.ssl_context)
                ) as client:
                    await client.subscribe(ACK_SUBSCRIPTION, qos=1)
                    log.info("event=ack_listener_subscribed host=%s port=%s", host, port)
                    if ready is not None:
                        ready.set()
                    await _until_stopped(self._consume(client), stop)
            except aiomqtt.MqttError as exc:
                log.warning(
                    "event=ack_listener_disconnected retry_s=%.1f error=%s", reconnect_s, exc
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=reconnect_s)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                data = bytes(payload)
            else:
                data = b"" if payload is None else str(payload).encode()
            await self.record_ack(str(message.topic), data)


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends (its error propagates) or ``stop`` is set (it is cancelled)."""
    worker = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (worker, stopper):
            task.cancel()
        await asyncio.gather(worker, stopper, return_exceptions=True)
    if worker.done() and not worker.cancelled() and worker.exception() is not None:
        raise worker.exception()  # type: ignore[misc]


async def group_targets(
    session_factory: SessionFactory,
    kind: str,
    district: str,
    exclude_decommissioned: bool = True,
) -> list[tuple[str, str]]:
    """``(device_id, vendor)`` of every device of ``kind`` in ``district``, by device id.

    E.g. the streetlight group of a district, to switch it on. Raises ``ValueError`` for an
    unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}: use one of {', '.join(KINDS)}")
    query = select(Device.id, Device.vendor_id).where(
        Device.kind == kind, Device.district == district
    )
    if exclude_decommissioned:
        query = query.where(Device.decommissioned_at.is_(None))
    async with session_factory() as session:
        rows = await session.execute(query.order_by(Device.id))
        return [(row.id, row.vendor_id) for row in rows]


__all__ = [
    "ACK_SUBSCRIPTION",
    "COMMAND_QOS",
    "CommandSender",
    "Publish",
    "command_topic",
    "group_targets",
]
