"""``bench.scale_offline`` at a small size: the real engine in simulated time finds every
silent device once, within one check period, and no reporting one; the figures are complete."""

from __future__ import annotations

from rich.console import Console

from bench.scale_offline import print_scale_offline, run_scale_offline


def test_scale_offline_counts_every_silent_device_once_and_no_reporter() -> None:
    said: list[str] = []
    result = run_scale_offline(devices=3000, minutes=20, tick_s=5.0, say=said.append)
    assert (result.silent, result.reporting) == (1500, 1500)
    assert result.readings > 0 and result.checks == 20 * 60 // 5
    assert result.silent_due > 1000
    assert result.fired_once_in_time == result.silent_due
    assert result.fired_late == result.fired_early == result.fired_twice == result.missed == 0
    assert result.reporting_fired == result.fired_not_due == 0
    assert 0 < result.max_lateness_s <= 5.0
    assert result.ok and result.as_dict()["ok"] is True
    console = Console(record=True, width=120)
    print_scale_offline(result, console)
    assert "one alert, within one check period" in console.export_text()
    assert any("registering 3,000 devices" in line for line in said)
