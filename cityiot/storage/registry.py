"""The registry's operations: importing checked device rows, vendors, the ingest's device
map, presence and devices' places. Used by the CLI and the ingest; the API reuses them.

Every function takes an ``async_sessionmaker`` and runs its own transaction. All of them
work on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Row, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cityiot.domain.catalogue import KINDS, is_valid_id, reserved_vendor
from cityiot.domain.thingmodel import IDENTITY_ATTRIBUTES
from cityiot.storage.device_csv import (
    AttributeValue,
    DeviceRow,
    RowError,
    control_character,
    quoted,
)
from cityiot.storage.engine import SessionFactory, dialect_of, json_text
from cityiot.storage.tables.registry import Device, Vendor
from cityiot.storage.utc import require_aware, utcnow
from cityiot.storage.writes import (
    ROWS_PER_TURN,
    driver_time,
    execute_rows,
    write_rows,
    writing,
)

_CHUNK = 500  # ids per IN (...) query, well under SQLite's and asyncpg's parameter limits


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
    # Of ``errors``, those that name another device holding the identity, and the same
    # without its id: for a key that may not learn other vendors' devices.
    taken: list[RowError] = field(default_factory=list)
    taken_unnamed: list[RowError] = field(default_factory=list)


class IdentityTaken(ValueError):
    """A device or identity was registered by a concurrent change after this import looked:
    the database refused the duplicate, and nothing of the import was written."""


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
    *IDENTITY_ATTRIBUTES,
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
    try:
        await _import(session_factory, rows, create_vendors, report)
    except IntegrityError:
        raise IdentityTaken(
            "the database refused a device or identity (dev_eui, imei, onenet_dev_id) that "
            "another device holds, so nothing was imported: another change registered it "
            "meanwhile (import again: the report then names each row that clashes), or this "
            "import moves identities between devices in a cycle (clear them in one import, "
            "give them in the next)"
        ) from None
    return report


async def _import(
    session_factory: SessionFactory,
    rows: Sequence[DeviceRow],
    create_vendors: bool,
    report: ImportReport,
) -> None:
    async with writing(session_factory) as session:
        vendors = await _vendors_for(session, {r.vendor for r in rows}, create_vendors, report)
        registered = await _registered(session, [r.device_id for r in rows])
        holders = await _identity_holders(session, rows)
        _release(rows, vendors, registered, holders)
        now = utcnow()
        new: list[DeviceRow] = []
        changed: list[dict[str, Any]] = []
        claimed: dict[tuple[str, str], str] = {}
        for row in rows:
            current = registered.get(row.device_id)
            problem = _import_problem(row, vendors, current)
            values = _merged(row, current) if current is not None else None
            clashes = _identity_clashes(row, values, holders, claimed) if not problem else []
            if problem:
                report.errors.append(problem)
            elif clashes:
                for named, unnamed in clashes:
                    report.errors.append(named)
                    report.taken.append(named)
                    report.taken_unnamed.append(unnamed)
            elif current is None:
                new.append(row)
            else:
                assert values is not None
                if all(values[f] == getattr(current, f) for f in _ROW_FIELDS):
                    report.unchanged += 1
                else:
                    changed.append({"id": row.device_id, **values, "updated_at": now})
                if current.decommissioned_at is not None:
                    report.warnings.append(
                        RowError(
                            row.line,
                            "device_id",
                            f"{quoted(row.device_id)} is decommissioned: its entry was updated but "
                            "it stays out of service until recommissioned",
                        )
                    )
        if changed:  # first: a device giving up an identity frees it for a new one
            await session.execute(update(Device), changed)
        await _insert_devices(session, new, now)
    report.created, report.updated = len(new), len(changed)


# Rows of new devices per INSERT round: the rows' parameters are made a chunk at a time, so
# a million-row import never holds them all; per-chunk work on the new devices goes here too.
IMPORT_CHUNK = 5_000


async def _insert_devices(
    session: AsyncSession, rows: Sequence[DeviceRow], now: dt.datetime
) -> None:
    """Insert ``rows`` as new devices, ``IMPORT_CHUNK`` at a time, straight through the
    driver (:func:`execute_rows`): SQLAlchemy's per-row parameter processing of an ORM bulk
    insert cost more than the database's own work. Columns the rows do not set get their
    model's default, so the rows equal what ``insert(Device)`` would write."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    sql, values = _device_insert(dialect, now)
    for start in range(0, len(rows), IMPORT_CHUNK):
        chunk = [values(row) for row in rows[start : start + IMPORT_CHUNK]]
        await execute_rows(session, sql, chunk)


