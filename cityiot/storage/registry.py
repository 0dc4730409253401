"""The registry's operations: device CSV import, vendors, the ingest's device map, presence
and dead letters. Used by the CLI and the ingest; the API reuses them.

Every function takes an ``async_sessionmaker`` and runs its own transaction. All of them
work on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import Row, Table, delete, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cityiot.domain.catalogue import DISTRICTS, KINDS, Attribute, is_valid_id, reserved_vendor
from cityiot.storage.db import (
    ROWS_PER_TURN,
    DeadLetter,
    Device,
    Vendor,
    dialect_of,
    driver_time,
    utcnow,
    write_rows,
    writing,
)

SessionFactory = async_sessionmaker[AsyncSession]
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
_CHUNK = 500  # ids per IN (...) query, well under SQLite's and asyncpg's parameter limits
_STATEMENT_ROWS = 1000  # rows per executemany in bulk writes: each a short hold of the loop
PRUNE_CHUNK = 2000  # dead letters deleted per transaction: each a short hold of the write turn
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# --- CSV parsing -----------------------------------------------------------------------


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
    """Parse and validate a device CSV (DESIGN §7), collecting every error with its line.

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
            f"unknown column {_show(name)}, ignored; remove it or "
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
            f"{_show(device_id)} is also on line {lines[0]}; keep one "
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
        control = _control_character(value)
        if control:
            message = f"contains a {control}; remove tabs, line breaks and other control characters"
            errors.append(RowError(line, column, message))
        else:
            cells[column] = value.strip()
    return cells


_CONTROL_NAMES = {"\t": "tab", "\n": "line break", "\r": "carriage return"}


