"""The ingest against the hostile payloads of issue 22: each a dead letter with a reason
(never a decoder crash), and the ingest goes on storing good readings; plus the shared
limits themselves (size, depth) as every consumer of the broker applies them."""

from __future__ import annotations

import time

import orjson
import pytest
from sqlalchemy import select

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import PayloadError, default_codecs, load_json
from cityiot.ingest.codecs.base import MAX_JSON_DEPTH, TOO_DEEP
from cityiot.storage.tables.deadletters import DeadLetter
from tests.ingest.conftest import Platform
from tests.payloads import DEEP, HOSTILE

MANHOLE = KINDS["manhole"]


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def test_hostile_payloads_are_dead_letters_and_the_ingest_goes_on(
    platform: Platform,
) -> None:
    topics = ("city/acme/mh-1/telemetry", "city/acme/mh-1/status", "city/oldco/mh-2/telemetry")
    for topic in topics:
        for _, payload in HOSTILE:
            platform.publish(topic, payload)
    good = {"ts": int(time.time() * 1000), "metrics": {"power_on": True}}
    platform.publish("city/acme/sl-1/telemetry", orjson.dumps(good))
    await platform.settle(len(topics) * len(HOSTILE) + 1)

    async with platform.sessions() as session:
        letters = (await session.scalars(select(DeadLetter))).all()
    assert len(letters) == len(topics) * len(HOSTILE)
    crashed = [letter.reason for letter in letters if "could not decode" in letter.reason]
    assert crashed == [], "a hostile payload crashed a decoder instead of being refused"
    deep = [letter for letter in letters if letter.payload.startswith(b"[[[[")]
    assert {(letter.topic, letter.reason) for letter in deep} == {
        # The typed decoder refuses an array at its first byte, before any nesting.
        (
            "city/acme/mh-1/telemetry",
            "payload does not follow the access standard: Expected `object`, got `array`",
        ),
        ("city/acme/mh-1/status", f"status: {TOO_DEEP}"),
        ("city/oldco/mh-2/telemetry", "hexframe: payload is not ASCII hex digits"),
    }
    in_metric = [
        letter for letter in letters if letter.payload.startswith(b'{"metrics": {"tilt_deg": [[')
    ]
    assert [letter.reason for letter in in_metric if letter.topic.startswith("city/acme")] == [
        TOO_DEEP,
        f"status: {TOO_DEEP}",
    ]
    assert await platform.points('SELECT "power_on" FROM "streetlight"') != []


@pytest.mark.parametrize("name", ["json", "hexframe"])
@pytest.mark.parametrize(("case", "payload"), HOSTILE, ids=[case for case, _ in HOSTILE])
def test_every_codec_answers_a_hostile_payload_with_a_payload_error(
    name: str, case: str, payload: bytes
) -> None:
    codec = default_codecs(max_bytes=100_000)[name]
    with pytest.raises(PayloadError) as refused:
        codec.decode(payload, MANHOLE)
    if case == "over the size limit":
        assert "exceeds 100000; split it" in str(refused.value)


def test_the_json_codec_says_too_deep_for_deep_nesting() -> None:
    codec = default_codecs()["json"]
    for inner in (DEEP, b"[" * 100_000, b'{"a": ' * 5_000):
        payload = b'{"metrics": {"tilt_deg": ' + inner
        with pytest.raises(PayloadError, match="nested deeper than 32 levels"):
            codec.decode(payload, MANHOLE)


def test_load_json_keeps_the_depth_limit_exactly_and_counts_no_brackets_in_strings() -> None:
    assert load_json(nested(MAX_JSON_DEPTH)) == load_json(nested(MAX_JSON_DEPTH))
    with pytest.raises(PayloadError, match="nested deeper than 32 levels"):
        load_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(PayloadError, match="nested deeper than 32 levels"):
        load_json(b'{"a": {"b": ' + nested(MAX_JSON_DEPTH - 1) + b"}}")
    brackets = "[{" * 500
    assert load_json(orjson.dumps({"text": brackets, "list": [[1], [2]] * 100})) == {
        "text": brackets,
        "list": [[1], [2]] * 100,
    }


@pytest.mark.parametrize(("case", "payload"), HOSTILE, ids=[case for case, _ in HOSTILE])
def test_load_json_refuses_with_a_payload_error_or_returns_plain_json(
    case: str, payload: bytes
) -> None:
    try:
        value = load_json(payload, max_bytes=100_000)
    except PayloadError as exc:
        assert str(exc), case
    else:  # well-formed but of the wrong shape: the consumer checks the shape
        assert isinstance(value, list | dict | str), case
