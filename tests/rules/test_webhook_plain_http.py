"""Webhooks refuse plain ``http://`` unless the channel allows it (issue 27, item 3): the
routing file fails at load naming the channel and the fix, and so does a channel built on
its own; ``allow_http: true`` is the explicit way to keep a receiver on a trusted network."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cityiot.rules.notifiers import build_channel
from cityiot.rules.notifiers.webhook import WebhookChannel
from cityiot.rules.routing import DEFAULT_ROUTING_PATH, RoutingError, load_routing
from tests.rules.test_routing import ALL_SECRETS, BASE, problems_of, write


def _with_hook(**channel: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    document["receivers"][1]["channels"].append(
        {"name": "urban-hook", "type": "webhook", **channel}
    )
    return document


def test_a_plain_http_webhook_fails_the_routing_file_at_load(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, _with_hook(url="http://hooks.urban.example/alerts"))
    assert problem.startswith("receivers[1].channels[1].url: channel 'urban-hook' (webhook) ")
    assert "plain http:// (hooks.urban.example)" in problem
    assert "use an https:// url, or set allow_http: true on the channel" in problem


def test_allow_http_on_the_channel_loads_it_and_https_needs_nothing(tmp_path: Path) -> None:
    allowed = _with_hook(url="http://10.0.0.7:8080/alerts", allow_http=True)
    router = load_routing(write(tmp_path, allowed), env={})
    hook = router.receivers["urban"].channels[1]
    assert (hook["url"], hook["allow_http"]) == ("http://10.0.0.7:8080/alerts", True)
    assert build_channel(hook).name == "urban-hook"
    secure = _with_hook(url="https://hooks.urban.example/alerts")
    assert load_routing(write(tmp_path, secure), env={}).receivers["urban"].channels[1]
    # allow_http must be a real true: "yes" or 1 is not an explicit choice.
    [problem] = problems_of(tmp_path, _with_hook(url="http://h.example/x", allow_http="yes"))
    assert "set allow_http: true" in problem


def test_the_shipped_routing_file_refuses_a_plain_http_url_from_the_environment() -> None:
    env = {**ALL_SECRETS, "CITYIOT_OPS_WEBHOOK_URL": "http://ops.example/hook"}
    with pytest.raises(RoutingError) as caught:
        load_routing(DEFAULT_ROUTING_PATH, env=env)
    assert "channel 'ops-webhook' (webhook) posts to plain http:// (ops.example)" in str(
        caught.value
    )
    assert load_routing(DEFAULT_ROUTING_PATH, env=ALL_SECRETS)  # https:// as shipped: loads


def test_a_webhook_channel_built_alone_refuses_plain_http() -> None:
    config = {"type": "webhook", "name": "ops-hook", "url": "http://ops.example/hook"}
    with pytest.raises(ValueError, match="channel 'ops-hook' .* set allow_http: true"):
        build_channel(config)
    with pytest.raises(ValueError, match="plain http://"):
        WebhookChannel("ops-hook", "http://ops.example/hook")
    with pytest.raises(ValueError, match="option 'allow_http' must be true or false"):
        build_channel({**config, "allow_http": "yes"})
    assert build_channel({**config, "allow_http": True}).url == "http://ops.example/hook"
