"""DingTalk (钉钉) custom robot channel: a ``markdown`` message to the robot's webhook.

Options (routing file)::

    - type: dingtalk
      name: lighting-dingtalk          # required; the channel's name
      url: https://oapi.dingtalk.com/robot/send?access_token=1a2b...
                                       # the robot's webhook address, as DingTalk shows it
      access_token: 1a2b...            # or the token alone (url then defaults to DingTalk's)
      secret: SEC0a1b...               # optional; the robot's 加签 secret (signed mode)
      at_mobiles: ["13800000000"]      # optional; members to @ (by mobile number)
      at_all: false                    # optional; @ everyone
      timeout_s: 10                    # optional; default 10

One of ``access_token`` or a ``url`` holding ``?access_token=`` is required. The request
is ``POST {url}?access_token=…`` with
``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}, "at": {...}}``; the
title is the Chinese heading (what the chat list shows), the text has the Chinese heading,
the English one and one line per alert.

Signed mode adds ``timestamp`` (Unix milliseconds) and ``sign`` to the query, where
``sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))``;
DingTalk refuses a timestamp more than an hour off, so the clock must be right.

DingTalk answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}`` when it took the message;
any other errcode is a failure, retryable only for -1 (busy) and 130101 / 410100 (sending
too fast: 20 messages a minute per robot). HTTP statuses are judged as for the webhook
channel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cityiot.rules.notifiers import ChannelOptions, NotificationMessage, render
from cityiot.rules.notifiers.webhook import DEFAULT_TIMEOUT_S, check_errcode, encode, post_json

DEFAULT_URL = "https://oapi.dingtalk.com/robot/send"
TEXT_LIMIT_BYTES = 18_000  # DingTalk's limit is about 20 000 bytes
RETRYABLE_ERRCODES = frozenset({-1, 130101, 410100})


def sign(secret: str, timestamp_ms: int) -> str:
    """The signed-mode ``sign``, base64 of the HMAC; httpx URL-encodes it in the query."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def markdown_text(message: NotificationMessage, at_mobiles: list[str]) -> str:
    head = [
        f"### {render.title_zh(message)}",
        f"**{render.title(message)}**",
        "",
        f"> 接收组 Receiver: {message['receiver']}",
        "",
    ]
    lines = [
        f"- **{render.severity_label(a)}** {render.alert_detail(a)}" for a in message["alerts"]
    ]
    # DingTalk only notifies an @-ed member whose "@mobile" appears in the text.
    tail = " ".join(f"@{m}" for m in at_mobiles)
    limit = TEXT_LIMIT_BYTES - len(tail.encode()) - 2
    text = render.fit(head, lines, limit, int(message.get("truncated", 0)))
    return f"{text}\n\n{tail}" if tail else text


class DingTalkChannel:
    type = "dingtalk"

    def __init__(
        self,
        name: str,
        access_token: str,
        *,
        secret: str | None = None,
        url: str = DEFAULT_URL,
        at_mobiles: list[str] | None = None,
        at_all: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.access_token = access_token
        self.secret = secret
        self.url = url
        self.at_mobiles = list(at_mobiles or [])
        self.at_all = at_all
        self.timeout_s = timeout_s
        self.http = http

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, http: httpx.AsyncClient | None = None
    ) -> DingTalkChannel:
        o = ChannelOptions(
            config, {"access_token", "secret", "url", "at_mobiles", "at_all", "timeout_s"}
        )
        url = httpx.URL(o.url("url", DEFAULT_URL))
        token = o.text("access_token", None) or url.params.get("access_token")
        if not token:
            raise o.missing("access_token", " (or a url with ?access_token=)")
        return cls(
            o.name,
            token,
            secret=o.text("secret", None),
            url=str(url.copy_remove_param("access_token")),
            at_mobiles=o.strings("at_mobiles", []),
            at_all=o.flag("at_all", False),
            timeout_s=o.seconds("timeout_s", DEFAULT_TIMEOUT_S),
            http=http,
        )

    async def send(self, message: NotificationMessage) -> None:
        payload = {
            "msgtype": "markdown",
            "markdown": {
                "title": render.title_zh(message),
                "text": markdown_text(message, self.at_mobiles),
            },
            "at": {"atMobiles": self.at_mobiles, "isAtAll": self.at_all},
        }
        params = {"access_token": self.access_token}
        if self.secret:
            timestamp_ms = int(time.time() * 1000)
            params |= {"timestamp": str(timestamp_ms), "sign": sign(self.secret, timestamp_ms)}
        response = await post_json(
            self.http, self.url, encode(payload), params=params, timeout_s=self.timeout_s
        )
        check_errcode(response, "DingTalk", RETRYABLE_ERRCODES)
