"""Rules follow the live model (docs/design.md §4a): the names a rule may read come from the
kinds in force when it loads; enum metrics are compared with their values and text attributes
with strings; a kind added at run time (a kind file, or a kind put through the API) gets rules; and the running rules stage
reloads its rules when the kinds change, on the real database."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from cityiot.domain.catalogue import MODEL, ThingModel
from cityiot.domain.settings import Settings
from cityiot.ingest.devices import DeviceMap
from cityiot.ingest.validate import Reading
from cityiot.rules.definitions import SHIPPED_CATALOGUE, RuleError, load_rules, parse_rule_file
from cityiot.rules.engine import RulesEngine
from cityiot.rules.evaluation import DeviceFacts, Evaluator, Transition
from cityiot.rules.service import current_rules, rules_version, watch_rules
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.kinds import save_kind
from cityiot.storage.registry import import_devices, upsert_vendor
from cityiot.storage.tables.alerts import Alert
from tests.operator_files import changed, write_kind
from tests.waiting import until

# The example of docs/design.md §4a, a kind the platform does not ship, with a battery
# (the shipped rules for every battery reach it).
NOISE = changed(
    "metrics.battery_pct",
    {"type": "float", "unit": "%", "range": [0, 100], "title": {"zh": "电池电量", "en": "battery"}},
)
NOISE_RULE = """
- id: noise_over_limit
  kind: noise
  severity: minor
  when: laeq_db > limit_db and period == "night"
  clear: laeq_db < limit_db - 3 or period != "night"
  summary: {zh: "夜间噪声 {laeq_db} dB(A)（{period}）", en: "Noise {laeq_db} dB(A) at {period}"}
