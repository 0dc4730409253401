"""Notifier channels against real local receivers: an HTTP server, an SMTP server
(aiosmtpd) and the session's Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import copy
import email
import email.policy
import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.platform.local_services import LocalBroker, free_port
from cityiot.rules.notifiers import DeliveryError, NotificationMessage, build_channel, render
from cityiot.rules.notifiers.dingtalk import DingTalkChannel
from cityiot.rules.notifiers.email import EmailChannel
from cityiot.rules.notifiers.mqtt import MqttChannel
from cityiot.rules.notifiers.webhook import WebhookChannel
from cityiot.rules.notifiers.wecom import CONTENT_LIMIT_BYTES, WeComChannel

ROBOT_OK = b'{"errcode":0,"errmsg":"ok"}'


def alert(device_id: str, severity: str, state: str = "firing", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"a-{device_id}",
        "rule": "manhole_cover_open",
        "device_id": device_id,
        "kind": "manhole",
        "district": "yicheng",
        "vendor": "acme",
        "severity": severity,
        "state": state,
        "started_at": "2024-05-01T22:10:00+08:00",
        "resolved_at": "2024-05-01T22:40:00+08:00" if state == "resolved" else None,
        "values": {"cover_open": True, "tilt_deg": 21.5},
        "summary": f"井盖打开 {device_id} / Manhole cover open {device_id}",
        **extra,
    }


def sample_message(status: str = "firing") -> NotificationMessage:
    state = "resolved" if status == "resolved" else "firing"
    return {
        "receiver": "urban-management",
        "status": status,  # type: ignore[typeddict-item]
        "group_labels": {"rule": "manhole_cover_open", "district": "yicheng"},
        "alerts": [alert("mh-1", "critical", state), alert("mh-7", "minor", state)],
        "truncated": 0,
    }


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.raw_query))

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request and answers from a script
    (then with the default answer)."""

    def __init__(self, port: int = 0, default: tuple[int, bytes] = (200, ROBOT_OK)) -> None:
        self.port = port
        self.default = default
        self.requests: list[Request] = []
        self.answers: deque[tuple[int, bytes, float]] = deque()
        self._server: ThreadingHTTPServer | None = None

    def answer(self, status: int, body: bytes = b"", delay_s: float = 0.0) -> Receiver:
        self.answers.append((status, body, delay_s))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path, _, raw_query = self.path.partition("?")
                receiver.requests.append(
                    Request("POST", path, raw_query, dict(self.headers.items()), body)
                )
                status, answer, delay_s = (
                    receiver.answers.popleft() if receiver.answers else (*receiver.default, 0.0)
                )
                time.sleep(delay_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up waiting (timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


# --- rendering ---------------------------------------------------------------------------


def test_titles_count_firing_alerts_and_say_resolved() -> None:
    message = sample_message()
    assert render.title(message) == "[FIRING:2] manhole_cover_open yicheng"
    assert render.title_zh(message) == "【告警·2】manhole_cover_open yicheng"
    message["alerts"][1]["state"] = "resolved"
    assert render.title(message) == "[FIRING:1] manhole_cover_open yicheng"
    resolved = sample_message("resolved")
    assert render.title(resolved) == "[RESOLVED] manhole_cover_open yicheng"
    assert render.title_zh(resolved) == "【已恢复】manhole_cover_open yicheng"


def test_text_has_one_line_per_alert_chinese_first() -> None:
    message = sample_message()
    message["truncated"] = 3
    text = render.text(message)
    assert text.index("【告警·2】") < text.index("[FIRING:2]")
    assert "[紧急 critical] mh-1 (yicheng) 井盖打开 mh-1 / Manhole cover open mh-1" in text
    assert "[次要 minor] mh-7 (yicheng)" in text
    assert "另有 3 条告警未列出 / 3 more alerts not shown" in text
    resolved = render.text(sample_message("resolved"))
    assert "[已恢复 resolved] mh-1" in resolved
    assert "2024-05-01T22:10:00+08:00 → 2024-05-01T22:40:00+08:00" in resolved


# --- webhook -----------------------------------------------------------------------------


async def test_webhook_posts_the_message_signed_as_documented(receiver: Receiver) -> None:
    secret = "港口-s3cr3t"
    channel = build_channel(
        {
            "type": "webhook",
            "name": "ops-hook",
            "url": receiver.url,
            "allow_http": True,  # the test's receiver is on this host
            "secret": secret,
            "headers": {"X-Team": "drainage"},
        }
    )
    message = sample_message()
    await channel.send(message)

    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.headers["X-Team"] == "drainage"
    assert request.json() == message
    assert "井盖打开" in request.body.decode()  # UTF-8, not \u escapes
    # The receiver's check, exactly as the webhook module's docstring tells it.
    timestamp = request.headers["X-Cityiot-Timestamp"]
    signed = timestamp.encode() + b"." + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-Cityiot-Signature"])
    assert abs(time.time() - int(timestamp)) < 300
    # A tampered body or another secret does not verify.
    forged = hmac.new(b"other", signed, hashlib.sha256).hexdigest()
    assert request.headers["X-Cityiot-Signature"] != "sha256=" + forged


async def test_webhook_without_secret_is_not_signed(receiver: Receiver) -> None:
    await WebhookChannel("plain", receiver.url, allow_http=True).send(sample_message())
    [request] = receiver.requests
    assert "X-Cityiot-Signature" not in request.headers
    assert "X-Cityiot-Timestamp" in request.headers


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (400, False), (404, False), (301, False)],
)
async def test_webhook_judges_the_status(receiver: Receiver, status: int, retryable: bool) -> None:
    receiver.answer(status, b'{"detail": "nope"}')
    with pytest.raises(DeliveryError) as caught:
        await WebhookChannel("ops-hook", receiver.url, allow_http=True).send(sample_message())
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in caught.value.reason
    assert "nope" in caught.value.reason


