"""Registry fixtures: each test runs on a fresh SQLite file and on a fresh PostgreSQL database.

The databases come from the shared ``sqlite_url`` and ``postgres_url`` fixtures
(tests/conftest.py): PostgreSQL unreachable skips, or fails under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cityiot.db import make_engine, migrate, sessionmaker
from cityiot.registry import SessionFactory


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, SQLite or PostgreSQL; removed afterwards."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[SessionFactory]:
    """A session factory on the migrated database at ``db_url``."""
    await migrate(db_url)
    engine = make_engine(db_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()
