"""The on-disk spool: FIFO order across segments and restarts, torn tails, corruption, caps."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityiot.ingest import spool as spool_module
from cityiot.ingest.spool import HEADER_BYTES, Spool, SpoolError, SpoolFull, encode_record

LOGGER = "cityiot.ingest.spool"


def body(i: int, size: int = 40) -> bytes:
    """A line-protocol-looking batch body, distinct per ``i``."""
    line = f"manhole,device_id=mh-{i} level_cm={i}.5 {1_700_000_000_000 + i}\n".encode()
    return (line * (size // len(line) + 1))[: max(size, 1)]


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record.body)
        spool.consume(record)
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in segment_files(directory))


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"event={event} ")]


# -- order ---------------------------------------------------------------------------


def test_fifo_across_many_segments(tmp_path: Path) -> None:
    bodies = [body(i, size=10 + (i * 37) % 150) for i in range(200)]
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=256) as spool:
        assert spool.empty and spool.peek() is None
        for b in bodies:
            spool.append(b)
        assert spool.records == 200
        assert spool.segments == len(segment_files(tmp_path)) > 20
        assert spool.bytes == disk_bytes(tmp_path) == sum(HEADER_BYTES + len(b) for b in bodies)
        assert drain(spool) == bodies
        assert spool.empty and spool.records == 0 and spool.bytes == 0 and spool.segments == 0
        assert segment_files(tmp_path) == []  # consumed segments are deleted


def test_peek_repeats_until_consumed_and_consume_takes_only_the_head(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024) as spool:
        spool.append(b"a")
        spool.append(b"b")
        first = spool.peek()
        assert first is not None and first == spool.peek() and first.body == b"a"
        spool.consume(first)
        second = spool.peek()
        assert second is not None and second.body == b"b"
        with pytest.raises(ValueError, match="in the order peek returns them"):
            spool.consume(first)
        spool.consume(second)
        with pytest.raises(ValueError, match="oldest unconsumed"):
            spool.consume(second)


def test_many_records_are_peeked_and_consumed_together_in_order(tmp_path: Path) -> None:
    """What the replayer takes at once in window mode: consecutive records of the oldest
    segment up to a size, consumed with one cursor write; across segments, in turn."""
    bodies = [body(i, size=100) for i in range(30)]
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1200) as spool:
        for b in bodies:
            spool.append(b)
        taken: list[bytes] = []
        sizes = []
        while records := spool.peek_many(max_bytes=450):
            assert len({r.segment for r in records}) == 1  # never beyond the oldest segment
            sizes.append(len(records))
            taken.extend(r.body for r in records)
            with pytest.raises(ValueError, match="oldest unconsumed"):
                spool.consume_many(records[1:])  # not from the head: refused, nothing taken
            spool.consume_many(records)
        assert taken == bodies and spool.empty and segment_files(tmp_path) == []
        assert max(sizes) == 5 and min(sizes) >= 1  # 450 bytes: the fifth passes it
        assert spool.peek_many(max_bytes=1) == []


def test_records_consumed_together_but_not_yet_cursored_are_replayed_not_lost(
    tmp_path: Path,
) -> None:
    """consume_many writes the cursor once, at its last record: a crash before that replays
    the records (InfluxDB takes identical points as overwrites); none is ever skipped."""
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(6):
            spool.append(body(i))
        records = spool.peek_many(max_bytes=1 << 20)
        assert len(records) == 6
        spool.consume_many(records[:3])
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert drain(spool) == [body(i) for i in range(3, 6)]  # the cursor moved past three


def test_a_body_larger_than_a_segment_gets_one_to_itself(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        spool.append(b"x" * 10)
        spool.append(b"y" * 500)
        spool.append(b"z" * 10)
        assert spool.segments == 3
        assert drain(spool) == [b"x" * 10, b"y" * 500, b"z" * 10]


def test_empty_body(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        spool.append(b"")
        assert spool.records == 1 and drain(spool) == [b""]


# -- restarts ------------------------------------------------------------------------


def test_reopen_keeps_order_and_consumed_progress(tmp_path: Path) -> None:
    bodies = [body(i) for i in range(30)]
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200) as spool:
        for b in bodies:
            spool.append(b)
        for _ in range(13):  # ends in the middle of a segment
            record = spool.peek()
            assert record is not None
            spool.consume(record)
        left_bytes = spool.bytes
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200) as spool:
        assert spool.records == 17 and spool.bytes == left_bytes
        spool.append(b"after restart")
        assert drain(spool) == [*bodies[13:], b"after restart"]


def test_new_segments_after_a_drain_are_not_taken_for_consumed_ones(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        for i in range(10):
            spool.append(body(i))
        drain(spool)
        spool.append(b"kept")
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert drain(spool) == [b"kept"]
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert spool.segments == 0  # drained, and the cursor names segment 11
        spool.append(b"kept too")
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert drain(spool) == [b"kept too"]


def test_a_crash_between_cursor_and_segment_deletion_replays_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        for i in range(6):
            spool.append(body(i))
        first = segment_files(tmp_path)[0]
        saved = first.read_bytes()
        segments = spool.segments
        while spool.segments == segments:  # consume the first segment whole: it is deleted
            record = spool.peek()
            assert record is not None
            spool.consume(record)
        rest = spool.records
    first.write_bytes(saved)  # as if the crash came before the deletion
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert not first.exists()
        assert spool.records == rest


def test_an_unreadable_cursor_replays_everything_rather_than_losing_anything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(4):
            spool.append(body(i))
        record = spool.peek()
        assert record is not None
        spool.consume(record)
    (tmp_path / "cursor").write_bytes(b"garbage" * 10)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert drain(spool) == [body(i) for i in range(4)]
    assert events(caplog, "spool_cursor_unreadable")


def test_a_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 24) as spool:
        spool.append(b"a")
        code = (
            "import sys; from pathlib import Path; from ingest.spool import Spool, SpoolError\n"
            "try: Spool(Path(sys.argv[1]), max_bytes=1 << 24)\n"
            "except SpoolError as e: print(e); sys.exit(3)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        assert done.returncode == 3, done.stderr
        assert "in use by another process" in done.stdout


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="raise max_bytes or lower segment_bytes"):
        Spool(tmp_path, max_bytes=1000, segment_bytes=4096)
    with pytest.raises(ValueError, match="warn_ratio"):
        Spool(tmp_path, max_bytes=1000, segment_bytes=100, warn_ratio=1.5)


# -- torn tails and corruption -------------------------------------------------------

TORN = [body(0), body(1, 60), body(2, 33)]
TORN_LAST = HEADER_BYTES + len(TORN[-1])


@pytest.mark.parametrize("kept", range(TORN_LAST))
def test_a_torn_last_record_is_truncated_at_every_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept: int
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for b in TORN:
            spool.append(b)
    (segment,) = segment_files(tmp_path)
    whole = segment.stat().st_size
    boundary = whole - TORN_LAST
    os.truncate(segment, boundary + kept)

    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert spool.records == 2 and spool.corrupt_records == 0
        assert segment.stat().st_size == boundary == spool.bytes
        spool.append(b"next")
    torn = events(caplog, "spool_torn_tail")
    if kept:
        assert len(torn) == 1 and f"bytes={kept}" in torn[0].getMessage()
        assert torn[0].levelno == logging.WARNING
    else:
        assert torn == []  # ends on a record boundary: nothing torn
    caplog.clear()
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert drain(spool) == [*TORN[:2], b"next"]
    assert events(caplog, "spool_torn_tail") == []


def test_a_torn_first_record_of_a_new_segment_leaves_no_segment(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        spool.append(body(0, 70))
    torn = tmp_path / "000000000002.seg"
    torn.write_bytes(encode_record(body(1, 70))[:30])
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert not torn.exists()
        assert spool.segments == 1 and drain(spool) == [body(0, 70)]


def test_a_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    # What a power loss can leave on some filesystems: the size grew, the data did not land.
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        spool.append(b"a")
    (segment,) = segment_files(tmp_path)
    with open(segment, "ab") as file:
        file.write(bytes(4096))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert spool.corrupt_records == 0 and drain(spool) == [b"a"]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(HEADER_BYTES + 3, id="body"),
        pytest.param(5, id="length"),
        pytest.param(0, id="magic"),
    ],
)
def test_corruption_in_the_middle_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: int
) -> None:
    bodies = [body(i) for i in range(5)]
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for b in bodies:
            spool.append(b)
    (segment,) = segment_files(tmp_path)
    _flip(segment, 2 * (HEADER_BYTES + len(bodies[0])) + where)  # inside the third record
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert spool.corrupt_records == 1 and spool.records == 4
        assert drain(spool) == bodies[:2] + bodies[3:]
    (error,) = events(caplog, "spool_corrupt")
    assert error.levelno == logging.ERROR
    assert events(caplog, "spool_torn_tail") == []


def test_a_bad_end_of_an_earlier_segment_is_corruption_not_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        for i in range(4):
            spool.append(body(i))  # 56-byte records: one per segment
    first = segment_files(tmp_path)[0]
    os.truncate(first, first.stat().st_size - 5)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100) as spool:
        assert spool.corrupt_records == 1
        assert drain(spool) == [body(i) for i in range(1, 4)]
    assert events(caplog, "spool_torn_tail") == []


def test_a_record_damaged_after_opening_is_skipped_when_read(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(3):
            spool.append(body(i))
        (segment,) = segment_files(tmp_path)
        with open(segment, "r+b") as file:  # in place: the spool keeps its file handles
            file.seek(HEADER_BYTES + len(body(0)) + HEADER_BYTES)
            file.write(b"#")
        assert drain(spool) == [body(0), body(2)]
        assert spool.corrupt_records == 1 and segment_files(tmp_path) == []


def test_corrupt_records_already_consumed_are_not_reported_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(3):
            spool.append(body(i))
    (segment,) = segment_files(tmp_path)
    _flip(segment, HEADER_BYTES + 1)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert spool.corrupt_records == 1
        record = spool.peek()
        assert record is not None and record.body == body(1)
        spool.consume(record)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert spool.corrupt_records == 0 and drain(spool) == [body(2)]


# -- the cap, the alarm, a full disk -------------------------------------------------


def test_max_bytes_refuses_with_a_clear_error_and_recovers_after_consuming(
    tmp_path: Path,
) -> None:
    record_size = HEADER_BYTES + 84
    with Spool(tmp_path, max_bytes=10 * record_size, segment_bytes=2 * record_size) as spool:
        for i in range(10):
            spool.append(body(i, 84))
        before = (spool.bytes, spool.records, disk_bytes(tmp_path))
        with pytest.raises(SpoolFull) as refused:
            spool.append(body(10, 84))
        message = str(refused.value)
        assert "is full" in message and "max_bytes" in message and "10 batches" in message
        assert isinstance(refused.value, SpoolError)
        assert (spool.bytes, spool.records, disk_bytes(tmp_path)) == before
        for _ in range(2):  # frees the first segment
            record = spool.peek()
            assert record is not None
            spool.consume(record)
        spool.append(body(10, 84))
        assert drain(spool) == [body(i, 84) for i in range(2, 11)]


def test_a_body_larger_than_the_cap_says_so(tmp_path: Path) -> None:
    with (
        Spool(tmp_path, max_bytes=1000, segment_bytes=500) as spool,
        pytest.raises(SpoolFull, match="larger than the spool cap"),
    ):
        spool.append(b"x" * 1000)


def test_near_full_warns_once_per_crossing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    record_size = HEADER_BYTES + 84
    with Spool(
        tmp_path, max_bytes=10 * record_size, segment_bytes=record_size, warn_ratio=0.5
    ) as spool:
        for i in range(4):
            spool.append(body(i, 84))
        assert not spool.near_full and events(caplog, "spool_near_full") == []
        for i in range(4, 9):
            spool.append(body(i, 84))
        assert spool.near_full
        (warning,) = events(caplog, "spool_near_full")
        assert warning.levelno == logging.WARNING
        assert f"bytes={5 * record_size} max_bytes={10 * record_size}" in warning.getMessage()
        for _ in range(5):
            record = spool.peek()
            assert record is not None
            spool.consume(record)
        assert not spool.near_full and len(events(caplog, "spool_near_full_cleared")) == 1
        spool.append(b"x" * 84)
        assert spool.near_full and len(events(caplog, "spool_near_full")) == 2
    caplog.clear()
    with Spool(
        tmp_path, max_bytes=10 * record_size, segment_bytes=record_size, warn_ratio=0.5
    ) as spool:
        assert spool.near_full and len(events(caplog, "spool_near_full")) == 1  # on opening


@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str = "64k") -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root/CAP_SYS_ADMIN): {mounted.stderr}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("segment_bytes", [1 << 20, 6000], ids=["same-segment", "new-segment"])
def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(
    tmp_path: Path, segment_bytes: int
) -> None:
    with tiny_filesystem(tmp_path / "small") as disk:
        directory = disk / "spool"
        appended = []
        with Spool(directory, max_bytes=1 << 30, segment_bytes=segment_bytes) as spool:
            with pytest.raises(SpoolError) as refused:
                for i in range(100):
                    spool.append(body(i, 5000))
                    appended.append(body(i, 5000))
            assert not isinstance(refused.value, SpoolFull)
            assert isinstance(refused.value.__cause__, OSError)
            assert refused.value.__cause__.errno == errno.ENOSPC
            message = str(refused.value)
            assert "ENOSPC" in message and "free space" in message and "not spooled" in message
            assert 0 < len(appended) < 100
            assert spool.records == len(appended)
            assert spool.bytes == disk_bytes(directory)  # the partial record was cut off
            with pytest.raises(SpoolError):  # and it stays refused, consistently
                spool.append(body(999, 5000))
            assert spool.bytes == disk_bytes(directory)
            first = spool.peek()  # the replayer drains a full disk: consuming needs no space
            assert first is not None
            spool.consume(first)
        with Spool(directory, max_bytes=1 << 30, segment_bytes=segment_bytes) as spool:
            assert spool.corrupt_records == 0 and spool.records == len(appended) - 1
            assert drain(spool) == appended[1:]
            spool.append(b"room again")
            assert drain(spool) == [b"room again"]


def test_a_failed_write_is_cut_off_without_a_real_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        spool.append(b"first")
        real_write = os.write

        def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
            if len(data) > 10:
                return real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(spool_module.os, "write", half_then_enospc)
        with pytest.raises(SpoolError, match="ENOSPC"):
            spool.append(b"second" * 10)
        monkeypatch.undo()
        assert spool.bytes == disk_bytes(tmp_path) == HEADER_BYTES + 5
        spool.append(b"third")
        assert drain(spool) == [b"first", b"third"]


def test_a_cursor_that_cannot_be_written_does_not_stop_the_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(3):
            spool.append(body(i))

        def broken(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(spool_module.os, "pwrite", broken)
        assert drain(spool) == [body(i) for i in range(3)]
    assert len(events(caplog, "spool_cursor_failed")) == 3
    assert segment_files(tmp_path) == []


def test_a_torn_cursor_write_falls_back_on_the_other_slot(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        for i in range(4):
            spool.append(body(i))
        for _ in range(2):
            record = spool.peek()
            assert record is not None
            spool.consume(record)
    cursor = tmp_path / "cursor"
    data = bytearray(cursor.read_bytes())
    assert len(data) == 64
    data[0:8] = bytes(8)  # the newest slot (seq 2, slot 0) is torn: its CRC fails
    cursor.write_bytes(bytes(data))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        assert drain(spool) == [body(i) for i in range(1, 4)]  # one record replayed


def test_a_failed_fsync_is_an_error_and_the_record_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as spool:
        spool.append(b"first")
        real_fsync = os.fsync
        calls = []

        def fails_once(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(spool_module.os, "fsync", fails_once)
        with pytest.raises(SpoolError, match="EIO"):
            spool.append(b"second")
        assert spool.records == 1 and spool.bytes == disk_bytes(tmp_path)
        spool.append(b"third")
        assert drain(spool) == [b"first", b"third"]


# -- the FIFO model --------------------------------------------------------------------


class Crash(BaseException):
    """The process dies mid-append (not an OSError: the spool gets no chance to undo)."""


def crash_mid_append(spool: Spool, data: bytes, cut: int) -> None:
    """Write ``cut`` bytes of ``data``'s record, then die (and close what the process had open)."""
    opened: list[int] = []
    real_open, real_write = os.open, os.write

    def tracking_open(*args: object, **kw: object) -> int:
        fd = real_open(*args, **kw)  # type: ignore[arg-type]
        opened.append(fd)
        return fd

    def dies(fd: int, view: bytes | memoryview) -> int:
        real_write(fd, view[:cut])
        raise Crash

    spool_module.os.open = tracking_open  # type: ignore[assignment]
    spool_module.os.write = dies  # type: ignore[assignment]
    try:
        with contextlib.suppress(Crash):
            spool.append(data)
    finally:
        spool_module.os.open = real_open
        spool_module.os.write = real_write
    spool.close()
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


