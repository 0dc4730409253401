"""The test codecs' files and frames: ACME's level sensor (acme-level), its cloud's JSON
(acme-json), its battery monitor in two firmware versions (acme-counter) and the hostile
decoders (hostile-*), all in ``files/``."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import yaml

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.files import read_codec_file
from cityiot.ingest.codecs.scripted import FileCodec
from tests.operator_files import write_kind

FILES = Path(__file__).resolve().parent / "files"
FIRMWARE_2 = FILES / "v2"  # acme-counter as its vendor changed it
HOSTILE = ("throw", "loop", "alloc", "recurse", "errors", "nodata", "io")


def codec(name: str, folder: Path = FILES, **limits: Any) -> FileCodec:
    """The test codec ``name`` loaded from ``folder`` (examples not yet run)."""
    return FileCodec(read_codec_file(folder / f"{name}.yaml"), **limits)


def periodic(distance_mm: int, temperature_c10: int, battery: int) -> bytes:
    """acme-level type 0x01: uint16 BE distance, int16 BE temperature × 10, battery %."""
    return b"\x01" + struct.pack(">Hh", distance_mm, temperature_c10) + bytes([battery])


def alarm(cover_open: bool, tilted: bool, tilt_deg: int) -> bytes:
    """acme-level type 0x02: flags (bit0 cover open, bit1 tilt alarm), tilt in degrees."""
    return bytes([0x02, int(cover_open) | int(tilted) << 1, tilt_deg])


def history(epoch_s: int, temperature_c10: int) -> bytes:
    """acme-level type 0x03: uint32 LE epoch seconds, int16 LE temperature × 10."""
    return b"\x03" + struct.pack("<Ih", epoch_s, temperature_c10)


def counter(seq: int, epoch_s: int, battery: int) -> bytes:
    """acme-counter: 0x10, uint16 BE frame counter, uint32 BE epoch seconds, battery byte."""
    return b"\x10" + struct.pack(">HI", seq, epoch_s) + bytes([battery])


def copy_codec(name: str, to: Path, folder: Path = FILES) -> None:
    """Codec ``name``'s YAML and script from ``folder`` into ``to`` (made if missing)."""
    to.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((folder / f"{name}.yaml").read_text(encoding="utf-8"))
    for part in ("uplinkDecoder", "downlinkEncoder"):
        if part in raw:
            script = raw[part]["fileName"]
            shutil.copyfile(folder / script, to / script)
    shutil.copyfile(folder / f"{name}.yaml", to / f"{name}.yaml")


def manhole_with_temperature(folder: Path) -> Path:
    """The shipped manhole kind with the shaft temperature ACME's sensor measures
    (``temperature_c``), a compatible change, as a kind file in ``folder``."""
    spec = yaml.safe_load(Path(KINDS["manhole"].source).read_text(encoding="utf-8"))
    spec["metrics"]["temperature_c"] = {
        "type": "float",
        "unit": "°C",
        "range": [-40, 85],
        "title": {"zh": "井内温度", "en": "shaft temperature"},
    }
    return write_kind(folder, spec)


# The memory cap the hostile codecs run under here (CITYIOT_CODEC_MEMORY_MB): filling 32 MB,
# the default, takes some 75 ms of CPU time on a quiet machine, near the 100 ms time limit, and
# past it on a loaded one, which made the allocating frames' reason the time limit's.
HOSTILE_MEMORY_MB = 8

# Each hostile codec's bad frames and (a part of) the reason each is refused for, in order:
# the second frame of hostile-loop comes while the script is on probation.
HOSTILE_FRAMES: dict[str, list[tuple[bytes, str]]] = {
    "hostile-throw": [
        (b"\x02", "hostile-throw.js threw Error: frame type 2 is not supported by this firmware"),
        (b"\x03", "hostile-throw.js threw TypeError: cannot read property 'battery' of null"),
    ],
    "hostile-loop": [
        (b"\x02", "hostile-loop.js ran over its time limit of 100 ms"),
        (
            b"\x02",
            "hostile-loop.js ran over 2 ms, its limit while on probation after running over "
            "its 100 ms limit",
        ),
    ],
    "hostile-alloc": [
        (
            b"\x02",
            f"hostile-alloc.js threw null: it ran out of its {HOSTILE_MEMORY_MB} MB memory cap",
        ),
        (b"\x03", f"hostile-alloc.js ran out of its {HOSTILE_MEMORY_MB} MB memory cap"),
    ],
    "hostile-recurse": [
        (b"\x02", "hostile-recurse.js overflowed its stack (endless recursion?)"),
    ],
    "hostile-errors": [
        (b"\x07", "codec hostile-errors: the decoder reported: sensor fault E7"),
    ],
    "hostile-nodata": [
        (b"\x02", "codec hostile-nodata: the decoder returned no data"),
        (b"\x03", "codec hostile-nodata: the decoder returned no data"),
        (
            b"\x04",
            "codec hostile-nodata: decodeUplink returned nothing (undefined or null), not "
            "{data, warnings?, errors?}",
        ),
        (
            b"\x05",
            "codec hostile-nodata: the decoder's data must be an object (or a list of objects)",
        ),
    ],
    "hostile-io": [
        (b"\x11", "hostile-io.js threw ReferenceError: require is not defined"),
        (b"\x12", "hostile-io.js threw TypeError: not a function"),
        (b"\x13", "hostile-io.js threw ReferenceError: std is not defined"),
        (b"\x14", "hostile-io.js threw ReferenceError: fetch is not defined"),
        (b"\x15", "hostile-io.js threw ReferenceError: XMLHttpRequest is not defined"),
    ],
}
BATTERY_FRAME = bytes([0x01, 0x40])  # every hostile codec's good frame: battery 64
