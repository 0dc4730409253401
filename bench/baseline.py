"""The baseline: a bare paho-mqtt subscriber that receives and parses JSON, nothing more.

It is the practical ceiling for a Python MQTT consumer on this machine: every system in
the benchmark pays at least this much per message. Run as a process by the benchmark:
``python -m bench.baseline HOST PORT COUNT [--qos 1]``; prints ``ready`` once subscribed
and, after ``COUNT`` messages, one JSON line with the wall time of the last one.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TOPIC = "city/+/+/telemetry"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1))
    parser.add_argument("--client-id", default="bench-baseline")
    args = parser.parse_args(argv)

    received = 0
    parsed = 0

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal received, parsed
        body = orjson.loads(msg.payload)
        parsed += len(body["metrics"])
        received += 1
        if received == args.count:
            done = time.time()
            print(orjson.dumps({"last_s": done, "received": received}).decode(), flush=True)
            client.disconnect()

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(TOPIC, args.qos)

    def on_subscribe(*_: object) -> None:
        print("ready", flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=False)
    client.max_inflight_messages_set(1000)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(args.host, args.port, keepalive=120)
    client.loop_forever()
    sys.exit(0 if received >= args.count else 1)


if __name__ == "__main__":
    main()
