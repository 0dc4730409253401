"""What every codec produces: raw readings, and the error it raises on a bad payload.

Also the limits every consumer of the broker applies to a payload (:func:`check_size`,
:func:`load_json`, :data:`TOO_DEEP`), so a payload the ingest refuses with a reason cannot
crash the API's stream or the rules' listeners either.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cityiot.domain.settings import Settings

MAX_JSON_DEPTH = 32  # arrays and objects inside each other; the access standard needs 4
MAX_PAYLOAD_BYTES: int = Settings.model_fields["max_payload_bytes"].default
TOO_DEEP = (
    f"JSON nested deeper than {MAX_JSON_DEPTH} levels; the access standard's payloads "
    "nest at most 4 deep (a batch of readings)"
)


class PayloadError(ValueError):
    """The payload cannot be decoded; the message is the dead letter's reason."""


class RawReading(msgspec.Struct, forbid_unknown_fields=True):
    """One reading as sent: not yet checked against the catalogue.

    ``ts`` is epoch milliseconds, an RFC 3339 string, or None (use the receive time).
    """

    metrics: dict[str, Any]
    ts: int | str | None = None
    seq: int | None = None


def check_size(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
    """Raise :class:`PayloadError` when ``payload`` is longer than ``max_bytes``."""
    if len(payload) > max_bytes:
        raise PayloadError(
            f"payload of {len(payload)} bytes exceeds {max_bytes}; split it into several messages"
        )


def may_nest_deep(payload: bytes) -> bool:
    """False when ``payload`` has too few brackets to nest deeper than the limit (the usual
    case, two byte counts); True means only that the decoded value must be checked."""
    return payload.count(b"[") + payload.count(b"{") > MAX_JSON_DEPTH


def check_depth(value: Any) -> None:
    """Raise :class:`PayloadError` when ``value`` (decoded JSON) nests deeper than the limit;
    walks with its own stack, so it never recurses."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth == MAX_JSON_DEPTH:
            raise PayloadError(TOO_DEEP)
        stack.extend((child, depth + 1) for child in item)


def load_json(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """``payload`` as JSON, within the platform's size and depth limits; any failure (size,
    depth, syntax, UTF-8) is a :class:`PayloadError` saying what is wrong."""
    check_size(payload, max_bytes)
    try:
        value = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise PayloadError("invalid JSON: a string is not valid UTF-8") from None
    except RecursionError:  # the decoder's own guard, far deeper than the limit
        raise PayloadError(TOO_DEEP) from None
    if may_nest_deep(payload):
        check_depth(value)
    return value
