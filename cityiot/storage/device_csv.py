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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, TypeVar

from cityiot.domain.catalogue import (
    DISTRICTS,
    KINDS,
    MODEL,
    Attribute,
    Kind,
    is_valid_id,
    reserved_vendor,
)
from cityiot.domain.thingmodel import IDENTITY_ATTRIBUTES

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
# Optional for every kind: the other common attributes are required columns.
COMMON_OPTIONAL = ("install_date", *IDENTITY_ATTRIBUTES)
# How each identity on a network is written (docs/design.md §4a), for the error messages.
IDENTITY_FORMS = {
    "dev_eui": "the LoRaWAN DevEUI as 16 hex digits, e.g. 70B3D57ED0012345",
    "imei": "the NB-IoT module's IMEI as 15 digits, e.g. 869975031234567",
    "onenet_dev_id": "the OneNET device id as 1 to 64 letters, digits, '_' or '-', e.g. 1052213",
}
_DEV_EUI = re.compile(r"[0-9A-Fa-f]{16}")
_IMEI = re.compile(r"[0-9]{15}")
_ONENET_DEV_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class CsvModel:
    """What a device CSV is checked against: the kinds in force and the columns they allow.

    ``attributes`` maps each kind-specific attribute column to the kinds that have it, with
    its definition there; ``optional`` lists them, then ``install_date``.
    """

    kinds: Mapping[str, Kind]
    attributes: Mapping[str, Mapping[str, Attribute]]
    optional: tuple[str, ...]
    known: frozenset[str]


@lru_cache(maxsize=2)
def _columns_of(generation: int) -> CsvModel:
    """The CSV model of the model's ``generation`` (the cache key: KINDS changes in place)."""
    attributes: dict[str, dict[str, Attribute]] = {}
    for kind in KINDS.values():
        for attribute in kind.attributes:
            attributes.setdefault(attribute.name, {})[kind.name] = attribute
    optional = (*attributes, *COMMON_OPTIONAL)
    known = frozenset((*REQUIRED_COLUMNS, *optional))
    return CsvModel(dict(KINDS), attributes, optional, known)


def csv_model() -> CsvModel:
    """The kinds in force now and their columns: a kind added while the process runs is
    importable at once, with its attribute columns."""
    return _columns_of(MODEL.generation())


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
    dev_eui: str | None = None
    imei: str | None = None
    onenet_dev_id: str | None = None

    def identities(self) -> dict[str, str]:
        """The row's identities on a network, by attribute name (the ones it has)."""
        found = {name: getattr(self, name) for name in IDENTITY_ATTRIBUTES}
        return {name: value for name, value in found.items() if value is not None}


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
        return CsvImport([], [RowError(1, None, f"the header line is empty; {_header_hint()}")])
    columns = [name.strip().lower() for name in header]
    known = csv_model()  # one model for the whole file, even if a kind changes meanwhile
    errors = _check_header(columns, known)
    if any(e.column is None for e in errors):  # columns missing or repeated: rows unreadable
        return CsvImport([], errors)
    optional = frozenset(columns) & frozenset(known.optional)
    rows: list[DeviceRow] = []
    lines_of: dict[str, list[int]] = {}  # device_id → its lines, valid rows or not
    for line, record in _records(reader, errors):
        if len(record) != len(columns):
            errors.append(RowError(line, None, _count_message(len(record), len(columns))))
            continue
        cells = dict(zip(columns, record, strict=True))
        lines_of.setdefault(cells["device_id"].strip(), []).append(line)
        row, row_errors = _parse_row(line, cells, optional, known)
        errors.extend(row_errors)
        if row is not None:
            rows.append(row)
    repeated = {d: lines for d, lines in lines_of.items() if d and len(lines) > 1}
    errors.extend(_duplicate_errors(repeated))
    rows = _identities_once([r for r in rows if r.device_id not in repeated], errors)
    position = {name: i for i, name in enumerate(columns)}
    errors.sort(key=lambda e: (e.line, position.get(e.column or "", -1)))
    return CsvImport(rows, errors)


def _identities_once(rows: list[DeviceRow], errors: list[RowError]) -> list[DeviceRow]:
    """The rows whose identities no earlier row has: a later row giving the same dev_eui,
    imei or onenet_dev_id as another device is an error (an identity names one device)."""
    first: dict[tuple[str, str], DeviceRow] = {}
    kept: list[DeviceRow] = []
    for row in rows:
        clashes = []
        for name, value in row.identities().items():
            other = first.get((name, value))
            if other is None:
                continue
            clashes.append(
                RowError(
                    row.line,
                    name,
                    f"{quoted(value)} is also given to device {quoted(other.device_id)} on line "
                    f"{other.line}; an identity names one device: correct one of the rows",
                )
            )
        if clashes:
            errors.extend(clashes)
            continue
        for name, value in row.identities().items():
            first[(name, value)] = row
        kept.append(row)
    return kept


