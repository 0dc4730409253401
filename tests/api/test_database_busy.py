"""A database busy past its waits — every pooled connection in use, or SQLite's write lock
held — answers 503 with Retry-After (send it again), not 500: a push network or a client
retries a 503 and the request is not lost. Both are made for real here, on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api import problems


def app_on(engine: AsyncEngine) -> FastAPI:
    """An app with the platform's problem handlers and one route that reads and one that
    writes the database through ``engine``."""
    app = FastAPI()
    problems.install(app)

    @app.get("/read")
    async def read() -> dict[str, int]:
        async with engine.connect() as connection:
            return {"one": (await connection.execute(text("SELECT 1"))).scalar_one()}

    @app.post("/write")
    async def write() -> dict[str, bool]:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        return {"written": True}

    @app.get("/broken")
    async def broken() -> dict[str, int]:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT * FROM no_such_table"))
        return {}

    return app


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[Path, AsyncEngine]]:
    path = tmp_path / "busy.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    # One connection, a short wait for it, a short busy timeout: the waits run out at once.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
        connect_args={"timeout": 0.2},
    )
    yield path, engine
    await engine.dispose()


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )


async def test_every_connection_in_use_is_503_with_retry_after(
    database: tuple[Path, AsyncEngine],
) -> None:
    _, engine = database
    async with client_of(app_on(engine)) as client:
        assert (await client.get("/read")).json() == {"one": 1}
        async with engine.connect():  # the pool's only connection, held
            answer = await client.get("/read")
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(problems.BUSY_RETRY_S)
        assert answer.headers["content-type"].startswith(problems.PROBLEM_JSON)
        assert "database is busy" in answer.json()["detail"]
        assert "send the request again" in answer.json()["detail"]
        assert (await client.get("/read")).json() == {"one": 1}  # released: answered again


async def test_sqlites_write_lock_held_is_503_and_other_database_errors_stay_500(
    database: tuple[Path, AsyncEngine],
) -> None:
    path, engine = database
    async with client_of(app_on(engine)) as client:
        holder = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's write in progress
            answer = await client.post("/write")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(problems.BUSY_RETRY_S)
        assert (await client.post("/write")).json() == {"written": True}
        broken = await client.get("/broken")
        assert broken.status_code == 500
        assert "the error is in its log" in broken.json()["detail"]
