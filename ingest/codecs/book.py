"""The codecs in force: ``json`` (code), the shipped codec files, ``CITYIOT_CODECS_PATH``'s,
and the codecs put through the API (``PUT /codecs/{name}``), each later one replacing an
earlier one of the same name.

Every codec's examples run when it is taken in; one that fails is refused with the example
named. The book is kept fresh while the stage runs (:meth:`CodecBook.refresh`): a changed
codec file or a codec put through the API is decoding the next message after the next
refresh, with no restart. A broken file at start-up stops the stage; later, it is logged and
the codec in force stays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cityiot.domain.settings import Settings
from cityiot.ingest.codecs.base import MAX_PAYLOAD_BYTES
from cityiot.ingest.codecs.files import (
    BUILT_IN,
    SHIPPED,
    CodecFileError,
    CodecSpec,
    parse_codec,
    read_codec_folder,
)
from cityiot.ingest.codecs.scripted import FileCodec
from cityiot.ingest.codecs.standard import StandardJsonCodec
from cityiot.storage.codecs import codec_overrides, codec_stamps

log = logging.getLogger("cityiot.ingest.codecs")

# name → (spec, scripts, stamp): what the API keeps of each codec put through it
Stored = Mapping[str, tuple[Mapping[str, Any], Mapping[str, str], Any]]


class CodecBook:
    """name → codec (``codecs``, one dict kept and changed in place), and where each is from."""

    def __init__(
        self,
        codecs_path: Path | None = None,
        *,
        timeout_ms: float = 100,
        memory_mb: int = 32,
        max_batch: int = 1000,
        max_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.codecs_path = codecs_path
        self.timeout_ms = timeout_ms
        self.memory_bytes = memory_mb << 20
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.codecs: dict[str, Any] = {BUILT_IN: StandardJsonCodec(max_batch, max_bytes)}
        self.specs: dict[str, CodecSpec] = {}
        self.generation = 0  # moves whenever a codec is added or changed
        self._files: dict[str, CodecSpec] = {}
        self._files_stamp: tuple[tuple[str, int, int], ...] = ()
        self._stored: dict[str, Any] = {}  # name → stamp of the API's codecs taken in

    @classmethod
    def of(cls, settings: Settings) -> CodecBook:
        return cls(
            settings.codecs_path,
            timeout_ms=settings.codec_timeout_ms,
            memory_mb=settings.codec_memory_mb,
            max_batch=settings.max_batch_readings,
            max_bytes=settings.max_payload_bytes,
        )

    def build(self, spec: CodecSpec) -> FileCodec:
        """``spec`` loaded into the sandbox with its examples run (raises
        :class:`CodecFileError` naming what fails)."""
        codec = FileCodec(
            spec,
            timeout_ms=self.timeout_ms,
            memory_bytes=self.memory_bytes,
            max_batch=self.max_batch,
            max_bytes=self.max_bytes,
        )
        codec.check()
        return codec

    def load(self) -> CodecBook:
        """The shipped codecs and ``codecs_path``'s; raises :class:`CodecFileError` when one
        is broken (start-up: the stage does not start with a codec missing)."""
        files = dict(read_codec_folder(SHIPPED))
        if self.codecs_path is not None:
            files.update(read_codec_folder(self.codecs_path))
        for spec in files.values():
            self._take(spec)
        self._files = files
        self._files_stamp = self._stamp()
        return self

    def _take(self, spec: CodecSpec) -> None:
        codec = self.build(spec)
        self.codecs[spec.name] = codec
        self.specs[spec.name] = spec
        self.generation += 1

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        if self.codecs_path is None or not self.codecs_path.exists():
            return ()
        folder = self.codecs_path
        paths = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
        stamps = []
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            stamps.append((path.name, info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def refresh(self, stored: Stored | None) -> list[str]:
        """Take changed codec files and the API's codecs (``stored``; None: the database was
        not read) in; the names that changed. A codec that fails now is logged and the one
        in force stays."""
        changed: list[str] = []
        stamp = self._stamp()
        if stamp != self._files_stamp:
            self._files_stamp = stamp
            changed += self._refresh_files()
        for name, (spec, scripts, when) in (stored or {}).items():
            if not self._newer(name, when):
                continue
            self._stored[name] = when
            try:
                self._take(parse_codec(dict(spec), dict(scripts), "api"))
            except CodecFileError as exc:
                log.error("event=codec_refused codec=%s source=api error=%s", name, exc)
                continue
            changed.append(name)
        if changed:
            log.info("event=codecs_changed codecs=%s", ",".join(changed))
        return changed

    async def refresh_from(self, sessions: Any) -> list[str]:
        """:meth:`refresh` with the API's codecs read from the database, only those put since
        the last refresh (their scripts are read only then). The database being away leaves
        the API's codecs as they are."""
        try:
            stamps = await codec_stamps(sessions)
            changed = [name for name, when in stamps.items() if self._newer(name, when)]
            stored = await codec_overrides(sessions, changed) if changed else {}
        except Exception as exc:  # keep decoding with the codecs in force
            log.warning("event=codecs_refresh_deferred error=%s", exc)
            stored = None
        return self.refresh(stored)

    def _newer(self, name: str, when: Any) -> bool:
        """Whether the API's codec ``name`` put at ``when`` is newer than the one taken in (a
        refresh that read the database before a PUT committed must not undo the PUT)."""
        held = self._stored.get(name)
        return held is None or when > held

    def _refresh_files(self) -> list[str]:
        assert self.codecs_path is not None
        try:
            files = read_codec_folder(self.codecs_path)
        except CodecFileError as exc:
            log.error("event=codec_file_refused error=%s", exc)
            return []
        changed = []
        for name, spec in files.items():
            old = self._files.get(name)
            if old is not None and old.spec == spec.spec and old.scripts == spec.scripts:
                continue
            if name in self._stored:  # the API's version stands over the file's
                self._files[name] = spec
                continue
            try:
                self._take(spec)
            except CodecFileError as exc:
                log.error("event=codec_refused codec=%s error=%s", name, exc)
                continue
            self._files[name] = spec
            changed.append(name)
        return changed

    def names(self) -> list[str]:
        return sorted(self.codecs)

    def source(self, name: str) -> str:
        """Where the codec in force comes from: built-in, package, api, or its file."""
        if name == BUILT_IN:
            return "built-in"
        source = self.specs[name].source
        return "package" if source.startswith(str(SHIPPED)) else source


def shipped_book(max_batch: int = 1000, max_bytes: int = MAX_PAYLOAD_BYTES) -> CodecBook:
    """``json`` and the shipped codec files."""
    return CodecBook(max_batch=max_batch, max_bytes=max_bytes).load()
