"""Device CSV files (docs/design.md §7): parsing and checking rows, with a message for every problem
that says what to write instead. No database: :mod:`cityiot.storage.registry` imports the rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from cityiot.domain.catalogue import DISTRICTS, KINDS, Attribute, is_valid_id, reserved_vendor

AttributeValue = float | int | str

REQUIRED_COLUMNS = (
    "device_id",
    "vendor",
    "kind",
    "district",
    "lat",
    "lon",
    "address",
    "report_interval_s",
)
# Attribute column → the kinds that have it, with its definition there.
ATTRIBUTE_COLUMNS: dict[str, dict[str, Attribute]] = {}
for _owner in KINDS.values():
    for _attribute_def in _owner.attributes:
        ATTRIBUTE_COLUMNS.setdefault(_attribute_def.name, {})[_owner.name] = _attribute_def
OPTIONAL_COLUMNS = (*ATTRIBUTE_COLUMNS, "install_date")
_KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)

MAX_ADDRESS_CHARS = 500
MAX_TEXT_ATTRIBUTE_CHARS = 200
MAX_REPORT_INTERVAL_S = 31 * 86400
FIRST_INSTALL_DATE = dt.date(1900, 1, 1)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class RowError:
    """A problem with one row (``line`` 1 is the header) and, when known, one column."""

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, {self.column}" if self.column else f"line {self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One valid device row of a CSV file, typed.

    ``optional_columns`` names the optional columns the file had: a column the file lacks
    leaves the registered value alone on import, an empty cell clears it.
    """

    line: int
    device_id: str
    vendor: str
    kind: str
    district: str
    lat: float
    lon: float
    address: str
    report_interval_s: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    install_date: dt.date | None = None
    optional_columns: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CsvImport:
    """The valid rows of a device CSV and every problem found in it."""

    rows: list[DeviceRow]
    errors: list[RowError]


class _Invalid(ValueError):
    """A cell's value is wrong; the message says what to write instead."""


def parse_device_csv(text: str) -> CsvImport:
    """Parse and validate a device CSV (docs/design.md §7), collecting every error with its line.

    Rows with errors are left out, and so are all rows of a device_id that appears more
    than once (which one is meant is unknown). Line 1 is the header.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return CsvImport([], [RowError(1, None, f"the header is not readable as CSV ({exc})")])
    if header is None or not any(name.strip() for name in header):
        return CsvImport([], [RowError(1, None, f"the header line is empty; {_HEADER_HINT}")])
    columns = [name.strip().lower() for name in header]
    errors = _check_header(columns)
    if any(e.column is None for e in errors):  # columns missing or repeated: rows unreadable
        return CsvImport([], errors)
    optional = frozenset(columns) & frozenset(OPTIONAL_COLUMNS)
    rows: list[DeviceRow] = []
    lines_of: dict[str, list[int]] = {}  # device_id → its lines, valid rows or not
    for line, record in _records(reader, errors):
        if len(record) != len(columns):
            errors.append(RowError(line, None, _count_message(len(record), len(columns))))
            continue
        cells = dict(zip(columns, record, strict=True))
        lines_of.setdefault(cells["device_id"].strip(), []).append(line)
        row, row_errors = _parse_row(line, cells, optional)
        errors.extend(row_errors)
        if row is not None:
            rows.append(row)
    repeated = {d: lines for d, lines in lines_of.items() if d and len(lines) > 1}
    errors.extend(_duplicate_errors(repeated))
    position = {name: i for i, name in enumerate(columns)}
    errors.sort(key=lambda e: (e.line, position.get(e.column or "", -1)))
    return CsvImport([r for r in rows if r.device_id not in repeated], errors)


_HEADER_HINT = (
    f"the first line must name the columns {','.join(REQUIRED_COLUMNS)} "
    f"(then any of {', '.join(OPTIONAL_COLUMNS)})"
)


def parse_device(values: Mapping[str, Any]) -> tuple[DeviceRow | None, list[RowError]]:
    """One device given as a mapping (the API's JSON), validated exactly like a CSV row.

    Numbers may be numbers or text; ``None`` is an empty cell. Optional columns absent from
    ``values`` keep their registered value on update, as in a CSV import.
    """
    cells = {
        str(k): "" if v is None else (str(v) if not isinstance(v, bool) else "invalid")
        for k, v in values.items()
    }
    missing = [c for c in REQUIRED_COLUMNS if c not in cells and c != "address"]
    if missing:
        return None, [RowError(1, c, "is required") for c in missing]
    cells.setdefault("address", "")
    optional = frozenset(cells) & frozenset(OPTIONAL_COLUMNS)
    return _parse_row(1, cells, optional)


def _check_header(columns: list[str]) -> list[RowError]:
    """Missing or repeated columns are fatal (column None); unknown ones are reported."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [RowError(1, None, f"the header lacks {', '.join(missing)}; {_HEADER_HINT}")]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        return [
            RowError(
                1,
                None,
                f"the header names {', '.join(repeated)} more than once; keep one column of each",
            )
        ]
    known = _KNOWN_COLUMNS
    return [
        RowError(
            1,
            name or "(empty)",
            f"unknown column {quoted(name)}, ignored; remove it or "
            f"use one of {', '.join(OPTIONAL_COLUMNS)}{_did_you_mean(name, known)}",
        )
        for name in columns
        if name not in known
    ]


