"""WeCom (企业微信) group robot channel: a ``markdown`` message to the robot's webhook.

Options (routing file)::

    - type: wecom
      name: drainage-wecom             # required; the channel's name
      url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-...
                                       # the robot's webhook address, as WeCom shows it
      key: 693a91f6-...                # or the key alone (url then defaults to WeCom's)
      mention: [zhangsan]              # optional; WeCom user ids to @ in the message
      timeout_s: 10                    # optional; default 10

One of ``key`` or a ``url`` holding ``?key=`` is required. The request is
``POST {url}?key={key}`` with
``{"msgtype": "markdown", "markdown": {"content": ...}}``. The content puts the Chinese
heading first, then the English one, then one line per alert with its severity coloured
(``<font color="warning">`` critical/major, ``comment`` minor/warning, ``info`` resolved);
it is cut to WeCom's 4096 bytes, saying how many alerts were left out.

WeCom answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}`` when it took the message;
any other errcode is a failure, retryable only for -1 (busy) and 45009 (rate limit,
20 messages a minute per robot). HTTP statuses are judged as for the webhook channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from cityiot.rules.notifiers import ChannelOptions, NotificationMessage, render
from cityiot.rules.notifiers.webhook import DEFAULT_TIMEOUT_S, check_errcode, encode, post_json

DEFAULT_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
CONTENT_LIMIT_BYTES = 4096
RETRYABLE_ERRCODES = frozenset({-1, 45009})


def colour(alert: Mapping[str, Any]) -> str:
    """WeCom's three font colours: warning (orange-red), comment (grey), info (green)."""
    if alert.get("state") == "resolved":
        return "info"
    return "warning" if alert.get("severity") in ("critical", "major") else "comment"


def markdown(message: NotificationMessage, mention: list[str]) -> str:
    heading = "warning" if message["status"] == "firing" else "info"
    head = [
        f'### <font color="{heading}">{render.title_zh(message)}</font>',
        f"**{render.title(message)}**",
        f"> 接收组 Receiver: {message['receiver']}",
    ]
    lines = [
        f'- <font color="{colour(a)}">{render.severity_label(a)}</font> {render.alert_detail(a)}'
        for a in message["alerts"]
    ]
    tail = "".join(f"<@{user}>" for user in mention)
    limit = CONTENT_LIMIT_BYTES - len(tail.encode()) - 1
    content = render.fit(head, lines, limit, int(message.get("truncated", 0)))
    return f"{content}\n{tail}" if tail else content


class WeComChannel:
    type = "wecom"

    def __init__(
        self,
        name: str,
        key: str,
        *,
        url: str = DEFAULT_URL,
        mention: list[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self.url = url
        self.mention = list(mention or [])
        self.timeout_s = timeout_s
        self.http = http

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, http: httpx.AsyncClient | None = None
    ) -> WeComChannel:
        o = ChannelOptions(config, {"key", "url", "mention", "timeout_s"})
        url = httpx.URL(o.url("url", DEFAULT_URL))
        key = o.text("key", None) or url.params.get("key")
        if not key:
            raise o.missing("key", " (or a url with ?key=, as WeCom shows it)")
        return cls(
            o.name,
            key,
            url=str(url.copy_remove_param("key")),
            mention=o.strings("mention", []),
            timeout_s=o.seconds("timeout_s", DEFAULT_TIMEOUT_S),
            http=http,
        )

    async def send(self, message: NotificationMessage) -> None:
        body = encode(
            {"msgtype": "markdown", "markdown": {"content": markdown(message, self.mention)}}
        )
        response = await post_json(
            self.http, self.url, body, params={"key": self.key}, timeout_s=self.timeout_s
        )
        check_errcode(response, "WeCom", RETRYABLE_ERRCODES)
