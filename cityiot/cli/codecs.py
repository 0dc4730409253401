"""``cityiot codecs``: the codecs in force, their examples, and what a frame would store.

The codecs in force are the ingest's (docs/design.md §4a): ``json``, the shipped codec
files, ``CITYIOT_CODECS_PATH``'s, and those put through the API (``PUT /codecs/{name}``),
read from the database when it can be read. ``codecs test`` runs every example of each and
names every failure, where the ingest stops at the first; ``codecs decode`` shows a vendor
what one of its frames would store, validated as the ingest validates it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cityiot.cli.app import codecs_app
from cityiot.cli.common import (
    DATABASE_WAIT_S,
    database_absent,
    err,
    fail,
    load_model_from_database,
    load_settings,
    read_database,
)
from cityiot.domain.settings import Settings
from cityiot.domain.yamltext import load_yaml

if TYPE_CHECKING:
    from cityiot.ingest.codecs.book import CodecBook
    from cityiot.ingest.codecs.files import CodecSpec

BUILT_IN = "json"  # the access standard, a codec of code (cityiot.ingest.codecs.files.BUILT_IN)
ADD_ONE = "put a codec file in CITYIOT_CODECS_PATH or PUT /api/v1/codecs/{name} to add one"


@dataclass(frozen=True)
class Broken:
    """A codec file (or a codec kept by the API) that cannot be read; ``name`` when known."""

    name: str | None
    source: str
    reason: str


@dataclass
class CodecsInForce:
    """The codecs as the ingest would take them in, without running their examples yet."""

    book: CodecBook  # the limits each codec is built with, and ``json``
    specs: dict[str, CodecSpec] = field(default_factory=dict)  # later sources over earlier
    broken: list[Broken] = field(default_factory=list)

    def names(self) -> list[str]:
        """Every codec name in force, the broken ones too (a test reports them)."""
        named = {b.name for b in self.broken if b.name is not None}
        return [BUILT_IN, *sorted((set(self.specs) | named) - {BUILT_IN})]

    def source(self, name: str) -> str:
        """Where the codec comes from: built-in, package, api, or its file."""
        from cityiot.ingest.codecs.files import SHIPPED

        if name == BUILT_IN:
            return "built-in"
        spec = self.specs.get(name)
        if spec is None:
            return next(b.source for b in self.broken if b.name == name)
        return "package" if spec.source.startswith(str(SHIPPED)) else spec.source

    def build(self, name: str) -> Any:
        """The codec loaded into its sandbox, its examples not run (``json``: the code)."""
        from cityiot.ingest.codecs.scripted import FileCodec

        if name == BUILT_IN:
            return self.book.codecs[BUILT_IN]
        book = self.book
        return FileCodec(
            self.specs[name],
            timeout_ms=book.timeout_ms,
            memory_bytes=book.memory_bytes,
            max_batch=book.max_batch,
            max_bytes=book.max_bytes,
        )

    def loaded(self, name: str) -> Any:
        """The codec as the ingest takes it in: built and its examples passed; ends the
        command naming what to fix when it is broken or unknown."""
        from cityiot.ingest.codecs.files import CodecFileError

        if name not in self.names():
            fail(f"unknown codec {name!r}; codecs in force: {', '.join(self.names())} ({ADD_ONE})")
        problem = next((b for b in self.broken if b.name == name), None)
        if problem is not None:  # the ingest does not start with a broken codec file
            fail(f"codec {name} cannot be read: {problem.reason}")
        try:
            codec = self.build(name)
            if name != BUILT_IN:
                codec.check()
        except CodecFileError as exc:
            fail(f"codec {name} is refused when it loads: {exc}; run cityiot codecs test {name}")
        return codec


def stored_codecs(settings: Settings) -> dict[str, Any] | None:
    """The codecs put through the API, when the database can be read (else None)."""
    from cityiot.storage.codecs import codec_overrides

    return read_database(
        settings, codec_overrides, "the codecs put through the API", "the codec files"
    )


def codecs_in_force(settings: Settings, stored: Mapping[str, Any] | None) -> CodecsInForce:
    """The shipped codec files, ``CITYIOT_CODECS_PATH``'s over them and the API's codecs
    (``stored``: name → (spec, scripts, when)) over both, as the ingest's book takes them;
    each file read on its own, so one broken file does not hide the others."""
    from cityiot.ingest.codecs.book import CodecBook
    from cityiot.ingest.codecs.files import SHIPPED, CodecFileError, parse_codec

    found = CodecsInForce(CodecBook.of(settings))
    for folder in (SHIPPED, settings.codecs_path):
        if folder is not None:
            found.specs.update(_read_folder(folder, found.broken))
    for name, (spec, scripts, _when) in (stored or {}).items():
        try:
            found.specs[name] = parse_codec(dict(spec), dict(scripts), "api")
        except CodecFileError as exc:
            found.broken.append(Broken(name, "api", str(exc)))
    return found


def _read_folder(folder: Path, broken: list[Broken]) -> dict[str, CodecSpec]:
    """Every codec file of ``folder`` (or the file itself) that can be read, by name; the
    others go to ``broken`` with their reasons."""
    from cityiot.ingest.codecs.files import CodecFileError, read_codec_file

    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    else:
        reason = f"{folder}: no such file or folder; set CITYIOT_CODECS_PATH to a folder of codecs"
        broken.append(Broken(None, str(folder), reason))
        return {}
    found: dict[str, CodecSpec] = {}
    for file in files:
        try:
            spec = read_codec_file(file)
        except CodecFileError as exc:
            broken.append(Broken(_declared_name(file), str(file), str(exc)))
            continue
        if spec.name in found:
            reason = f"{file}: codec {spec.name} is already defined in {found[spec.name].source}"
            broken.append(Broken(spec.name, str(file), f"{reason}; rename one of them"))
            continue
        found[spec.name] = spec
    return found


def _declared_name(file: Path) -> str | None:
    """The ``codec:`` a broken file says it is, when it can be told."""
    import yaml

    try:
        raw = load_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    from cityiot.ingest.codecs.files import NAME

    name = raw.get("codec") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not NAME.match(name) or name == BUILT_IN:
        return None
    return name


# -- cityiot codecs test ---------------------------------------------------------------


@codecs_app.command("test")
def codecs_test(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Codecs to test (cityiot codecs list); none: every codec in force."),
    ] = None,
) -> None:
    """Run every example of the codecs; one line per codec (name, source, examples passed),
    exit 1 naming each failing codec, its example and the difference."""
    settings = load_settings()
    found = codecs_in_force(settings, stored_codecs(settings))
    known = found.names()
    unknown = [n for n in names or () if n not in known]
    if unknown:
        fail(
            f"unknown codec(s) {', '.join(map(repr, unknown))}; codecs in force: {', '.join(known)}"
        )
    chosen = list(dict.fromkeys(names)) if names else known
    failures = [b.reason for b in found.broken if b.name is None and not names]
    for name in chosen:
        failures += _test_one(found, name)
    for failure in failures:
        err.print(f"[bold red]failed:[/] {escape(failure)}", soft_wrap=True)
    if failures:
        fail(
            f"{len(failures)} codec problem(s) above; fix each example or script named, then "
            "run cityiot codecs test again"
        )


def _test_one(found: CodecsInForce, name: str) -> list[str]:
    """Print the codec's line; what fails (nothing when every example passed). A broken
    file of the same name fails it too: the ingest does not start with a broken codec file."""
    from cityiot.ingest.codecs.files import CodecFileError

    source = found.source(name)
    if name == BUILT_IN:
        print(f"{name}\t{source}\tno examples (the access standard, in code)")
        return []
    failures = [b.reason for b in found.broken if b.name == name]
    ran = 0
    if name in found.specs:
        try:
            ran, failed = found.build(name).run_examples()
        except CodecFileError as exc:  # the script does not load: no example can run
            failed = [str(exc)]
        failures += failed
    if failures:
        print(f"{name}\t{source}\tFAILED")
        return failures
    passed = "no examples" if ran == 0 else f"{ran} example{'' if ran == 1 else 's'} passed"
    print(f"{name}\t{source}\t{passed}")
    return []


# -- cityiot codecs decode -------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredDevice:
    """What decoding needs of a registered device."""

    device_id: str
    vendor: str
    kind: str
    attributes: dict[str, Any]
    decommissioned: bool
    vendor_codec: str


@codecs_app.command("decode")
def codecs_decode(
    name: Annotated[str, typer.Argument(help="The codec (cityiot codecs list).")],
    hex_: Annotated[
        str | None,
        typer.Option(
            "--hex", help="The frame's bytes as hex digits, two per byte (spaces allowed)."
        ),
    ] = None,
    fport: Annotated[
        int, typer.Option("--fport", min=0, max=255, help="The frame's port (0: none).")
    ] = 0,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="A registered device: map with its kind and attributes and validate as the "
            "ingest does.",
        ),
    ] = None,
    json_: Annotated[
        str | None,
        typer.Option("--json", help="A JSON message instead of --hex (json or a mapping codec)."),
    ] = None,
) -> None:
    """Print (JSON) what one frame would store: the decoder's output, the readings after
    the mapping and, with --device, the readings validated or rejected with reasons."""
    from cityiot.domain.catalogue import MODEL
    from cityiot.ingest.codecs.trial import Undecodable, try_payload
    from cityiot.ingest.validate import Validator

    payload = _payload(hex_, json_)
    settings = load_settings()
    load_model_from_database(settings)  # a device's kind may have been put through the API
    codec = codecs_in_force(settings, stored_codecs(settings)).loaded(name)
    registered = _registered_device(settings, device) if device is not None else None
    kind = None
    if registered is not None:
        kind = MODEL.kinds.get(registered.kind)
        if kind is None:
            fail(
                f"device {registered.device_id} is of kind {registered.kind!r}, which is not a "
                "kind in force; check CITYIOT_KINDS_PATH and GET /api/v1/kinds"
            )
        _note_differences(registered, name)
    shown: dict[str, Any] = {"codec": name, "fPort": fport, "device": _shown(registered)}
    try:
        trial = try_payload(
            codec,
            payload,
            fport=fport,
            received_ms=int(time.time() * 1000),
            validator=Validator(settings.retention_s, settings.future_tolerance_s),
            device_id=registered.device_id if registered is not None else None,
            kind=kind,
            attributes=registered.attributes if registered is not None else None,
        )
    except Undecodable as exc:  # what the dead letter would say
        if exc.output is None:
            fail(f"codec {name} cannot decode this frame: {exc}")
        shown["output"] = exc.output
        shown["dead_letter"] = str(exc)
        _print_json(shown)
        fail(f"this message would be a dead letter: {exc}")
    if name != BUILT_IN:
        shown["output"] = trial.output
    shown["readings"] = [_raw(r) for r in trial.raws]
    if registered is None:
        _print_json(shown)
        err.print(
            "not validated: validation needs the device's kind and attributes; add "
            "--device ID (a registered device)",
            soft_wrap=True,
        )
        return
    shown["stored"] = [
        {"ts_ms": r.ts_ms, "ts_assumed": r.ts_assumed, "metrics": r.metrics}
        for _, r in trial.stored
    ]
    shown["rejected"] = [{"index": i, "reason": reason} for i, reason in trial.rejected]
    _print_json(shown)
    for index, reason in trial.rejected:
        err.print(f"[yellow]rejected:[/] reading {index}: {escape(reason)}", soft_wrap=True)
    if not trial.stored:
        fail("nothing would be stored: every reading is rejected (reasons above)")


def _payload(hex_: str | None, json_: str | None) -> bytes:
    """The frame's bytes from --hex, or the JSON message's from --json."""
    if (hex_ is None) == (json_ is None):
        fail(
            "give the frame with --hex (its bytes as hex digits, e.g. --hex 04D25A) or a JSON "
            "message with --json '{...}', one of the two"
        )
    if json_ is not None:
        return json_.encode()
    assert hex_ is not None
    text = hex_.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        fail(
            f"--hex {hex_[:80]!r} is not hex; write the frame's bytes as hex digits, two per "
            "byte (0-9, A-F, spaces allowed), e.g. --hex 04D25A or --hex '04 D2 5A'"
        )


def _note_differences(device: RegisteredDevice, name: str) -> None:
    """Say on stderr what the ingest would do otherwise with this device's frames."""
    if device.decommissioned:
        err.print(
            f"[yellow]note:[/] device {device.device_id} is decommissioned; the ingest refuses "
            "its frames until it is registered again",
            soft_wrap=True,
        )
    if device.vendor_codec != name:
        err.print(
            f"[yellow]note:[/] vendor {device.vendor} decodes with codec {device.vendor_codec}, "
            f"not {name}; to change it: cityiot vendors add {device.vendor} --codec {name}",
            soft_wrap=True,
        )


