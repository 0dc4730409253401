"""Files holding the registry, keys' hashes and secrets are the owner's alone
(docs/security.md "Files on disk"): the SQLite database and its -wal and -shm 0600 in a
folder made 0700, the run directory made 0700 with the platform secret 0600, whatever the
process's umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cityiot.domain.settings import Settings
from cityiot.storage.engine import make_engine, migrate
from cityiot.storage.secret import SECRET_FILE, platform_secret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service unit: new files readable by everyone."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


async def test_the_sqlite_database_and_its_wal_and_shm_are_0600(
    tmp_path: Path, open_umask: None
) -> None:
    db = tmp_path / "state" / "cityiot.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:  # a write: the WAL and shared-memory files exist
            await conn.execute(text("CREATE TABLE probe (x INTEGER)"))
            await conn.execute(text("INSERT INTO probe VALUES (1)"))
            wal, shm = db.with_name("cityiot.db-wal"), db.with_name("cityiot.db-shm")
            assert wal.exists() and shm.exists()
            assert {p.name: oct(mode(p)) for p in (db, wal, shm)} == {
                "cityiot.db": "0o600",
                "cityiot.db-wal": "0o600",
                "cityiot.db-shm": "0o600",
            }
    finally:
        await engine.dispose()
    assert mode(db.parent) == 0o700


async def test_an_existing_database_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "cityiot.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate(url)
    db.chmod(0o640)  # an operator's choice (a backup group)
    await migrate(url)
    assert mode(db) == 0o640


def test_a_new_run_dir_is_0700_and_the_platform_secret_0600(
    tmp_path: Path, open_umask: None
) -> None:
    run_dir = tmp_path / "run"
    settings = Settings.model_validate({"run_dir": run_dir, "secret_key": ""})
    assert len(platform_secret(settings)) >= 32
    assert (mode(run_dir), mode(run_dir / SECRET_FILE)) == (0o700, 0o600)
