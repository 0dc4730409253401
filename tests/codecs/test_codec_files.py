"""Codec files as a vendor brings them (docs/design.md §4a): the test codecs' examples all
run when they load, the frames of every message type decode to exactly their values, and a
codec file that is wrong is refused saying what to change."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.base import PayloadError
from cityiot.ingest.codecs.book import CodecBook
from cityiot.ingest.codecs.files import CodecFileError, read_codec_file, read_codec_folder
from cityiot.ingest.codecs.scripted import CodecExampleError, FileCodec
from tests.codecs.frames import (
    FILES,
    FIRMWARE_2,
    HOSTILE,
    alarm,
    codec,
    copy_codec,
    counter,
    history,
    periodic,
)

MANHOLE = KINDS["manhole"]
SHAFT = {"depth_cm": 200.0}
CODEC_FILES = sorted(FILES.glob("*.yaml")) + sorted(FIRMWARE_2.glob("*.yaml"))


@pytest.mark.parametrize("path", CODEC_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_example_of_the_test_codecs_passes(path: Path) -> None:
    spec = read_codec_file(path)
    examples = len(spec.decoder.examples) if spec.decoder is not None else 0
    assert FileCodec(spec).check() == examples
    if spec.name in ("acme-level", *(f"hostile-{h}" for h in HOSTILE)):
        assert examples >= 1


def test_the_book_takes_the_folder_beside_the_shipped_codecs() -> None:
    book = CodecBook(FILES).load()
    mine = {p.stem for p in FILES.glob("*.yaml")}
    assert set(book.names()) == {"json", "hexframe", *mine}
    assert book.source("acme-level") == str(FILES / "acme-level.yaml")
    assert book.source("hexframe") == "package"


# -- every message type, exactly ------------------------------------------------------


def test_periodic_frames_big_endian_unsigned_distance_and_signed_temperature() -> None:
    level = codec("acme-level")
    cases = [
        (periodic(1234, -125, 92), 1234, -12.5, 92),
        (periodic(65000, 215, 100), 65000, 21.5, 100),  # distance's top bit set: unsigned
        (periodic(0, -32768, 0), 0, -3276.8, 0),  # the most negative int16
        (periodic(0x8001, 0x7FFF, 7), 0x8001, 3276.7, 7),
    ]
    for frame, distance, temperature, battery in cases:
        (output,) = level.outputs(frame, fport=10)
        assert output == {"distance": distance, "temperature": temperature, "battery": battery}
    (reading,) = level.decode(periodic(1234, -125, 92), MANHOLE, SHAFT)
    assert reading.metrics == {
        "water_level_cm": 200.0 - 1234 / 10,
        "temperature_c": -12.5,
        "battery_pct": 92,
    }
    assert reading.ts is None and reading.seq is None  # the receive time will be its time


def test_alarm_frames_flags() -> None:
    level = codec("acme-level")
    for cover_open in (False, True):
        for tilted in (False, True):
            (reading,) = level.decode(alarm(cover_open, tilted, 35), MANHOLE, SHAFT)
            # tilt_alarm is not a metric of the kind: the mapping leaves it out
            assert reading.metrics == {"cover_open": cover_open, "tilt_deg": 35}


def test_history_frames_little_endian_time_and_signed_value() -> None:
    level = codec("acme-level")
    for epoch_s, temperature_c10 in [(1763856000, -53), (0xF0000000, 1), (1, -1)]:
        (reading,) = level.decode(history(epoch_s, temperature_c10), MANHOLE, SHAFT)
        assert reading.ts == epoch_s * 1000
        assert reading.metrics == {"temperature_c": temperature_c10 / 10}


def test_a_frame_the_decoder_refuses_names_the_codec_and_its_reason() -> None:
    level = codec("acme-level")
    for frame, reason in [
        (b"\x09\x00", "unknown message type 0x09"),
        (b"\x01\x04", "message type 1 has 6 bytes, got 2"),
        (b"", "empty frame"),
    ]:
        with pytest.raises(PayloadError) as caught:
            level.decode(frame, MANHOLE, SHAFT)
        assert str(caught.value) == f"codec acme-level: the decoder reported: {reason}"


def test_a_mapping_of_an_attribute_the_device_lacks_leaves_the_metric_out() -> None:
    (reading,) = codec("acme-level").decode(periodic(1234, 10, 50), MANHOLE, {})
    assert reading.metrics == {"temperature_c": 1.0, "battery_pct": 50}


def test_json_mapped_alone_by_other_names() -> None:
    mapped = codec("acme-json")
    message = {
        "dev": "js-1",
        "lvl": 123.4,
        "bat": 88,
        "ts": "2025-11-23T08:00:00+08:00",
        "state": {"open": False},
    }
    (reading,) = mapped.decode(orjson.dumps(message), MANHOLE, SHAFT)
    assert reading.metrics == {"water_level_cm": 123.4, "battery_pct": 88, "cover_open": False}
    assert reading.ts == "2025-11-23T08:00:00+08:00"  # validated like any reading's
    del message["state"]
    message["ts"] = 1763856000000
    (reading,) = mapped.decode(orjson.dumps(message), MANHOLE, SHAFT)
    assert reading.metrics == {"water_level_cm": 123.4, "battery_pct": 88}
    assert reading.ts == 1763856000000
    batch = [{"lvl": 1.5}, {"bat": 2, "state": {"open": True}}]
    readings = mapped.decode(orjson.dumps(batch), MANHOLE, SHAFT)
    assert [r.metrics for r in readings] == [
        {"water_level_cm": 1.5},
        {"battery_pct": 2, "cover_open": True},
    ]
    with pytest.raises(PayloadError, match="codec acme-json: no metric could be taken"):
        mapped.decode(b'{"dev": "js-1", "rssi": -80}', MANHOLE, SHAFT)
    with pytest.raises(PayloadError, match="invalid JSON"):
        mapped.decode(b"\x01\x02", MANHOLE, SHAFT)


def test_the_frame_counter_and_time_are_the_readings_own() -> None:
    (v1,) = codec("acme-counter").decode(counter(513, 1763856000, 80), MANHOLE)
    (v2,) = codec("acme-counter", FIRMWARE_2).decode(counter(513, 1763856000, 80), MANHOLE)
    assert (v1.seq, v1.ts, v1.metrics) == (513, 1763856000000, {"battery_pct": 80})
    assert (v2.seq, v2.ts, v2.metrics) == (513, 1763856000000, {"battery_pct": 40})


# -- codec files that are refused -----------------------------------------------------


def acme_level(folder: Path) -> dict[str, Any]:
    """acme-level's files copied into ``folder``; its YAML as a mapping to change."""
    copy_codec("acme-level", folder)
    raw: dict[str, Any] = yaml.safe_load((folder / "acme-level.yaml").read_text(encoding="utf-8"))
    return raw


