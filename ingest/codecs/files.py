"""Codec files (docs/design.md §4a): the Things Stack device-repository codec YAML, plus our
``metrics`` mapping, with the scripts it names beside it.

:func:`parse_codec` checks a spec and its scripts field by field (:class:`CodecFileError`
names the file, the field and what to write); :func:`read_codec_folder` reads every
``*.yaml`` of a folder. Running the examples is :class:`~cityiot.ingest.codecs.scripted.FileCodec`'s
job: it needs the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cityiot.domain.yamltext import load_yaml

NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
SCRIPT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}\.js$")
SHIPPED = Path(__file__).resolve().parent / "files"
BUILT_IN = "json"  # the access standard itself: a codec of code, not of a file
_TOP = {"codec", "uplinkDecoder", "downlinkEncoder", "downlinkDecoder", "metrics", "description"}
_PART = {"fileName", "examples"}
_EXAMPLE = {"description", "type", "input", "output", "normalizedOutput"}
MAX_SCRIPT_CHARS = 1 << 20
# An output field that is the reading's own and never mapped (ts and seq may be computed).
RESERVED_FIELDS = ("kind",)


class CodecFileError(ValueError):
    """A codec file is wrong; the message names the file, the field and what to change."""


@dataclass(frozen=True)
class Example:
    """One example of a decoder or an encoder: its input and the output it must give."""

    description: str
    input: Mapping[str, Any]
    output: Mapping[str, Any]


@dataclass(frozen=True)
class Part:
    """The decoder or the encoder: its script and examples."""

    file_name: str
    source: str
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class CodecSpec:
    """A codec as written: ``spec`` is the YAML as a mapping, ``scripts`` the files it names."""

    name: str
    spec: Mapping[str, Any]
    scripts: Mapping[str, str]
    source: str  # where it came from: a file, "package", or "api"
    decoder: Part | None = None
    encoder: Part | None = None
    # metric → expression; None: the decoder's output fields are the metrics by name
    metrics: Mapping[str, str] | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def parse_codec(raw: Any, scripts: Mapping[str, str], source: str) -> CodecSpec:
    """The codec ``raw`` (its YAML as a mapping) with ``scripts`` (file name → text)."""
    if not isinstance(raw, dict):
        raise CodecFileError(f"{source}: a codec file is a mapping (codec: NAME, uplinkDecoder: …)")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise CodecFileError(
            f"{source}: unknown field(s) {', '.join(unknown)}; "
            f"a codec has {', '.join(sorted(_TOP))}"
        )
    name = raw.get("codec")
    if not isinstance(name, str) or not NAME.match(name):
        raise CodecFileError(
            f"{source}: codec: {name!r} is not a codec name; write [a-z0-9_-]{{1,64}}, "
            "e.g. codec: acme-level-v2"
        )
    if name == BUILT_IN:
        raise CodecFileError(
            f"{source}: codec: json is the access standard itself and cannot be replaced; "
            "name the codec after the vendor's format"
        )
    where = f"{source}: codec {name}"
    decoder = _part(raw.get("uplinkDecoder"), scripts, f"{where}: uplinkDecoder")
    encoder = _part(raw.get("downlinkEncoder"), scripts, f"{where}: downlinkEncoder")
    metrics = raw.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict) or not metrics:
            raise CodecFileError(
                f"{where}: metrics: a mapping of the kind's metric names to expressions, "
                "e.g. water_level_cm: depth_cm - distance / 10"
            )
        for metric, expression in metrics.items():
            if not isinstance(metric, str) or not re.match(r"^[a-z][a-z0-9_]{0,63}$", metric):
                raise CodecFileError(f"{where}: metrics: {metric!r} is not a metric name")
            if metric in RESERVED_FIELDS:
                raise CodecFileError(
                    f"{where}: metrics.{metric}: {metric} is the reading's own, not a metric of "
                    f"a kind; the decoder's output field {metric} gives it (JSON mapped alone: "
                    f"the payload's own {metric}), checked against the device's; remove this line"
                )
            if isinstance(expression, bool) or not isinstance(expression, str | int | float):
                raise CodecFileError(
                    f"{where}: metrics.{metric}: {expression!r} is not an expression; write "
                    "a field of the decoder's output, an attribute, or arithmetic on them"
                )
        metrics = {m: str(e) for m, e in metrics.items()}
    if decoder is None and metrics is None:
        raise CodecFileError(
            f"{where}: give an uplinkDecoder (a script), a metrics mapping of the vendor's "
            "JSON fields, or both"
        )
    description = raw.get("description", "")
    return CodecSpec(
        name=name,
        spec=raw,
        scripts=dict(scripts),
        source=source,
        decoder=decoder,
        encoder=encoder,
        metrics=metrics,
        description=str(description),
    )


def _part(raw: Any, scripts: Mapping[str, str], where: str) -> Part | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CodecFileError(f"{where}: a mapping with fileName and examples")
    unknown = sorted(set(raw) - _PART)
    if unknown:
        raise CodecFileError(
            f"{where}: unknown field(s) {', '.join(unknown)}; use fileName, examples"
        )
    file_name = raw.get("fileName")
    if not isinstance(file_name, str) or not SCRIPT_NAME.match(file_name):
        raise CodecFileError(
            f"{where}.fileName: {file_name!r}; name a JavaScript file beside the codec file, "
            "e.g. fileName: acme-level.js"
        )
    if file_name not in scripts:
        raise CodecFileError(
            f"{where}.fileName: {file_name} is missing; put it beside the codec file (or in "
            "the PUT body's scripts)"
        )
    examples = raw.get("examples") or []
    if not isinstance(examples, list):
        raise CodecFileError(f"{where}.examples: a list of {{description, input, output}}")
    return Part(file_name, scripts[file_name], tuple(_example(e, f"{where}.examples[{i}]")
                                                     for i, e in enumerate(examples)))  # fmt: skip


def _example(raw: Any, where: str) -> Example:
    if not isinstance(raw, dict):
        raise CodecFileError(f"{where}: a mapping of description, input and output")
    unknown = sorted(set(raw) - _EXAMPLE)
    if unknown:
        raise CodecFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if not isinstance(raw.get("input"), dict) or not isinstance(raw.get("output"), dict):
        raise CodecFileError(f"{where}: give input and output, each a mapping")
    return Example(str(raw.get("description") or where), raw["input"], raw["output"])


def read_codec_file(path: Path) -> CodecSpec:
    """The codec in ``path`` with the scripts it names, read from its folder."""
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CodecFileError(f"{path}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise CodecFileError(f"{path}: not valid YAML: {exc}") from None
    scripts: dict[str, str] = {}
    if isinstance(raw, dict):
        for part in ("uplinkDecoder", "downlinkEncoder"):
            entry = raw.get(part)
            name = entry.get("fileName") if isinstance(entry, dict) else None
            if isinstance(name, str) and SCRIPT_NAME.match(name):
                script = path.parent / name
                if script.is_file():
                    scripts[name] = _read_script(script)
    return parse_codec(raw, scripts, str(path))


def _read_script(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CodecFileError(f"{path}: cannot be read as UTF-8 ({exc})") from None
    if len(text) > MAX_SCRIPT_CHARS:
        raise CodecFileError(f"{path}: {len(text)} characters; a codec script has at most 1 MiB")
    return text


def read_codec_folder(path: Path) -> dict[str, CodecSpec]:
    """Every codec file (``*.yaml``, ``*.yml``) in ``path`` (or ``path`` itself), by name."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    else:
        raise CodecFileError(f"{path}: no such file or folder (CITYIOT_CODECS_PATH)")
    found: dict[str, CodecSpec] = {}
    for file in files:
        spec = read_codec_file(file)
        if spec.name in found:
            raise CodecFileError(
                f"{file}: codec {spec.name} is already defined in {found[spec.name].source}"
            )
        found[spec.name] = spec
    return found
