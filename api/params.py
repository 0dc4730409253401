"""Query and body values every router reads the same way."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from cityiot.api.problems import Problem
from cityiot.domain.sun import CITY_TZ

# Free text: anything but NUL, which PostgreSQL can neither store nor compare.
TEXT = r"^[^\x00]*$"

_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _written_time(value: Any) -> Any:
    # Pydantic reads a bare number as Unix seconds: since=-293 would mean 1969.
    if isinstance(value, dt.datetime) or (isinstance(value, str) and _DATE_TIME.match(value)):
        return value
    raise ValueError("not a time; write it like 2026-11-23T08:00:00+08:00 (RFC 3339)")


# A time as the schema says (RFC 3339 date-time; +08:00 when no offset is given).
Instant = Annotated[dt.datetime, BeforeValidator(_written_time)]


def city_instant(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """A time given by a caller, in UTC; one without an offset is Zhumadian's (+08:00)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=CITY_TZ)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise Problem(
            422, f"{name} is out of range; give a time like 2026-11-23T08:00:00+08:00"
        ) from None
