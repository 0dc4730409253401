"""The ingest's MQTT link: MQTT 3.1.1 over an asyncio protocol, with manual acks.

Why not a library here: the ingest acknowledges a QoS 1 message only after its readings are
durably stored (at-least-once), and it takes messages in batches, one wake-up per burst.
aiomqtt 2.x offers neither manual acks nor batched hand-off. paho-mqtt 2.x offers both, and
this link used it until the benchmark's profile showed paho's per-message machinery (one
read call, one callback, one message object and a lock per packet; a scan of the outgoing
queue per PUBACK) costing more than decoding, validating and storing the reading together.
The subscriber side of MQTT 3.1.1 is small: here every packet of a socket read is parsed in
one loop and a batch's PUBACKs leave in one write. Clients that publish or subscribe
elsewhere in the platform still use paho or aiomqtt.

Acks carry the connection's generation: after a reconnect the broker redelivers what was
not acknowledged, and a message id of the old connection must never be acked on the new one.

The broker sends a client at most its in-flight window of QoS 1 messages not yet
acknowledged (Mosquitto's ``max_inflight_messages``, EMQX's ``max_inflight``: 32 by
default). Given that window (``inflight``), the link counts its unacknowledged deliveries,
so that the ingest seals a batch when they fill it (:attr:`BrokerLink.full`) instead of
waiting for messages the broker will not send before an ack.
Outgoing QoS 1 messages (alert events, forwarded readings) are kept until the broker
acknowledges them and sent again, flagged DUP, after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from cityiot.domain.settings import MqttTarget

log = logging.getLogger("cityiot.ingest.broker")

_PUBACK = struct.Struct(">BBH").pack  # type, remaining length 2, packet id
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_CONNACK_REFUSED = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


@dataclass(slots=True)
class Delivery:
    """One received message: what the pipeline needs, and what acknowledging it takes."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    fport: int = 0  # the frame's port on links that have one (LoRaWAN, HTTP ?fport=)
    # The time (ms) and sequence number the link gave the message (CTWing's timestamp and
    # upPacketSN): a reading whose codec gave none takes them.
    link_ts_ms: int | None = None
    link_seq: int | None = None
    # Which link brought it (docs/design.md §4a): mqtt, http, chirpstack, ctwing, onenet.
    link: str = "mqtt"
    # What the network server decoded already (ChirpStack's ``object``): mapped by the
    # codec's metrics, never decoded again.
    decoded: dict[str, Any] | None = None
    # What the network measured (the best RSSI, a status event's battery level): a metric of
    # the device's kind the codec gave none of takes it.
    link_metrics: dict[str, float] | None = None
    # Which of the ingest's sessions of a shared subscription it came by (CITYIOT_MQTT_SESSIONS):
    # it is acknowledged on that one. 0: the ingest's own link.
    member: int = 0


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
    dropped_publishes: int = 0  # ours not kept: 65,535 were already awaiting the broker
    # Reconnects that found no persistent session: another client took our client id, or
    # the broker lost its state; what was queued for us meanwhile is gone.
    sessions_lost: int = 0


class MqttProtocolError(ConnectionError):
    """The broker sent something MQTT 3.1.1 does not allow here."""


class TlsRefused(ConnectionError):
    """The TLS handshake with the broker failed: its message says what to fix (the CA, the
    host name, a client certificate). Not a passing fault: ``connect`` raises it at once."""


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    """A control packet: the first byte, the remaining length, the rest."""
    length = len(body)
    head = bytearray([first])
    while True:
        digit, length = length & 0x7F, length >> 7
        head.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(head) + body


