"""Log lines of every long-running process."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from pathlib import Path

from cityiot.domain.settings import Settings


def configure_logging(settings: Settings, log_file: Path | None = None) -> None:
    """Structured lines to stderr; with ``log_file``, everything there and warnings on stderr.

    The lines are written by a thread of their own (a ``QueueListener``): a write to a disk
    busy with InfluxDB's snapshots can block for a while, and the event loop must not wait.
    """
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(fmt)
        handlers.append(to_file)
        console.setLevel(logging.WARNING)  # the live counters own the terminal
    handlers.append(console)
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.handlers.QueueListener(lines, *handlers, respect_handler_level=True)
    writer.start()
    atexit.register(writer.stop)  # writes what is queued before the process ends
    root.addHandler(logging.handlers.QueueHandler(lines))
    # One line per HTTP request to InfluxDB is noise, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