def _control_character(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return _CONTROL_NAMES.get(char) or f"control character U+{ord(char):04X}"
    return None


def _show(value: str) -> str:
    return f"'{value}'" if len(value) <= 40 else f"'{value[:37]}...'"


def _did_you_mean(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value.lower(), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _id(value: str, column: str) -> str:
    if not value:
        raise _Invalid(f"is empty; every row needs a {column}")
    if not is_valid_id(value):
        raise _Invalid(
            f"{_show(value)} is not a valid id; use 1 to 64 letters A-Z a-z, "
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
            f"{_show(value)} is not a kind; use one of {', '.join(KINDS)}"
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
        raise _Invalid(f"{_show(value)} is not a district; use one of {', '.join(DISTRICTS)}{hint}")
    return value


def _decimal(value: str, what: str, example: str) -> float:
    if not value:
        raise _Invalid(f"is empty; give {what}, e.g. {example}")
    try:
        number = float(value)
    except ValueError:
        raise _Invalid(
            f"{_show(value)} is not a number; write {what} with a decimal point, e.g. {example}"
        ) from None
    if not math.isfinite(number):
        raise _Invalid(f"{_show(value)} is not a finite number; write {what}, e.g. {example}")
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
            f"{_show(value)} is not a whole number of seconds; write e.g. 300{hint}"
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
        raise _Invalid(f"{_show(value)} is not a date; write YYYY-MM-DD, e.g. 2024-03-01")
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
            raise _Invalid(f"{_show(value)} must be a whole number ({attr.description})")
        return int(number)
    return number


# --- Import ----------------------------------------------------------------------------


@dataclass(slots=True)
class ImportReport:
    """What an import did; ``errors`` are rows that were not imported."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    vendors_created: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)


# The registry fields a CSV row sets.
_ROW_FIELDS = (
    "kind",
    "district",
    "lat",
    "lon",
    "address",
    "report_interval_s",
    "attributes",
    "install_date",
)


async def import_devices(
    session_factory: SessionFactory, rows: Sequence[DeviceRow], create_vendors: bool = True
) -> ImportReport:
    """Insert new devices, update changed ones and count the unchanged, in one transaction.

    Unknown vendors are created (name = id, codec ``json``) when ``create_vendors``, else
    their rows are errors. A device registered under another vendor is an error, never
    moved. A decommissioned device is updated but stays decommissioned (a warning).
    """
    report = ImportReport()
    rows = _first_of_each(rows, report)
    async with writing(session_factory) as session:
        vendors = await _vendors_for(session, {r.vendor for r in rows}, create_vendors, report)
        registered = await _registered(session, [r.device_id for r in rows])
        now = utcnow()
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for row in rows:
            current = registered.get(row.device_id)
            problem = _import_problem(row, vendors, current)
            if problem:
                report.errors.append(problem)
            elif current is None:
                new.append(_new_device(row, now))
            else:
                values = _merged(row, current)
                if all(values[f] == getattr(current, f) for f in _ROW_FIELDS):
                    report.unchanged += 1
                else:
                    changed.append({"id": row.device_id, **values, "updated_at": now})
                if current.decommissioned_at is not None:
                    report.warnings.append(
                        RowError(
                            row.line,
                            "device_id",
                            f"{_show(row.device_id)} is decommissioned: its entry was updated but "
                            "it stays out of service until recommissioned",
                        )
                    )
        if new:
            await session.execute(insert(Device), new)
        if changed:
            await session.execute(update(Device), changed)
    report.created, report.updated = len(new), len(changed)
    return report


def _first_of_each(rows: Sequence[DeviceRow], report: ImportReport) -> list[DeviceRow]:
    seen: dict[str, int] = {}
    unique: list[DeviceRow] = []
    for row in rows:
        if row.device_id in seen:
            report.errors.append(
                RowError(
                    row.line,
                    "device_id",
                    f"{_show(row.device_id)} is also on line {seen[row.device_id]}; keep one row",
                )
            )
        else:
            seen[row.device_id] = row.line
            unique.append(row)
    return unique


async def _vendors_for(
    session: AsyncSession, wanted: set[str], create: bool, report: ImportReport
) -> set[str]:
    """The vendors among ``wanted`` that exist (after creating the missing ones if asked)."""
    known: set[str] = set()
    for chunk in in_chunks(sorted(wanted)):
        known.update(await session.scalars(select(Vendor.id).where(Vendor.id.in_(chunk))))
    missing = sorted(wanted - known)
    if create and missing:
        rows = [{"id": v, "name": v, "codec": "json", "created_at": utcnow()} for v in missing]
        await session.execute(dialect_insert(session)(Vendor).on_conflict_do_nothing(), rows)
        report.vendors_created = missing
        known.update(missing)
    return known


async def _registered(session: AsyncSession, device_ids: Sequence[str]) -> dict[str, Row[Any]]:
    columns = [getattr(Device, f) for f in ("id", "vendor_id", *_ROW_FIELDS, "decommissioned_at")]
    found: dict[str, Row[Any]] = {}
    for chunk in in_chunks(device_ids):
        for row in await session.execute(select(*columns).where(Device.id.in_(chunk))):
            found[row.id] = row
    return found


def _import_problem(row: DeviceRow, vendors: set[str], current: Row[Any] | None) -> RowError | None:
    if current is not None and current.vendor_id != row.vendor:
        return RowError(
            row.line,
            "vendor",
            f"{_show(row.device_id)} is registered under vendor "
            f"{_show(current.vendor_id)}, not {_show(row.vendor)}; correct the vendor "
            "column (an import never moves a device to another vendor)",
        )
    if row.vendor not in vendors:
        return RowError(
            row.line,
            "vendor",
            f"vendor {_show(row.vendor)} is not registered; "
            "add it first (cityiot vendors add) or let the import create it (--create-vendors)",
        )
    return None


def _new_device(row: DeviceRow, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": row.device_id,
        "vendor_id": row.vendor,
        **{f: getattr(row, f) for f in _ROW_FIELDS},
        "created_at": now,
        "updated_at": now,
    }


def _merged(row: DeviceRow, current: Row[Any]) -> dict[str, Any]:
    """The row's values; optional columns the file lacked keep their registered value."""
    values = {f: getattr(row, f) for f in _ROW_FIELDS}
    kept = {
        name: value
        for name, value in (current.attributes or {}).items()
        if name not in row.optional_columns and row.kind in ATTRIBUTE_COLUMNS.get(name, {})
    }
    values["attributes"] = kept | row.attributes
    if "install_date" not in row.optional_columns:
        values["install_date"] = current.install_date
    return values


# --- Vendors ---------------------------------------------------------------------------


async def upsert_vendor(
    session_factory: SessionFactory, vendor_id: str, name: str, codec: str = "json"
) -> bool:
    """Create the vendor, or update its name and codec; True when it was created.

    Raises ValueError, with what to change, for an invalid id, name or codec.
    """
    _check_vendor(vendor_id, name, codec)
    async with writing(session_factory) as session:
        created = await session.get(Vendor, vendor_id) is None
        stmt = dialect_insert(session)(Vendor).values(
            id=vendor_id, name=name.strip(), codec=codec, created_at=utcnow()
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={"name": stmt.excluded.name, "codec": stmt.excluded.codec},
            )
        )
    return created


def _check_vendor(vendor_id: str, name: str, codec: str) -> None:
    if not is_valid_id(vendor_id):
        raise ValueError(
            f"vendor id {_show(vendor_id)} is not valid; use 1 to 64 letters "
            "A-Z a-z, digits, '_' or '-'"
        )
    problem = reserved_vendor(vendor_id)
    if problem is not None:
        raise ValueError(f"vendor id {problem}")
    if not name.strip() or len(name.strip()) > 200 or _control_character(name):
        raise ValueError("vendor name must be 1 to 200 characters without control characters")
    if not is_valid_id(codec):
        raise ValueError(
            f"codec {_show(codec)} is not a codec name; use 'json' (the access "
            "standard) or the name of a registered codec"
        )


async def load_vendor_codecs(session_factory: SessionFactory) -> dict[str, str]:
    """vendor id → the codec name its payloads are decoded with."""
    async with session_factory() as session:
        result = await session.execute(select(Vendor.id, Vendor.codec))
        return {vendor_id: codec for vendor_id, codec in result}


# --- The ingest's view -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What the ingest keeps in memory of one registered device."""

    device_id: str
    vendor: str
    kind: str
    district: str
    report_interval_s: int
    attributes: dict[str, AttributeValue]
    decommissioned: bool
    updated_at: dt.datetime


async def load_devices(
    session_factory: SessionFactory, since: dt.datetime | None = None
) -> list[DeviceEntry]:
    """Every device, or only those with ``updated_at > since`` (timezone-aware).

    ``updated_at`` is the writer's clock when its transaction started, so a change may
    commit after a later-stamped one was read: callers refreshing periodically should
    pass their high-water mark minus a few seconds (reloading an entry is harmless).
    """
    query = select(
        Device.id,
        Device.vendor_id,
        Device.kind,
        Device.district,
        Device.report_interval_s,
        Device.attributes,
        Device.decommissioned_at,
        Device.updated_at,
    )
    if since is not None:
        query = query.where(Device.updated_at > _aware(since, "since"))
    if dialect_of(session_factory).name == "sqlite":
        # The order the rows lie in: callers that write to many devices (the ingest's
        # last-seen times) can go along the table instead of across it.
        query = query.order_by(literal_column("devices.rowid"))
    async with session_factory() as session:
        result = await session.execute(query)
        return [
            DeviceEntry(
                r.id,
                r.vendor_id,
                r.kind,
                r.district,
                r.report_interval_s,
                dict(r.attributes or {}),
                r.decommissioned_at is not None,
                r.updated_at,
            )
            for r in result
        ]


_devices = cast(Table, Device.__table__)
# Through the driver (db.execute_rows), not touching updated_at: presence is not a registry
# change, and bumping updated_at would make every ingest refresh reload every device.
_SEEN = "UPDATE devices SET last_seen = ? WHERE id = ? AND (last_seen IS NULL OR last_seen < ?)"
# The same for many rows in one statement (SQLite names a VALUES list's columns column1 …).
_SEEN_SQLITE = (
    "UPDATE devices SET last_seen = v.column1 FROM (VALUES (?, ?, ?)) AS v "
    "WHERE devices.id = v.column2 AND (devices.last_seen IS NULL OR devices.last_seen < v.column3)"
)


# Only rows whose status changes are written: after a restart every device the ingest
# hears from "comes online" again (the former statement, which rewrote every row it named
# and moved its updated_at index entry, took 3 CPU-s with its commits for 100,000 devices
# in a bench drain). ``updated_at`` is not in the SET list, so its index is not touched.
_STATUS = "UPDATE devices SET status = ? WHERE id = ? AND status <> ?"
_STATUS_SQLITE = (
    "UPDATE devices SET status = v.column1 FROM (VALUES (?, ?, ?)) AS v "
    "WHERE devices.id = v.column2 AND devices.status <> v.column3"
)


async def online_devices(session_factory: SessionFactory) -> list[str]:
    """Ids of the devices the registry holds online (not decommissioned): what a restarted
    ingest's presence takes over."""
    query = select(Device.id).where(Device.status == "online", Device.decommissioned_at.is_(None))
    async with session_factory() as session:
        return list((await session.execute(query)).scalars())


async def record_presence(
    session_factory: SessionFactory,
    seen: Mapping[str, dt.datetime],
    offline: Iterable[str],
    online: Iterable[str],
) -> float:
    """Write last-seen times and status changes of many devices, a slice of at most
    ``ROWS_PER_TURN`` per transaction, each in this process's write turn (an alert
    recorded meanwhile waits for one slice, not for 100,000 rows). Each write may be
    repeated: a failed call is retried whole.

    ``last_seen`` only moves forward; ``updated_at`` is left alone. Unknown ids are ignored.
    Rows are written in the order given: in the table's order (the ingest's
    :meth:`~cityiot.ingest.devices.DeviceMap.in_table_order`) each page is written once, not once
    per row.
    Returns the seconds spent writing (:func:`write_rows`).
    """
    times = list(seen.items())
    dialect = dialect_of(session_factory)
    # Each distinct time converted once: the devices of one intake batch share their time.
    values: dict[dt.datetime, Any] = {}
    took = 0.0
    for start in range(0, len(times), ROWS_PER_TURN):
        rows = []
        for device_id, at in times[start : start + ROWS_PER_TURN]:
            value = values.get(at)
            if value is None:
                value = values[at] = driver_time(_aware(at, "seen"), dialect)
            rows.append((value, device_id, value))
        took += await write_rows(session_factory, _SEEN, rows, sqlite_sql=_SEEN_SQLITE)
    for status, ids in (("offline", list(offline)), ("online", list(online))):
        for start in range(0, len(ids), ROWS_PER_TURN):
            rows = [(status, d, status) for d in ids[start : start + ROWS_PER_TURN]]
            took += await write_rows(session_factory, _STATUS, rows, sqlite_sql=_STATUS_SQLITE)
    return took


# --- Dead letters ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterIn:
    """A rejected message to store; ``payload`` is already cut to the stored bound."""

    topic: str
    vendor: str | None
    device_id: str | None
    payload: bytes
    payload_size: int
    reason: str
    received_at: dt.datetime = field(default_factory=utcnow)


async def add_dead_letters(
    session_factory: SessionFactory, letters: Sequence[DeadLetterIn]
) -> None:
    """Store rejected messages, all in one transaction."""
    if not letters:
        return
    params = [
        {
            "topic": d.topic,
            "vendor": d.vendor,
            "device_id": d.device_id,
            "payload": d.payload,
            "payload_size": d.payload_size,
            "reason": d.reason,
            "received_at": _aware(d.received_at, "received_at"),
        }
        for d in letters
    ]
    async with writing(session_factory) as session:
        conn = await session.connection()
        await conn.execute(insert(cast(Table, DeadLetter.__table__)), params)


@dataclass(frozen=True, slots=True)
class DeadLetterCaps:
    """How many dead letters are kept: at most ``max_rows`` rows and ``max_bytes`` bytes of
    stored payload; the oldest go first."""

    max_rows: int
    max_bytes: int


async def prune_dead_letters(session_factory: SessionFactory, caps: DeadLetterCaps) -> int:
    """Delete the oldest dead letters beyond ``caps``; returns how many were deleted.

    Ids only grow, so the newest ``max_rows`` all lie above ``newest id - max_rows`` (fewer
    when a rolled-back insert left a gap). The byte cutoff is found by a running sum of
    ``length(payload)`` from the newest down, read outside the write turn; the deletes go
    ``PRUNE_CHUNK`` rows a transaction, so no alert waits behind one large delete. SQLite
    reuses the pages freed for later rows, so its file stops growing at about the caps.
    """
    async with session_factory() as session:
        newest = await session.scalar(select(func.max(DeadLetter.id)))
        if newest is None:
            return 0
        cutoff = newest - caps.max_rows  # ids up to here go
        newer = (
            select(
                DeadLetter.id.label("id"),
                func.sum(func.length(DeadLetter.payload))
                .over(order_by=DeadLetter.id.desc())
                .label("newer_bytes"),
            )
            .where(DeadLetter.id > cutoff)
            .subquery()
        )
        over_bytes = await session.scalar(
            select(func.max(newer.c.id)).where(newer.c.newer_bytes > caps.max_bytes)
        )
    if over_bytes is not None:
        cutoff = max(cutoff, over_bytes)
    deleted = 0
    table = cast(Table, DeadLetter.__table__)
    oldest_first = select(table.c.id).where(table.c.id <= cutoff).order_by(table.c.id)
    while True:
        async with writing(session_factory) as session:
            conn = await session.connection()
            result = await conn.execute(
                delete(table).where(table.c.id.in_(oldest_first.limit(PRUNE_CHUNK)))
            )
        deleted += result.rowcount
        if result.rowcount < PRUNE_CHUNK:
            break
    return deleted


# --- Small pieces ----------------------------------------------------------------------


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value}")
    return value


def in_chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def dialect_insert(session: AsyncSession | Session) -> Any:
    """The INSERT construct with ON CONFLICT of the session's database."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database {name!r}; use SQLite or PostgreSQL")
