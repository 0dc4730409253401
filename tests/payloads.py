"""Hostile payloads every consumer of the broker must survive (issue 22): each consumer's
test publishes them on the real broker, then shows a valid message is still handled."""

from __future__ import annotations

DEEP = b"[" * 2000 + b"]" * 2000  # the red team's payload: 4 KB, 2,000 levels

HOSTILE: list[tuple[str, bytes]] = [
    ("nested 2,000 deep", DEEP),
    ("nested 2,000 deep in a metric", b'{"metrics": {"tilt_deg": ' + DEEP + b"}}"),
    ("nested 40 deep", b'{"id": "x", "ok": true, "v": ' + b"[" * 40 + b"]" * 40 + b"}"),
    ("100,000 brackets never closed", b"{" * 100_000),
    ("over the size limit", b'{"metrics": {"tilt_deg": 1.0}, "pad": "' + b"x" * 300_000 + b'"}'),
    ("invalid UTF-8", b'{"id": "\xff\xfe", "ok": true}'),
    ("not JSON", b"\x00\x01 not json at all"),
    ("empty", b""),
    ("a JSON array", b"[1, 2, 3]"),
    ("a JSON string", b'"text"'),
    ("fields of the wrong type", b'{"id": ["x"], "ok": {}, "kind": [1], "district": {"a": 1}}'),
    ("an integer beyond 64 bits", b'{"id": -9223372036854775809, "metrics": 1e999}'),
]