def write(folder: Path, raw: dict[str, Any]) -> Path:
    path = folder / f"{raw['codec']}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def load(path: Path) -> FileCodec:
    """``path`` taken in as the ingest takes a codec: loaded, its examples run."""
    return CodecBook(path.parent).build(read_codec_file(path))


def test_an_example_whose_output_is_wrong_is_refused_naming_it(tmp_path: Path) -> None:
    raw = acme_level(tmp_path)
    raw["uplinkDecoder"]["examples"][1]["output"]["data"]["battery"] = 99
    with pytest.raises(CodecExampleError) as caught:
        load(write(tmp_path, raw))
    assert str(caught.value) == (
        f"{tmp_path / 'acme-level.yaml'}: codec acme-level: uplinkDecoder.examples[1] "
        "('periodic report, distance with the top bit set (unsigned)'): "
        "output.data.battery: expected 99, got 100"
    )


# (example, its output as the file says it, where it differs from the decoder's)
DIFFERENT_OUTPUTS = [
    (
        0,
        {"data": {"distance": 1234, "temperature": -12.5, "battery": 92, "humidity": 40}},
        "output.data: fields differ (missing humidity; not in the example none)",
    ),
    (
        0,
        {"data": {"distance": 1234, "temperature": -12.5}},
        "output.data: fields differ (missing none; not in the example battery)",
    ),
    (0, {"errors": ["bad frame"]}, 'output.errors: expected ["bad frame"], got nothing'),
    (6, {"data": {"battery": 1}}, "output.data: expected an object, got nothing"),
    (
        6,
        {"errors": ["unknown message type 9"]},
        'output.errors[0]: expected "unknown message type 9", got "unknown message type 0x09"',
    ),
    (
        2,
        {"data": {"cover_open": 1, "tilt_alarm": False, "tilt": 35}},
        "output.data.cover_open: expected 1, got true",
    ),
]


