"""A codec from a file (docs/design.md §4a): the vendor's TS013 decoder in the sandbox, its
output mapped onto the device's kind; or, with no decoder, the vendor's JSON mapped alone.

:meth:`FileCodec.check` runs every example when the codec loads; a codec whose example
fails is refused with :class:`CodecExampleError` naming the example and the difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from cityiot.domain.catalogue import Kind
from cityiot.domain.expressions import ExpressionError
from cityiot.ingest.codecs.base import MAX_PAYLOAD_BYTES, PayloadError, RawReading, load_json
from cityiot.ingest.codecs.files import CodecFileError, CodecSpec, Example, Part
from cityiot.ingest.codecs.mapping import MetricMapping
from cityiot.ingest.codecs.sandbox import Script, ScriptError

REL_TOLERANCE = 1e-9
MAX_READINGS = 1000  # objects one frame or JSON message may give
_EMPTY: Mapping[str, Any] = {}


class CodecExampleError(CodecFileError):
    """An example of the codec does not give its output; the message names it."""


class FileCodec:
    """A loaded codec file: ``decode`` a payload of a device into raw readings."""

    def __init__(
        self,
        spec: CodecSpec,
        *,
        timeout_ms: float = 100,
        memory_bytes: int = 32 << 20,
        max_batch: int = MAX_READINGS,
        max_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        where = f"{spec.source}: codec {spec.name}"
        try:
            self.mapping = MetricMapping(spec.name, spec.metrics, where)
        except ExpressionError as exc:
            raise CodecFileError(str(exc)) from None
        self.decoder = _script(spec, spec.decoder, "decodeUplink", timeout_ms, memory_bytes)
        self.encoder = _script(spec, spec.encoder, "encodeDownlink", timeout_ms, memory_bytes)

    # -- loading -----------------------------------------------------------------------

    def check(self) -> int:
        """Run every example; returns how many ran. Raises :class:`CodecExampleError` naming
        the first that fails."""
        ran, failures = self.run_examples()
        if failures:
            raise CodecExampleError(failures[0])
        return ran

    def run_examples(self) -> tuple[int, list[str]]:
        """Run every example: how many ran, and what each failing one got wrong."""
        ran = 0
        failures: list[str] = []
        spec = self.spec
        where = f"{spec.source}: codec {spec.name}"
        for part, script, function in (
            (spec.decoder, self.decoder, "decodeUplink"),
            (spec.encoder, self.encoder, "encodeDownlink"),
        ):
            if part is None or script is None:
                continue
            section = "uplinkDecoder" if function == "decodeUplink" else "downlinkEncoder"
            for index, example in enumerate(part.examples):
                label = f"{where}: {section}.examples[{index}] ({example.description!r})"
                ran += 1
                try:
                    got = script.call(function, _example_input(example, function))
                except ScriptError as exc:
                    failures.append(f"{label}: {exc}")
                    continue
                except (TypeError, ValueError) as exc:
                    failures.append(f"{label}: its input cannot be used: {exc}")
                    continue
                difference = _differs(example.output, got)
                if difference:
                    failures.append(f"{label}: {difference}")
        return ran, failures

    # -- the hot path ------------------------------------------------------------------

    def decode(
        self,
        payload: bytes,
        kind: Kind,
        attributes: Mapping[str, Any] = _EMPTY,
        fport: int = 0,
        received_ms: int = 0,
    ) -> list[RawReading]:
        """The raw readings of one payload from a device of ``kind`` with ``attributes``;
        :class:`PayloadError` (with the codec named) when there are none to take."""
        outputs = self.outputs(payload, fport, received_ms)
        return [self.reading(output, kind, attributes) for output in outputs]

    def outputs(self, payload: bytes, fport: int = 0, received_ms: int = 0) -> list[dict[str, Any]]:
        """What the decoder gives for ``payload`` (or the vendor's JSON), as objects."""
        if len(payload) > self.max_bytes:
            raise PayloadError(
                f"payload of {len(payload)} bytes exceeds {self.max_bytes}; split it into "
                "several messages"
            )
        decoder = self.decoder
        if decoder is None:
            data: Any = load_json(payload, self.max_bytes)
        else:
            # orjson writes the byte list ten times faster than joining str() of each byte.
            text = b'{"bytes":%s,"fPort":%d,"recvTime":%d}' % (
                orjson.dumps(list(payload)),
                fport,
                received_ms,
            )
            result = decoder.call_json("decodeUplink", text.decode())
            if not isinstance(result, dict):
                raise PayloadError(
                    f"codec {self.name}: decodeUplink returned {_js_kind(result)}, "
                    "not {data, warnings?, errors?}"
                )
            errors = result.get("errors")
            if errors:
                shown = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
                if not shown.startswith(f"{self.name}:"):  # the codec is named in the reason
                    shown = f"codec {self.name}: the decoder reported: {shown}"
                raise PayloadError(shown[:600])
            data = result.get("data")
            if data is None:
                raise PayloadError(f"codec {self.name}: the decoder returned no data")
        objects = data if isinstance(data, list) else [data]
        if not objects or not all(isinstance(o, dict) for o in objects):
            what = "the decoder's data" if decoder is not None else "the JSON payload"
            raise PayloadError(
                f"codec {self.name}: {what} must be an object (or a list of objects)"
            )
        if len(objects) > self.max_batch:
            raise PayloadError(
                f"codec {self.name}: {len(objects)} readings in one message; at most "
                f"{self.max_batch}"
            )
        return objects

    def reading(
        self, output: Mapping[str, Any], kind: Kind, attributes: Mapping[str, Any] = _EMPTY
    ) -> RawReading:
        """One object of the output as a raw reading of a device of ``kind``."""
        said = output.get("kind")
        if said is not None and said != kind.name:
            raise PayloadError(
                f"codec {self.name}: the frame is of kind {said!s:.64}, the device is a "
                f"{kind.name}; check the device's kind in the registry"
            )
        metrics, own = self.mapping.apply(output, attributes)
        if not metrics:
            fields = ", ".join(sorted(output))[:300] or "none"
            wanted = "; ".join(f"{m}: {e}" for m, e in self.mapping.texts.items())
            raise PayloadError(
                f"codec {self.name}: no metric could be taken from this message (its fields: "
                f"{fields}); the mapping computes {wanted or 'the metrics from fields by name'}"
            )
        ts = own["ts"] if "ts" in own else output.get("ts")
        if isinstance(ts, float) and ts.is_integer():
            ts = int(ts)
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | str)):
            raise PayloadError(
                f"codec {self.name}: ts {ts!r:.40} is neither epoch milliseconds nor RFC 3339"
            )
        seq = own["seq"] if "seq" in own else output.get("seq")
        if isinstance(seq, float) and seq.is_integer():
            seq = int(seq)
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            seq = None
        return RawReading(metrics=metrics, ts=ts, seq=seq)

    def encode(self, data: Mapping[str, Any]) -> tuple[bytes, int]:
        """A downlink: ``encodeDownlink({data})`` → (bytes, fPort). Raises PayloadError."""
        if self.encoder is None:
            raise PayloadError(f"codec {self.name} has no downlinkEncoder")
        result = self.encoder.call("encodeDownlink", {"data": dict(data)})
        if not isinstance(result, dict) or result.get("errors"):
            shown = result.get("errors") if isinstance(result, dict) else result
            raise PayloadError(f"codec {self.name}: the encoder reported: {shown!s:.300}")
        raw, port = result.get("bytes"), result.get("fPort", 0)
        if not isinstance(raw, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in raw):
            raise PayloadError(f"codec {self.name}: encodeDownlink gave no list of bytes")
        return bytes(raw), int(port)


