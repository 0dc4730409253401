"""Log lines of every long-running process."""

from __future__ import annotations

import atexit
import copy
import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from cityiot.domain.settings import Settings
from cityiot.platform.redact import redact_secrets

# The fields a line starts with, in JSON and logfmt.
_LEAD = ("timestamp", "level", "logger", "event")
# Fields our own processors add; a message that would set one stays text.
_RESERVED = frozenset({"level", "logger", "timestamp", "exception", "stack_info"})


def configure_logging(settings: Settings, log_file: Path | None = None) -> Callable[[], None]:
    """Lines in ``settings.log_format`` to stderr; with ``log_file``, everything there and
    warnings on stderr.

    ``auto`` is console text on a terminal and JSON elsewhere (a pipe, a journal, the file).
    With a log file, a terminal gets console text whatever the format: the machine-readable
    copy is the file. Every stdlib ``logging`` call comes out in that format, secrets masked.

    The lines are written by a thread of their own (a ``QueueListener``): a write to a disk
    busy with InfluxDB's snapshots can block for a while, and the event loop must not wait.
    Returns what ends that: it writes what is queued and takes the handler off the root
    logger (a command run in-process, as tests do, calls it before its streams close); else
    it runs at exit.
    """
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    on_terminal = _is_terminal(sys.stderr)
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(sys.stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(_formatter(_resolve(settings.log_format, terminal=False)))
        handlers.append(to_file)
        console.setLevel(logging.WARNING)  # the live counters own the terminal
        stderr_format = "console" if on_terminal else settings.log_format
    else:
        stderr_format = settings.log_format
    console.setFormatter(
        _formatter(_resolve(stderr_format, terminal=on_terminal), colors=on_terminal)
    )
    handlers.append(console)
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.handlers.QueueListener(lines, *handlers, respect_handler_level=True)
    writer.start()
    queued = _RecordQueue(lines)
    root.addHandler(queued)

    def stop() -> None:
        if queued in root.handlers:  # once: QueueListener.stop raises when called again
            atexit.unregister(stop)
            root.removeHandler(queued)
            writer.stop()
            for handler in handlers:  # the log file; a StreamHandler leaves stderr open
                handler.close()

    atexit.register(stop)  # writes what is queued before the process ends
    # One line per HTTP request to InfluxDB is noise, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return stop


class _RecordQueue(logging.handlers.QueueHandler):
    """Hands records to the writer thread with their message resolved and their exception
    kept (the stdlib's ``prepare`` would fold the traceback into the message text)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg = record.getMessage()  # arguments may change after this call returns
        record.args = None
        return record


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _resolve(log_format: str, *, terminal: bool) -> str:
    if log_format == "auto":
        return "console" if terminal else "json"
    return log_format


def _formatter(log_format: str, *, colors: bool = False) -> structlog.stdlib.ProcessorFormatter:
    rendering: list[Processor]
    if log_format == "json":
        rendering = [_lead_first, structlog.processors.JSONRenderer(ensure_ascii=False)]
    elif log_format == "logfmt":
        rendering = [structlog.processors.LogfmtRenderer(key_order=list(_LEAD), drop_missing=True)]
    else:
        rendering = [structlog.dev.ConsoleRenderer(colors=colors)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _record_time,
            structlog.processors.format_exc_info,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _fields_of_message,
            redact_secrets,  # last before rendering: sees every field, the traceback too
            *rendering,
        ],
    )


def _record_time(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """When the line was logged, not when the writer thread got to it (ISO 8601, UTC)."""
    created = event_dict["_record"].created
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    event_dict["timestamp"] = stamp.replace("+00:00", "Z")
    return event_dict


def _fields_of_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``event=name key=value …`` (our messages' convention) into fields.

    Only when every space-separated word is ``key=value``, each key once and none of ours;
    anything else (a value with a space, free text) stays whole in ``event``.
    """
    message = event_dict.get("event")
    if not isinstance(message, str) or not message.startswith("event="):
        return event_dict
    fields: dict[str, str] = {}
    for word in message.split(" "):
        key, is_pair, value = word.partition("=")
        if not is_pair or not key.isidentifier() or key in fields:
            return event_dict
        fields[key] = value
    if not fields["event"] or _RESERVED & fields.keys():
        return event_dict
    return {**event_dict, **fields}


def _lead_first(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The fields every line has first, so a reader's eye finds them in the same place."""
    return {**{key: event_dict[key] for key in _LEAD if key in event_dict}, **event_dict}
