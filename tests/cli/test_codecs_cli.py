"""``cityiot codecs test / decode / list`` and ``cityiot vendors add --codec`` as an operator
runs them: a vendor's TS013 decoder dropped into CITYIOT_CODECS_PATH, a manhole registered
with ``devices import``, a codec put through the API (kept in the database)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from cityiot.ingest.codecs.hexframe import encode
from cityiot.platform.local_services import free_port
from cityiot.storage.codecs import save_codec
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.tables.registry import Vendor
from tests.cli.test_devices_import import CITYIOT, HEADER, devices_import

# A vendor's level sensor: uint16 big-endian distance (mm) from the cover, then a battery byte.
LEVEL_JS = """
function decodeUplink(input) {
  var b = input.bytes;
  if (b.length !== 3) {
    return { errors: ["acme-level: 3 bytes expected, got " + b.length] };
  }
  return { data: { distance: (b[0] << 8) | b[1], battery: b[2] } };
}
"""
LEVEL_YAML = """
codec: {name}
description: ACME ultrasonic level sensor
uplinkDecoder:
  fileName: acme-level.js
  examples:
    - description: {description}
      input: {{fPort: 2, bytes: [0x04, 0xD2, 0x5A]}}
      output: {{data: {{distance: {distance}, battery: 90}}}}
metrics:
  water_level_cm: depth_cm - distance / 10
  battery_pct: battery
