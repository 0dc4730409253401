"""Text shared by the channels: a title and one line per alert, Chinese first then English.

Alert ``summary`` strings are already bilingual (rules/events.py); this module adds the
framing — status, severity, device, times — and never invents wording per rule.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

SEVERITY_ZH = {"critical": "紧急", "major": "严重", "minor": "次要", "warning": "警告"}
STATUS_ZH = {"firing": "告警", "resolved": "已恢复"}


def firing(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alerts of the message that are not resolved."""
    return [a for a in message["alerts"] if a.get("state") != "resolved"]


def group_name(message: Mapping[str, Any]) -> str:
    """The group label values, space-separated (``manhole_cover_open yicheng``)."""
    values = [str(v) for v in message.get("group_labels", {}).values()]
    return " ".join(values) or message["receiver"]


def title(message: Mapping[str, Any]) -> str:
    """``[FIRING:2] manhole_cover_open yicheng`` or ``[RESOLVED] manhole_cover_open yicheng``."""
    if message["status"] == "resolved":
        return f"[RESOLVED] {group_name(message)}"
    return f"[FIRING:{len(firing(message))}] {group_name(message)}"


def title_zh(message: Mapping[str, Any]) -> str:
    """``【告警·2】manhole_cover_open yicheng`` or ``【已恢复】manhole_cover_open yicheng``."""
    if message["status"] == "resolved":
        return f"【已恢复】{group_name(message)}"
    return f"【告警·{len(firing(message))}】{group_name(message)}"


def severity_label(alert: Mapping[str, Any]) -> str:
    """``紧急 critical``; a resolved alert reads ``已恢复 resolved``."""
    if alert.get("state") == "resolved":
        return "已恢复 resolved"
    severity = str(alert.get("severity", ""))
    return f"{SEVERITY_ZH.get(severity, severity)} {severity}"


def alert_detail(alert: Mapping[str, Any]) -> str:
    """The rest of an alert's line: device, district, summary and times."""
    times = f"{alert.get('started_at')}"
    if alert.get("resolved_at"):
        times += f" → {alert['resolved_at']}"
    return (
        f"{alert.get('device_id')} ({alert.get('district')}) {alert.get('summary', '')} · {times}"
    )


def alert_line(alert: Mapping[str, Any]) -> str:
    """``[紧急 critical] mh-1 (yicheng) 井盖打开 / Manhole cover open · 2024-…+08:00``."""
    return f"[{severity_label(alert)}] {alert_detail(alert)}"


def left_out_line(count: int) -> str:
    return f"另有 {count} 条告警未列出 / {count} more alerts not shown"


def text(message: Mapping[str, Any]) -> str:
    """The whole message as plain text: titles, receiver, one line per alert."""
    lines = [title_zh(message), title(message), f"接收组 Receiver: {message['receiver']}", ""]
    lines += [alert_line(a) for a in message["alerts"]]
    if message.get("truncated"):
        lines.append(left_out_line(int(message["truncated"])))
    return "\n".join(lines) + "\n"


def html_body(message: Mapping[str, Any]) -> str:
    """The whole message as a small HTML document (email)."""
    items = "".join(f"<li>{html.escape(alert_line(a))}</li>" for a in message["alerts"])
    if message.get("truncated"):
        items += f"<li><em>{html.escape(left_out_line(int(message['truncated'])))}</em></li>"
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
        f"<h2>{html.escape(title_zh(message))}</h2>"
        f"<p>{html.escape(title(message))}<br>"
        f"接收组 Receiver: {html.escape(message['receiver'])}</p>"
        f"<ul>{items}</ul></body></html>"
    )


def fit(head: list[str], alert_lines: list[str], limit_bytes: int, more: int = 0) -> str:
    """``head`` then ``alert_lines``, newline-joined within ``limit_bytes`` of UTF-8: alert lines
    are dropped from the end and a last line says how many alerts were left out (``more``
    were left out before rendering, the message's ``truncated``).
    """
    kept = list(alert_lines)
    while True:
        left_out = more + len(alert_lines) - len(kept)
        body = "\n".join(head + kept + ([left_out_line(left_out)] if left_out else []))
        if len(body.encode()) <= limit_bytes or not kept:
            # Cut mid-line only if the head alone is too long; never split a character.
            return body.encode()[:limit_bytes].decode(errors="ignore")
        kept.pop()
