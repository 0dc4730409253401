"""Every dashboard of the set, rendered as the JSON Grafana's file provisioning loads.

:func:`render` is deterministic (sorted keys, fixed indentation, a final newline), so
exporting twice gives identical files and the committed JSON can be compared with a fresh
export byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from cityiot.grafana import alerts, devices, kinds, overview
from cityiot.grafana.queries import register

# Where the repository keeps them (deploy/grafana/dashboards/), relative to its root.
DEFAULT_DIR = Path("deploy/grafana/dashboards")


def builders() -> list[Any]:
    """The builders of the set: the overview, one per kind in the model, the drill-down and
    the alerts."""
    return [
        overview.city_overview(),
        *kinds.kind_dashboards(),
        devices.device_drilldown(),
        alerts.alerts(),
    ]


def dashboards() -> list[Dashboard]:
    """Every dashboard, built afresh from the model in force, in a fixed order; panels
    numbered 1, 2, ... in order."""
    built = [builder.build() for builder in builders()]
    for dashboard in built:
        for number, panel in enumerate(dashboard.panels or [], start=1):
            panel.id_val = number
    return built


def to_dict(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data (what Grafana's API and provisioning take)."""
    data: dict[str, Any] = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    return data


def render(dashboard: Dashboard) -> str:
    """The dashboard's JSON text: keys sorted, two-space indent, UTF-8 kept, final newline."""
    return json.dumps(to_dict(dashboard), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def file_name(dashboard: Dashboard) -> str:
    """``<uid>.json``: one file per dashboard, named by its stable uid."""
    if not dashboard.uid:
        raise ValueError(f"dashboard {dashboard.title!r} has no uid")
    return f"{dashboard.uid}.json"


def export(out_dir: Path = DEFAULT_DIR) -> list[Path]:
    """Write every dashboard to ``out_dir`` (created if missing); returns the files written.

    Files already there with the same content are left untouched (no new mtime).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in dashboards():
        path = out_dir / file_name(dashboard)
        text = render(dashboard)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def load(text: str) -> Dashboard:
    """A dashboard's JSON text parsed into the SDK's model (queries typed, see register())."""
    register()
    return Dashboard.from_json(json.loads(text))