def _records(reader: Any, errors: list[RowError]) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, values), skipping blank rows; stops at unreadable CSV."""
    previous_end = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            errors.append(
                RowError(
                    previous_end + 1,
                    None,
                    f"not readable as CSV ({exc}); check "
                    "the double quotes here (this line and the rest were skipped)",
                )
            )
            return
        line, previous_end = previous_end + 1, reader.line_num
        if any(value.strip() for value in record):
            yield line, record


def _count_message(got: int, want: int) -> str:
    return (
        f"{got} values but the header has {want} columns; check for a missing comma, "
        'and put a value that contains a comma in double quotes ("...")'
    )


def _duplicate_errors(repeated: Mapping[str, list[int]]) -> list[RowError]:
    return [
        RowError(
            line,
            "device_id",
            f"{quoted(device_id)} is also on line {lines[0]}; keep one "
            "row per device (none of its rows was imported)",
        )
        for device_id, lines in repeated.items()
        for line in lines[1:]
    ]


_T = TypeVar("_T")


def _parse_row(
    line: int, raw: Mapping[str, str], optional: frozenset[str]
) -> tuple[DeviceRow | None, list[RowError]]:
    """One record (column → text) as a typed row, or None and what is wrong with it."""
    errors: list[RowError] = []
    cells = _clean_cells(line, raw, errors)

    def check(column: str, parse: Callable[[str], _T]) -> _T | None:
        if column not in cells:  # absent from the file, or already reported
            return None
        try:
            return parse(cells[column])
        except _Invalid as exc:
            errors.append(RowError(line, column, str(exc)))
            return None

    kind = check("kind", _kind)
    values: dict[str, Any] = {
        "device_id": check("device_id", lambda v: _id(v, "device_id")),
        "vendor": check("vendor", _vendor),
        "kind": kind,
        "district": check("district", _district),
        "lat": check("lat", _latitude),
        "lon": check("lon", _longitude),
        "address": check("address", _address),
        "report_interval_s": check("report_interval_s", lambda v: _interval(v, kind)),
        "install_date": check("install_date", _install_date),
    }
    attributes: dict[str, AttributeValue] = {}
    if kind is not None:
        for column, owners in ATTRIBUTE_COLUMNS.items():
            attr = owners.get(kind)
            if attr is not None and attr.required and column not in raw:
                errors.append(
                    RowError(
                        line,
                        column,
                        f"a {kind} needs {column} ({attr.description}); add the column",
                    )
                )
            value = check(column, partial(_attribute, column=column, kind=kind, owners=owners))
            if value is not None:
                attributes[column] = value
    if errors:
        return None, errors
    return DeviceRow(line, **values, attributes=attributes, optional_columns=optional), []


def _clean_cells(line: int, raw: Mapping[str, str], errors: list[RowError]) -> dict[str, str]:
    """The known columns' values, stripped; values with control characters are reported."""
    cells: dict[str, str] = {}
    for column, value in raw.items():
        if column not in _KNOWN_COLUMNS:
            continue
        control = control_character(value)
        if control:
            message = f"contains a {control}; remove tabs, line breaks and other control characters"
            errors.append(RowError(line, column, message))
        else:
            cells[column] = value.strip()
    return cells


_CONTROL_NAMES = {"\t": "tab", "\n": "line break", "\r": "carriage return"}