def _header_hint() -> str:
    return (
        f"the first line must name the columns {','.join(REQUIRED_COLUMNS)} "
        f"(then any of {', '.join(csv_model().optional)})"
    )


def _cell(value: Any) -> str:
    return "" if value is None else (str(value) if not isinstance(value, bool) else "invalid")


def parse_device(
    values: Mapping[str, Any], attributes: Mapping[str, Any] | None = None
) -> tuple[DeviceRow | None, list[RowError]]:
    """One device given as a mapping (the API's JSON), validated exactly like a CSV row.

    Numbers may be numbers or text; ``None`` is an empty cell. Optional columns absent from
    ``values`` keep their registered value on update, as in a CSV import. ``attributes``
    are the kind-specific ones, by name: a name the device's kind does not have is an
    error naming it and the kind's attributes.
    """
    cells = {str(k): _cell(v) for k, v in values.items()}
    missing = [c for c in REQUIRED_COLUMNS if c not in cells and c != "address"]
    if missing:
        return None, [RowError(1, c, "is required") for c in missing]
    cells.setdefault("address", "")
    errors: list[RowError] = []
    known = csv_model()
    kind = known.kinds.get(cells["kind"].strip())
    for name, value in (attributes or {}).items():
        if name in IDENTITY_ATTRIBUTES:  # on every kind
            cells[name] = _cell(value)
            continue
        if kind is None:  # the kind's own error says what to write
            continue
        if kind.attribute(name) is None:
            errors.append(RowError(1, name, _no_such_attribute(name, kind)))
        else:
            cells[name] = _cell(value)
    optional = frozenset(cells) & frozenset(known.optional)
    row, row_errors = _parse_row(1, cells, optional, known, hint="add it to attributes")
    errors += row_errors
    return (row, []) if row is not None and not errors else (None, errors)


def _no_such_attribute(name: str, kind: Kind) -> str:
    return f"a {kind.name} has no attribute {name}; {_attributes_of(kind)}"


def _attributes_of(kind: Kind) -> str:
    names = [a.name for a in kind.attributes]
    if not names:
        return f"a {kind.name} has no kind-specific attributes"
    return f"a {kind.name} has {', '.join(names)}"


def _check_header(columns: list[str], known: CsvModel) -> list[RowError]:
    """Missing or repeated columns are fatal (column None); unknown ones are reported."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [RowError(1, None, f"the header lacks {', '.join(missing)}; {_header_hint()}")]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        return [
            RowError(
                1,
                None,
                f"the header names {', '.join(repeated)} more than once; keep one column of each",
            )
        ]
    return [
        RowError(
            1,
            name or "(empty)",
            f"unknown column {quoted(name)}, ignored; remove it or use one of "
            f"{', '.join(known.optional)}{_did_you_mean(name, known.known)}",
        )
        for name in columns
        if name not in known.known
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
    line: int,
    raw: Mapping[str, str],
    optional: frozenset[str],
    known: CsvModel,
    hint: str = "add the column",
) -> tuple[DeviceRow | None, list[RowError]]:
    """One record (column → text) as a typed row, or None and what is wrong with it;
    ``hint`` says how to add a missing required attribute."""
    errors: list[RowError] = []
    cells = _clean_cells(line, raw, errors, known.known)

    def check(column: str, parse: Callable[[str], _T]) -> _T | None:
        if column not in cells:  # absent from the file, or already reported
            return None
        try:
            return parse(cells[column])
        except _Invalid as exc:
            errors.append(RowError(line, column, str(exc)))
            return None

    kind = check("kind", partial(_kind, kinds=known.kinds))
    spec = known.kinds[kind] if kind is not None else None
    values: dict[str, Any] = {
        "device_id": check("device_id", lambda v: _id(v, "device_id")),
        "vendor": check("vendor", _vendor),
        "kind": kind,
        "district": check("district", _district),
        "lat": check("lat", _latitude),
        "lon": check("lon", _longitude),
        "address": check("address", _address),
        "report_interval_s": check("report_interval_s", partial(_interval, kind=spec)),
        "install_date": check("install_date", _install_date),
        "dev_eui": check("dev_eui", _dev_eui),
        "imei": check("imei", _imei),
        "onenet_dev_id": check("onenet_dev_id", _onenet_dev_id),
    }
    attributes: dict[str, AttributeValue] = {}
    if spec is not None:
        for column, owners in known.attributes.items():
            attr = owners.get(spec.name)
            if attr is not None and attr.required and column not in raw:
                errors.append(
                    RowError(line, column, f"a {kind} needs {column} ({attr.description}); {hint}")
                )
            value = check(column, partial(_attribute, column=column, kind=spec, owners=owners))
            if value is not None:
                attributes[column] = value
    if errors:
        return None, errors
    return DeviceRow(line, **values, attributes=attributes, optional_columns=optional), []


def _clean_cells(
    line: int, raw: Mapping[str, str], errors: list[RowError], known: frozenset[str]
) -> dict[str, str]:
    """The known columns' values, stripped; values with control characters are reported."""
    cells: dict[str, str] = {}
    for column, value in raw.items():
        if column not in known:
            continue
        control = control_character(value)
        if control:
            message = f"contains a {control}; remove tabs, line breaks and other control characters"
            errors.append(RowError(line, column, message))
        else:
            cells[column] = value.strip()
    return cells