"""


def rule_text(kind: str, when: str, rule_id: str = "x", **more: str) -> str:
    """A rule file of one threshold rule."""
    rule = {"id": rule_id, "kind": kind, "when": when, **more, "summary": {"zh": "a", "en": "b"}}
    return yaml.safe_dump([rule], allow_unicode=True)


def refused(text: str, source: str = "mine.yaml") -> str:
    with pytest.raises(RuleError) as caught:
        parse_rule_file(text, source)
    return str(caught.value)


def kinds_folder(tmp_path: Path, *specs: dict[str, Any]) -> Path:
    folder = tmp_path / "kinds"
    for spec in specs:
        write_kind(folder, spec)
    return folder


def feed(rules: Any, device: DeviceFacts, *readings: dict[str, Any]) -> list[Transition]:
    evaluator = Evaluator(rules, started_s=0)
    out: list[Transition] = []
    for minute, metrics in enumerate(readings):
        ts = 1_780_000_000_000 + minute * 60_000
        out += evaluator.feed(device, ts, metrics, ts / 1000)
    return out


# -- names and kinds -----------------------------------------------------------------------


def test_an_unknown_metric_is_refused_naming_the_rule_and_the_metric() -> None:
    message = refused(rule_text("gas", "ch4_pct >= 20", "gas_typo"), "gas.yaml")
    assert message.startswith("gas.yaml: rule gas_typo.when"), message
    assert "'ch4_pct'" in message and "ch4_lel_pct" in message, message  # and what is known
    # Another kind's attribute is not this kind's: a manhole's depth means nothing to gas.
    message = refused(rule_text("gas", "ch4_lel_pct > depth_cm", "gas_depth"))
    assert "rule gas_depth" in message and "'depth_cm'" in message, message
    # A rate rule names its metric outright.
    message = refused(
        "- id: gas_drop\n  kind: gas\n  type: rate\n  metric: pressure_mpa\n  drop_pct: 20\n"
        "  summary: {zh: a, en: b}"
    )
    assert "rule gas_drop.metric" in message and "'pressure_mpa'" in message, message
    assert "pressure_kpa" in message, message


def test_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    message = refused(rule_text("boat", "speed_kn > 3", "boat_fast"))
    assert "rule boat_fast.kind: 'boat' is not a kind" in message, message
    assert all(kind in message for kind in MODEL.kinds), message


# -- enum metrics ---------------------------------------------------------------------------


def test_an_enum_rule_fires_on_the_string_value_and_clears() -> None:
    rules = parse_rule_file(rule_text("gas", 'alarm_state != "normal"', "gas_alarmed"), "x.yaml")
    device = DeviceFacts("g-1", "gas", 60, {})
    out = feed(
        rules, device, {"alarm_state": "normal"}, {"alarm_state": "low"}, {"alarm_state": "normal"}
    )
    assert [(t.to, t.values) for t in out] == [
        ("firing", {"alarm_state": "low"}),
        ("resolved", {"alarm_state": "normal"}),
    ]


def test_summaries_show_enum_values_as_they_are(live_model: ThingModel, tmp_path: Path) -> None:
    live_model.configure(kinds_folder(tmp_path, NOISE), None)
    (rule,) = parse_rule_file(NOISE_RULE, "noise.yaml")
    assert rule.summary({"laeq_db": 61.5, "period": "night"}) == (
        "夜间噪声 61.5 dB(A)（night） / Noise 61.5 dB(A) at night"
    )


@pytest.mark.parametrize(
    ("when", "phrases"),
    [
        ('alarm_state == "broken"', ["rule gas_x.when", "'broken' is not a value of the metric alarm_state", '"normal", "low", "high", "fault"']),
        ('"fault" == alarm_state or alarm_state == "smoke"', ["rule gas_x.when", "'smoke'", "alarm_state"]),
        ('alarm_state > "low"', ["rule gas_x.when", "ordering does not apply"]),
        ("alarm_state + 1 > 2", ["rule gas_x.when", "alarm_state is an enum metric", "arithmetic"]),
        ("alarm_state", ["alarm_state is an enum metric", 'alarm_state == "normal"']),
        ('ch4_lel_pct == "high"', ["'ch4_lel_pct' is a number or true/false, not an enum metric"]),
        ('"low" == "low"', ["a string is only compared to an enum metric"]),
        ('ch4_lel_pct > 20 and "fault"', ["a string is only compared with == or != to an enum"]),
        ('alarm_state == "low" == alarm_state', ["one value at a time"]),
    ],
)  # fmt: skip
def test_enum_misuse_is_refused_with_what_to_write(when: str, phrases: list[str]) -> None:
    message = refused(rule_text("gas", when, "gas_x"))
    assert message.startswith("mine.yaml: rule gas_x"), message
    assert all(p in message for p in phrases), message


# -- text attributes ------------------------------------------------------------------------


def test_a_text_attribute_is_compared_with_a_string(live_model: ThingModel, tmp_path: Path) -> None:
    live_model.configure(kinds_folder(tmp_path, NOISE), None)
    rules = parse_rule_file(
        rule_text("noise", 'zone_class == "4a"', "noise_4a")
        + rule_text("noise", 'zone_class != "4a" and laeq_db > 60', "noise_loud_elsewhere"),
        "noise.yaml",
    )
    assert [r.names for r in rules] == [{"zone_class"}, {"zone_class", "laeq_db"}]
    fired: dict[str | None, list[tuple[str, str, dict[str, Any]]]] = {}
    for zone in ("4a", "2", None):  # None: a device registered without the attribute
        attributes = {"limit_db": 55.0} | ({"zone_class": zone} if zone else {})
        device = DeviceFacts(f"n-{zone}", "noise", 60, attributes)
        fired[zone] = [(t.rule.id, t.to, t.values) for t in feed(rules, device, {"laeq_db": 65.0})]
    assert fired == {
        "4a": [("noise_4a", "firing", {"zone_class": "4a"})],
        "2": [("noise_loud_elsewhere", "firing", {"laeq_db": 65.0, "zone_class": "2"})],
        None: [],  # not judged: the rule reads what the device does not have
    }


@pytest.mark.parametrize(
    ("when", "phrases"),
    [
        ('zone_class > "a"', ["zone_class is a text attribute", "ordering does not apply", 'zone_class == "']),
        ("zone_class + 1", ["zone_class is a text attribute", "arithmetic", 'zone_class == "']),
        ("not zone_class", ["zone_class is a text attribute", "truth"]),
        ("zone_class == 4", ["zone_class is a text attribute", "compare it with == or != to a string"]),
        ('laeq_db == "4a"', ["'laeq_db' is a number or true/false, not an enum metric or a text attribute", "text attributes: zone_class"]),
    ],
)  # fmt: skip
def test_text_attribute_misuse_is_refused_naming_the_rule_and_the_attribute(
    live_model: ThingModel, tmp_path: Path, when: str, phrases: list[str]
) -> None:
    live_model.configure(kinds_folder(tmp_path, NOISE), None)
    message = refused(rule_text("noise", when, "noise_x"))
    assert message.startswith("mine.yaml: rule noise_x.when"), message
    assert all(p in message for p in phrases), message


# -- kinds added at run time ---------------------------------------------------------------


def test_a_kind_from_the_kinds_path_gets_rules_using_its_metrics_and_attributes(
    live_model: ThingModel, tmp_path: Path
) -> None:
    assert "'noise' is not a kind" in refused(NOISE_RULE)
    live_model.configure(kinds_folder(tmp_path, NOISE), None)
    (rule,) = parse_rule_file(NOISE_RULE, "noise.yaml")
    assert rule.kinds == {"noise"} and rule.names == {"laeq_db", "limit_db", "period"}
    # Its text attribute is not a number a rule can compute with.
    assert "zone_class is a text attribute" in refused(rule_text("noise", "laeq_db > zone_class"))

    device = DeviceFacts("n-1", "noise", 60, {"limit_db": 55.0, "zone_class": "1"})
    out = feed(
        [rule],
        device,
        {"laeq_db": 60.0, "period": "day"},  # loud by day: not this rule's business
        {"laeq_db": 60.0, "period": "night"},
        {"laeq_db": 53.0, "period": "night"},  # inside the 3 dB band: still firing
        {"laeq_db": 50.0, "period": "night"},
    )
    assert [(t.to, t.values.get("laeq_db")) for t in out] == [("firing", 60.0), ("resolved", 50.0)]

    # The rules for every kind reach it too: battery and offline.
    shipped = {r.id: r for r in load_rules(SHIPPED_CATALOGUE)}
    assert "noise" in shipped["battery_low"].kinds and "noise" in shipped["device_offline"].kinds


def test_a_star_rule_keeps_the_kinds_where_each_name_has_the_type_it_is_used_as(
    live_model: ThingModel,
) -> None:
    # Two kinds added through the API: "level" is an enum in one and a number in the other.
    siren = copy.deepcopy(NOISE) | {"kind": "siren"}
    siren["metrics"] = {
        "level": {"type": "enum", "values": ["off", "high"], "title": {"zh": "档位", "en": "level"}}
    }
    gauge = copy.deepcopy(NOISE) | {"kind": "gauge"}
    gauge["metrics"] = {
        "level": {"type": "float", "range": [0, 10], "title": {"zh": "读数", "en": "level"}}
    }
    live_model.refresh({"siren": siren, "gauge": gauge})
    (as_enum,) = parse_rule_file(rule_text("*", 'level == "high"'), "x.yaml")
    (as_number,) = parse_rule_file(rule_text("*", "level > 3"), "x.yaml")
    assert as_enum.kinds == {"siren"} and as_number.kinds == {"gauge"}
    assert "'loud' is not a value" in refused(rule_text("*", 'level == "loud"'))

    # A third kind where "level" is a text attribute: any string applies to it, a value of
    # the enum to both, a number still to the gauge alone.
    plate = copy.deepcopy(NOISE) | {"kind": "plate"}
    plate["attributes"]["level"] = {"type": "str", "title": {"zh": "等级", "en": "level"}}
    live_model.refresh({"siren": siren, "gauge": gauge, "plate": plate})
    kinds = {
        when: parse_rule_file(rule_text("*", when), "x.yaml")[0].kinds
        for when in ('level == "high"', 'level != "loud"', "level > 3")
    }
    assert kinds == {
        'level == "high"': {"siren", "plate"},
        'level != "loud"': {"plate"},
        "level > 3": {"gauge"},
    }
    assert "ordering does not apply" in refused(rule_text("*", 'level > "a"'))


# -- the running stage follows the kinds ---------------------------------------------------


async def test_the_running_stage_reloads_its_rules_when_a_kind_changes(
    live_model: ThingModel, sessions: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live_model.configure(kinds_folder(tmp_path, NOISE), None)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "noise.yaml").write_text(NOISE_RULE, encoding="utf-8")
    settings = Settings(rules_path=rules_dir, registry_refresh_s=0.05)
    await upsert_vendor(sessions, "acme", "ACME")
    parsed = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,limit_db,zone_class\n"
        "n-1,acme,noise,yicheng,32.98,114.02,驿城区 1 号,60,55,1\n"
    )
    assert not parsed.errors, parsed.errors
    assert not (await import_devices(sessions, parsed.rows)).errors
    devices = DeviceMap(sessions)
    await devices.refresh()
    engine = RulesEngine(
        await current_rules(settings, sessions, strict=False),
        devices,
        sessions,
        publish=lambda topic, payload: None,
    )
    await engine.start()
    stop = asyncio.Event()
    seen = await rules_version(settings, sessions)
    watcher = asyncio.create_task(watch_rules(engine, settings, sessions, stop, seen=seen))
    try:
        # A rule on a metric the kind lacks: refused, the running rules stay.
        peak = rule_text("noise", "lmax_db > 100", "noise_peak", severity="major")
        with caplog.at_level(logging.ERROR, logger="cityiot.rules"):
            (rules_dir / "peak.yaml").write_text(peak, encoding="utf-8")
            await until(
                lambda: any("lmax_db" in r.getMessage() for r in caplog.records), 10,
                what="the refused reload",
            )  # fmt: skip
        failed = next(r.getMessage() for r in caplog.records if "lmax_db" in r.getMessage())
        assert "event=rules_reload_failed" in failed and "rule noise_peak" in failed, failed
        assert set(engine.evaluator.rules) == {"noise_over_limit"}

        # The kind gains the metric through the API (kept in the database): the stage takes
        # it into the model, reloads, and the rule refused a moment ago runs.
        spec = copy.deepcopy(NOISE)
        spec["metrics"]["lmax_db"] = {
            "type": "float", "unit": "dB(A)", "range": [20, 160],
            "title": {"zh": "最大声级", "en": "maximum level"},
        }  # fmt: skip
        await save_kind(sessions, MODEL.check_change(spec), "test")
        await until(lambda: "noise_peak" in engine.evaluator.rules, 10, what="the reload")
        now = int(time.time() * 1000)
        await engine.evaluate([Reading("n-1", "noise", now, {"lmax_db": 112.0})])
        async with sessions() as session:
            alerts = (await session.scalars(select(Alert))).all()
        assert [(a.rule, a.state, a.values) for a in alerts] == [
            ("noise_peak", "firing", {"lmax_db": 112.0})
        ]
    finally:
        stop.set()
        await watcher