def _registered_device(settings: Settings, device_id: str) -> RegisteredDevice:
    """The device as the registry holds it; ends the command when it cannot be read."""
    from sqlalchemy import select

    from cityiot.storage.engine import make_engine, sessionmaker
    from cityiot.storage.tables.registry import Device, Vendor

    url = settings.database_url
    if database_absent(url):
        fail(
            f"no registry database at {url}; register the device first (cityiot devices "
            "import FILE.csv) or set CITYIOT_DATABASE_URL to the platform's database"
        )

    async def read() -> RegisteredDevice | None:
        engine = make_engine(url)
        try:
            async with sessionmaker(engine)() as session:
                query = (
                    select(
                        Device.id,
                        Device.vendor_id,
                        Device.kind,
                        Device.attributes,
                        Device.decommissioned_at,
                        Vendor.codec,
                    )
                    .join(Vendor, Vendor.id == Device.vendor_id)
                    .where(Device.id == device_id)
                )
                row = (await session.execute(query)).one_or_none()
        finally:
            await engine.dispose()
        if row is None:
            return None
        return RegisteredDevice(
            row.id,
            row.vendor_id,
            row.kind,
            dict(row.attributes or {}),
            row.decommissioned_at is not None,
            row.codec,
        )

    try:
        device = asyncio.run(asyncio.wait_for(read(), DATABASE_WAIT_S))
    except Exception as exc:  # any driver's error: nothing to decode against
        cause = getattr(exc, "orig", None) or exc
        fail(
            f"device {device_id} cannot be read from the registry database "
            f"({str(cause) or type(cause).__name__}); check CITYIOT_DATABASE_URL"
        )
    if device is None:
        fail(f"no device {device_id!r} in the registry; register it with cityiot devices import")
    return device


