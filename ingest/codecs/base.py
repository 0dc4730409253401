"""What every codec produces: raw readings, and the error it raises on a bad payload."""

from __future__ import annotations

from typing import Any

import msgspec


class PayloadError(ValueError):
    """The payload cannot be decoded; the message is the dead letter's reason."""


class RawReading(msgspec.Struct, forbid_unknown_fields=True):
    """One reading as sent: not yet checked against the catalogue.

    ``ts`` is epoch milliseconds, an RFC 3339 string, or None (use the receive time).
    """

    metrics: dict[str, Any]
    ts: int | str | None = None
    seq: int | None = None