async def test_webhook_receiver_down_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeliveryError) as caught:
        await WebhookChannel("ops-hook", url, allow_http=True).send(sample_message())
    assert caught.value.retryable
    assert "ConnectError" in caught.value.reason


async def test_webhook_timeout_is_retryable(receiver: Receiver) -> None:
    receiver.answer(200, b"", delay_s=10.0)  # far past the time box, however busy the machine
    channel = WebhookChannel("slow", receiver.url, allow_http=True, timeout_s=0.2)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_message())
    assert caught.value.retryable
    assert "timed out after 0.2 s" in caught.value.reason


# --- WeCom -------------------------------------------------------------------------------


async def test_wecom_sends_coloured_markdown_chinese_first(receiver: Receiver) -> None:
    channel = build_channel(
        {"type": "wecom", "name": "drainage-wecom", "key": "k-123", "url": receiver.url}
    )
    await channel.send(sample_message())

    [request] = receiver.requests
    assert request.query == {"key": "k-123"}
    payload = request.json()
    assert payload["msgtype"] == "markdown"
    content = payload["markdown"]["content"]
    assert content.index("【告警·2】") < content.index("[FIRING:2] manhole_cover_open yicheng")
    assert '<font color="warning">紧急 critical</font> mh-1 (yicheng)' in content
    assert '<font color="comment">次要 minor</font> mh-7 (yicheng)' in content
    assert "井盖打开 mh-1 / Manhole cover open mh-1" in content
    assert len(content.encode()) <= CONTENT_LIMIT_BYTES

    await channel.send(sample_message("resolved"))
    resolved = receiver.requests[1].json()["markdown"]["content"]
    assert '<font color="info">已恢复 resolved</font> mh-1' in resolved


async def test_wecom_takes_the_webhook_address_as_wecom_shows_it(receiver: Receiver) -> None:
    config = {"type": "wecom", "name": "urban-wecom", "url": f"{receiver.url}?key=693a-91f6"}
    async with httpx.AsyncClient() as http:  # the platform's shared client
        await build_channel(config, http=http).send(sample_message())
    [request] = receiver.requests
    assert (request.path, request.query) == ("/hook", {"key": "693a-91f6"})


async def test_wecom_cuts_a_big_group_to_its_limit(receiver: Receiver) -> None:
    message = sample_message()
    message["alerts"] = [alert(f"mh-{i}", "major", summary="井盖打开 " * 20) for i in range(200)]
    message["truncated"] = 50
    await WeComChannel("w", "k", url=receiver.url, mention=["zhangsan"]).send(message)
    content = receiver.requests[0].json()["markdown"]["content"]
    assert len(content.encode()) <= CONTENT_LIMIT_BYTES
    shown = content.count("严重 major")
    assert 0 < shown < 200
    left_out = 200 - shown + 50
    assert f"另有 {left_out} 条告警未列出 / {left_out} more alerts not shown" in content
    assert content.endswith("<@zhangsan>")


