"""The broker's persistent sessions a bench system leaves behind, and removing them."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def forget_sessions(host: str, port: int, client_ids: Sequence[str]) -> None:
    """Remove the broker's persistent sessions of ``client_ids`` (a clean-session connect):
    a stopped system's subscriptions would otherwise keep queueing the next backlogs."""
    for client_id in client_ids:
        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.user_data_set(connected)
        client.on_connect = _set_connected
        try:
            client.connect(host, port, keepalive=10)
        except OSError:
            continue
        client.loop_start()
        connected.wait(5)
        client.disconnect()
        client.loop_stop()


def _set_connected(_c: mqtt.Client, connected: threading.Event, *_: object) -> None:
    connected.set()


def session_ids(client_id: str, workers: int) -> list[str]:
    """The persistent MQTT sessions ``cityiot ingest --rules`` workers open: the ingest's
    (cityiot/domain/settings.py), the rules stage's command acks (rules/service.py) and, with
    several workers, the partition's forwarding (ingest/partition.py)."""
    if workers == 1:
        return [client_id, f"{client_id}-acks"]
    return [
        f"{client_id}-w{k}{suffix}" for k in range(workers) for suffix in ("", "-acks", "-rules")
    ]
