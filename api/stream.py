"""The API's own MQTT connection: alert events in for the live stream, the API's events out.

``async with StreamHub(settings, sessions) as hub:`` connects (clean session, a client id
unique to this process) and keeps reconnecting with backoff in a background task. It
subscribes ``city/alerts/#`` and fans every alert event out to the SSE subscribers that
want it; a device's telemetry topic is subscribed while someone watches that device, and
its readings are decoded and validated like the ingest does before they are handed on.

Each subscriber has a bounded queue: a client that does not keep up is dropped (told so
with a last ``dropped`` event) instead of growing the API's memory. :meth:`StreamHub.publish`
sends the API's own alert events (an acknowledgement) at QoS 1; while the broker is away
they wait in a bounded outbox and go out on reconnect.

No message can stop the hub: payloads go through the ingest's own size and depth limits, a
message that still makes handling fail is counted and skipped, and should the background
task end all the same it is restarted with backoff, logged with its traceback and counted
(:meth:`StreamHub.metrics`). A retained telemetry message is a replay, never shown as live.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from cityiot.domain.catalogue import KINDS
from cityiot.domain.settings import Settings
from cityiot.domain.sun import CITY_TZ
from cityiot.ingest.codecs import Codec, PayloadError, default_codecs, load_json
from cityiot.ingest.validate import Rejected, Validator

log = logging.getLogger("cityiot.api.stream")

ALERTS = "city/alerts/#"
QUEUE_SIZE = 256  # events waiting for one SSE client before it is dropped as too slow
OUTBOX_SIZE = 10_000  # API events kept while the broker is away
INCOMING_SIZE = 10_000  # MQTT messages waiting for the fan-out
BACKOFF_S = (0.5, 30.0)  # first and longest wait between connection attempts

Wants = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class WatchedDevice:
    """A device whose readings a subscriber asked for, with what decoding them needs."""

    device_id: str
    vendor: str
    kind: str
    codec: str = "json"
    # Its registry attributes: a codec's mapping may read them (depth_cm - distance / 10).
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/telemetry"


@dataclass(eq=False)
class Subscription:
    """One SSE client: the alert events it may see and, optionally, one device's readings.

    Iterate it for ``(event, data)`` pairs; iteration ends once the hub dropped it.
    """

    wants: Wants
    device: WatchedDevice | None = None
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    dropped: bool = False

    def offer(self, event: str, data: dict[str, Any]) -> bool:
        """Queue one event; False (and the subscription is closed) when the queue is full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait((event, data))
            return True
        except asyncio.QueueFull:
            self.finish(
                "dropped", {"reason": f"the client fell {QUEUE_SIZE} events behind; reconnect"}
            )
            return False

    def finish(self, event: str, data: dict[str, Any]) -> None:
        """End the iteration with a last ``event`` saying why, in place of what still waits."""
        if self.dropped:
            return
        self.dropped = True
        # Make room for the farewell, so the client learns why its stream ends.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait((event, data))
        self.queue.put_nowait(None)

    def close(self) -> None:
        """End the iteration (the hub is shutting down)."""
        if not self.dropped:
            self.dropped = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._events()

    async def _events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item