@pytest.mark.parametrize(
    ("answer", "retryable", "says"),
    [
        (b'{"errcode":93000,"errmsg":"invalid webhook url"}', False, "errcode 93000"),
        (b'{"errcode":45009,"errmsg":"api freq out of limit"}', True, "errcode 45009"),
        (b"<html>gateway</html>", False, "without an errcode"),
    ],
)
async def test_wecom_errcode_is_a_failure(
    receiver: Receiver, answer: bytes, retryable: bool, says: str
) -> None:
    receiver.answer(200, answer)
    with pytest.raises(DeliveryError) as caught:
        await WeComChannel("w", "k", url=receiver.url).send(sample_message())
    assert caught.value.retryable is retryable
    assert says in caught.value.reason


async def test_wecom_errors_do_not_show_the_key(receiver: Receiver) -> None:
    receiver.answer(502, b"bad gateway")
    with pytest.raises(DeliveryError) as caught:
        await WeComChannel("w", "key-0f3e", url=receiver.url).send(sample_message())
    assert caught.value.retryable
    assert f"POST {receiver.url}: HTTP 502" in caught.value.reason
    assert "key-0f3e" not in caught.value.reason


# --- DingTalk ----------------------------------------------------------------------------


async def test_dingtalk_signed_markdown(receiver: Receiver) -> None:
    secret = "SEC0123456789abcdef"
    channel = build_channel(
        {
            "type": "dingtalk",
            "name": "lighting-dingtalk",
            "access_token": "tok-1",
            "secret": secret,
            "url": receiver.url,
            "at_mobiles": ["13800000000"],
        }
    )
    before_ms = int(time.time() * 1000)
    await channel.send(sample_message())
    after_ms = int(time.time() * 1000)

    [request] = receiver.requests
    query = request.query
    assert query["access_token"] == "tok-1"
    timestamp = int(query["timestamp"])
    assert before_ms <= timestamp <= after_ms
    # DingTalk's recipe: urlencode(base64(HMAC-SHA256(secret, f"{timestamp}\n{secret}"))).
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    expected = urllib.parse.quote_plus(base64.b64encode(digest))
    raw = dict(part.split("=", 1) for part in request.raw_query.split("&"))
    assert raw["sign"] == expected

    payload = request.json()
    assert payload["msgtype"] == "markdown"
    assert payload["markdown"]["title"] == "【告警·2】manhole_cover_open yicheng"
    text = payload["markdown"]["text"]
    assert text.index("【告警·2】") < text.index("[FIRING:2] manhole_cover_open yicheng")
    assert "**紧急 critical** mh-1 (yicheng)" in text
    assert text.endswith("@13800000000")
    assert payload["at"] == {"atMobiles": ["13800000000"], "isAtAll": False}


async def test_dingtalk_takes_the_webhook_address_as_dingtalk_shows_it(
    receiver: Receiver,
) -> None:
    config = {
        "type": "dingtalk",
        "name": "water-dingtalk",
        "url": f"{receiver.url}?access_token=tok-9",
        "secret": "SECx",
    }
    await build_channel(config).send(sample_message())
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.query["access_token"] == "tok-9"
    assert set(request.query) == {"access_token", "timestamp", "sign"}


async def test_dingtalk_unsigned_has_no_sign(receiver: Receiver) -> None:
    await DingTalkChannel("d", "tok-2", url=receiver.url).send(sample_message("resolved"))
    [request] = receiver.requests
    assert request.query == {"access_token": "tok-2"}
    assert request.json()["markdown"]["title"] == "【已恢复】manhole_cover_open yicheng"


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [
        (b'{"errcode":310000,"errmsg":"sign not match"}', False),
        (b'{"errcode":130101,"errmsg":"send too fast"}', True),
    ],
)
async def test_dingtalk_errcode_is_a_failure(
    receiver: Receiver, answer: bytes, retryable: bool
) -> None:
    receiver.answer(200, answer)
    with pytest.raises(DeliveryError) as caught:
        await DingTalkChannel("d", "tok", secret="s", url=receiver.url).send(sample_message())
    assert caught.value.retryable is retryable
    assert json.loads(answer)["errmsg"] in caught.value.reason


# --- email -------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: keeps every mail; refuses recipients at nobody@…"""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, _: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), mail))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> AuthResult:
    ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (b"cityiot", b"pw")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=check_login,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


def mail_config(port: int, **options: Any) -> dict[str, Any]:
    """An email channel to ``port`` on this host; over TLS unless ``options`` say otherwise
    (the ``smtp`` fixture's server is plain: its tests pass ``starttls=False``)."""
    return {
        "type": "email",
        "name": "duty-mail",
        "host": "127.0.0.1",
        "port": port,
        "from": "cityiot@zhumadian.example",
        "to": ["duty@water.example", "lead@water.example"],
        **options,
    }