def _shown(device: RegisteredDevice | None) -> dict[str, Any] | None:
    if device is None:
        return None
    return {
        "device_id": device.device_id,
        "vendor": device.vendor,
        "kind": device.kind,
        "attributes": device.attributes,
    }


def _raw(raw: Any) -> dict[str, Any]:
    return {"metrics": raw.metrics, "ts": raw.ts, "seq": raw.seq}


def _print_json(value: Any) -> None:
    import orjson

    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# -- cityiot codecs list ---------------------------------------------------------------


@codecs_app.command("list")
def codecs_list() -> None:
    """The codecs found (json, files, the API's): name, source, decoder, encoder and
    mapping, tab-separated; cityiot codecs test runs their examples."""
    settings = load_settings()
    found = codecs_in_force(settings, stored_codecs(settings))
    print(f"{BUILT_IN}\tbuilt-in\t-\t-\tthe access standard (docs/design.md §4)")
    for name, spec in sorted(found.specs.items()):
        decoder = spec.decoder.file_name if spec.decoder else "-"
        encoder = spec.encoder.file_name if spec.encoder else "-"
        if spec.metrics is None:
            mapping = "output fields by name"
        else:
            mapping = "; ".join(f"{m}: {e}" for m, e in spec.metrics.items())
        print(f"{name}\t{found.source(name)}\t{decoder}\t{encoder}\t{mapping}")
    for problem in found.broken:
        err.print(
            f"[yellow]warning:[/] not in force: {escape(problem.reason)}",
            soft_wrap=True,
        )
