"""An on-disk spool for line-protocol batches InfluxDB could not take, replayed in order.

Layout: a directory holding segment files ``000000000001.seg``, ``000000000002.seg``, …
(ids only grow), a ``cursor`` file and a ``lock`` file.

Record format (all integers little-endian)::

    magic      4 bytes  b"CIsp"
    length     u32      body length in bytes
    body_crc   u32      CRC32 of the body
    header_crc u32      CRC32 of the 12 bytes before it
    body       length bytes

The header check tells a damaged length (resynchronise on the next magic) from a damaged
body (skip that one record). Segments are append-only; a new one is started when a record
would take the current one past ``segment_bytes`` (a record larger than that gets a
segment to itself).

Fsync policy, with ``fsync=True`` (the default): :meth:`Spool.append` writes the record and
calls ``os.fsync`` on the segment (and the directory, when the record started a new segment)
before it returns, so a record is on disk once ``append`` has returned — the caller acks
the MQTT messages only then. ``append(body, sync=False)`` leaves that fsync to the next
:meth:`Spool.sync`: several appends then cost one (a group commit), and each is on disk once
``sync`` has returned. :meth:`Spool.consume` records progress in the ``cursor``
file before it returns: the segment id and offset of the next unconsumed record, so a
crash replays nothing that was consumed. The cursor file is 64 bytes written once and then
overwritten in place — two 32-byte slots ``(seq u64, segment u64, offset u64, crc u32,
pad)`` used in turn and flushed with ``fdatasync`` — so a consume needs no new disk block (the
spool drains on a full disk) and a torn cursor write falls back on the other slot (one
record replayed). If the cursor cannot be written at all, consuming goes on (logged as
``event=spool_cursor_failed``) and a crash replays those records. A fully consumed
segment is deleted after the cursor passed it (a crash in between leaves a segment the
cursor already covers; it is deleted at the next open). With ``fsync=False``
nothing is fsynced: a process crash loses nothing (the data is in the kernel's page
cache), a power loss may lose the last seconds of appends and consumes (consumes then
replay, which InfluxDB takes as overwrites of identical points).

Crash and torn writes: opening a spool scans every segment. In the *last* segment, a bad
record (short header or body, bad magic, CRC mismatch) with no valid record after it is
the torn tail of an append that never returned: it is truncated away and logged
(``event=spool_torn_tail``). A bad stretch followed by valid records (anywhere), or at the
end of an earlier segment, is corruption: it is skipped, logged as an error
(``event=spool_corrupt``) and counted in :attr:`Spool.corrupt_records` (one per damaged
stretch), and opening never fails because of it. In a running process a failed append
(``ENOSPC``, ``EIO``, …) truncates its partial record off again before it raises, so no torn
record is left behind. Records are checked again when read: one damaged since the open is
skipped and counted the same way.

Ordering: records come out of :meth:`Spool.peek` in the order they were appended, across
segments and restarts; :meth:`Spool.consume` takes only the record ``peek`` returned.

Cap: ``max_bytes`` bounds the segment files' size on disk (consumed records of the oldest
segment count until that segment is deleted); an append that would pass it raises
:class:`SpoolFull` and stores nothing. :attr:`Spool.near_full` turns true at
``warn_ratio × max_bytes`` and logs ``event=spool_near_full`` once each time it does.

The spool is synchronous and thread-safe (one lock around every operation), so appends
and the replayer may run in ``asyncio.to_thread``. A ``lock`` file (``flock``) keeps a
second process from opening the same directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("cityiot.ingest.spool")

MAGIC = b"CIsp"
_HEAD = struct.Struct("<4sIII")  # magic, length, body_crc, header_crc
HEADER_BYTES = _HEAD.size
MAX_BODY_BYTES = 0xFFFFFFFF
MiB = 1024 * 1024
_SEGMENT_NAME = re.compile(r"^(\d{12})\.seg$")
_CURSOR = struct.Struct("<QQQ")  # seq, segment id, offset of the next unconsumed record
_CURSOR_SLOT = 32  # the three fields, their CRC32, 4 bytes of padding


class SpoolError(Exception):
    """The spool could not store or read a record; the message says what to change."""


class SpoolFull(SpoolError):
    """An append would take the spool past ``max_bytes``; nothing was stored."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled body and where it sits (pass it back to :meth:`Spool.consume`)."""

    body: bytes
    segment: int
    offset: int


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    size: int  # bytes on disk
    offsets: array[int] = field(default_factory=lambda: array("Q"))  # record starts
    next: int = 0  # index into offsets of the oldest unconsumed record
    sealed: bool = False  # takes no more appends (a failed append left a stump behind)

    @property
    def pending(self) -> int:
        return len(self.offsets) - self.next