async def test_email_arrives_with_subject_and_both_bodies(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    channel = build_channel(mail_config(port, starttls=False))
    await channel.send(sample_message())
    await channel.send(sample_message("resolved"))

    (sender, recipients, mail), (_, _, resolved) = mailbox.mails
    assert sender == "cityiot@zhumadian.example"
    assert recipients == ["duty@water.example", "lead@water.example"]
    assert mail["Subject"] == "[FIRING:2] manhole_cover_open yicheng"
    assert mail["To"] == "duty@water.example, lead@water.example"
    plain = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert text.index("【告警·2】") < text.index("[FIRING:2]")
    assert "[紧急 critical] mh-1 (yicheng) 井盖打开 mh-1 / Manhole cover open mh-1" in text
    assert "<li>[次要 minor] mh-7 (yicheng)" in html.get_content()
    assert resolved["Subject"] == "[RESOLVED] manhole_cover_open yicheng"


async def test_email_takes_the_platform_smtp_settings(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    platform = {
        "host": "127.0.0.1",
        "port": port,
        "from": "cityiot@zhumadian.example",
        "starttls": False,  # CITYIOT_SMTP_STARTTLS=false: the test's server is plain
    }
    config = {"type": "email", "name": "ops-email", "to": "duty@ops.example, boss@ops.example"}
    await build_channel(config, smtp=platform).send(sample_message())
    [(sender, recipients, _)] = mailbox.mails
    assert sender == "cityiot@zhumadian.example"
    assert recipients == ["duty@ops.example", "boss@ops.example"]


async def test_email_logs_in_when_configured(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    await build_channel(mail_config(port, starttls=False, username="cityiot", password="pw")).send(
        sample_message()
    )
    assert len(mailbox.mails) == 1
    with pytest.raises(DeliveryError) as caught:
        await build_channel(
            mail_config(port, starttls=False, username="cityiot", password="wrong")
        ).send(sample_message())
    assert not caught.value.retryable
    assert "535" in caught.value.reason


async def test_email_refused_recipients_and_server_down(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    with pytest.raises(DeliveryError) as caught:
        await build_channel(mail_config(port, starttls=False, to="nobody@water.example")).send(
            sample_message()
        )
    assert not caught.value.retryable
    assert "nobody@water.example: 550" in caught.value.reason

    with pytest.raises(DeliveryError) as caught:
        await build_channel(
            mail_config(port, starttls=False, to=["nobody@x.example", "duty@x.example"])
        ).send(sample_message())
    assert not caught.value.retryable  # duty@ has it: a retry would send a second copy
    assert "sent, but recipients refused: nobody@x.example" in caught.value.reason
    assert [m[1] for m in mailbox.mails] == [["duty@x.example"]]

    down = EmailChannel("m", "127.0.0.1", "a@b.example", ["c@d.example"], port=free_port())
    with pytest.raises(DeliveryError) as caught:
        await down.send(sample_message())
    assert caught.value.retryable


# --- MQTT --------------------------------------------------------------------------------


@pytest.fixture
def team_topics(broker: LocalBroker) -> Iterator[queue.Queue[mqtt.MQTTMessage]]:
    """Messages arriving on ``cityiot/teams/#``, from a real paho subscriber."""
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"teams-{free_port()}")
    client.on_message = lambda _c, _u, msg: received.put(msg)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe("cityiot/teams/#", qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "subscriber never subscribed"
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


async def next_message(received: queue.Queue[mqtt.MQTTMessage]) -> mqtt.MQTTMessage:
    return await asyncio.to_thread(received.get, True, 10)


async def test_mqtt_publishes_on_the_team_topic(
    broker: LocalBroker, team_topics: queue.Queue[mqtt.MQTTMessage]
) -> None:
    channel = build_channel(
        {"type": "mqtt", "name": "urban-mqtt", "host": broker.host, "port": broker.port}
    )
    message = sample_message()
    await channel.send(message)
    got = await next_message(team_topics)
    assert got.topic == "cityiot/teams/urban-management"
    assert got.qos == 1
    assert json.loads(got.payload) == message


async def test_mqtt_custom_topic(
    broker: LocalBroker, team_topics: queue.Queue[mqtt.MQTTMessage]
) -> None:
    channel = MqttChannel(
        "m", topic="cityiot/teams/{receiver}/night", host=broker.host, port=broker.port
    )
    await channel.send(sample_message("resolved"))
    got = await next_message(team_topics)
    assert got.topic == "cityiot/teams/urban-management/night"
    assert json.loads(got.payload)["status"] == "resolved"


async def test_mqtt_through_the_platform_publish_function() -> None:
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        published.append((topic, payload))

    channel = build_channel({"type": "mqtt", "name": "urban-mqtt"}, publish=publish)
    await channel.send(sample_message())
    [(topic, payload)] = published
    assert topic == "cityiot/teams/urban-management"
    assert json.loads(payload) == sample_message()


async def test_mqtt_broker_down_is_retryable() -> None:
    channel = MqttChannel("m", host="127.0.0.1", port=free_port(), timeout_s=2)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_message())
    assert caught.value.retryable
    assert f"127.0.0.1:{channel.port}" in caught.value.reason


# --- configuration -----------------------------------------------------------------------


def test_build_channel_builds_every_type() -> None:
    configs: list[dict[str, Any]] = [
        {"type": "webhook", "name": "a", "url": "https://ops.example/hook", "timeout_s": 5},
        {"type": "wecom", "name": "b", "key": "k"},
        {"type": "dingtalk", "name": "c", "access_token": "t", "secret": "s", "at_all": True},
        mail_config(25, starttls=True, username="u", password="p"),
        {"type": "mqtt", "name": "e", "host": "127.0.0.1", "qos": 2, "retain": True},
    ]
    channels = [build_channel(copy.deepcopy(c)) for c in configs]
    assert [(c.type, c.name) for c in channels] == [
        ("webhook", "a"),
        ("wecom", "b"),
        ("dingtalk", "c"),
        ("email", "duty-mail"),
        ("mqtt", "e"),
    ]


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"type": "webhook", "name": "ops"}, "channel 'ops' (webhook): missing option 'url'"),
        ({"type": "webhook", "name": "ops", "url": "ftp://x"}, "option 'url' must be an http"),
        (
            {"type": "webhook", "name": "ops", "url": "http://x", "secert": "s"},
            "unknown option 'secert'",
        ),
        (
            {"type": "webhook", "name": "ops", "url": "http://x", "timeout_s": "10"},
            "option 'timeout_s' must be a positive number",
        ),
        (
            {"type": "webhook", "name": "ops", "url": "http://x", "headers": {"X": 1}},
            "option 'headers'",
        ),
        ({"type": "webhook", "url": "http://x"}, "missing option 'name'"),
        ({"type": "pager", "name": "p"}, "channel 'p': unknown type 'pager'"),
        ({"name": "p"}, "channel 'p': missing option 'type'"),
        ({"type": "wecom", "name": "w"}, "channel 'w' (wecom): missing option 'key' (or a url"),
        (
            {"type": "wecom", "name": "w", "url": "https://qyapi.weixin.qq.com/x?key="},
            "missing option 'key'",
        ),
        ({"type": "dingtalk", "name": "d"}, "missing option 'access_token'"),
        (
            {"type": "dingtalk", "name": "d", "access_token": "t", "at_all": "yes"},
            "option 'at_all' must be true or false",
        ),
        ({"type": "email", "name": "m", "host": "h", "from": "a@b.example"}, "missing option 'to'"),
        (
            {"type": "email", "name": "m", "to": "a@b.example"},
            "channel 'm' (email): missing option 'host'",
        ),
        (
            {"type": "email", "name": "m", "host": "h", "from": "a@b.example", "to": "duty"},
            "option 'to' must be email addresses",
        ),
        (
            {
                "type": "email",
                "name": "m",
                "host": "h",
                "from": "a@b.example",
                "to": [],
                "port": 25,
            },
            "option 'to' must be a non-empty list",
        ),
        (
            {
                "type": "email",
                "name": "m",
                "host": "h",
                "from": "a@b.example",
                "to": "x",
                "username": "u",
            },
            "option 'password' is needed too",
        ),
        (
            {
                "type": "email",
                "name": "m",
                "host": "h",
                "from": "a@b.example",
                "to": "c@d.example",
                "port": 0,
            },
            "option 'port' must be an integer in 1..65535",
        ),
        ({"type": "mqtt", "name": "q"}, "channel 'q' (mqtt): missing option 'host'"),
        (
            {"type": "mqtt", "name": "q", "host": "h", "qos": 3},
            "option 'qos' must be an integer in 0..2",
        ),
        (
            {"type": "mqtt", "name": "q", "host": "h", "topic": "a/{team}"},
            "option 'topic' may only use",
        ),
        ({"type": "mqtt", "name": "q", "host": "h", "topic": "a/#"}, "cannot hold wildcards"),
    ],
)
def test_build_channel_names_the_bad_option(config: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_channel(config)
    assert says in str(caught.value)
