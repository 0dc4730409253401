"""Notifier channels: each turns one notification message into one request (docs/design.md §5).

A channel knows nothing of rules, routing or retries: it is built from its entry in the
routing file (``{"type": "webhook", "name": "ops-hook", ...options}``) and exposes
``async def send(message) -> None``, which returns once the receiver accepted the message
and raises :class:`DeliveryError` otherwise. The outbox (``cityiot.rules.delivery``) decides what
to do with a failure.

The notification message (stored as ``Notification.payload``)::

    {
      "receiver": "urban-management",          # the routed team
      "status": "firing" | "resolved",         # firing while any alert of the group fires
      "group_labels": {"rule": "manhole_cover_open", "district": "yicheng"},
      "alerts": [<alert event>, ...],          # as rules/events.py (the contract object)
      "truncated": 0                           # alerts of the group left out of "alerts"
    }

Channel types, one module each (options in each module's docstring): ``mqtt``,
``webhook``, ``wecom`` (企业微信 group robot), ``dingtalk`` (钉钉 custom robot), ``email``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypedDict

CHANNEL_TYPES = ("mqtt", "webhook", "wecom", "dingtalk", "email")


class NotificationMessage(TypedDict):
    """What a channel delivers: one alert group for one receiver."""

    receiver: str
    status: Literal["firing", "resolved"]
    group_labels: dict[str, str]
    alerts: list[dict[str, Any]]
    truncated: int


class DeliveryError(Exception):
    """The receiver did not take the message; ``retryable`` says whether trying later may help."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    name: str
    type: str

    async def send(self, message: NotificationMessage) -> None: ...


_MISSING: Any = object()


class ChannelOptions:
    """Reads one channel's config entry; every error names the channel and the option.

    ``known`` lists the options of the channel type besides ``type`` and ``name``; any other
    key is refused, so a misspelt option fails at load time instead of being ignored.
    """

    def __init__(self, config: Mapping[str, Any], known: set[str]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError(f"channel config must be a mapping, got {type(config).__name__}")
        name = config.get("name")
        kind = config.get("type")
        label = f"{name!r}" if isinstance(name, str) and name else "(unnamed)"
        self._where = f"channel {label} ({kind})"
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self._where}: missing option 'name' (a non-empty string)")
        self.name: str = name
        self.type: str = str(kind)
        self._config = config
        unknown = sorted(set(config) - known - {"type", "name"})
        if unknown:
            raise ValueError(
                f"{self._where}: unknown option {unknown[0]!r}; "
                f"known options: {', '.join(sorted(known))}"
            )

    def error(self, option: str, problem: str) -> ValueError:
        return ValueError(f"{self._where}: option {option!r} {problem}")

    def missing(self, option: str, hint: str = "") -> ValueError:
        return ValueError(f"{self._where}: missing option {option!r}{hint}")

    def _get(self, option: str, default: Any) -> Any:
        value = self._config.get(option)
        if value is None:
            if default is _MISSING:
                raise self.missing(option)
            return default
        return value

    def text(self, option: str, default: Any = _MISSING) -> Any:
        value = self._get(option, default)
        if value is not default and (not isinstance(value, str) or not value):
            raise self.error(option, f"must be a non-empty string, got {value!r}")
        return value

    def url(self, option: str, default: Any = _MISSING) -> Any:
        value = self.text(option, default)
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise self.error(option, f"must be an http:// or https:// URL, got {value!r}")
        return value

    def integer(
        self, option: str, default: Any = _MISSING, *, low: int = 0, high: int = 65535
    ) -> Any:
        value = self._get(option, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(option, f"must be an integer in {low}..{high}, got {value!r}")
        return value

    def seconds(self, option: str, default: float) -> float:
        value = self._get(option, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(option, f"must be a positive number of seconds, got {value!r}")
        return float(value)

    def flag(self, option: str, default: bool) -> bool:
        value = self._get(option, default)
        if not isinstance(value, bool):
            raise self.error(option, f"must be true or false, got {value!r}")
        return value

    def strings(self, option: str, default: Any = _MISSING) -> Any:
        """A list of non-empty strings; a single string is a list of one."""
        value = self._get(option, default)
        if value is default:
            return value
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.error(option, f"must be a non-empty list of strings, got {value!r}")
        return list(value)

    def headers(self, option: str) -> dict[str, str]:
        value = self._get(option, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(option, f"must map header names to string values, got {value!r}")
        return dict(value)


def build_channel(config: Mapping[str, Any], **deps: Any) -> Channel:
    """The channel described by ``config`` (an entry of the routing file's channel list).

    ``deps`` are handed to the channel types that take them: ``http`` (a shared
    ``httpx.AsyncClient``) for webhook, wecom and dingtalk; ``publish`` (an async
    ``(topic, payload) -> None``, e.g. the platform's own MQTT link) for mqtt; ``smtp``
    (the platform's email options — host, port, from, username, password, starttls, tls —
    which the channel's own options override) for email.
    Raises ``ValueError`` naming the channel and the bad or missing option.
    """
    # Imported here: the channel modules import DeliveryError and ChannelOptions from us.
    from cityiot.rules.notifiers import dingtalk, email, mqtt, webhook, wecom

    if not isinstance(config, Mapping):
        raise ValueError(f"channel config must be a mapping, got {type(config).__name__}")
    kind = config.get("type")
    name = config.get("name", "(unnamed)")
    if kind == "mqtt":
        return mqtt.MqttChannel.from_config(config, publish=deps.get("publish"))
    if kind == "webhook":
        return webhook.WebhookChannel.from_config(config, http=deps.get("http"))
    if kind == "wecom":
        return wecom.WeComChannel.from_config(config, http=deps.get("http"))
    if kind == "dingtalk":
        return dingtalk.DingTalkChannel.from_config(config, http=deps.get("http"))
    if kind == "email":
        return email.EmailChannel.from_config(config, defaults=deps.get("smtp"))
    if kind is None:
        raise ValueError(f"channel {name!r}: missing option 'type' (one of {CHANNEL_TYPES})")
    raise ValueError(f"channel {name!r}: unknown type {kind!r}; known types: {CHANNEL_TYPES}")


__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelOptions",
    "DeliveryError",
    "NotificationMessage",
    "build_channel",
]
