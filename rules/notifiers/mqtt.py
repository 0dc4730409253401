"""MQTT channel: the notification message as JSON on a receiver's own topic.

Options (routing file)::

    - type: mqtt
      name: urban-mqtt                 # required; the channel's name
      topic: cityiot/teams/{receiver}   # optional; this default, {receiver} filled in
      qos: 1                           # optional; 0, 1 or 2, default 1
      retain: false                    # optional; default false
      host: 127.0.0.1                  # optional; a broker of the channel's own
      port: 1883                       # optional; with host, default 1883
      username: notifier               # optional; with host
      password: ...                    # optional; with host
      tls: true                        # optional; with host: TLS (port default 8883)
      ca_file: /etc/cityiot/ca.pem     # optional; with tls: the CA, else the system's
      cert_file: client.pem            # optional; with tls: a client certificate
      key_file: client.key             # optional; its key (else in cert_file)
      timeout_s: 10                    # optional; connect and publish, default 10

Without ``host`` the message goes through the ``publish`` function the platform passes
(``build_channel(config, publish=...)``, an async ``(topic, payload: bytes) -> None`` on
its own broker link, with that link's QoS); with ``host`` the channel connects for each
message (alerts are rare; no connection to keep alive) and ``qos`` / ``retain`` apply.

This is a routed receiver's topic; every alert event is published on
``city/alerts/{district}/{kind}`` by the alert lifecycle, not here.

Outcome: the broker acknowledging the publish (at the configured QoS) is delivered; a
refused login is not retryable; other connection or publish errors are. With ``tls`` the
broker's certificate and host name are checked; a TLS refusal says what to fix and is not
retryable (a CA or a name to change, not a passing fault).
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiomqtt

from cityiot.domain.settings import MqttTarget, MqttTls
from cityiot.rules.notifiers import ChannelOptions, DeliveryError, NotificationMessage
from cityiot.rules.notifiers.webhook import encode

Publish = Callable[[str, bytes], Awaitable[None]]

DEFAULT_TOPIC = "cityiot/teams/{receiver}"
DEFAULT_TIMEOUT_S = 10.0
# CONNACK codes for a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135).
AUTH_REFUSED = frozenset({4, 5, 134, 135})


def check_topic(options: ChannelOptions, topic: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(topic) if f is not None}
    except ValueError as e:
        raise options.error("topic", f"is not a valid template: {e}") from e
    if fields - {"receiver"}:
        raise options.error("topic", f"may only use {{receiver}}, not {sorted(fields)}")
    if "+" in topic or "#" in topic:
        raise options.error("topic", "cannot hold wildcards (+ or #)")


class MqttChannel:
    type = "mqtt"

    def __init__(
        self,
        name: str,
        *,
        topic: str = DEFAULT_TOPIC,
        qos: int = 1,
        retain: bool = False,
        host: str | None = None,
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        publish: Publish | None = None,
        tls: MqttTls | None = None,
    ) -> None:
        if host is None and publish is None:
            raise ValueError(f"channel {name!r} (mqtt): give option 'host' or a publish function")
        self.name = name
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.publish = publish
        self.tls = tls
        # The context is built here: a bad CA or certificate file fails when the routing
        # file is loaded, naming the file, not at the first alert.
        self.tls_context = None
        self._target: MqttTarget | None = None
        if tls is not None and host is not None:
            self._target = MqttTarget(f"mqtts://{host}:{port}", tls=tls, setting=f"channel {name}")
            try:
                self.tls_context = tls.context()
            except ValueError as e:
                raise ValueError(f"channel {name!r} (mqtt): {e}") from None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, publish: Publish | None = None
    ) -> MqttChannel:
        o = ChannelOptions(
            config,
            {
                "topic", "qos", "retain", "host", "port", "username", "password", "timeout_s",
                "tls", "ca_file", "cert_file", "key_file",
            },
        )  # fmt: skip
        topic = o.text("topic", DEFAULT_TOPIC)
        check_topic(o, topic)
        host = o.text("host", None)
        if host is None:
            if publish is None:
                raise ValueError(
                    f"channel {o.name!r} (mqtt): missing option 'host' "
                    "(no platform broker link was given to publish through)"
                )
            for option in (
                "port",
                "username",
                "password",
                "tls",
                "ca_file",
                "cert_file",
                "key_file",
            ):
                if config.get(option) is not None:
                    raise o.error(option, "needs option 'host' (the broker it is for)")
        tls = None
        if o.flag("tls", False):
            tls = MqttTls(
                o.text("ca_file", None) or "",
                o.text("cert_file", None) or "",
                o.text("key_file", None) or "",
                names=(
                    f"channel {o.name!r} option ca_file",
                    f"channel {o.name!r} option cert_file",
                    f"channel {o.name!r} option key_file",
                ),
            )
        else:
            for option in ("ca_file", "cert_file", "key_file"):
                if config.get(option) is not None:
                    raise o.error(option, "needs option 'tls: true'")
        return cls(
            o.name,
            topic=topic,
            qos=o.integer("qos", 1, high=2),
            retain=o.flag("retain", False),
            host=host,
            port=o.integer("port", 8883 if tls else 1883, low=1),
            username=o.text("username", None),
            password=o.text("password", None),
            timeout_s=o.seconds("timeout_s", DEFAULT_TIMEOUT_S),
            publish=publish,
            tls=tls,
        )

    async def send(self, message: NotificationMessage) -> None:
        topic = self.topic.format(receiver=message["receiver"])
        payload = encode(message)
        try:
            if self.host is None:
                assert self.publish is not None
                async with asyncio.timeout(self.timeout_s):
                    await self.publish(topic, payload)
                return
            async with aiomqtt.Client(
                self.host,
                self.port,
                username=self.username,
                password=self.password,
                timeout=self.timeout_s,
                tls_context=self.tls_context,
            ) as client:
                await client.publish(topic, payload, qos=self.qos, retain=self.retain)
        except DeliveryError:
            raise
        except aiomqtt.MqttCodeError as e:
            rc = getattr(e.rc, "value", e.rc)
            raise DeliveryError(f"MQTT {self.where}: {e}", rc not in AUTH_REFUSED) from e
        except TimeoutError as e:
            raise DeliveryError(
                f"MQTT {self.where}: timed out after {self.timeout_s:g} s", True
            ) from e
        except (aiomqtt.MqttError, OSError) as e:
            text = str(e)
            if self._target is not None and ("SSL" in text or "certificate" in text):
                # aiomqtt keeps only the text of a failed handshake: say what to fix.
                raise DeliveryError(self._target.explain_tls_failure(text), False) from e
            raise DeliveryError(f"MQTT {self.where}: {type(e).__name__}: {e}", True) from e

    @property
    def where(self) -> str:
        return "(platform broker)" if self.host is None else f"{self.host}:{self.port}"
