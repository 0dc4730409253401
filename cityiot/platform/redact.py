"""Secrets taken out of log lines before they are written."""

from __future__ import annotations

import re
from typing import Any

from structlog.typing import EventDict, WrappedLogger

MASK = "***"

# A field or a `name=value` in text whose name says it holds a secret.
_SECRET_NAME = re.compile(r"password|passwd|secret|token|authorization|api_?key|key_hash", re.I)
_NAMED_IN_TEXT = re.compile(
    r"(?P<name>\b[\w-]*(?:password|passwd|secret|token|authorization|api_?key|key_hash)[\w-]*)"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?!(?:Bearer|Basic|Token)\s)(?P<value>[^\s\"',;&)}\]]+)",
    re.I,
)
# The password of a URL's userinfo: mqtt://user:pass@host → mqtt://user:***@host.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s@/]+@")
# HTTP credentials: `Bearer <token>`, `Basic <base64>`, InfluxDB's `Token <token>`.
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[^\s,;\"']+", re.I)
_INFLUX_TOKEN = re.compile(r"\bToken\s+[A-Za-z0-9._~+/=-]{16,}")


def redact_text(text: str) -> str:
    """``text`` with URL passwords, HTTP credentials and ``secret=value`` pairs masked."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _AUTH_SCHEME.sub(rf"\g<scheme> {MASK}", text)
    text = _INFLUX_TOKEN.sub(f"Token {MASK}", text)
    return _NAMED_IN_TEXT.sub(rf"\g<name>\g<sep>{MASK}", text)


def _redact(key: str, value: Any) -> Any:
    if _SECRET_NAME.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(key, v) for v in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: every field named like a secret masked, every string scrubbed."""
    return {key: _redact(key, value) for key, value in event_dict.items()}