@pytest.mark.parametrize(("index", "output", "detail"), DIFFERENT_OUTPUTS)
def test_examples_are_compared_field_by_field(
    tmp_path: Path, index: int, output: dict[str, Any], detail: str
) -> None:
    raw = acme_level(tmp_path)
    example = raw["uplinkDecoder"]["examples"][index]
    example["output"] = output
    with pytest.raises(CodecExampleError) as caught:
        load(write(tmp_path, raw))
    assert str(caught.value) == (
        f"{tmp_path / 'acme-level.yaml'}: codec acme-level: uplinkDecoder.examples[{index}] "
        f"({example['description']!r}): {detail}"
    )


def test_numbers_compare_with_a_relative_tolerance_of_1e_9(tmp_path: Path) -> None:
    raw = acme_level(tmp_path)
    data = raw["uplinkDecoder"]["examples"][0]["output"]["data"]
    data["temperature"] = -12.5 * (1 + 1e-12)
    data["distance"] = 1234 * (1 - 1e-12)
    assert load(write(tmp_path, raw)).check() == 8
    data["temperature"] = -12.5 * (1 + 1e-6)
    with pytest.raises(CodecExampleError, match=r"examples\[0\].*output\.data\.temperature"):
        load(write(tmp_path, raw))


def test_a_missing_script_is_refused_saying_where_to_put_it(tmp_path: Path) -> None:
    raw = acme_level(tmp_path)
    (tmp_path / "acme-level.js").unlink()
    with pytest.raises(CodecFileError) as caught:
        read_codec_file(write(tmp_path, raw))
    assert str(caught.value) == (
        f"{tmp_path / 'acme-level.yaml'}: codec acme-level: uplinkDecoder.fileName: "
        "acme-level.js is missing; put it beside the codec file (or in the PUT body's scripts)"
    )


def test_a_script_without_decode_uplink_is_refused(tmp_path: Path) -> None:
    raw = acme_level(tmp_path)
    source = (tmp_path / "acme-level.js").read_text(encoding="utf-8")
    (tmp_path / "acme-level.js").write_text(
        source.replace("function decodeUplink(", "function decode("), encoding="utf-8"
    )
    with pytest.raises(CodecFileError) as caught:
        load(write(tmp_path, raw))
    assert "acme-level.js defines no function decodeUplink" in str(caught.value)
    assert "a TS013 decoder returns {data, warnings?, errors?}" in str(caught.value)


def test_a_script_that_does_not_run_is_refused_with_the_engine_s_words(tmp_path: Path) -> None:
    raw = acme_level(tmp_path)
    (tmp_path / "acme-level.js").write_text("function decodeUplink(input) {", encoding="utf-8")
    with pytest.raises(CodecFileError) as caught:
        load(write(tmp_path, raw))
    assert "codec acme-level: acme-level.js does not load: SyntaxError" in str(caught.value)