"""


def level_codec(folder: Path, name: str = "acme-level", distance: int = 1234) -> Path:
    """The level codec in ``folder``; with another ``distance`` its example fails."""
    folder.mkdir(exist_ok=True)
    (folder / "acme-level.js").write_text(LEVEL_JS, encoding="utf-8")
    description = "distance 1234 mm, battery 90" if distance == 1234 else "a wrong expectation"
    (folder / f"{name}.yaml").write_text(
        LEVEL_YAML.format(name=name, description=description, distance=distance),
        encoding="utf-8",
    )
    return folder


def cityiot(
    database_url: str, *args: str, codecs_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    environ["CITYIOT_DATABASE_URL"] = database_url
    if codecs_path is not None:
        environ["CITYIOT_CODECS_PATH"] = str(codecs_path)
    return subprocess.run(
        [CITYIOT, *args], capture_output=True, text=True, timeout=120, env=environ
    )


def vendor_codec(database_url: str, vendor_id: str) -> str | None:
    async def read() -> str | None:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.scalar(select(Vendor.codec).where(Vendor.id == vendor_id))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_shipped_codecs_pass_their_examples(sqlite_url: str) -> None:
    done = cityiot(sqlite_url, "codecs", "test")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "json\tbuilt-in\tno examples (the access standard, in code)",
        "hexframe\tpackage\t3 examples passed",
    ]
    assert not Path(sqlite_url.split("///", 1)[1]).exists()  # a test creates no database

    listed = cityiot(sqlite_url, "codecs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hexframe\tpackage\thexframe.js\t-\toutput fields by name" in listed.stdout


def test_every_failing_codec_is_named_with_its_example(tmp_path: Path, sqlite_url: str) -> None:
    folder = level_codec(tmp_path / "codecs")
    level_codec(folder, "acme-bad", distance=9999)
    (folder / "broken.yaml").write_text("codec: Not A Name\n", encoding="utf-8")
    (folder / "gone.yaml").write_text(
        "codec: acme-gone\nuplinkDecoder: {fileName: gone.js}\n", encoding="utf-8"
    )

    done = cityiot(sqlite_url, "codecs", "test", codecs_path=folder)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"acme-level\t{folder / 'acme-level.yaml'}\t1 example passed" in lines
    assert f"acme-bad\t{folder / 'acme-bad.yaml'}\tFAILED" in lines
    assert f"acme-gone\t{folder / 'gone.yaml'}\tFAILED" in lines
    assert "hexframe\tpackage\t3 examples passed" in lines
    assert (
        f"failed: {folder / 'acme-bad.yaml'}: codec acme-bad: uplinkDecoder.examples[0] "
        "('a wrong expectation'): output.data.distance: expected 9999, got 1234"
    ) in done.stderr
    assert f"failed: {folder / 'broken.yaml'}: codec: 'Not A Name' is not a codec name" in (
        done.stderr
    )
    assert "uplinkDecoder.fileName: gone.js is missing; put it beside the codec file" in done.stderr
    assert "error: 3 codec problem(s) above" in done.stderr

    # Named alone, a good codec passes while the others stay broken.
    alone = cityiot(sqlite_url, "codecs", "test", "acme-level", codecs_path=folder)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines() == [
        f"acme-level\t{folder / 'acme-level.yaml'}\t1 example passed"
    ]


def test_an_unknown_codec_name_lists_the_known_ones(sqlite_url: str) -> None:
    done = cityiot(sqlite_url, "codecs", "test", "hexframe", "nope")
    assert done.returncode == 1
    assert "error: unknown codec(s) 'nope'; codecs in force: json, hexframe" in done.stderr
    assert done.stdout == ""


def test_decode_shows_a_hexframe_frames_metrics(sqlite_url: str) -> None:
    frame = encode("manhole", {"tilt_deg": 3.5, "cover_open": True}, 1763856000000, 9)
    done = cityiot(sqlite_url, "codecs", "decode", "hexframe", "--hex", frame.hex())
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["codec"] == "hexframe" and shown["device"] is None
    assert shown["output"] == [
        {"kind": "manhole", "seq": 9, "ts": 1763856000000, "tilt_deg": 3.5, "cover_open": True}
    ]
    assert shown["readings"] == [
        {"metrics": {"tilt_deg": 3.5, "cover_open": True}, "ts": 1763856000000, "seq": 9}
    ]
    assert "not validated: validation needs the device's kind and attributes" in done.stderr

    bad = cityiot(sqlite_url, "codecs", "decode", "hexframe", "--hex", "A5 0Z")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "error: --hex 'A5 0Z' is not hex; write the frame's bytes as hex digits" in bad.stderr

    corrupt = frame[:-4] + (b"0000" if not frame.endswith(b"0000") else b"1111")
    refused = cityiot(sqlite_url, "codecs", "decode", "hexframe", "--hex", corrupt.hex())
    assert refused.returncode == 1 and refused.stdout == ""
    assert "error: codec hexframe cannot decode this frame: hexframe: CRC mismatch" in (
        refused.stderr
    )


def register_manhole(tmp_path: Path, database_url: str) -> None:
    """Manhole mh-1 of vendor acme (created with the json codec), 200 cm deep."""
    csv = tmp_path / "manholes.csv"
    csv.write_text(
        f"{HEADER},depth_cm\nmh-1,acme,manhole,yicheng,32.98,114.02,解放路口,,200\n",
        encoding="utf-8",
    )
    done = devices_import(csv, database_url)
    assert done.returncode == 0, done.stderr


def test_decode_against_a_device_maps_and_validates_like_the_ingest(
    tmp_path: Path, db_url: str
) -> None:
    folder = level_codec(tmp_path / "codecs")
    register_manhole(tmp_path, db_url)

    def decode(frame: str) -> subprocess.CompletedProcess[str]:
        return cityiot(
            db_url, "codecs", "decode", "acme-level", "--hex", frame, "--fport", "2",
            "--device", "mh-1", codecs_path=folder,
        )  # fmt: skip

    done = decode("04D25A")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["device"] == {
        "device_id": "mh-1",
        "vendor": "acme",
        "kind": "manhole",
        "attributes": {"depth_cm": 200.0},
    }
    assert shown["fPort"] == 2
    assert shown["output"] == [{"distance": 1234, "battery": 90}]
    [stored] = shown["stored"]
    assert stored["metrics"] == {"water_level_cm": pytest.approx(76.6), "battery_pct": 90.0}
    assert stored["ts_assumed"] is True and shown["rejected"] == []
    assert "vendor acme decodes with codec json, not acme-level" in done.stderr

    # A battery byte of 200 maps to 200 %: rejected with the range, nothing stored.
    rejected = decode("04D2C8")
    assert rejected.returncode == 1
    refused = json.loads(rejected.stdout)
    assert refused["stored"] == []
    assert refused["rejected"] == [
        {"index": 0, "reason": "battery_pct=200 is outside the physical range 0..100 %"}
    ]
    assert "error: nothing would be stored" in rejected.stderr

    # The decoder's own errors: the reason, as the dead letter would give it.
    short = decode("04D2")
    assert short.returncode == 1
    assert "acme-level: 3 bytes expected, got 2" in short.stderr

    unknown = cityiot(
        db_url, "codecs", "decode", "acme-level", "--hex", "04D25A", "--device", "mh-9",
        codecs_path=folder,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "no device 'mh-9' in the registry" in unknown.stderr


def test_vendors_add_takes_any_codec_in_force(tmp_path: Path, sqlite_url: str) -> None:
    folder = level_codec(tmp_path / "codecs")
    level_codec(folder, "acme-bad", distance=9999)

    done = cityiot(
        sqlite_url, "vendors", "add", "acme", "--codec", "acme-level", codecs_path=folder
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "acme\n"
    assert vendor_codec(sqlite_url, "acme") == "acme-level"

    unknown = cityiot(sqlite_url, "vendors", "add", "acme", "--codec", "nope", codecs_path=folder)
    assert unknown.returncode == 1
    assert (
        "error: unknown codec 'nope'; codecs in force: json, acme-bad, acme-level, hexframe"
    ) in unknown.stderr
    refused = cityiot(
        sqlite_url, "vendors", "add", "acme", "--codec", "acme-bad", codecs_path=folder
    )
    assert refused.returncode == 1
    assert "error: codec acme-bad is refused when it loads" in refused.stderr
    assert "'a wrong expectation'" in refused.stderr
    assert vendor_codec(sqlite_url, "acme") == "acme-level"  # unchanged by the refusals

    # Without the folder the codec is not in force.
    gone = cityiot(sqlite_url, "vendors", "add", "acme", "--codec", "acme-level")
    assert gone.returncode == 1
    assert "codecs in force: json, hexframe" in gone.stderr


def put_codec(database_url: str, folder: Path) -> None:
    """The level codec stored as ``PUT /codecs/api-level`` stores it."""
    import yaml

    spec = yaml.safe_load(LEVEL_YAML.format(name="api-level", description="d", distance=1234))
    scripts = {"acme-level.js": (folder / "acme-level.js").read_text(encoding="utf-8")}

    async def put() -> None:
        await migrate(database_url)
        engine = make_engine(database_url)
        try:
            await save_codec(sessionmaker(engine), "api-level", spec, scripts, "key:test (admin)")
        finally:
            await engine.dispose()

    asyncio.run(put())


def test_codecs_put_through_the_api_are_in_force(tmp_path: Path, sqlite_url: str) -> None:
    put_codec(sqlite_url, level_codec(tmp_path / "scripts"))

    done = cityiot(sqlite_url, "codecs", "test", "api-level")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "api-level\tapi\t1 example passed\n"

    added = cityiot(sqlite_url, "vendors", "add", "acme", "--codec", "api-level")
    assert added.returncode == 0, added.stderr
    assert vendor_codec(sqlite_url, "acme") == "api-level"

    # A database that does not answer: the codec files, with a warning saying so.
    away = f"postgresql+asyncpg://cityiot:x@127.0.0.1:{free_port()}/cityiot"
    files_only = cityiot(away, "codecs", "test")
    assert files_only.returncode == 0, files_only.stderr
    assert "the codecs put through the API were not read from the database" in files_only.stderr
    assert "using the codec files only" in files_only.stderr
