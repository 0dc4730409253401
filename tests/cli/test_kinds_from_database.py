"""Commands know the kinds put through the API (kept in the database), as the running stages
do: ``cityiot devices import``, ``cityiot grafana export`` and ``cityiot keys create
--kinds``. A missing SQLite file is not created by a command that only reads the model; an
unreachable database leaves the kind files' kinds, with a warning."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from cityiot.domain.thingmodel import parse_kind
from cityiot.platform.local_services import free_port
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.kinds import save_kind
from tests.cli.test_devices_import import CITYIOT, HEADER, devices_import, stored
from tests.operator_files import NOISE

KIND = NOISE["kind"]


def put_kind(database_url: str) -> None:
    """The operator's kind stored as ``PUT /kinds/{kind}`` stores it."""

    async def put() -> None:
        await migrate(database_url)
        engine = make_engine(database_url)
        try:
            await save_kind(sessionmaker(engine), parse_kind(NOISE, "api"), "key:test (admin)")
        finally:
            await engine.dispose()

    asyncio.run(put())


def cityiot(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    environ["CITYIOT_DATABASE_URL"] = database_url
    return subprocess.run(
        [CITYIOT, *args], capture_output=True, text=True, timeout=120, env=environ
    )


def test_devices_of_a_kind_put_through_the_api_are_imported(
    tmp_path: Path, sqlite_url: str
) -> None:
    put_kind(sqlite_url)
    csv = tmp_path / "noise.csv"
    csv.write_text(
        f"{HEADER},limit_db,zone_class\nns-1,quietco,{KIND},yicheng,32.98,114.02,解放路口,,55,2\n",
        encoding="utf-8",
    )
    done = devices_import(csv, sqlite_url)
    assert done.returncode == 0, done.stderr
    assert "created=1 updated=0 unchanged=0 errors=0" in done.stdout
    assert stored(sqlite_url) == {"ns-1": (KIND, "yicheng", {"limit_db": 55.0, "zone_class": "2"})}


def test_a_kind_put_through_the_api_gets_its_dashboard_and_may_be_granted(
    tmp_path: Path, sqlite_url: str
) -> None:
    put_kind(sqlite_url)
    out = tmp_path / "dashboards"
    done = cityiot(sqlite_url, "grafana", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert any(KIND in p.name for p in out.iterdir()), sorted(p.name for p in out.iterdir())

    done = cityiot(sqlite_url, "keys", "create", "--role", "department", "--kinds", KIND)
    assert done.returncode == 0, done.stderr
    assert f"kinds={KIND}" in done.stderr


def test_without_a_database_the_kind_files_serve_and_nothing_is_created(
    tmp_path: Path, sqlite_url: str
) -> None:
    missing = Path(sqlite_url.split("///", 1)[1])
    out = tmp_path / "dashboards"
    done = cityiot(sqlite_url, "grafana", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert not missing.exists() and not missing.parent.joinpath("cityiot.db-wal").exists()
    written = [p.name for p in out.iterdir()]
    assert written and not any(KIND in name for name in written), written
    assert "warning" not in done.stderr

    # PostgreSQL that does not answer: the files' kinds, and a warning saying so.
    away = f"postgresql+asyncpg://cityiot:x@127.0.0.1:{free_port()}/cityiot"
    done = cityiot(away, "grafana", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "the kinds put through the API were not read from the database" in done.stderr
    assert "using the kind files only" in done.stderr