class StreamHub(contextlib.AbstractAsyncContextManager["StreamHub"]):
    """Alert events (and watched devices' readings) from the broker to SSE subscribers."""

    def __init__(
        self,
        settings: Settings,
        sessions: Any,
        *,
        connect_wait_s: float = 3.0,
        codecs: dict[str, Codec] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.target = settings.mqtt_target()
        # Built once (it reads the CA and certificate files): None for plain mqtt://.
        self.tls_context = self.target.ssl_context()
        # Why the last connection attempt failed, in words that say what to fix.
        self.last_error: str | None = None
        # Unique per process and clean: an API replica never takes over another's session.
        self.client_id = f"cityiot-api-{os.getpid()}-{secrets.token_hex(3)}"
        self.connect_wait_s = connect_wait_s
        self.subscriptions: set[Subscription] = set()
        # The API's codec book (kept fresh by the app), else the shipped codecs.
        self.codecs: dict[str, Codec] = (
            codecs
            if codecs is not None
            else default_codecs(settings.max_batch_readings, settings.max_payload_bytes)
        )
        self.validator = Validator(settings.retention_s, settings.future_tolerance_s)
        self.outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self.dropped_events = 0  # API events lost because the outbox overflowed
        self.restarts = 0  # times the background task ended by surprise and was restarted
        self.unreadable: collections.Counter[str] = collections.Counter()  # refused, by topic kind
        self.message_errors: collections.Counter[str] = collections.Counter()  # by exception
        self._watched: dict[str, tuple[WatchedDevice, int]] = {}  # topic → (device, watchers)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending = asyncio.Event()
        self._draining = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        """Whether the hub is connected and subscribed (for ``/readyz``)."""
        return self._connected.is_set()

    @property
    def draining(self) -> asyncio.Event:
        """Set when the server is shutting down: open streams end."""
        return self._draining

    async def __aenter__(self) -> StreamHub:
        self._task = asyncio.create_task(self._supervise(), name="api-stream-hub")
        # A short wait, so the first requests find it connected; a missing broker only logs.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self.connect_wait_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.outbox:
            log.warning("event=stream_hub_unsent count=%d", len(self.outbox))

    def metrics(self) -> dict[str, int]:
        """Counters for ``/metrics`` (``cityiot_api_stream_*``)."""
        return {
            "connected": int(self.connected),
            "restarts_total": self.restarts,
            "message_errors_total": sum(self.message_errors.values()),
            "unreadable_messages_total": sum(self.unreadable.values()),
            "dropped_events_total": self.dropped_events,
            "subscribers": len(self.subscriptions),
        }

    def drain(self) -> None:
        """End every open stream (call it before stopping the HTTP server)."""
        self._draining.set()
        for subscription in list(self.subscriptions):
            subscription.close()
        self.subscriptions.clear()

    # -- out --------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` on ``topic`` at QoS 1, now or as soon as the broker is back."""
        if len(self.outbox) >= OUTBOX_SIZE:
            self.outbox.popleft()
            self.dropped_events += 1
            log.warning("event=stream_hub_outbox_full dropped=%d", self.dropped_events)
        self.outbox.append((topic, payload))
        self._pending.set()

    async def publish_acked(self, topic: str, payload: bytes, timeout_s: float) -> None:
        """Send ``payload`` on ``topic`` at QoS 1 and return once the broker has it (PUBACK).
        Raises ``ConnectionError`` when the hub is not connected or the broker does not
        answer within ``timeout_s``: the caller's message is not safe."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise ConnectionError(f"the API is not connected to the broker at {self.target!r}")
        try:
            await client.publish(topic, payload, qos=1, timeout=timeout_s)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"the broker did not take the message: {exc}") from exc

    # -- subscribers ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self, wants: Wants, device: WatchedDevice | None = None
    ) -> AsyncIterator[Subscription]:
        """A subscription for the duration of the block; with ``device``, its readings too.

        When it returns, the alert subscription is live if the hub is connected, and the
        device's telemetry topic has been subscribed (or will be on reconnect).
        """
        subscription = Subscription(wants, device)
        self.subscriptions.add(subscription)
        if self._draining.is_set():
            subscription.close()
        try:
            if device is not None:
                await self._watch(device)
            yield subscription
        finally:
            self.subscriptions.discard(subscription)
            if device is not None:
                await self._unwatch(device)

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    async def _watch(self, device: WatchedDevice) -> None:
        topic = device.topic
        _, watchers = self._watched.get(topic, (device, 0))
        self._watched[topic] = (device, watchers + 1)
        client = self._client
        if watchers == 0 and client is not None:
            try:
                await client.subscribe(topic, qos=0)
            except aiomqtt.MqttError as exc:  # subscribed again on reconnect
                log.warning("event=stream_watch_failed topic=%s error=%s", topic, exc)

    async def _unwatch(self, device: WatchedDevice) -> None:
        topic = device.topic
        entry = self._watched.get(topic)
        if entry is None:
            return
        if entry[1] > 1:
            self._watched[topic] = (entry[0], entry[1] - 1)
            return
        del self._watched[topic]
        client = self._client
        if client is not None:
            # Its own task: the stream that ended may be cancelled, this must still happen.
            task = asyncio.create_task(self._unsubscribe(client, topic))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def _unsubscribe(self, client: aiomqtt.Client, topic: str) -> None:
        if topic in self._watched:  # watched again meanwhile
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await client.unsubscribe(topic, timeout=5.0)

    # -- the connection ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Run the connection loop (it never returns) for good: should it end by surprise,
        log the traceback, count it and restart it with backoff."""
        wait_s = BACKOFF_S[0]
        while True:
            started = time.monotonic()
            try:
                await self._run()
            except Exception as exc:
                self.restarts += 1
                if time.monotonic() - started > BACKOFF_S[1]:  # it had been running well
                    wait_s = BACKOFF_S[0]
                log.error(
                    "event=stream_hub_restarting restarts=%d retry_s=%.1f error=%r",
                    self.restarts,
                    wait_s,
                    exc,
                    exc_info=exc,
                )
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, BACKOFF_S[1])

    async def _run(self) -> None:
        wait_s = BACKOFF_S[0]
        while True:
            try:
                async with aiomqtt.Client(
                    self.target.host,
                    self.target.port,
                    username=self.target.username,
                    password=self.target.password,
                    identifier=self.client_id,
                    clean_session=True,
                    max_queued_incoming_messages=INCOMING_SIZE,
                    tls_context=self.tls_context,
                ) as client:
                    self._client = client
                    await client.subscribe(ALERTS, qos=1)
                    for topic in list(self._watched):
                        await client.subscribe(topic, qos=0)
                    self._connected.set()
                    self.last_error = None
                    wait_s = BACKOFF_S[0]
                    log.info(
                        "event=stream_hub_connected host=%s port=%d client_id=%s",
                        self.target.host,
                        self.target.port,
                        self.client_id,
                    )
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                text = str(exc)
                if self.tls_context is not None and ("SSL" in text or "certificate" in text):
                    # aiomqtt keeps only the text of a failed handshake: say what to fix.
                    self.last_error = self.target.explain_tls_failure(text)
                    log.error("event=stream_hub_tls_refused error=%s", self.last_error)
                else:
                    self.last_error = str(exc)
                log.warning("event=stream_hub_disconnected retry_s=%.1f error=%s", wait_s, exc)
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, BACKOFF_S[1])

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Receive and send until the connection fails (raises ``MqttError``)."""
        sender = asyncio.create_task(self._send(client), name="api-stream-send")
        receiver = asyncio.create_task(self._receive(client), name="api-stream-receive")
        try:
            done, _ = await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise why it stopped
        finally:
            for task in (sender, receiver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self.outbox:
                topic, payload = self.outbox[0]
                # Taken off the outbox only once the broker has it (PUBACK).
                try:
                    await client.publish(topic, payload, qos=1, timeout=10.0)
                except (ValueError, TypeError) as exc:  # never sendable: drop it, keep the rest
                    self.message_errors[type(exc).__name__] += 1
                    log.error("event=stream_hub_unsendable topic=%s error=%s", topic[:200], exc)
                self.outbox.popleft()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            try:
                self._handle(topic, message)
            except Exception as exc:  # one odd message must not end the stream for everyone
                self._failed(topic, exc)

    def _handle(self, topic: str, message: aiomqtt.Message) -> None:
        payload = message.payload
        data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
        if topic.startswith("city/alerts/"):
            self._alert(topic, data)
        elif not message.retain:  # a retained reading is the broker's replay, not live
            self._reading(topic, data)

    def _failed(self, topic: str, exc: Exception) -> None:
        kind = type(exc).__name__
        self.message_errors[kind] += 1
        if self.message_errors[kind] == 1:  # the traceback once per kind, then only counted
            log.error(
                "event=stream_message_failed topic=%s error=%s", topic[:200], kind, exc_info=exc
            )
        else:
            log.debug("event=stream_message_failed topic=%s error=%s", topic[:200], kind)

    def _alert(self, topic: str, data: bytes) -> None:
        try:
            event = load_json(data, self.settings.max_payload_bytes)
        except PayloadError as exc:
            self._unreadable("alert", topic, str(exc))
            return
        if not isinstance(event, dict) or not all(
            isinstance(event.get(name), str) for name in ("kind", "district")
        ):
            self._unreadable("alert", topic, "not an alert event (need string kind and district)")
            return
        for subscription in list(self.subscriptions):
            if subscription.dropped:  # ended (e.g. its key was revoked); leaving shortly
                continue
            if subscription.wants(event) and not subscription.offer("alert", event):
                self._dropped(subscription)

    def _reading(self, topic: str, data: bytes) -> None:
        entry = self._watched.get(topic)
        if entry is None:
            return
        device = entry[0]
        codec = self.codecs.get(device.codec)
        if codec is None:
            return
        received_ms = int(time.time() * 1000)
        try:
            raws = codec.decode(data, KINDS[device.kind], device.attributes, 0, received_ms)
            readings = [
                self.validator.reading(device.device_id, device.kind, raw, received_ms)
                for raw in raws
            ]
        except (PayloadError, Rejected, KeyError) as exc:
            # The ingest dead-letters it; the stream shows only valid readings.
            self._unreadable("telemetry", topic, str(exc))
            return
        for reading in readings:
            shown = {
                "device_id": reading.device_id,
                "kind": reading.kind,
                "ts": city_time_ms(reading.ts_ms),
                "ts_ms": reading.ts_ms,
                "metrics": reading.metrics,
            }
            for subscription in list(self.subscriptions):
                watching = subscription.device is not None and subscription.device.topic == topic
                if (
                    watching
                    and not subscription.dropped
                    and not subscription.offer("reading", shown)
                ):
                    self._dropped(subscription)

    def _unreadable(self, what: str, topic: str, reason: str) -> None:
        self.unreadable[what] += 1
        # Only the rules publish alerts, so an unreadable one is news; bad readings are not.
        level = logging.WARNING if what == "alert" else logging.DEBUG
        log.log(level, "event=stream_unreadable topic=%s reason=%s", topic[:200], reason[:200])

    def _dropped(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        log.warning("event=stream_client_dropped reason=slow queue=%d", QUEUE_SIZE)


def city_time_ms(ts_ms: int) -> str:
    """RFC 3339 at +08:00, to the millisecond, of an epoch-millisecond time."""
    when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).astimezone(CITY_TZ)
    return when.isoformat(timespec="milliseconds")
