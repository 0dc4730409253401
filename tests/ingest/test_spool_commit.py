"""Group commit of spool appends (ingest/spool_commit.py): each append is on disk when its
await returns; appends made together share one fsync, made off the event loop; appends made
while an fsync runs wait for the next one; a refused append fails alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from cityiot.ingest.spool import Spool, SpoolFull
from cityiot.ingest.spool_commit import SpoolCommits
from tests.ingest.test_spool import body, drain


async def test_appends_made_together_share_one_fsync_and_keep_their_order(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096) as spool:
        commits = SpoolCommits(spool)
        await asyncio.gather(*(commits.append(body(i, 200)) for i in range(50)))
        assert (commits.appends, commits.fsyncs) == (50, 1)
        await commits.append(body(50, 200))  # alone: its own fsync
        assert (commits.appends, commits.fsyncs) == (51, 2)
        assert spool.segments > 1  # the group crossed segments: each closed one fsynced
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096) as again:
        assert drain(again) == [body(i, 200) for i in range(51)]


async def test_an_append_made_while_an_fsync_runs_waits_for_the_next(tmp_path: Path) -> None:
    """The fsync under way covers only what was written before it started."""
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096) as spool:
        commits = SpoolCommits(spool)
        in_fsync, release = threading.Event(), threading.Event()
        sync = spool.sync

        def held_sync() -> None:  # the real fsync, held until the second append is written
            in_fsync.set()
            release.wait(30)
            sync()

        spool.sync = held_sync  # type: ignore[method-assign]
        first = asyncio.create_task(commits.append(body(1)))
        await asyncio.to_thread(in_fsync.wait, 30)
        second = asyncio.create_task(commits.append(body(2)))
        await asyncio.sleep(0)  # written, waiting
        assert commits.appends == 2 and not second.done()
        spool.sync = sync  # type: ignore[method-assign]
        release.set()
        await first
        assert commits.fsyncs >= 1
        await second
        assert commits.fsyncs == 2
        assert drain(spool) == [body(1), body(2)]


async def test_a_refused_append_fails_alone(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1024, segment_bytes=1024) as spool:
        commits = SpoolCommits(spool)
        results = await asyncio.gather(
            commits.append(body(1, 300)),
            commits.append(body(2, 2000)),  # past the cap: refused, nothing kept
            commits.append(body(3, 300)),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], SpoolFull)
        assert commits.appends == 2
        assert drain(spool) == [body(1, 300), body(3, 300)]


async def test_without_fsync_an_append_returns_once_written(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync=False) as spool:
        commits = SpoolCommits(spool)
        await commits.append(body(1))
        assert (commits.appends, commits.fsyncs) == (1, 0)
        assert drain(spool) == [body(1)]


@pytest.mark.parametrize("fsync", [True, False])
def test_closing_puts_unsynced_appends_on_disk(tmp_path: Path, fsync: bool) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync=fsync) as spool:
        spool.append(body(1), sync=False)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096) as again:
        assert drain(again) == [body(1)]