def test_broken_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    acme_level(tmp_path)
    path = tmp_path / "acme-level.yaml"
    path.write_text("codec: acme-level\nmetrics: {battery_pct: battery\n", encoding="utf-8")
    with pytest.raises(CodecFileError) as caught:
        read_codec_folder(tmp_path)
    assert str(caught.value).startswith(f"{path}: not valid YAML")


@pytest.mark.parametrize(
    ("expression", "said"),
    [
        ("__import__('os')", "uses Call, which codec mappings do not allow"),
        ("a(1)", "uses Call, which codec mappings do not allow"),
        ("distance[0]", "uses Subscript, which codec mappings do not allow"),
        ("lambda: 1", "uses Lambda, which codec mappings do not allow"),
        ("(1).real", "only names may be followed by .field"),
        ("depth_cm -", "is not a valid expression"),
    ],
)
def test_a_mapping_outside_the_rule_language_is_refused(
    tmp_path: Path, expression: str, said: str
) -> None:
    raw = acme_level(tmp_path)
    raw["metrics"]["water_level_cm"] = expression
    with pytest.raises(CodecFileError) as caught:
        load(write(tmp_path, raw))
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path / 'acme-level.yaml'}: codec acme-level: metrics.water_level_cm: "
    )
    assert said in message
    if "allow" in said:
        assert "(use metrics, attributes, numbers, + - * /, comparisons, and/or/not)" in message


def test_a_mapping_of_kind_is_refused(tmp_path: Path) -> None:
    raw = {"codec": "acme-json", "metrics": {"battery_pct": "bat", "kind": "type"}}
    with pytest.raises(CodecFileError) as caught:
        read_codec_file(write(tmp_path, raw))
    assert "metrics.kind: kind is the reading's own, not a metric" in str(caught.value)
    assert "remove this line" in str(caught.value)


def test_a_mapping_may_give_the_time_and_seq_from_the_vendor_s_own_fields(
    tmp_path: Path,
) -> None:
    """A vendor whose JSON names its time ``time`` and its counter ``n``: ``ts: time`` and
    ``seq: n`` give the reading's own, standing over an output field ``ts``."""
    raw = {"codec": "acme-json", "metrics": {"battery_pct": "bat", "ts": "time", "seq": "n"}}
    mapped = load(write(tmp_path, raw))
    payload = orjson.dumps({"bat": 88, "time": "2025-11-23T08:00:00+08:00", "n": 12, "ts": 1})
    (reading,) = mapped.decode(payload, KINDS["manhole"])
    assert reading.metrics == {"battery_pct": 88}
    assert (reading.ts, reading.seq) == ("2025-11-23T08:00:00+08:00", 12)
    (untimed,) = mapped.decode(orjson.dumps({"bat": 70}), KINDS["manhole"])
    assert (untimed.metrics, untimed.ts, untimed.seq) == ({"battery_pct": 70}, None, None)


def test_a_broken_file_in_the_folder_stops_the_book_at_start_and_not_later(
    tmp_path: Path,
) -> None:
    raw = acme_level(tmp_path)
    book = CodecBook(tmp_path).load()
    in_force = book.codecs["acme-level"]
    broken = copy.deepcopy(raw)
    broken["uplinkDecoder"]["examples"][0]["output"]["data"]["battery"] = 1
    write(tmp_path, broken)
    assert book.refresh(None) == []  # refused while running: logged, the codec in force stays
    assert book.codecs["acme-level"] is in_force
    with pytest.raises(CodecExampleError, match=r"examples\[0\]"):
        CodecBook(tmp_path).load()  # at start-up it stops the stage
    # Mended back to the version in force and another codec added: only that one changes.
    write(tmp_path, raw)
    shutil.copyfile(FILES / "acme-json.yaml", tmp_path / "acme-json.yaml")
    assert book.refresh(None) == ["acme-json"]
    assert book.codecs["acme-level"] is in_force
    raw["uplinkDecoder"]["examples"].pop()
    write(tmp_path, raw)
    assert book.refresh(None) == ["acme-level"]
    assert book.codecs["acme-level"] is not in_force