def control_character(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return _CONTROL_NAMES.get(char) or f"control character U+{ord(char):04X}"
    return None


def quoted(value: str) -> str:
    return f"'{value}'" if len(value) <= 40 else f"'{value[:37]}...'"


def _did_you_mean(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value.lower(), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _id(value: str, column: str) -> str:
    if not value:
        raise _Invalid(f"is empty; every row needs a {column}")
    if not is_valid_id(value):
        raise _Invalid(
            f"{quoted(value)} is not a valid id; use 1 to 64 letters A-Z a-z, "
            "digits, '_' or '-' (no spaces)"
        )
    return value


def _vendor(value: str) -> str:
    vendor = _id(value, "vendor")
    problem = reserved_vendor(vendor)
    if problem is not None:
        raise _Invalid(problem)
    return vendor


def _kind(value: str) -> str:
    if value not in KINDS:
        raise _Invalid(
            f"{quoted(value)} is not a kind; use one of {', '.join(KINDS)}"
            f"{_did_you_mean(value, KINDS)}"
        )
    return value


_DISTRICT_ALIASES = {
    alias: d.id for d in DISTRICTS.values() for alias in (d.name_zh, d.name_en.lower())
}


def _district(value: str) -> str:
    if value not in DISTRICTS:
        alias = _DISTRICT_ALIASES.get(value.lower())
        hint = f" (did you mean '{alias}'?)" if alias else _did_you_mean(value, DISTRICTS)
        raise _Invalid(
            f"{quoted(value)} is not a district; use one of {', '.join(DISTRICTS)}{hint}"
        )
    return value


def _decimal(value: str, what: str, example: str) -> float:
    if not value:
        raise _Invalid(f"is empty; give {what}, e.g. {example}")
    try:
        number = float(value)
    except ValueError:
        raise _Invalid(
            f"{quoted(value)} is not a number; write {what} with a decimal point, e.g. {example}"
        ) from None
    if not math.isfinite(number):
        raise _Invalid(f"{quoted(value)} is not a finite number; write {what}, e.g. {example}")
    return number


def _latitude(value: str) -> float:
    lat = _decimal(value, "the latitude in decimal degrees", "32.98")
    if not -90 <= lat <= 90:
        swapped = " (about 33 in Zhumadian): are lat and lon swapped?" if abs(lat) <= 180 else ""
        raise _Invalid(f"{lat:g} is outside -90..90; lat is the north-south coordinate{swapped}")
    return lat


def _longitude(value: str) -> float:
    lon = _decimal(value, "the longitude in decimal degrees", "114.02")
    if not -180 <= lon <= 180:
        raise _Invalid(
            f"{lon:g} is outside -180..180; lon is the east-west coordinate "
            "(about 114 in Zhumadian)"
        )
    return lon


def _address(value: str) -> str:
    if len(value) > MAX_ADDRESS_CHARS:
        raise _Invalid(f"is {len(value)} characters long; shorten it to {MAX_ADDRESS_CHARS}")
    return value


def _interval(value: str, kind: str | None) -> int:
    default = KINDS[kind].report_interval_s if kind else 0  # an unknown kind is reported already
    if not value:
        return default
    hint = f", or leave it empty for the {kind} default ({default})" if kind else ""
    try:
        seconds = int(value)
    except ValueError:
        raise _Invalid(
            f"{quoted(value)} is not a whole number of seconds; write e.g. 300{hint}"
        ) from None
    if not 0 < seconds <= MAX_REPORT_INTERVAL_S:
        raise _Invalid(
            f"{seconds} is out of range; use 1 to {MAX_REPORT_INTERVAL_S} seconds (31 days){hint}"
        )
    return seconds


def _install_date(value: str) -> dt.date | None:
    if not value:
        return None
    day: dt.date | None = None
    try:
        if _DATE.fullmatch(value):
            day = dt.date.fromisoformat(value)
    except ValueError:
        pass
    if day is None:
        raise _Invalid(f"{quoted(value)} is not a date; write YYYY-MM-DD, e.g. 2024-03-01")
    # UTC's date plus a day: in the city (+08:00) it may already be the next date.
    latest = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    if not FIRST_INSTALL_DATE <= day <= latest:
        raise _Invalid(
            f"{value} is out of range; an install date lies between "
            f"{FIRST_INSTALL_DATE.isoformat()} and tomorrow ({latest.isoformat()})"
        )
    return day


def _attribute(
    value: str, column: str, kind: str | None, owners: Mapping[str, Attribute]
) -> AttributeValue | None:
    attr = owners.get(kind or "")
    if attr is None:
        if value:
            raise _Invalid(
                f"is an attribute of {' and '.join(owners)} devices, not of a {kind}; "
                "leave it empty on this row"
            )
        return None
    if not value:
        if attr.required:
            raise _Invalid(f"is empty; a {kind} needs {column} ({attr.description})")
        return None
    if attr.type is str:
        if len(value) > MAX_TEXT_ATTRIBUTE_CHARS:
            raise _Invalid(
                f"is {len(value)} characters long; shorten it to {MAX_TEXT_ATTRIBUTE_CHARS}"
            )
        return value
    number = _decimal(value, f"{attr.description} as a number", "120")
    if number <= 0:
        raise _Invalid(f"{number:g} must be greater than 0 ({attr.description})")
    if attr.type is int:
        if not number.is_integer():
            raise _Invalid(f"{quoted(value)} must be a whole number ({attr.description})")
        return int(number)
    return number