def _js_kind(value: Any) -> str:
    """What a script returned, in JavaScript's words (a vendor reads the reason)."""
    if value is None:
        return "nothing (undefined or null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


_RETURNS = {
    "decodeUplink": "a TS013 decoder returns {data, warnings?, errors?}",
    "encodeDownlink": "a TS013 encoder returns {bytes, fPort}",
}


def _script(
    spec: CodecSpec, part: Part | None, function: str, timeout_ms: float, memory_bytes: int
) -> Script | None:
    """The part's script loaded into its sandbox, checked to define ``function``."""
    if part is None:
        return None
    try:
        script = Script(
            spec.name, part.file_name, part.source, timeout_ms=timeout_ms, memory_bytes=memory_bytes
        )
    except ScriptError as exc:
        raise CodecFileError(f"{spec.source}: {exc}") from None
    if not script.defines(function):
        raise CodecFileError(
            f"{spec.source}: codec {spec.name}: {part.file_name} defines no function "
            f"{function}(input); {_RETURNS[function]}"
        )
    return script


def _example_input(example: Example, function: str) -> dict[str, Any]:
    given = dict(example.input)
    if function == "encodeDownlink":
        return given
    raw = given.get("bytes", [])
    if isinstance(raw, str):  # some repositories write the frame as hex text
        raw = list(bytes.fromhex(raw.replace(" ", "")))
    given["bytes"] = [int(b) for b in raw]
    given["fPort"] = int(given.get("fPort", 0))
    given.setdefault("recvTime", 0)
    return given


def _differs(expected: Mapping[str, Any], got: Any, path: str = "output") -> str:
    """Where ``got`` differs from the example's ``expected`` output ("" when it does not);
    only the keys the example gives are compared (``normalizedOutput`` is not ours)."""
    if not isinstance(got, dict):
        return f"{path}: expected an object, got {_show(got)}"
    for key, want in expected.items():
        if key == "normalizedOutput":
            continue
        problem = _compare(want, got.get(key), f"{path}.{key}")
        if problem:
            return problem
    return ""


def _compare(want: Any, got: Any, path: str) -> str:
    if isinstance(want, bool) or isinstance(got, bool):
        return "" if want is got else f"{path}: expected {_show(want)}, got {_show(got)}"
    if isinstance(want, int | float) and isinstance(got, int | float):
        if math.isclose(want, got, rel_tol=REL_TOLERANCE) or want == got:
            return ""
        return f"{path}: expected {want!r}, got {got!r}"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{path}: expected an object, got {_show(got)}"
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        if missing or extra:
            return (
                f"{path}: fields differ (missing {', '.join(missing) or 'none'}; not in the "
                f"example {', '.join(extra) or 'none'})"
            )
        for key in want:
            problem = _compare(want[key], got[key], f"{path}.{key}")
            if problem:
                return problem
        return ""
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{path}: expected {_show(want)}, got {_show(got)}"
        for index, (w, g) in enumerate(zip(want, got, strict=True)):
            problem = _compare(w, g, f"{path}[{index}]")
            if problem:
                return problem
        return ""
    return "" if want == got else f"{path}: expected {_show(want)}, got {_show(got)}"


def _show(value: Any) -> str:
    return orjson.dumps(value).decode()[:200] if value is not None else "nothing"