class _Session(asyncio.Protocol):
    """One TCP connection to the broker: parses what arrives, hands it to the link."""

    def __init__(self, link: BrokerLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        self.connack: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        self.subacks: dict[int, asyncio.Future[bytes]] = {}
        self.closed = asyncio.Event()
        self.error: str = ""
        self.last_sent = time.monotonic()
        self.ping_sent: float | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError) and not self.connack.done():
            # After the handshake but before CONNACK: the broker refused our certificate
            # (or asked for one). A setting to fix, said as such.
            self.error = self.link.target.explain_tls_failure(exc)
            self.connack.set_exception(TlsRefused(self.error))
        if not self.error:
            self.error = f"connection lost: {exc}" if exc else "connection closed by the broker"
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(self.error))
        for waiter in self.subacks.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(self.error))
        self.transport = None
        self.closed.set()
        self.link._lost(self)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        try:
            used = self._parse(data)
        except MqttProtocolError as exc:
            self.abort(str(exc))
            return
        self.rest = data[used:]

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_sent = time.monotonic()

    def abort(self, why: str) -> None:
        self.error = why
        if self.transport is not None:
            self.transport.abort()

    # -- reading ---------------------------------------------------------------------------

    def _parse(self, data: bytes) -> int:
        """Handle every whole packet in ``data``; returns how many bytes were used."""
        link = self.link
        pending = link._into._pending
        generation = link.generation
        member = link.member
        size = len(data)
        pos = 0
        received = redelivered = taken_bytes = unacked = 0
        while size - pos >= 2:
            first = data[pos]
            # Remaining length: 1 to 4 bytes, 7 bits each.
            length = shift = 0
            i = pos + 1
            whole = False
            while i < size:
                digit = data[i]
                i += 1
                length |= (digit & 0x7F) << shift
                if digit < 0x80:
                    whole = True
                    break
                shift += 7
                if shift > 21:
                    raise MqttProtocolError("malformed remaining length from the broker")
            if not whole:
                break  # the length itself is still incomplete
            end = i + length
            if end > size:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                topic_len = (data[i] << 8) | data[i + 1]
                j = i + 2 + topic_len
                topic = data[i + 2 : j].decode("utf-8", "replace")
                qos = (first >> 1) & 3
                mid = 0
                if qos:
                    mid = (data[j] << 8) | data[j + 1]
                    j += 2
                    unacked += 1
                    if first & 0x08:
                        redelivered += 1
                payload = data[j:end]
                delivery = Delivery(topic, payload, mid, qos, generation)
                if member:
                    delivery.member = member
                pending.append(delivery)
                received += 1
                taken_bytes += end - j
            elif kind == 4:  # PUBACK of one of our QoS 1 publishes
                link._outgoing.pop((data[i] << 8) | data[i + 1], None)
            elif kind == 13:  # PINGRESP
                self.ping_sent = None
            elif kind == 9:  # SUBACK
                waiter = self.subacks.pop((data[i] << 8) | data[i + 1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(data[i + 2 : end])
            elif kind == 2:  # CONNACK
                if data[i + 1] == 0:
                    # A persistent session's backlog may follow in this very read: its
                    # deliveries belong to the new connection's generation.
                    link._accepted(self)
                    generation = link.generation
                if not self.connack.done():
                    self.connack.set_result((bool(data[i] & 1), data[i + 1]))
            elif kind == 11:  # UNSUBACK: never asked for; harmless
                pass
            else:
                raise MqttProtocolError(f"unexpected MQTT packet type {kind} from the broker")
            pos = end
        if received:
            link._took(received, redelivered, taken_bytes, unacked)
        return pos


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
        inflight: int = 0,
        member: int = 0,
        unsubscribe: Iterable[str] = (),
        into: BrokerLink | None = None,
    ) -> None:
        if inflight < 0:
            raise ValueError(f"inflight must be 0 (not known) or more (got {inflight})")
        self.target = target
        # The broker's in-flight window for this client; 0: not known (taken as unbounded).
        self.inflight = inflight
        # This link's place among the ingest's sessions of one shared subscription (0: the
        # ingest's own link); its deliveries carry it, so each is acked where it came from.
        self.member = member
        # QoS 1 deliveries of the current connection not acknowledged yet, and the most so far.
        self.unacked = 0
        self.max_unacked = 0
        self.client_id = client_id
        self.topics = list(topics)
        # Topics this session's persistent subscription is to leave, on every connect (a
        # session being retired takes what was queued for it, and nothing new).
        self.unsubscribe = list(unsubscribe)
        self.qos = qos
        self.clean_session = clean_session
        self.max_pending = max_pending
        # Also a bound in bytes: batched payloads make a message count a poor measure.
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self.keepalive_s = keepalive_s
        self.reconnect_max_s = reconnect_max_s
        self.stats = LinkStats()
        self.generation = 0
        self._pending: list[Delivery] = []
        self._wake = asyncio.Event()
        # Where this link's deliveries go: its own list, or (another session of a shared
        # subscription) that of the link ``into``, whose one ``next_batch`` then takes what
        # every session received — one wake-up of the intake, not one per session.
        self._into: BrokerLink = into or self
        self._feeders: list[BrokerLink] = []  # the links whose deliveries come here
        if into is not None:
            into._feeders.append(self)
        self._connected = asyncio.Event()
        self._refused = asyncio.Event()  # a TLS refusal before the first connect
        self._closing = False
        self._session: _Session | None = None
        # Our QoS 1 publishes not yet acknowledged: packet id → (topic, payload).
        self._outgoing: dict[int, tuple[str, bytes]] = {}
        self._next_mid = 0
        self._task: asyncio.Task[None] | None = None
        self._had_session = False  # the broker has accepted us once: a session must be there

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> BrokerLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout_s: float = 15.0) -> None:
        """Connect (retrying with backoff) until the broker accepts, or ``timeout_s``.

        A TLS refusal (unknown CA, wrong host name) is a setting to fix, not a passing
        fault: it raises :class:`TlsRefused` at once. Once connected, the link keeps retrying
        whatever fails (the broker may be given a new certificate while the ingest runs)."""
        self._task = asyncio.create_task(self._keep_connected(), name="mqtt-link")
        waits = [
            asyncio.create_task(self._connected.wait()),
            asyncio.create_task(self._refused.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._connected.is_set():
            return
        await self.close()
        if self._refused.is_set():
            raise TlsRefused(self.stats.last_error)
        raise ConnectionError(
            f"cannot connect to the MQTT broker at {self.target.host}:{self.target.port}: "
            f"{self.stats.last_error or 'no answer'}; check {self.target.setting}"
        )

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        session = self._session
        if session is not None and session.transport is not None:
            session.write(_DISCONNECT)
            session.transport.close()  # after what is buffered, the DISCONNECT included
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), 1.0)
        self._wake.set()

    @property
    def waiting(self) -> int:
        """Deliveries received and not yet taken by ``next_batch``."""
        return len(self._pending)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def feeders(self) -> list[BrokerLink]:
        """The links made ``into`` this one: their deliveries come by its ``next_batch``."""
        return list(self._feeders)

    @property
    def closing(self) -> bool:
        """:meth:`close` was called: nothing more will be received."""
        return self._closing

    @property
    def full(self) -> bool:
        """The broker's in-flight window is full: it sends nothing more before an ack."""
        return 0 < self.inflight <= self.unacked

    @property
    def slice(self) -> int:
        """The most of this link's deliveries a batch should hold: half the window, so one
        half is being stored while the other arrives (0: no limit, the window not known)."""
        return (self.inflight + 1) // 2 if self.inflight else 0

    # -- the pipeline's side -------------------------------------------------------------

    async def next_batch(self, timeout_s: float | None = None) -> list[Delivery]:
        """Everything received since the last call; waits for at least one message.

        Returns an empty list after ``timeout_s`` or when the link is closing.
        """
        if not self._pending and not self._closing:
            self._wake.clear()
            if timeout_s is None:
                await self._wake.wait()
            else:
                # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
                # and a message then reaches the intake three turns of a busy loop later.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await self._wake.wait()
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        if self.stats.paused:
            self._resume_reading()
        for feeder in self._feeders:
            if feeder.stats.paused:
                feeder._resume_reading()
        return batch

    def wake(self) -> None:
        """Make a waiting :meth:`next_batch` return now (with what it has, maybe nothing):
        another link put a message into the open batch."""
        self._wake.set()

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge QoS 1 deliveries of the current connection, in order, in one write."""
        generation = self.generation
        packets = []
        stale = 0
        for d in deliveries:
            if d.qos == 0:
                continue
            if d.generation != generation:
                stale += 1
                continue
            packets.append(_PUBACK(0x40, 2, d.mid))
        self.stats.stale_acks += stale
        if packets and self._session is not None:
            self._session.write(b"".join(packets))
            self.stats.acked += len(packets)
            self.unacked -= len(packets)
        elif packets:  # the connection just went: the broker will redeliver these
            self.stats.stale_acks += len(packets)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish (e.g. an alert event). QoS 1 messages are kept until the broker has them,
        also across a reconnect; QoS 0 ones are sent only while connected."""
        if qos == 0:
            if self._connected.is_set() and self._session is not None:
                self._session.write(_packet(0x30, _string(topic) + payload))
            return
        mid = self._mid()
        if mid is None:
            self.stats.dropped_publishes += 1
            log.error("event=mqtt_publish_dropped topic=%s reason=65535_unconfirmed", topic)
            return
        self._outgoing[mid] = (topic, payload)
        if self._connected.is_set() and self._session is not None:
            self._session.write(_packet(0x32, _string(topic) + mid.to_bytes(2, "big") + payload))

    # -- the session's side ----------------------------------------------------------------

    def _took(self, received: int, redelivered: int, taken_bytes: int, unacked: int) -> None:
        self.stats.received += received
        if unacked:
            self.unacked += unacked
            if self.unacked > self.max_unacked:
                self.max_unacked = self.unacked
        self.stats.redelivered += redelivered
        into = self._into
        into._pending_bytes += taken_bytes
        into._wake.set()
        if not self.stats.paused and (
            len(into._pending) >= into.max_pending or into._pending_bytes >= into.max_pending_bytes
        ):
            self._pause_reading()

    def _accepted(self, session: _Session) -> None:
        self._session = session
        self.generation += 1
        self.unacked = 0  # the broker sends the old connection's unacknowledged ones again

    def _lost(self, session: _Session) -> None:
        if session is not self._session:
            return
        self._session = None
        if self._connected.is_set():
            self._connected.clear()
            self.stats.connected = False
            self.stats.disconnects += 1
            if not self._closing:
                self.stats.last_error = f"disconnected: {session.error}"
                log.warning("event=mqtt_disconnected reason=%s", session.error)

    # -- internals -----------------------------------------------------------------------

    def _session_lost(self) -> None:
        self.stats.sessions_lost += 1
        log.error(
            "event=mqtt_session_lost client_id=%s broker=%s:%s sessions_lost=%d detail=%s",
            self.client_id,
            self.target.host,
            self.target.port,
            self.stats.sessions_lost,
            "the broker answered session_present=0 on a reconnect: messages queued for this "
            "client id while it was away are lost. Either another client connected with this "
            "client id (check the broker log for it and that only the platform's account may "
            "use it) or the broker lost its persistence (check persistence_location)",
        )

    def _mid(self) -> int | None:
        """A free packet id; None when all 65,535 await the broker (down for long)."""
        if len(self._outgoing) >= 65534:
            return None
        while True:
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._outgoing:
                return self._next_mid

    def _pause_reading(self) -> None:
        # Stop reading the socket: the broker holds the rest (TCP and its inflight window).
        session = self._session
        if session is not None and session.transport is not None:
            session.transport.pause_reading()
        self.stats.paused = True

    def _resume_reading(self) -> None:
        session = self._session
        if session is not None and session.transport is not None:
            session.transport.resume_reading()
        self.stats.paused = False

    def _connect_packet(self) -> bytes:
        flags = 0x00 if not self.clean_session else 0x02
        payload = _string(self.client_id)
        if self.target.username:
            flags |= 0x80
            payload += _string(self.target.username)
            if self.target.password is not None:
                flags |= 0x40
                payload += _string(self.target.password)
        header = _string("MQTT") + bytes([4, flags]) + self.keepalive_s.to_bytes(2, "big")
        return _packet(0x10, header + payload)

    async def _open(self) -> _Session:
        """A connected, subscribed session; raises ConnectionError when that fails."""
        loop = asyncio.get_running_loop()
        try:
            context = self.target.ssl_context()  # None: plain mqtt://
        except ValueError as exc:  # a CA or certificate file gone since start-up
            raise TlsRefused(str(exc)) from None
        try:
            _, session = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Session(self),
                    self.target.host,
                    self.target.port,
                    ssl=context,
                    server_hostname=self.target.host if context else None,
                ),
                10.0,
            )
        except ssl.SSLError as exc:
            names = []
            if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in (
                62,
                64,
            ):  # host name, IP address
                names = await asyncio.to_thread(self.target.certificate_names)
            raise TlsRefused(self.target.explain_tls_failure(exc, names)) from None
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            if context is None:
                raise ConnectionError(f"connect failed: {exc!r}") from None
            # Perhaps a passing fault, so retried; but a plain MQTT port does just this.
            raise ConnectionError(
                f"the broker closed the connection during the TLS handshake ({exc!r}): is "
                f"{self.target.port} its TLS port? A plain MQTT port (1883) needs mqtt://"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"connect failed: {exc!r}") from None
        try:
            session.write(self._connect_packet())
            present, code = await asyncio.wait_for(session.connack, 10.0)
            if code:
                reason = _CONNACK_REFUSED.get(code, f"code {code}")
                log.error("event=mqtt_refused reason=%s", reason)
                raise ConnectionError(f"broker refused the connection: {reason}")
            if self.topics:  # a publishing-only link subscribes to nothing
                await self._subscribe(session)
            if self.unsubscribe:
                mid = self._mid() or 65535
                body = b"".join(_string(t) for t in self.unsubscribe)
                session.write(_packet(0xA2, mid.to_bytes(2, "big") + body))
            # What we published and the broker never confirmed goes again, flagged DUP.
            for out_mid, (topic, payload) in list(self._outgoing.items()):
                session.write(_packet(0x3A, _string(topic) + out_mid.to_bytes(2, "big") + payload))
        except BaseException:
            if self._session is session:
                self._session = None
            session.abort(session.error or "connect aborted")
            raise
        self.stats.connects += 1
        self.stats.connected = True
        if not self.clean_session:
            if self._had_session and not present:
                self._session_lost()
            self._had_session = True
        if self.stats.paused:
            self._pause_reading()
        log.info(
            "event=mqtt_connected broker=%s:%s session_present=%s",
            self.target.host,
            self.target.port,
            present,
        )
        self._connected.set()
        return session

    async def _subscribe(self, session: _Session) -> None:
        mid = self._mid() or 65535  # an id no publish holds (or, at worst, a PUBACK's)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        session.subacks[mid] = waiter
        body = b"".join(_string(t) + bytes([self.qos]) for t in self.topics)
        session.write(_packet(0x82, mid.to_bytes(2, "big") + body))
        codes = await asyncio.wait_for(waiter, 10.0)
        refused = [t for t, c in zip(self.topics, codes, strict=False) if c == 0x80]
        if refused:
            # Not fatal (the ACL may allow it later): say it plainly.
            log.error("event=mqtt_subscription_refused topics=%s", ",".join(refused))

    async def _keep_connected(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                session = await self._open()
            except (ConnectionError, TimeoutError) as exc:
                self.stats.last_error = str(exc) or repr(exc)
                if isinstance(exc, TlsRefused):
                    log.error("event=mqtt_tls_refused retry_s=%.1f error=%s", delay, exc)
                    if not self.stats.connects:
                        self._refused.set()
                else:
                    log.warning("event=mqtt_connect_failed retry_s=%.1f error=%s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = 0.2
            await self._keep_alive(session)

    async def _keep_alive(self, session: _Session) -> None:
        """Ping while the connection is quiet; drop it when the broker stops answering."""
        while not session.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), 1.0)
            if session.closed.is_set():
                return
            now = time.monotonic()
            if self.stats.paused:
                # A paused reader cannot see the answers; pings still tell the broker we live.
                session.ping_sent = None
                if now - session.last_sent >= self.keepalive_s / 2:
                    session.write(_PINGREQ)
                continue
            if session.ping_sent is not None:
                if now - session.ping_sent > self.keepalive_s:
                    session.abort(f"no answer to a ping within {self.keepalive_s} s")
                    return
            elif now - session.last_sent >= self.keepalive_s / 2:
                session.write(_PINGREQ)
                session.ping_sent = now
