"""``bench.scale_api`` at a small size: it builds its registry, starts the real API and
reports every endpoint it drives, without errors."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bench.scale_api import ENDPOINTS, print_scale_api, run_scale_api


def test_scale_api_reports_every_endpoint_without_errors(tmp_path: Path) -> None:
    said: list[str] = []
    result = run_scale_api(200, "sqlite", 2, 12, said.append, work_dir=tmp_path / "run")
    assert [e.endpoint for e in result.endpoints] == list(ENDPOINTS)
    for e in result.endpoints:
        assert e.errors == 0, e.error_samples
        assert e.requests >= 12
        assert 0 < e.p50_ms <= e.p99_ms <= e.max_ms
        assert e.rss_mb > 0
    figures = result.as_dict()
    assert figures["devices"] == 200 and len(figures["endpoints"]) == len(ENDPOINTS)
    console = Console(record=True, width=120)
    print_scale_api(result, console)
    assert "overview" in console.export_text()
    assert any("built: 200 devices" in line for line in said)
