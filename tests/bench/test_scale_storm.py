"""``bench.scale_storm`` at a small size, on real Mosquitto, InfluxDB and the platform: every
alarm raises its alert, the webhooks get a few grouped notifications and the field team one
work order per kind, gathering every alert; the figures are complete."""

from __future__ import annotations

from rich.console import Console

from bench.scale_storm import print_scale_storm, run_scale_storm


def test_scale_storm_groups_notifications_and_work_orders() -> None:
    said: list[str] = []
    result = run_scale_storm(60, 6, 4.0, group_wait_s=2, group_interval_s=3, say=said.append)
    assert result.error is None and result.ok
    assert result.published == result.alerts_raised == 66 and result.alerts_missing == 0
    assert result.alerts_stored.get("firing") == 66
    assert result.alert.samples == 66
    assert result.alert.p50_ms is not None and result.alert.max_ms is not None
    assert 0 < result.alert.p50_ms <= result.alert.max_ms
    # Two groups (rule, district) per receiver: a few messages each, never one per alert.
    assert set(result.notifications) == {"ops-centre", "urban-management"}
    assert all(2 <= n <= 10 for n in result.notifications.values()), result.notifications
    assert result.outbox == {"sent": sum(result.notifications.values())}
    assert (result.work_orders, result.work_order_alerts) == (2, 66)
    assert sorted(result.work_order_titles) == [
        "6 × manhole in yicheng",
        "60 × streetlight in yicheng",
    ]
    assert all(lat.samples > 0 for lat in result.api.values()) and result.api_errors == 0
    console = Console(record=True, width=120)
    print_scale_storm(result, console)
    assert "work orders opened" in console.export_text()
    assert any("the storm: 66 alarms" in line for line in said)