OPS = st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=120)),
    st.tuples(st.just("consume"), st.integers(1, 5)),
    st.tuples(st.just("reopen"), st.none()),
    st.tuples(st.just("crash"), st.tuples(st.binary(max_size=120), st.floats(0, 1))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=40), st.integers(60, 300), st.booleans())
def test_fifo_model(ops: list[tuple[str, object]], segment_bytes: int, fsync: bool) -> None:
    max_bytes = 4 * segment_bytes
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        def open_spool() -> Spool:
            return Spool(directory, max_bytes=max_bytes, segment_bytes=segment_bytes, fsync=fsync)

        model: deque[bytes] = deque()
        spool = open_spool()
        try:
            for op, arg in ops:
                if op == "append":
                    assert isinstance(arg, bytes)
                    try:
                        spool.append(arg)
                        model.append(arg)
                    except SpoolFull:
                        assert spool.bytes + HEADER_BYTES + len(arg) > max_bytes
                elif op == "consume":
                    assert isinstance(arg, int)
                    for _ in range(arg):
                        record = spool.peek()
                        if record is None:
                            break
                        assert record.body == model.popleft()
                        spool.consume(record)
                elif op == "reopen":
                    spool.close()
                    spool = open_spool()
                else:  # crash: part of an append reaches the disk, then the process dies
                    assert isinstance(arg, tuple)
                    data, fraction = arg
                    size = HEADER_BYTES + len(data)
                    if spool.bytes + size > max_bytes:
                        continue  # refused before writing: nothing to tear
                    crash_mid_append(spool, data, int(fraction * (size - 1)))
                    spool = open_spool()
                    assert spool.corrupt_records == 0
                assert spool.records == len(model)
                assert spool.empty == (not model)
                assert spool.bytes == disk_bytes(directory) <= max_bytes
                assert spool.segments == len(segment_files(directory))
                head = spool.peek()
                assert (head.body if head else None) == (model[0] if model else None)
            spool.close()
            spool = open_spool()
            assert drain(spool) == list(model)
            assert segment_files(directory) == []
        finally:
            spool.close()