def _device_insert(
    dialect: Any, now: dt.datetime
) -> tuple[str, Callable[[DeviceRow], tuple[Any, ...]]]:
    """The INSERT of the devices table with ``?`` placeholders, and the function making a
    row's values as the driver takes them (times and dates as SQLAlchemy binds them, JSON as
    text)."""
    table = Device.__table__
    stamp = driver_time(now, dialect)
    sqlite = dialect.name == "sqlite"
    fixed: dict[str, Any] = {"created_at": stamp, "updated_at": stamp}
    for column in table.columns:
        if column.name in fixed or column.name in _SET_BY_ROW:
            continue
        default = column.default
        if default is None:
            fixed[column.name] = None
        elif default.is_scalar:
            fixed[column.name] = default.arg
        else:
            raise RuntimeError(
                f"devices.{column.name} has a computed default; set it in the import"
            )
    names = [*_SET_BY_ROW, *fixed]
    sql = f"INSERT INTO devices ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    rest = tuple(fixed.values())

    def values(row: DeviceRow) -> tuple[Any, ...]:
        day = row.install_date
        return (
            row.device_id,
            row.vendor,
            row.kind,
            row.district,
            row.lat,
            row.lon,
            row.address,
            row.report_interval_s,
            json_text(row.attributes),
            day.isoformat() if sqlite and day is not None else day,
            row.dev_eui,
            row.imei,
            row.onenet_dev_id,
            *rest,
        )

    return sql, values


# The columns :func:`_device_insert`'s values set from a row, in their order.
_SET_BY_ROW = (
    "id",
    "vendor_id",
    "kind",
    "district",
    "lat",
    "lon",
    "address",
    "report_interval_s",
    "attributes",
    "install_date",
    *IDENTITY_ATTRIBUTES,
)


