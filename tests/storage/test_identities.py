"""Device identities on a network (dev_eui, imei, onenet_dev_id, docs/design.md §4a): parsed
from the CSV, unique in the registry (the database refuses a duplicate), found by the ingest's
device map; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect, update
from sqlalchemy.exc import IntegrityError

from cityiot.domain.thingmodel import ModelError, parse_kind
from cityiot.ingest.devices import DeviceMap
from cityiot.storage.device_csv import RowError, parse_device, parse_device_csv
from cityiot.storage.engine import SessionFactory, make_engine
from cityiot.storage.migrations import SCRIPT_LOCATION
from cityiot.storage.registry import ImportReport, import_devices
from cityiot.storage.tables.registry import Device
from tests.operator_files import changed

HEADER = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,dev_eui,imei,onenet_dev_id"
)
EUI = "70B3D57ED0012345"
IMEI = "869975031234567"


def _row(device_id: str, dev_eui: str = "", imei: str = "", onenet: str = "") -> str:
    return f"{device_id},acme,streetlight,yicheng,32.98,114.02,,60,{dev_eui},{imei},{onenet}"


def _csv(*rows: str, header: str = HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


async def _import(sessions: SessionFactory, text: str) -> ImportReport:
    parsed = parse_device_csv(text)
    assert parsed.errors == []
    return await import_devices(sessions, parsed.rows)


async def _identities(sessions: SessionFactory, device_id: str) -> tuple[str | None, ...]:
    async with sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        return device.dev_eui, device.imei, device.onenet_dev_id


@pytest.mark.parametrize("name", ["dev_eui", "imei", "onenet_dev_id"])
def test_no_kind_may_define_an_identity_every_device_may_have(name: str) -> None:
    attribute = {"type": "str", "title": {"zh": "a", "en": "b"}}
    with pytest.raises(ModelError, match=f"every device already has {name}; remove it"):
        parse_kind(changed(f"attributes.{name}", attribute), "kinds/noise.yaml")


def test_valid_identities_are_parsed_and_dev_eui_upper_cased() -> None:
    parsed = parse_device_csv(_csv(_row("SL-1", "70b3d57ed0012345", IMEI, "onenet_1052-x")))
    assert parsed.errors == []
    (row,) = parsed.rows
    assert (row.dev_eui, row.imei, row.onenet_dev_id) == (EUI, IMEI, "onenet_1052-x")
    assert row.identities() == {"dev_eui": EUI, "imei": IMEI, "onenet_dev_id": "onenet_1052-x"}
    assert row.attributes == {}  # not kind attributes: a streetlight's kind file lacks them


def test_invalid_identities_are_errors_naming_line_column_and_the_form() -> None:
    parsed = parse_device_csv(
        _csv(
            _row("SL-1", "70B3D57ED001234"),  # 15 hex digits
            _row("SL-2", "", "86997503123456X"),
            _row("SL-3", "", "", "has space"),
            _row("SL-4", "70B3-D57E-D001-2345"),
            _row("SL-5", EUI),
        )
    )
    assert [r.device_id for r in parsed.rows] == ["SL-5"]
    assert parsed.errors == [
        RowError(
            2,
            "dev_eui",
            "'70B3D57ED001234' is not a valid dev_eui; write the LoRaWAN DevEUI as 16 hex "
            "digits, e.g. 70B3D57ED0012345, or leave it empty",
        ),
        RowError(
            3,
            "imei",
            "'86997503123456X' is not a valid imei; write the NB-IoT module's IMEI as 15 "
            "digits, e.g. 869975031234567, or leave it empty",
        ),
        RowError(
            4,
            "onenet_dev_id",
            "'has space' is not a valid onenet_dev_id; write the OneNET device id as 1 to 64 "
            "letters, digits, '_' or '-', e.g. 1052213, or leave it empty",
        ),
        RowError(
            5,
            "dev_eui",
            "'70B3-D57E-D001-2345' is not a valid dev_eui; write the LoRaWAN DevEUI as 16 hex "
            "digits, e.g. 70B3D57ED0012345, or leave it empty",
        ),
    ]


def test_an_identity_twice_in_one_file_keeps_the_first_row_only() -> None:
    parsed = parse_device_csv(
        _csv(
            _row("SL-1", EUI, IMEI),
            _row("SL-2", EUI.lower()),  # the same DevEUI in other case
            _row("SL-3", "", IMEI),
            _row("SL-4", "", "", "7"),
        )
    )
    assert [r.device_id for r in parsed.rows] == ["SL-1", "SL-4"]
    assert parsed.errors == [
        RowError(
            3,
            "dev_eui",
            f"'{EUI}' is also given to device 'SL-1' on line 2; an identity names one device: "
            "correct one of the rows",
        ),
        RowError(
            4,
            "imei",
            f"'{IMEI}' is also given to device 'SL-1' on line 2; an identity names one device: "
            "correct one of the rows",
        ),
    ]


def test_the_api_form_takes_identities_among_the_attributes_of_any_kind() -> None:
    device = {
        "device_id": "MH-1",
        "vendor": "acme",
        "kind": "manhole",
        "district": "yicheng",
        "lat": 32.98,
        "lon": 114.02,
        "report_interval_s": 300,
    }
    row, errors = parse_device(device, {"depth_cm": 180, "dev_eui": "abcdefabcdefabcd"})
    assert errors == [] and row is not None
    assert row.dev_eui == "ABCDEFABCDEFABCD" and row.attributes == {"depth_cm": 180.0}
    row, errors = parse_device(device, {"depth_cm": 180, "imei": 12345})
    assert row is None and [(e.column, e.message.split(";")[0]) for e in errors] == [
        ("imei", "'12345' is not a valid imei")
    ]


async def test_identities_are_stored_kept_when_absent_and_cleared_when_empty(
    sessions: SessionFactory,
) -> None:
    report = await _import(sessions, _csv(_row("SL-1", EUI.lower(), IMEI, "1052213")))
    assert (report.created, report.errors) == (1, [])
    assert await _identities(sessions, "SL-1") == (EUI, IMEI, "1052213")
    # A file without the columns leaves them alone; the same values again change nothing.
    plain = "device_id,vendor,kind,district,lat,lon,address,report_interval_s"
    report = await _import(
        sessions, _csv("SL-1,acme,streetlight,yicheng,32.98,114.02,,90", header=plain)
    )
    assert (report.updated, report.errors) == (1, [])
    assert await _identities(sessions, "SL-1") == (EUI, IMEI, "1052213")
    report = await _import(
        sessions, _csv(_row("SL-1", EUI, IMEI, "1052213").replace(",60,", ",90,"))
    )
    assert (report.unchanged, report.updated) == (1, 0)
    # An empty cell clears one, and frees it for another device.
    report = await _import(sessions, _csv(_row("SL-1", EUI, "", "1052213"), _row("SL-2", "", IMEI)))
    assert (report.created, report.updated, report.errors) == (1, 1, [])
    assert await _identities(sessions, "SL-1") == (EUI, None, "1052213")
    assert await _identities(sessions, "SL-2") == (None, IMEI, None)


async def test_an_identity_of_another_device_is_a_row_error_naming_it(
    sessions: SessionFactory,
) -> None:
    await _import(sessions, _csv(_row("SL-1", EUI, IMEI, "1052213")))
    report = await _import(
        sessions,
        _csv(
            _row("SL-2", EUI.lower()), _row("SL-3", "", "", "1052213"), _row("SL-4", "", "1" * 15)
        ),
    )
    assert (report.created, report.updated) == (1, 0)
    assert (
        report.errors
        == report.taken
        == [
            RowError(
                2,
                "dev_eui",
                f"dev_eui '{EUI}' is registered already to device 'SL-1'; correct it, or clear it "
                "on the other device first",
            ),
            RowError(
                3,
                "onenet_dev_id",
                "onenet_dev_id '1052213' is registered already to device 'SL-1'; correct it, or "
                "clear it on the other device first",
            ),
        ]
    )
    # Said without the other device's id, for a key that may not learn it.
    assert [str(e) for e in report.taken_unnamed] == [
        f"line 2, dev_eui: dev_eui '{EUI}' is registered already to another device; correct it",
        "line 3, onenet_dev_id: onenet_dev_id '1052213' is registered already to another "
        "device; correct it",
    ]
    assert "SL-1" not in " ".join(str(e) for e in report.taken_unnamed)
    assert await _identities(sessions, "SL-1") == (EUI, IMEI, "1052213")
    # Rows given straight to the import (not through one parsed file) are checked too.
    first = parse_device_csv(_csv(_row("SL-5", "", "2" * 15))).rows
    second = parse_device_csv(_csv(_row("SL-6", "", "2" * 15))).rows
    report = await import_devices(sessions, [*first, *second])
    assert report.created == 1 and [e.column for e in report.errors] == ["imei"]
    assert "registered already to device 'SL-5'" in report.errors[0].message


async def test_the_database_refuses_a_duplicate_the_import_did_not_see(
    sessions: SessionFactory,
) -> None:
    """What keeps two imports at once from giving one identity to two devices."""
    await _import(sessions, _csv(_row("SL-1", EUI), _row("SL-2")))
    for name, value in (("dev_eui", EUI), ("imei", IMEI), ("onenet_dev_id", "x")):
        async with sessions() as session, session.begin():
            await session.execute(update(Device).where(Device.id == "SL-1").values({name: value}))
        with pytest.raises(IntegrityError):
            async with sessions() as session, session.begin():
                await session.execute(
                    update(Device).where(Device.id == "SL-2").values({name: value})
                )
    assert await _identities(sessions, "SL-2") == (None, None, None)


async def test_concurrent_imports_give_an_identity_to_one_device_only(
    sessions: SessionFactory,
) -> None:
    rows = [parse_device_csv(_csv(_row(f"SL-{n}", EUI))).rows for n in range(1, 5)]
    results = await asyncio.gather(
        *(import_devices(sessions, r) for r in rows), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, ImportReport) and r.created == 1]
    assert len(created) == 1
    for result in results:  # the others: a row error naming the holder, or IdentityTaken
        if isinstance(result, ImportReport) and result.created == 0:
            assert [e.column for e in result.errors] == ["dev_eui"]
        elif not isinstance(result, ImportReport):
            assert "import again" in str(result)
    async with sessions() as session:
        holders = (await session.execute(Device.__table__.select())).all()
    assert [h.dev_eui for h in holders] == [EUI]


async def test_the_device_map_finds_devices_by_identity_after_refresh(
    sessions: SessionFactory,
) -> None:
    await _import(sessions, _csv(_row("SL-1", EUI, IMEI, "1052213"), _row("SL-2")))
    devices = DeviceMap(sessions)
    await devices.refresh()
    assert devices.by_dev_eui[EUI] is devices.devices["SL-1"]
    assert devices.by_imei[IMEI].device_id == "SL-1"
    assert devices.by_onenet_dev_id["1052213"].device_id == "SL-1"
    assert len(devices.by_dev_eui) == len(devices.by_imei) == len(devices.by_onenet_dev_id) == 1
    # SL-1 gives up its IMEI and OneNET id to SL-2 and takes a new DevEUI.
    await _import(
        sessions,
        _csv(_row("SL-1", "0000000000000001"), _row("SL-2", "", IMEI, "1052213")),
    )
    assert await devices.refresh() == 2
    assert set(devices.by_dev_eui) == {"0000000000000001"}
    assert devices.by_dev_eui["0000000000000001"] is devices.devices["SL-1"]
    assert devices.by_imei == {IMEI: devices.devices["SL-2"]}
    assert devices.by_onenet_dev_id == {"1052213": devices.devices["SL-2"]}


def _device_columns(conn: Connection) -> tuple[set[str], set[str]]:
    found = inspect(conn)
    unique = {str(i["name"]) for i in found.get_indexes("devices") if i["unique"]}
    return {c["name"] for c in found.get_columns("devices")}, unique


async def test_the_migration_adds_the_columns_and_unique_indexes_and_takes_them_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_DATABASE_URL", db_url)
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    names = {"dev_eui", "imei", "onenet_dev_id"}
    indexes = {f"ix_devices_{n}" for n in names}
    engine = make_engine(db_url)
    try:
        await asyncio.to_thread(command.upgrade, config, "0007")
        async with engine.connect() as conn:
            columns, unique = await conn.run_sync(_device_columns)
        assert not names & columns and not indexes & unique
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as conn:
            columns, unique = await conn.run_sync(_device_columns)
        assert names <= columns and indexes <= unique
        await asyncio.to_thread(command.downgrade, config, "0007")
        async with engine.connect() as conn:
            columns, unique = await conn.run_sync(_device_columns)
        assert not names & columns and not indexes & unique
    finally:
        await engine.dispose()
