"""``cityiot devices import`` as an operator runs it: a kind of their own in
CITYIOT_KINDS_PATH, another city in CITYIOT_CITY_PATH, into SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from cityiot.storage.engine import make_engine
from cityiot.storage.tables.registry import Device
from tests.operator_files import write_city, write_kind

CITYIOT = str(Path(sys.executable).parent / "cityiot")
HEADER = "device_id,vendor,kind,district,lat,lon,address,report_interval_s"


def devices_import(csv: Path, database_url: str, **env: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    environ |= {f"CITYIOT_{k.upper()}": str(v) for k, v in env.items()}
    environ["CITYIOT_DATABASE_URL"] = database_url
    return subprocess.run(
        [CITYIOT, "devices", "import", str(csv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def stored(database_url: str) -> dict[str, tuple[str, str, dict[str, object]]]:
    """device id → (kind, district, attributes) of every registered device."""

    async def read() -> dict[str, tuple[str, str, dict[str, object]]]:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(Device.id, Device.kind, Device.district, Device.attributes)
                )
                return {r.id: (r.kind, r.district, dict(r.attributes or {})) for r in rows}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_new_kinds_devices_are_imported_with_their_attributes(
    tmp_path: Path, db_url: str
) -> None:
    kinds = tmp_path / "kinds"
    write_kind(kinds)
    csv = tmp_path / "noise.csv"
    csv.write_text(
        f"{HEADER},limit_db,zone_class,microphones\n"
        "ns-1,quietco,noise,yicheng,32.98,114.02,解放路口,,55,2,3\n"
        "ns-2,quietco,noise,xincai,32.75,114.98,人民公园,,,,\n"
        "ns-3,quietco,noise,shihe,32.13,114.07,浉河区,,60,1,\n",
        encoding="utf-8",
    )
    done = devices_import(csv, db_url, kinds_path=kinds)
    assert done.returncode == 2, done.stderr  # two rows refused, one imported
    assert "created=1 updated=0 unchanged=0 errors=2" in done.stdout
    assert f"{csv}:line 3, zone_class: is empty; a noise needs zone_class" in done.stderr
    assert f"{csv}:line 4, district: 'shihe' is not a district of Zhumadian" in done.stderr
    assert stored(db_url) == {
        "ns-1": ("noise", "yicheng", {"limit_db": 55.0, "zone_class": "2", "microphones": 3})
    }

    # Without the kinds folder the platform does not know the kind: nothing is imported.
    refused = devices_import(csv, db_url)
    assert refused.returncode == 2
    assert "line 2, kind: 'noise' is not a kind" in refused.stderr
    assert "unknown column 'zone_class'" in refused.stderr


def test_another_city_is_served_by_its_city_file(tmp_path: Path, sqlite_url: str) -> None:
    city = write_city(tmp_path / "city")
    csv = tmp_path / "devices.csv"
    csv.write_text(
        f"{HEADER},depth_cm\n"
        "mh-1,acme,manhole,shihe,32.13,114.07,浉河区,,150\n"
        "mh-2,acme,manhole,yicheng,32.98,114.02,驿城区,,150\n",
        encoding="utf-8",
    )
    done = devices_import(csv, sqlite_url, city_path=city)
    assert done.returncode == 2
    assert "created=1" in done.stdout
    assert (
        f"{csv}:line 3, district: 'yicheng' is not a district of Xinyang (信阳市); use one of "
        "shihe, pingqiao\n" in done.stderr
    )
    assert stored(sqlite_url) == {"mh-1": ("manhole", "shihe", {"depth_cm": 150.0})}