def encode_record(body: bytes) -> bytes:
    """The bytes :meth:`Spool.append` writes for ``body`` (header + body)."""
    head = struct.pack("<4sII", MAGIC, len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def _record_size(data: bytes | memoryview, pos: int) -> int | None:
    """Size of the valid record at ``pos`` in ``data``, or None if there is none."""
    if len(data) - pos < HEADER_BYTES:
        return None
    magic, length, body_crc, header_crc = _HEAD.unpack_from(data, pos)
    if magic != MAGIC or zlib.crc32(data[pos : pos + HEADER_BYTES - 4]) != header_crc:
        return None
    end = pos + HEADER_BYTES + length
    if end > len(data) or zlib.crc32(data[pos + HEADER_BYTES : end]) != body_crc:
        return None
    return HEADER_BYTES + length


def _next_record(data: bytes, start: int) -> int | None:
    """Offset of the first valid record at or after ``start``."""
    pos = data.find(MAGIC, start)
    while pos != -1:
        if _record_size(data, pos) is not None:
            return pos
        pos = data.find(MAGIC, pos + 1)
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """A FIFO of byte bodies in ``directory``, durable once :meth:`append` returns.

    Opening (the constructor) scans the segments, truncates a torn tail and skips
    corruption (see the module docstring). ``max_bytes`` caps the segment files' total
    size; it must be at least ``segment_bytes``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 16 * MiB,
        fsync: bool = True,
        warn_ratio: float = 0.8,
    ) -> None:
        if segment_bytes <= HEADER_BYTES:
            raise ValueError(f"segment_bytes={segment_bytes} must exceed {HEADER_BYTES}")
        if max_bytes < segment_bytes:
            raise ValueError(
                f"spool max_bytes={max_bytes} is smaller than segment_bytes={segment_bytes}: "
                "raise max_bytes or lower segment_bytes (a few segments should fit in the cap)"
            )
        if not 0 < warn_ratio <= 1:
            raise ValueError(f"spool warn_ratio={warn_ratio} must be in (0, 1]")
        self.directory = Path(directory)
        self._max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.warn_ratio = warn_ratio
        self.corrupt_records = 0  # damaged stretches skipped since this spool was opened
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # oldest first; the last one takes appends
        self._bytes = 0
        self._records = 0
        self._next_id = 1
        self._writer: int | None = None  # fd of the last segment, opened for appending
        self._unsynced = False  # appends to the writer await sync()
        self._cursor: int | None = None  # fd of the cursor file
        self._cursor_seq = 0
        self._reader: tuple[int, int] | None = None  # (segment id, fd) of the head segment
        self._near_full = False
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(
                f"cannot open spool directory {self.directory}: {exc.strerror}; "
                "create it or point the spool at a writable directory"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(
                f"spool directory {self.directory} is in use by another process; "
                "give each ingest its own spool directory"
            ) from exc
        try:
            self._open()
        except OSError as exc:
            self.close()
            raise SpoolError(
                f"cannot open spool {self.directory}: {exc}; check the disk and the "
                "directory's permissions"
            ) from exc

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the files, after putting on disk what appends left to :meth:`sync`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(SpoolError):  # logged by whoever appended
                self._sync_writer()
            self._close_writer()
            self._close_reader()
            if self._cursor is not None:
                os.close(self._cursor)
            os.close(self._lock_fd)

    def _open(self) -> None:
        cursor_segment, cursor_offset = self._open_cursor()
        ids = sorted(
            int(m.group(1))
            for name in os.listdir(self.directory)
            if (m := _SEGMENT_NAME.match(name))
        )
        self._next_id = max([cursor_segment, *ids]) + 1
        for index, segment_id in enumerate(ids):
            path = self._path(segment_id)
            if segment_id < cursor_segment:  # consumed; a crash came before its deletion
                path.unlink()
                continue
            skip_below = cursor_offset if segment_id == cursor_segment else 0
            segment = self._scan(segment_id, path, last=index == len(ids) - 1, skip=skip_below)
            if segment.pending == 0:
                path.unlink()
                continue
            self._segments.append(segment)
            self._bytes += segment.size
            self._records += segment.pending
        if self._segments:
            self._writer = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
        self._check_near_full()
        log.info(
            "event=spool_opened directory=%s records=%d bytes=%d segments=%d",
            self.directory,
            self._records,
            self._bytes,
            len(self._segments),
        )

    def _open_cursor(self) -> tuple[int, int]:
        """Open (or create) the cursor file; the newest intact slot's position."""
        self._cursor = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o644)
        data = os.pread(self._cursor, 2 * _CURSOR_SLOT, 0)
        best: tuple[int, int, int] | None = None
        for start in (0, _CURSOR_SLOT):
            slot = data[start : start + _CURSOR_SLOT]
            if len(slot) < _CURSOR_SLOT:
                continue
            position = _CURSOR.unpack_from(slot)
            if zlib.crc32(slot[: _CURSOR.size]) != struct.unpack_from("<I", slot, _CURSOR.size)[0]:
                continue
            if best is None or position[0] > best[0]:
                best = position
        if len(data) < 2 * _CURSOR_SLOT:
            # Real zeros, not a hole: later cursor writes must not need a new disk block.
            os.pwrite(self._cursor, bytes(2 * _CURSOR_SLOT - len(data)), len(data))
            if self.fsync:
                os.fsync(self._cursor)
                _fsync_dir(self.directory)
        if best is None:
            if data.strip(b"\0"):
                log.error(
                    "event=spool_cursor_unreadable directory=%s; replaying everything",
                    self.directory,
                )
            return 0, 0
        self._cursor_seq = best[0]
        return best[1], best[2]

    def _scan(self, segment_id: int, path: Path, *, last: bool, skip: int) -> _Segment:
        data = path.read_bytes()
        segment = _Segment(segment_id, path, len(data))
        pos = 0
        while pos < len(data):
            size = _record_size(data, pos)
            if size is not None:
                if pos >= skip:
                    segment.offsets.append(pos)
                pos += size
                continue
            found = _next_record(data, pos + 1)
            if found is None and last:
                # The torn tail of an append that never returned: it was never acked.
                log.warning("event=spool_torn_tail segment=%s bytes=%d", path.name, len(data) - pos)
                with open(path, "r+b") as file:
                    file.truncate(pos)
                    if self.fsync:
                        os.fsync(file.fileno())
                segment.size = pos
                break
            end = len(data) if found is None else found
            if end > skip:
                self.corrupt_records += 1
                log.error(
                    "event=spool_corrupt segment=%s offset=%d bytes=%d; skipped",
                    path.name,
                    pos,
                    end - pos,
                )
            pos = end
        return segment

    # -- appending ---------------------------------------------------------------------

    def append(self, body: bytes, *, sync: bool = True) -> None:
        """Store ``body`` after every record already spooled; on disk once this returns, or
        with ``sync=False`` once :meth:`sync` has.

        Raises :class:`SpoolFull` when it would pass ``max_bytes`` and :class:`SpoolError`
        when the disk refuses it; either way nothing of it is kept.
        """
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"a spooled body is at most {MAX_BODY_BYTES} bytes, not {len(body)}")
        record = encode_record(body)
        with self._lock:
            self._check_open()
            if self._bytes + len(record) > self._max_bytes:
                raise SpoolFull(self._full_message(len(record)))
            tail = self._segments[-1] if self._segments else None
            if (
                tail is None
                or tail.sealed
                or self._writer is None
                or (tail.size and tail.size + len(record) > self.segment_bytes)
            ):
                self._append_new_segment(record)
            else:
                self._append_to(tail, record, sync)
            self._records += 1
            self._bytes += len(record)
            self._check_near_full()

    def sync(self) -> None:
        """Put on disk what ``append(body, sync=False)`` wrote. Raises :class:`SpoolError`
        when the disk refuses (those appends may then be lost: their caller acks nothing).
        The fsync runs outside the spool's lock: appends go on meanwhile (the next sync
        covers them)."""
        with self._lock:
            if not self._unsynced or self._writer is None:
                self._unsynced = False
                return
            self._unsynced = False
            fd = os.dup(self._writer)
            path = self._segments[-1].path
        try:
            os.fsync(fd)
        except OSError as exc:
            raise SpoolError(self._write_message(path, exc)) from exc
        finally:
            os.close(fd)

    def _sync_writer(self) -> None:
        if not self._unsynced:
            return
        self._unsynced = False
        if self._writer is None:
            return
        try:
            os.fsync(self._writer)
        except OSError as exc:
            raise SpoolError(self._write_message(self._segments[-1].path, exc)) from exc

    def _append_to(self, tail: _Segment, record: bytes, sync: bool) -> None:
        assert self._writer is not None
        try:
            _write_all(self._writer, record)
            if self.fsync and sync:
                os.fsync(self._writer)
            elif self.fsync:
                self._unsynced = True
        except OSError as exc:
            self._undo(tail, exc)
            raise SpoolError(self._write_message(tail.path, exc)) from exc
        tail.offsets.append(tail.size)
        tail.size += len(record)

    def _append_new_segment(self, record: bytes) -> None:
        self._sync_writer()  # the segment it closes
        segment = _Segment(self._next_id, self._path(self._next_id), 0)
        fd: int | None = None
        try:
            fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            _write_all(fd, record)
            if self.fsync:
                os.fsync(fd)
                _fsync_dir(self.directory)
        except OSError as exc:
            if fd is not None:  # created here: take it away again
                os.close(fd)
                with contextlib.suppress(OSError):
                    segment.path.unlink()
            raise SpoolError(self._write_message(segment.path, exc)) from exc
        self._close_writer()
        self._writer = fd
        self._next_id += 1
        segment.offsets.append(0)
        segment.size = len(record)
        self._segments.append(segment)

    def _undo(self, tail: _Segment, exc: OSError) -> None:
        """Cut a failed append's partial record off the end of the tail segment."""
        assert self._writer is not None
        try:
            os.ftruncate(self._writer, tail.size)
            if self.fsync:
                os.fsync(self._writer)
        except OSError as again:
            # Leave the stump behind a segment boundary: the next append starts a new
            # segment, and opening counts the stump as corruption instead of truncating.
            log.error(
                "event=spool_truncate_failed segment=%s error=%s after=%s",
                tail.path.name,
                again,
                exc,
            )
            self._close_writer()
            tail.sealed = True

    def _full_message(self, size: int) -> str:
        if size > self._max_bytes:
            return (
                f"a batch of {size} bytes is larger than the spool cap max_bytes="
                f"{self._max_bytes}: raise max_bytes or seal smaller batches"
            )
        percent = 100 * self._bytes / self._max_bytes
        return (
            f"spool {self.directory} is full: {self._bytes} of max_bytes={self._max_bytes} "
            f"bytes used ({percent:.0f}%, {self._records} batches waiting for InfluxDB); "
            f"a batch of {size} bytes does not fit: bring InfluxDB back so the spool drains, "
            "or raise the spool's max_bytes (and free disk for it)"
        )

    def _write_message(self, path: Path, exc: OSError) -> str:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = (
                f"the disk holding {self.directory} is full: free space there or lower the "
                f"spool's max_bytes (now {self._max_bytes}) below the free space"
            )
        else:
            advice = f"check the disk and the permissions of {self.directory}"
        return (
            f"cannot write to spool segment {path}: {exc.strerror or exc} "
            f"(errno {errno.errorcode.get(exc.errno or 0, exc.errno)}); the batch was not "
            f"spooled and nothing of it was kept; {advice}"
        )

    # -- reading -----------------------------------------------------------------------

    def peek(self) -> Record | None:
        """The oldest unconsumed record, or None when the spool is empty."""
        with self._lock:
            self._check_open()
            try:
                while self._segments:
                    head = self._segments[0]
                    offset = head.offsets[head.next]
                    body = self._read(head, offset)
                    if body is not None:
                        return Record(body, head.id, offset)
                    self._advance(head)  # damaged since the open: skip it, counted
            except OSError as exc:
                raise SpoolError(f"cannot read spool {self.directory}: {exc}") from exc
            return None

    def peek_many(self, max_bytes: int) -> list[Record]:
        """The oldest unconsumed records of the oldest segment, in order, up to about
        ``max_bytes`` of bodies (at least one record when the spool is not empty): what one
        write to InfluxDB can take at once."""
        first = self.peek()
        if first is None:
            return []
        records, size = [first], len(first.body)
        with self._lock:
            head = self._segments[0] if self._segments else None
            if head is None or head.id != first.segment:
                return records
            index = head.offsets.index(first.offset, head.next) + 1
            try:
                while index < len(head.offsets) and size < max_bytes:
                    body = self._read(head, head.offsets[index])
                    if body is None:  # damaged: left for peek, which skips and counts it
                        break
                    records.append(Record(body, head.id, head.offsets[index]))
                    size += len(body)
                    index += 1
            except OSError as exc:
                raise SpoolError(f"cannot read spool {self.directory}: {exc}") from exc
        return records

    def consume_many(self, records: list[Record]) -> None:
        """Mark ``records`` (what :meth:`peek_many` returned) done, writing the cursor once
        (a crash before it replays them: InfluxDB takes identical points as overwrites)."""
        with self._lock:
            self._check_open()
            for number, record in enumerate(records):
                head = self._segments[0] if self._segments else None
                if head is None or (record.segment, record.offset) != (
                    head.id,
                    head.offsets[head.next],
                ):
                    raise ValueError(
                        f"record at segment {record.segment} offset {record.offset} is not the "
                        "oldest unconsumed one: consume records in the order peek_many returns"
                    )
                self._advance(head, cursor=number == len(records) - 1)

    def consume(self, record: Record) -> None:
        """Mark ``record`` (the one :meth:`peek` returned) done; durable once this returns."""
        with self._lock:
            self._check_open()
            head = self._segments[0] if self._segments else None
            if head is None or (record.segment, record.offset) != (
                head.id,
                head.offsets[head.next],
            ):
                raise ValueError(
                    f"record at segment {record.segment} offset {record.offset} is not the "
                    "oldest unconsumed one: consume records in the order peek returns them"
                )
            self._advance(head)

    def _read(self, segment: _Segment, offset: int) -> bytes | None:
        if self._reader is None or self._reader[0] != segment.id:
            self._close_reader()
            self._reader = (segment.id, os.open(segment.path, os.O_RDONLY))
        fd = self._reader[1]
        head = os.pread(fd, HEADER_BYTES, offset)
        if len(head) == HEADER_BYTES:
            length = _HEAD.unpack(head)[1]
            data = head + os.pread(fd, length, offset + HEADER_BYTES)
            if _record_size(data, 0) == len(data):
                return data[HEADER_BYTES:]
        self.corrupt_records += 1
        log.error("event=spool_corrupt segment=%s offset=%d; skipped", segment.path.name, offset)
        return None

    def _advance(self, head: _Segment, cursor: bool = True) -> None:
        """Move past the head record: write the cursor (unless ``cursor`` is false and the
        segment is not done), delete the segment if it is done."""
        # The cursor names the next record's start (not this one's end, whose header may be
        # damaged): opening skips every record before it.
        following = head.next + 1
        try:
            if cursor or following >= len(head.offsets):
                self._write_cursor(
                    head.id,
                    head.offsets[following] if following < len(head.offsets) else head.size,
                )
        except OSError as exc:  # replays are harmless; a spool that cannot drain is not
            log.error(
                "event=spool_cursor_failed directory=%s error=%s; "
                "consumed records will be replayed after a restart",
                self.directory,
                exc,
            )
        head.next = following
        self._records -= 1
        if head.pending == 0:
            self._segments.pop(0)
            if not self._segments:  # it was also the one taking appends
                self._close_writer()
            if self._reader is not None and self._reader[0] == head.id:
                self._close_reader()
            self._bytes -= head.size
            try:
                head.path.unlink()
            except OSError as exc:  # the next open deletes it, or replays it if the cursor lags
                log.error("event=spool_delete_failed segment=%s error=%s", head.path.name, exc)
        self._check_near_full()

    def _write_cursor(self, segment_id: int, offset: int) -> None:
        assert self._cursor is not None
        seq = self._cursor_seq + 1
        fields = _CURSOR.pack(seq, segment_id, offset)
        slot = fields + struct.pack("<I", zlib.crc32(fields)) + bytes(4)
        os.pwrite(self._cursor, slot, (seq % 2) * _CURSOR_SLOT)
        if self.fsync:
            os.fdatasync(self._cursor)
        self._cursor_seq = seq

    # -- state -------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Size of the segment files on disk."""
        return self._bytes

    @property
    def records(self) -> int:
        """Records waiting to be consumed."""
        return self._records

    @property
    def segments(self) -> int:
        return len(self._segments)

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def near_full(self) -> bool:
        """``bytes`` ≥ ``warn_ratio × max_bytes``: raise the alarm before appends fail."""
        return self._near_full

    @property
    def empty(self) -> bool:
        return self._records == 0

    def _check_near_full(self) -> None:
        near = self._bytes >= self.warn_ratio * self._max_bytes
        if near and not self._near_full:
            log.warning(
                "event=spool_near_full bytes=%d max_bytes=%d records=%d",
                self._bytes,
                self._max_bytes,
                self._records,
            )
        elif self._near_full and not near:
            log.info(
                "event=spool_near_full_cleared bytes=%d max_bytes=%d", self._bytes, self._max_bytes
            )
        self._near_full = near

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.directory} is closed")

    def _path(self, segment_id: int) -> Path:
        return self.directory / f"{segment_id:012d}.seg"

    def _close_writer(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            os.close(self._reader[1])
            self._reader = None
