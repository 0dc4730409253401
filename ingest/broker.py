"""The ingest's MQTT link: paho-mqtt driven by the asyncio loop, with manual acks.

Why paho directly and not aiomqtt: the ingest acknowledges a QoS 1 message only after its
readings are durably stored (at-least-once), and it takes messages in batches — one
wake-up per burst, not one await per message. aiomqtt 2.x exposes neither manual acks
nor batched hand-off; paho 2.x has both (``manual_ack=True``, ``Client.ack``) and
documents driving its socket from an asyncio loop, which is what this module does.

Acks carry the connection's generation: after a reconnect the broker redelivers what
was not acknowledged, and a message id of the old connection must never be acked on the
new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cityiot.settings import MqttTarget

log = logging.getLogger("cityiot.ingest.broker")

READ_BURST = 256  # packets read per socket wake-up, at most


@dataclass(slots=True)
class Delivery:
    """One received message: what the pipeline needs, and what acknowledging it takes."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


@dataclass(slots=True)
class LinkStats:
    received: int = 0
    acked: int = 0
    stale_acks: int = 0  # acks skipped: their connection is gone; the broker redelivers
    redelivered: int = 0  # messages flagged DUP by the broker
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""
    connected: bool = False
    paused: bool = False


@dataclass(slots=True)
class _Wake:
    event: asyncio.Event = field(default_factory=asyncio.Event)


