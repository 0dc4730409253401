"""A strict in-flight window in front of a broker, for the bench's window section.

Mosquitto 2.0's ``max_inflight_messages`` holds a client's window only until the client's
first PUBACK: from then on every PUBACK lets up to a whole window more through (with 32, a
subscriber that acknowledges one message of 32 gets 32 more). EMQX keeps its window
(``max_inflight``, 32 by default) strictly: a new QoS 1 message goes out only while fewer
than the window are unacknowledged. This proxy stands in for that: a TCP relay between
MQTT 3.1.1 clients and a broker that passes every packet unchanged but holds the broker's
QoS 1 PUBLISH packets to a client while ``window`` of them await the client's PUBACK
(``--window 0``: never holds, the relay alone, to measure what relaying costs).

    python -m bench.window_proxy --upstream 127.0.0.1:1883 --port 18830 --window 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import deque

PUBLISH, PUBACK = 3, 4
READ_SIZE = 1 << 16


def packets(buffer: bytearray) -> tuple[list[bytes], int]:
    """The complete MQTT control packets at the start of ``buffer``, and the bytes they take."""
    found: list[bytes] = []
    at, size = 0, len(buffer)
    while at + 2 <= size:
        length, shift, pos = 0, 0, at + 1
        while True:
            if pos >= size:
                return found, at
            digit = buffer[pos]
            length |= (digit & 0x7F) << shift
            pos += 1
            if not digit & 0x80:
                break
            shift += 7
        end = pos + length
        if end > size:
            break
        found.append(bytes(buffer[at:end]))
        at = end
    return found, at


class Window:
    """One client connection's unacknowledged QoS 1 deliveries and those held back."""

    def __init__(self, size: int, writer: asyncio.StreamWriter) -> None:
        self.size = size
        self.unacked = 0
        self.held: deque[bytes] = deque()
        self.writer = writer

    def to_client(self, packet: bytes, out: bytearray) -> None:
        if packet[0] >> 4 == PUBLISH and (packet[0] >> 1) & 3 == 1 and self.size:
            if self.held or self.unacked >= self.size:
                self.held.append(packet)
                return
            self.unacked += 1
        out += packet

    def acked(self) -> None:
        self.unacked = max(0, self.unacked - 1)

    def release(self) -> None:
        out = bytearray()
        while self.held and self.unacked < self.size:
            out += self.held.popleft()
            self.unacked += 1
        if out:
            self.writer.write(out)


async def _pump_down(
    broker: asyncio.StreamReader, client: asyncio.StreamWriter, window: Window
) -> None:
    buffer = bytearray()
    while data := await broker.read(READ_SIZE):
        buffer += data
        found, used = packets(buffer)
        del buffer[:used]
        out = bytearray()
        for packet in found:
            window.to_client(packet, out)
        if out:
            client.write(out)
            await client.drain()


async def _pump_up(
    client: asyncio.StreamReader, broker: asyncio.StreamWriter, window: Window
) -> None:
    buffer = bytearray()
    while data := await client.read(READ_SIZE):
        broker.write(data)  # every byte goes on unchanged
        buffer += data
        found, used = packets(buffer)
        del buffer[:used]
        for packet in found:
            if packet[0] >> 4 == PUBACK:
                window.acked()
        window.release()
        await broker.drain()


async def serve(upstream: tuple[str, int], port: int, size: int) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        window = Window(size, writer)
        pumps = [
            asyncio.create_task(_pump_down(broker_reader, writer, window)),
            asyncio.create_task(_pump_up(reader, broker_writer, window)),
        ]
        with contextlib.suppress(OSError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for end in (writer, broker_writer):
            end.close()

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the broker, host:port")
    parser.add_argument("--port", type=int, required=True, help="where clients connect")
    parser.add_argument("--window", type=int, default=32, help="0: hold nothing")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((host, int(port)), args.port, args.window))


if __name__ == "__main__":
    main()
