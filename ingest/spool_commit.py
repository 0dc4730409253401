"""Spool appends from the event loop, fsynced in groups off it (a group commit).

An fsync takes from a fraction of a millisecond to several on a loaded disk. Made on the
event loop, each one stops the ingest reading its sockets for as long. Here a batch's record
is written on the loop (into the page cache: microseconds) and its caller waits for an
fsync in a thread, which covers every record written before it started: the batches that
arrive while one fsync runs wait together for the next, so under load one fsync serves many
batches and the loop never waits on the disk.

Each caller's append is on disk when its ``await`` returns, as with :meth:`Spool.append`;
one that the spool refuses (full, a disk error) raises that refusal and stores nothing of
it; an fsync that fails fails every append it was to cover (their callers ack nothing).
"""

from __future__ import annotations

import asyncio

from cityiot.ingest.spool import Spool


class SpoolCommits:
    """``await commits.append(body)``: ``body`` spooled and on disk."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.appends = 0
        self.fsyncs = 0  # appends ÷ fsyncs is the grouping
        self._synced = 0  # appends (by number) on disk
        self._syncing: asyncio.Future[None] | None = None

    async def append(self, body: bytes) -> None:
        self.spool.append(body, sync=False)  # a refusal raises here: nothing kept
        self.appends += 1
        if not self.spool.fsync:
            return
        number = self.appends
        while self._synced < number:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        """One fsync covering every append made before it started."""
        covers = self.appends
        try:
            await asyncio.to_thread(self.spool.sync)
        finally:
            self._syncing = None
        self.fsyncs += 1
        self._synced = max(self._synced, covers)
