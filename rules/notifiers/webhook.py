"""Webhook channel: HTTP POST of the notification message as JSON, signed.

Options (routing file)::

    - type: webhook
      name: ops-hook                   # required; the channel's name
      url: https://ops.example/hook    # required; https:// (http:// only with allow_http)
      allow_http: false                # optional; true accepts a plain http:// url
      secret: s3cr3t                   # optional; without it requests are not signed
      timeout_s: 10                    # optional; whole request, default 10
      headers: {X-Team: drainage}      # optional; extra request headers

The body is the notification message (see ``cityiot.rules.notifiers``) as UTF-8 JSON, with
``Content-Type: application/json``. Every request carries ``X-Cityiot-Timestamp`` (Unix
seconds); with a secret, also ``X-Cityiot-Signature: sha256=<hex>``, the HMAC-SHA256 with
the secret as key of ``f"{timestamp}.{body}"`` — the timestamp header, a dot, and the raw
body bytes exactly as received.

Verifying on the receiving side (Python)::

    signed = request.headers["X-Cityiot-Timestamp"].encode() + b"." + raw_body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-Cityiot-Signature"])
    fresh = abs(time.time() - int(request.headers["X-Cityiot-Timestamp"])) < 300

Reject unless both hold (``fresh`` stops replays). Retries are re-signed with a new
timestamp, and carry the same body.

A plain ``http://`` URL is refused unless the channel says ``allow_http: true``: alerts
carry device positions and the signature does not hide them, so plain HTTP is an explicit
choice (a receiver on the same host or a private network), never a slip.

Outcome: 2xx delivered; 408, 429, 5xx, timeouts and connection errors are retryable;
any other status (4xx, an unfollowed 3xx) is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cityiot.rules.notifiers import ChannelOptions, DeliveryError, NotificationMessage

RETRYABLE_STATUS = frozenset({408, 429})
DEFAULT_TIMEOUT_S = 10.0


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (Chinese stays readable)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def plain_http_refusal(name: str, url: str, allow_http: bool) -> str | None:
    """Why a webhook channel may not post to ``url``; None when it may."""
    if allow_http or not url.lower().startswith("http://"):
        return None
    return (
        f"channel {name!r} (webhook) posts to plain http:// ({httpx.URL(url).host}), which "
        "anyone on the way can read and change; use an https:// url, or set allow_http: true "
        "on the channel if the receiver is on a network you trust"
    )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``{timestamp}.{body}``)."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


async def post_json(
    http: httpx.AsyncClient | None,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> httpx.Response:
    """POST ``body`` as JSON; the 2xx response, or ``DeliveryError`` saying what went wrong.

    ``http`` may be a shared client; without one a client lives for this request only.
    """
    all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    where = httpx.URL(url).copy_with(query=None)  # the query may hold a robot's key
    try:
        if http is None:
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    url, content=body, headers=all_headers, params=params, timeout=timeout_s
                )
        else:
            response = await http.post(
                url, content=body, headers=all_headers, params=params, timeout=timeout_s
            )
    except httpx.TimeoutException as e:
        raise DeliveryError(f"POST {where}: timed out after {timeout_s:g} s", True) from e
    except httpx.TransportError as e:
        raise DeliveryError(f"POST {where}: {type(e).__name__}: {e}", True) from e
    status = response.status_code
    if 200 <= status < 300:
        return response
    excerpt = response.text[:200].replace("\n", " ")
    retryable = status >= 500 or status in RETRYABLE_STATUS
    raise DeliveryError(f"POST {where}: HTTP {status}: {excerpt}", retryable)


def check_errcode(response: httpx.Response, service: str, retryable_codes: frozenset[int]) -> None:
    """Raise ``DeliveryError`` unless a robot's 200 answer says ``errcode`` 0."""
    try:
        answer = response.json()
        errcode = int(answer["errcode"])
    except (ValueError, KeyError, TypeError) as e:
        excerpt = response.text[:200].replace("\n", " ")
        raise DeliveryError(f"{service} answered without an errcode: {excerpt!r}", False) from e
    if errcode != 0:
        reason = f"{service} errcode {errcode}: {answer.get('errmsg', '')}"
        raise DeliveryError(reason, errcode in retryable_codes)


class WebhookChannel:
    type = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        allow_http: bool = False,
    ) -> None:
        refusal = plain_http_refusal(name, url, allow_http)
        if refusal is not None:
            raise ValueError(refusal)
        self.name = name
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.http = http

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, http: httpx.AsyncClient | None = None
    ) -> WebhookChannel:
        o = ChannelOptions(config, {"url", "secret", "timeout_s", "headers", "allow_http"})
        return cls(
            o.name,
            o.url("url"),
            allow_http=o.flag("allow_http", False),
            secret=o.text("secret", None),
            timeout_s=o.seconds("timeout_s", DEFAULT_TIMEOUT_S),
            headers=o.headers("headers"),
            http=http,
        )

    async def send(self, message: NotificationMessage) -> None:
        body = encode(message)
        timestamp = str(int(time.time()))
        headers = {**self.headers, "X-Cityiot-Timestamp": timestamp}
        if self.secret:
            headers["X-Cityiot-Signature"] = signature(self.secret, timestamp, body)
        await post_json(self.http, self.url, body, headers=headers, timeout_s=self.timeout_s)
