"""Log lines (cityiot/platform/logs.py): each ``CITYIOT_LOG_FORMAT``, read as a machine would,
and no secret in any of them."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

SECRETS = ("hunter2", "s3cr3t-bearer-token", "sk-live-0123", "q-token-777")

# Logs what the stages log: key=value events, a value with spaces, an exception, and
# credentials the way they reach a log line (a URL's userinfo, a header, a query string).
SCRIPT = """
import logging, sys
from pathlib import Path
from cityiot.domain.settings import Settings
from cityiot.platform.logs import configure_logging

log_file = Path(sys.argv[2]) if len(sys.argv) > 2 else None
configure_logging(Settings(log_format=sys.argv[1]), log_file)
log = logging.getLogger("cityiot.ingest.test")
log.info("event=mqtt_session_lost device=dev-0001 reason=%s", "keepalive")
log.warning("event=notify_failed error=%s", "Connection refused by the mail server")
log.info("event=connecting url=%s", "mqtt://cityiot:hunter2@broker:1883")
log.info("sending with Authorization: Bearer s3cr3t-bearer-token to %s", "http://dingtalk/robot")
log.info("event=key_created api_key=sk-live-0123 name=ops")
try:
    raise ConnectionError("POST http://admin:hunter2@influx:8086/write?token=q-token-777 failed")
except ConnectionError:
    log.exception("event=influx_write_failed")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}


def _run(log_format: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, log_format],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(),
        check=True,
    )
    assert done.stdout == ""
    return done.stderr


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("log_format", ["json", "auto"])
def test_json_lines_parse_with_their_fields(log_format: str, tmp_path: Path) -> None:
    """``auto`` with stderr a pipe is JSON, as ``json`` is."""
    out = _run(log_format, tmp_path)
    _assert_no_secret(out)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert {"level", "logger", "event", "timestamp"} <= line.keys()
        assert line["logger"] == "cityiot.ingest.test"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    lost, failed, connecting, header, key, write = lines
    assert lost == {**lost, "event": "mqtt_session_lost", "device": "dev-0001", "level": "info"}
    assert failed["level"] == "warning"
    assert "Connection refused by the mail server" in failed["event"]
    assert connecting["url"] == "mqtt://cityiot:***@broker:1883"
    assert "Bearer ***" in header["event"]
    assert key["api_key"] == "***" and key["name"] == "ops"
    assert write["event"] == "influx_write_failed" and write["level"] == "error"
    assert "Traceback" in write["exception"] and "ConnectionError" in write["exception"]
    assert "admin:***@influx" in write["exception"]


_LOGFMT_PAIR = re.compile(r'([A-Za-z_]\w*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')


def _logfmt(line: str) -> dict[str, str]:
    pairs = list(_LOGFMT_PAIR.finditer(line))
    assert "".join(m.group(0) for m in pairs) == line, line  # nothing outside key=value
    return {
        m.group(1): m.group(2)[1:-1].replace('\\"', '"') if m.group(2).startswith('"') else m[2]
        for m in pairs
    }


def test_logfmt_quotes_values_with_spaces(tmp_path: Path) -> None:
    out = _run("logfmt", tmp_path)
    _assert_no_secret(out)
    assert 'event="event=notify_failed error=Connection refused by the mail server"' in out
    lines = [_logfmt(line) for line in out.splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert lines[0]["event"] == "mqtt_session_lost" and lines[0]["device"] == "dev-0001"
    assert lines[1]["event"] == "event=notify_failed error=Connection refused by the mail server"
    assert lines[2]["url"] == "mqtt://cityiot:***@broker:1883"
    assert "\\n" in lines[5]["exception"]  # the traceback stays on its line


def test_console_is_text_for_people(tmp_path: Path) -> None:
    out = _run("console", tmp_path)
    _assert_no_secret(out)
    assert not out.lstrip().startswith("{")
    first = out.splitlines()[0]
    assert "mqtt_session_lost" in first and "device=dev-0001" in first and "[info" in first
    assert "Traceback (most recent call last):" in out.splitlines()  # on lines of its own


def test_run_log_file_is_json_and_the_terminal_console(tmp_path: Path) -> None:
    """``cityiot run``: everything to the file as JSON (auto), warnings on the terminal as text."""
    log_file = tmp_path / "run" / "cityiot.log"
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, "auto", str(log_file)],
            stderr=follower,
            stdout=subprocess.DEVNULL,
            timeout=60,
            cwd=tmp_path,
            env=_env(),
            check=True,
        )
        os.close(follower)
        terminal = _read_all(leader)
    finally:
        os.close(leader)
    assert done.returncode == 0
    _assert_no_secret(terminal)
    assert "notify_failed" in terminal and "influx_write_failed" in terminal
    assert "mqtt_session_lost" not in terminal  # info stays in the file
    assert "{" not in terminal and "warning" in terminal
    text = log_file.read_text(encoding="utf-8")
    _assert_no_secret(text)
    assert [json.loads(line)["level"] for line in text.splitlines()] == [
        "info", "warning", "info", "info", "info", "error",
    ]  # fmt: skip


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed and everything read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_bogus_log_format_names_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cityiot", "ingest"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**_env(), "CITYIOT_LOG_FORMAT": "bogus"},
    )
    assert done.returncode != 0
    assert "CITYIOT_LOG_FORMAT" in done.stderr