async def _identity_holders(
    session: AsyncSession, rows: Sequence[DeviceRow]
) -> dict[tuple[str, str], str]:
    """(identity name, value) → the device registered with it, for the rows' identities."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.identities().items():
            wanted.setdefault(name, set()).add(value)
    holders: dict[tuple[str, str], str] = {}
    for name, values in wanted.items():
        column = getattr(Device, name)
        for chunk in in_chunks(sorted(values)):
            found = await session.execute(select(column, Device.id).where(column.in_(chunk)))
            holders.update(((name, value), device_id) for value, device_id in found)
    return holders


def _release(
    rows: Sequence[DeviceRow],
    vendors: set[str],
    registered: Mapping[str, Row[Any]],
    holders: dict[tuple[str, str], str],
) -> None:
    """Forget the identities registered devices of ``rows`` give up in this import: another
    row may take them (its update or insert runs after theirs)."""
    for row in rows:
        current = registered.get(row.device_id)
        if current is None or _import_problem(row, vendors, current) is not None:
            continue
        values = _merged(row, current)
        for name in IDENTITY_ATTRIBUTES:
            old = getattr(current, name)
            if (
                old is not None
                and values[name] != old
                and holders.get((name, old)) == row.device_id
            ):
                del holders[(name, old)]


def _identity_clashes(
    row: DeviceRow,
    values: Mapping[str, Any] | None,
    holders: Mapping[tuple[str, str], str],
    claimed: dict[tuple[str, str], str],
) -> list[tuple[RowError, RowError]]:
    """The row's identities held by another device (registered, or claimed by an earlier
    row of this import), as (error naming that device, error without it). Identities of a
    row without clashes are claimed for it."""
    given = values if values is not None else {f: getattr(row, f) for f in IDENTITY_ATTRIBUTES}
    mine = {(name, given[name]) for name in IDENTITY_ATTRIBUTES if given[name] is not None}
    clashes = []
    for name, value in sorted(mine):
        other = claimed.get((name, value)) or holders.get((name, value))
        if other is None or other == row.device_id:
            continue
        what = f"{name} {quoted(value)} is registered already"
        change = "; correct it, or clear it on the other device first"
        clashes.append(
            (
                RowError(row.line, name, f"{what} to device {quoted(other)}{change}"),
                RowError(row.line, name, f"{what} to another device; correct it"),
            )
        )
    if not clashes:
        claimed.update(dict.fromkeys(mine, row.device_id))
    return clashes


def _first_of_each(rows: Sequence[DeviceRow], report: ImportReport) -> list[DeviceRow]:
    seen: dict[str, int] = {}
    unique: list[DeviceRow] = []
    for row in rows:
        if row.device_id in seen:
            report.errors.append(
                RowError(
                    row.line,
                    "device_id",
                    f"{quoted(row.device_id)} is also on line {seen[row.device_id]}; keep one row",
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
            f"{quoted(row.device_id)} is registered under vendor "
            f"{quoted(current.vendor_id)}, not {quoted(row.vendor)}; correct the vendor "
            "column (an import never moves a device to another vendor)",
        )
    if row.vendor not in vendors:
        return RowError(
            row.line,
            "vendor",
            f"vendor {quoted(row.vendor)} is not registered; "
            "add it first (cityiot vendors add) or let the import create it (--create-vendors)",
        )
    return None


def _merged(row: DeviceRow, current: Row[Any]) -> dict[str, Any]:
    """The row's values; optional columns the file lacked keep their registered value (an
    attribute only while the row's kind has it)."""
    values = {f: getattr(row, f) for f in _ROW_FIELDS}
    kind = KINDS.get(row.kind)
    kept = {
        name: value
        for name, value in (current.attributes or {}).items()
        if name not in row.optional_columns
        and kind is not None
        and kind.attribute(name) is not None
    }
    values["attributes"] = kept | row.attributes
    for name in ("install_date", *IDENTITY_ATTRIBUTES):
        if name not in row.optional_columns:
            values[name] = getattr(current, name)
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
            f"vendor id {quoted(vendor_id)} is not valid; use 1 to 64 letters "
            "A-Z a-z, digits, '_' or '-'"
        )
    problem = reserved_vendor(vendor_id)
    if problem is not None:
        raise ValueError(f"vendor id {problem}")
    if not name.strip() or len(name.strip()) > 200 or control_character(name):
        raise ValueError("vendor name must be 1 to 200 characters without control characters")
    if not is_valid_id(codec):
        raise ValueError(
            f"codec {quoted(codec)} is not a codec name; use 'json' (the access "
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
    dev_eui: str | None = None
    imei: str | None = None
    onenet_dev_id: str | None = None


# Rows per fetch of the device map's load: a million devices arrive in chunks, so the
# loader never holds every row (or every entry) at once.
LOAD_CHUNK = 10_000


async def load_devices(
    session_factory: SessionFactory, since: dt.datetime | None = None
) -> list[DeviceEntry]:
    """Every device, or only those with ``updated_at > since`` (timezone-aware), as
    :func:`iter_devices` gives them."""
    return [entry async for chunk in iter_devices(session_factory, since) for entry in chunk]


async def iter_devices(
    session_factory: SessionFactory, since: dt.datetime | None = None, chunk: int = LOAD_CHUNK
) -> AsyncIterator[list[DeviceEntry]]:
    """Every device, or only those with ``updated_at > since`` (timezone-aware), ``chunk``
    entries at a time, streamed from the database.

    The entries share what many devices hold alike: vendor, kind and district strings,
    text attribute values and ``updated_at`` stamps (an import stamps all its devices with
    one) are one object each, not one per device.

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
        Device.dev_eui,
        Device.imei,
        Device.onenet_dev_id,
    )
    if since is not None:
        query = query.where(Device.updated_at > require_aware(since, "since"))
    if dialect_of(session_factory).name == "sqlite":
        # The order the rows lie in: callers that write to many devices (the ingest's
        # last-seen times) can go along the table instead of across it.
        query = query.order_by(literal_column("devices.rowid"))
    stamps: dict[dt.datetime, dt.datetime] = {}
    intern = sys.intern
    async with session_factory() as session:
        result = await session.stream(query.execution_options(yield_per=chunk))
        async for rows in result.partitions(chunk):
            entries = []
            for r in rows:
                attributes = r.attributes or {}
                for name, value in attributes.items():
                    if type(value) is str:
                        attributes[name] = intern(value)
                stamp = stamps.setdefault(r.updated_at, r.updated_at)
                entries.append(
                    DeviceEntry(
                        r.id,
                        intern(r.vendor_id),
                        intern(r.kind),
                        intern(r.district),
                        r.report_interval_s,
                        attributes,
                        r.decommissioned_at is not None,
                        stamp,
                        r.dev_eui,
                        r.imei,
                        r.onenet_dev_id,
                    )
                )
            yield entries


# Through the driver (execute_rows), not touching updated_at: presence is not a registry
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


# A device's link changes seldom (a device moved to another network): only changed rows are
# written, the same guard as the status's.
_LINK = "UPDATE devices SET link = ? WHERE id = ? AND (link IS NULL OR link <> ?)"
_LINK_SQLITE = (
    "UPDATE devices SET link = v.column1 FROM (VALUES (?, ?, ?)) AS v "
    "WHERE devices.id = v.column2 AND (devices.link IS NULL OR devices.link <> v.column3)"
)


async def record_links(session_factory: SessionFactory, links: Mapping[str, str]) -> float:
    """Write the link each device's latest message came by (device id → ``mqtt``, ``http``,
    ``chirpstack``, ``ctwing``, ``onenet``), a slice of at most ``ROWS_PER_TURN`` per
    transaction, like :func:`record_presence`; returns the seconds spent writing."""
    items = list(links.items())
    took = 0.0
    for start in range(0, len(items), ROWS_PER_TURN):
        rows = [(link, d, link) for d, link in items[start : start + ROWS_PER_TURN]]
        took += await write_rows(session_factory, _LINK, rows, sqlite_sql=_LINK_SQLITE)
    return took


@dataclass(frozen=True, slots=True)
class Place:
    """Where a device stands: its street address and position (WGS-84)."""

    address: str
    lat: float
    lon: float


async def device_places(
    session_factory: SessionFactory, device_ids: Iterable[str]
) -> dict[str, Place]:
    """The place of each of ``device_ids`` the registry holds (decommissioned ones too), one
    query per 500 ids: what a page of work orders shows of its devices. Unknown ids are left
    out."""
    ids = sorted(set(device_ids))
    places: dict[str, Place] = {}
    async with session_factory() as session:
        for chunk in in_chunks(ids):
            query = select(Device.id, Device.address, Device.lat, Device.lon).where(
                Device.id.in_(chunk)
            )
            for r in await session.execute(query):
                places[r.id] = Place(r.address or "", r.lat, r.lon)
    return places


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
                value = values[at] = driver_time(require_aware(at, "seen"), dialect)
            rows.append((value, device_id, value))
        took += await write_rows(session_factory, _SEEN, rows, sqlite_sql=_SEEN_SQLITE)
    for status, ids in (("offline", list(offline)), ("online", list(online))):
        for start in range(0, len(ids), ROWS_PER_TURN):
            rows = [(status, d, status) for d in ids[start : start + ROWS_PER_TURN]]
            took += await write_rows(session_factory, _STATUS, rows, sqlite_sql=_STATUS_SQLITE)
    return took


# --- Small pieces ----------------------------------------------------------------------

_T = TypeVar("_T")


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