_CONTROL_NAMES = {"\t": "tab", "\n": "line break", "\r": "carriage return"}


# Every character of Unicode's categories Cc, Zl and Zp: one regex search per cell instead
# of a category lookup per character (a tenth of a large import's time).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character(value: str) -> str | None:
    found = _CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    return _CONTROL_NAMES.get(char) or f"control character U+{ord(char):04X}"


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


def _kind(value: str, kinds: Mapping[str, Kind]) -> str:
    if value not in kinds:
        raise _Invalid(
            f"{quoted(value)} is not a kind; use one of {', '.join(kinds)}"
            f"{_did_you_mean(value, kinds)} (GET /api/v1/kinds describes each)"
        )
    return value


def _district(value: str) -> str:
    if value not in DISTRICTS:
        aliases = {
            alias: d.id for d in DISTRICTS.values() for alias in (d.name_zh, d.name_en.lower())
        }
        alias = aliases.get(value.lower())
        hint = f" (did you mean '{alias}'?)" if alias else _did_you_mean(value, DISTRICTS)
        city = MODEL.city
        raise _Invalid(
            f"{quoted(value)} is not a district of {city.name_en} ({city.name_zh}); "
            f"use one of {', '.join(DISTRICTS)}{hint}"
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
        city = MODEL.city
        swapped = (
            f" (about {city.lat:.0f} in {city.name_en}): are lat and lon swapped?"
            if abs(lat) <= 180
            else ""
        )
        raise _Invalid(f"{lat:g} is outside -90..90; lat is the north-south coordinate{swapped}")
    return lat


def _longitude(value: str) -> float:
    lon = _decimal(value, "the longitude in decimal degrees", "114.02")
    if not -180 <= lon <= 180:
        raise _Invalid(
            f"{lon:g} is outside -180..180; lon is the east-west coordinate "
            f"(about {MODEL.city.lon:.0f} in {MODEL.city.name_en})"
        )
    return lon


def _address(value: str) -> str:
    if len(value) > MAX_ADDRESS_CHARS:
        raise _Invalid(f"is {len(value)} characters long; shorten it to {MAX_ADDRESS_CHARS}")
    return value


def _interval(value: str, kind: Kind | None) -> int:
    default = kind.report_interval_s if kind else 0  # an unknown kind is reported already
    if not value:
        return default
    hint = f", or leave it empty for the {kind.name} default ({default})" if kind else ""
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
    value: str, column: str, kind: Kind, owners: Mapping[str, Attribute]
) -> AttributeValue | None:
    """The typed value of a kind-specific attribute column (None: empty). Numbers are
    positive quantities (depths, durations, limits, pressures)."""
    attr = owners.get(kind.name)
    if attr is None:
        if value:
            raise _Invalid(
                f"is an attribute of {' and '.join(owners)} devices, not of a {kind.name} "
                f"({_attributes_of(kind)}); leave it empty on this row"
            )
        return None
    if not value:
        if attr.required:
            raise _Invalid(f"is empty; a {kind.name} needs {column} ({attr.description})")
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


def _identity(value: str, name: str, form: re.Pattern[str]) -> str | None:
    """An identity on a network as written, or None for an empty cell (none)."""
    if not value:
        return None
    if not form.fullmatch(value):
        raise _Invalid(
            f"{quoted(value)} is not a valid {name}; write {IDENTITY_FORMS[name]}, "
            "or leave it empty"
        )
    return value


def _dev_eui(value: str) -> str | None:
    """Upper case: a DevEUI arrives from network servers in either case, and is one id."""
    eui = _identity(value, "dev_eui", _DEV_EUI)
    return eui.upper() if eui is not None else None


def _imei(value: str) -> str | None:
    return _identity(value, "imei", _IMEI)


def _onenet_dev_id(value: str) -> str | None:
    return _identity(value, "onenet_dev_id", _ONENET_DEV_ID)