class BrokerLink:
    """Subscribes to ``topics`` (QoS 1, persistent session) and hands over batches.

    Use as ``async with BrokerLink(...) as link:`` then ``await link.next_batch()``;
    acknowledge each delivery with ``link.ack(deliveries)`` once it is safe.
    """

    def __init__(
        self,
        target: MqttTarget,
        client_id: str,
        topics: Iterable[str],
        *,
        qos: int = 1,
        clean_session: bool = False,
        max_pending: int = 20_000,
        max_pending_bytes: int = 32 * 1024 * 1024,
        keepalive_s: int = 30,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.target = target
        self.topics = list(topics)
        self.qos = qos
        self.max_pending = max_pending
        # Also a bound in bytes: batched payloads make a message count a poor measure.
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self.keepalive_s = keepalive_s
        self.reconnect_max_s = reconnect_max_s
        self.stats = LinkStats()
        self.generation = 0
        self._pending: list[Delivery] = []
        self._wake = _Wake()
        self._connected = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: socket.socket | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if target.username:
            client.username_pw_set(target.username, target.password)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> BrokerLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout_s: float = 15.0) -> None:
        """Connect (retrying with backoff) until the broker accepts, or ``timeout_s``."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._misc_task = asyncio.create_task(self._misc(), name="mqtt-misc")
        self._reconnect_task = asyncio.create_task(self._keep_connected(), name="mqtt-reconnect")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            await self.close()
            raise ConnectionError(
                f"cannot connect to the MQTT broker at {self.target.host}:{self.target.port}: "
                f"{self.stats.last_error or 'no answer'}; check CITYIOT_MQTT_URL"
            ) from None

    async def close(self) -> None:
        self._closing = True
        for task in (self._reconnect_task, self._misc_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sock is not None:
            self._client.disconnect()
            # Let the DISCONNECT packet go out before the socket closes.
            for _ in range(10):
                if self._sock is None:
                    break
                await asyncio.sleep(0.01)
        self._detach_socket()
        self._wake.event.set()

    @property
    def waiting(self) -> int:
        """Deliveries received and not yet taken by ``next_batch``."""
        return len(self._pending)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- the pipeline's side -------------------------------------------------------------

    async def next_batch(self, timeout_s: float | None = None) -> list[Delivery]:
        """Everything received since the last call; waits for at least one message.

        Returns an empty list after ``timeout_s`` or when the link is closing.
        """
        if not self._pending and not self._closing:
            self._wake.event.clear()
            if timeout_s is None:
                await self._wake.event.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.event.wait(), timeout_s)
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        if self.stats.paused:
            self._resume_reading()
        return batch

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge QoS 1 deliveries of the current connection, in order."""
        generation = self.generation
        client = self._client
        for d in deliveries:
            if d.qos == 0:
                continue
            if d.generation != generation:
                self.stats.stale_acks += 1
                continue
            client.ack(d.mid, d.qos)
            self.stats.acked += 1

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish (e.g. an alert event); queued by paho while disconnected."""
        self._client.publish(topic, payload, qos=qos)

    # -- paho callbacks (run inside the loop's reader/writer callbacks) ------------------

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.dup:
            self.stats.redelivered += 1
        self._pending.append(Delivery(msg.topic, msg.payload, msg.mid, msg.qos, self.generation))
        self._pending_bytes += len(msg.payload)
        self.stats.received += 1
        if len(self._pending) == 1:
            self._wake.event.set()
        if not self.stats.paused and (
            len(self._pending) >= self.max_pending or self._pending_bytes >= self.max_pending_bytes
        ):
            self._pause_reading()

    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self.stats.last_error = f"broker refused the connection: {rc}"
            log.error("event=mqtt_refused reason=%s", rc)
            return
        self.generation += 1
        self.stats.connects += 1
        self.stats.connected = True
        client.subscribe([(t, self.qos) for t in self.topics])
        log.info(
            "event=mqtt_connected broker=%s:%s session_present=%s",
            self.target.host,
            self.target.port,
            flags.session_present,
        )
        self._connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        self._connected.clear()
        self.stats.connected = False
        self.stats.disconnects += 1
        if not self._closing:
            self.stats.last_error = f"disconnected: {rc}"
            log.warning("event=mqtt_disconnected reason=%s", rc)

    # paho's connect() runs in a worker thread (it blocks on TCP connect), so socket
    # callbacks may arrive off the loop's thread: hop onto it before touching the loop.

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, _u: object, sock: socket.socket) -> None:
        self._in_loop(self._attach_socket, sock)

    def _on_socket_close(self, _c: mqtt.Client, _u: object, sock: socket.socket) -> None:
        self._in_loop(self._detach_socket)

    def _on_register_write(self, client: mqtt.Client, _u: object, sock: socket.socket) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.add_writer, sock, client.loop_write)

    def _on_unregister_write(self, _c: mqtt.Client, _u: object, sock: socket.socket) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.remove_writer, sock)

    # -- internals -----------------------------------------------------------------------

    def _attach_socket(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._sock = sock
        if not self.stats.paused:
            self._loop.add_reader(sock, self._read)

    def _read(self) -> None:
        """Read what the socket holds, up to ``READ_BURST`` packets per wake-up.

        paho's ``loop_read`` takes one packet per call (when no QoS 2 flow is open); one
        event-loop round per message cost more than the message itself. A non-blocking
        peek says whether more is waiting.
        """
        sock = self._sock
        loop_read = self._client.loop_read
        for _ in range(READ_BURST):
            loop_read()
            if self.stats.paused or self._sock is not sock or sock is None:
                return
            try:
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    return  # closed: the next loop_read reports it
            except OSError:  # BlockingIOError: nothing more now
                return

    def _detach_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
        self._sock = None

    def _pause_reading(self) -> None:
        # Stop reading the socket: the broker holds the rest (TCP and its inflight window).
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
        self.stats.paused = True

    def _resume_reading(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock, self._read)
        self.stats.paused = False

    async def _misc(self) -> None:
        while True:
            # Keep-alive pings and retries; paused reading must not starve the ping either.
            self._client.loop_misc()
            await asyncio.sleep(1.0)

    async def _keep_connected(self) -> None:
        delay = 0.2
        while not self._closing:
            if self._sock is None:
                self._connected.clear()
                try:
                    rc = await asyncio.to_thread(
                        self._client.connect, self.target.host, self.target.port, self.keepalive_s
                    )
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        raise ConnectionError(str(rc))
                    delay = 0.2
                except (OSError, ConnectionError) as exc:
                    self.stats.last_error = f"connect failed: {exc}"
                    log.warning("event=mqtt_connect_failed retry_s=%.1f error=%s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
            await asyncio.sleep(0.2)
