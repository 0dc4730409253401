"""The routing file: validation errors naming file and field, the shipped Zhumadian tree,
``${ENV}`` substitution and the tree's matching (first match, ``continue``, nesting and
inheritance)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityiot.domain.catalogue import KINDS
from cityiot.rules.routing import (
    DEFAULT_ROUTING_PATH,
    Router,
    RoutingError,
    alert_labels,
    load_routing,
    parse_duration,
    parse_routing,
)

ALL_SECRETS = {
    "CITYIOT_OPS_WEBHOOK_URL": "https://ops.example/hook",
    "CITYIOT_OPS_EMAIL_TO": "duty@ops.example",
    "CITYIOT_URBAN_WECOM_KEY": "wecom-urban-key",
    "CITYIOT_WATER_DINGTALK_TOKEN": "dt-token",
    "CITYIOT_WATER_DINGTALK_SECRET": "dt-secret",
    "CITYIOT_WATER_EMAIL_TO": "dispatch@water.example",
    "CITYIOT_FIRE_WECOM_KEY": "wecom-fire-key",
    "CITYIOT_TRAFFIC_WEBHOOK_URL": "https://traffic.example/hook",
    "CITYIOT_FLOOD_WECOM_KEY": "wecom-flood-key",
    "CITYIOT_GAS_DINGTALK_TOKEN": "gas-dt-token",
    "CITYIOT_GAS_DINGTALK_SECRET": "gas-dt-secret",
    "CITYIOT_TUNNEL_WEBHOOK_URL": "https://tunnel.example/hook",
    "CITYIOT_SMTP_HOST": "smtp.example",
    "CITYIOT_SMTP_FROM": "cityiot@zhumadian.example",
}

BASE: dict[str, Any] = {
    "route": {
        "receiver": "ops",
        "group_by": ["rule", "district"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "4h",
        "send_resolved": True,
        "routes": [
            {"receiver": "ops", "continue": True},
            {"match": {"kind": "manhole"}, "receiver": "urban", "workorder": ["critical"]},
            {
                "match_re": {"kind": "water|hydrant"},
                "receiver": "utilities",
                "group_wait": "5s",
                "send_resolved": False,
                "workorder": ["critical", "major"],
                "routes": [
                    {"match": {"severity": "critical"}, "repeat_interval": "30m"},
                    {
                        "matchers": [{"label": "district", "op": "!=", "value": "yicheng"}],
                        "receiver": "county",
                        "group_by": ["district"],
                        "workorder": [],
                    },
                ],
            },
            {"match": {"kind": "parking"}, "receiver": "traffic", "continue": True},
            {"match": {"kind": "parking", "district": "yicheng"}, "receiver": "urban"},
        ],
    },
    "receivers": [
        {"name": "ops", "channels": [{"name": "ops-mqtt", "type": "mqtt"}]},
        {"name": "urban", "team": "urban", "channels": [{"name": "urban-mqtt", "type": "mqtt"}]},
        {"name": "utilities", "team": "water", "channels": []},
        {"name": "county", "team": "county", "channels": []},
        {"name": "traffic", "team": "traffic", "channels": []},
    ],
}


def labels(**given: str) -> dict[str, str]:
    base = {
        "rule": "r",
        "kind": "manhole",
        "district": "yicheng",
        "severity": "minor",
        "vendor": "acme",
        "device_id": "d-1",
    }
    return {**base, **given}


def paths(router: Router, **given: str) -> list[str]:
    return [r.path for r in router.match(labels(**given))]


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "routing.yaml"
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, document: Any) -> list[str]:
    path = write(tmp_path, document)
    with pytest.raises(RoutingError) as caught:
        load_routing(path, env={})
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


# --- the tree ----------------------------------------------------------------------------


def test_first_matching_child_wins_and_continue_goes_on() -> None:
    router = parse_routing(BASE)
    # the ops child continues; the manhole child takes it and stops the search
    assert paths(router, kind="manhole") == ["route.routes[0]", "route.routes[1]"]
    # parking: traffic continues, so the yicheng parking route takes it as well
    assert paths(router, kind="parking", district="yicheng") == [
        "route.routes[0]",
        "route.routes[3]",
        "route.routes[4]",
    ]
    assert paths(router, kind="parking", district="xiping") == [
        "route.routes[0]",
        "route.routes[3]",
    ]
    # a kind no team route takes only reaches the ops child
    assert paths(router, kind="streetlight") == ["route.routes[0]"]


def test_nested_routes_fall_back_to_their_parent_and_inherit() -> None:
    router = parse_routing(BASE)
    critical, county, parent = (
        router.match(labels(kind="water", severity="critical"))[1],
        router.match(labels(kind="hydrant", district="xiping"))[1],
        router.match(labels(kind="water", district="yicheng"))[1],
    )
    assert parent.path == "route.routes[2]"  # no child matched: the parent takes it
    assert critical.path == "route.routes[2].routes[0]"
    assert county.path == "route.routes[2].routes[1]"
    # inherited from the utilities route (which inherited the rest from the root)
    assert critical.receiver.name == "utilities" and critical.team == "water"
    assert (critical.group_wait, critical.group_interval, critical.repeat_interval) == (5, 60, 1800)
    assert critical.send_resolved is False
    assert critical.group_by == ("rule", "district")
    assert critical.workorder == {"critical", "major"}
    # its own settings override
    assert county.receiver.name == "county" and county.group_by == ("district",)
    assert county.workorder == frozenset() and county.repeat_interval == 4 * 3600
    # the root's defaults when the file gives none
    bare = parse_routing({"route": {"receiver": "ops"}, "receivers": [{"name": "ops"}]})
    assert (bare.root.group_wait, bare.root.group_interval, bare.root.repeat_interval) == (
        30,
        300,
        14400,
    )
    assert bare.root.send_resolved is True and bare.root.group_by == ()
    assert [r.path for r in bare.match(labels())] == ["route"]


def test_match_re_is_a_full_match() -> None:
    document = copy.deepcopy(BASE)
    document["route"]["routes"] = [{"match_re": {"district": "yi"}, "receiver": "urban"}]
    router = parse_routing(document)
    assert paths(router, district="yicheng") == ["route"]
    document["route"]["routes"] = [{"match_re": {"district": "yi.*"}, "receiver": "urban"}]
    assert paths(parse_routing(document), district="yicheng") == ["route.routes[0]"]


def test_group_key_and_labels_follow_group_by() -> None:
    router = parse_routing(BASE)
    route = router.match(labels(kind="manhole", rule="manhole_open"))[1]
    event_labels = route.labels_of(
        {"rule": "manhole_open", "kind": "manhole", "district": "yicheng", "device_id": "x"}
    )
    assert event_labels["team"] == "urban" and event_labels["vendor"] == ""
    assert route.group_labels(event_labels) == {"rule": "manhole_open", "district": "yicheng"}
    assert (
        route.group_key(event_labels) == 'route.routes[1]:{rule="manhole_open",district="yicheng"}'
    )
    assert alert_labels({"rule": "r", "severity": "major", "extra": 1}) == {
        "rule": "r",
        "kind": "",
        "district": "",
        "severity": "major",
        "vendor": "",
        "device_id": "",
    }


def test_workorder_group_by_is_inherited_and_keys_the_team_and_its_labels() -> None:
    plain = parse_routing(BASE).match(labels(kind="manhole", rule="manhole_open"))[1]
    assert plain.workorder_group_by == () and plain.workorder_group({"district": "x"}) is None
    spec = copy.deepcopy(BASE)
    spec["route"]["workorder_group_by"] = ["district", "kind", "rule"]
    route = parse_routing(spec).match(labels(kind="manhole", rule="manhole_open"))[1]
    assert route.workorder_group_by == ("district", "kind", "rule")  # from the root
    event = {"rule": "manhole_open", "kind": "manhole", "district": "yicheng", "device_id": "a"}
    key = route.workorder_group(route.labels_of(event))
    assert key is not None and len(key) == 40
    assert route.workorder_group(route.labels_of({**event, "device_id": "b"})) == key
    assert route.workorder_group(route.labels_of({**event, "district": "xiping"})) != key
    assert route.workorder_group({**route.labels_of(event), "team": "other"}) != key


def test_workorder_group_by_names_labels(tmp_path: Path) -> None:
    spec = copy.deepcopy(BASE)
    spec["route"]["workorder_group_by"] = ["district", "street"]
    (problem,) = problems_of(tmp_path, spec)
    assert problem.startswith("route.workorder_group_by[1]: 'street' is not a label")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m", 60),
        ("4h", 14400),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("1d", 86400),
        (90, 90),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


# --- the shipped file --------------------------------------------------------------------


def test_default_file_routes_every_kind_to_its_team() -> None:
    router = load_routing(DEFAULT_ROUTING_PATH, env=ALL_SECRETS)
    assert router.warnings == ()
    expected = {
        "manhole": "urban-management",
        "streetlight": "urban-management",
        "water": "water-company",
        "hydrant": "fire-brigade",
        "parking": "traffic-police",
        # The 2022 plan's lifeline kinds: flood prevention, the gas company, the tunnel operator.
        "waterlogging": "flood-control",
        "drainage": "flood-control",
        "gas": "gas-company",
        "tunnel": "tunnel-operator",
    }
    for kind, team_receiver in expected.items():
        for severity in ("critical", "major", "minor", "warning"):
            routes = router.match(labels(kind=kind, severity=severity))
            assert [r.receiver.name for r in routes] == ["ops-centre", team_receiver], kind
            opens = severity in routes[1].workorder
            assert opens == (kind != "parking" and severity in ("critical", "major")), (
                kind,
                severity,
            )
            assert not routes[0].workorder  # the operations centre opens none
    for receiver in router.receivers.values():
        types = [c["type"] for c in receiver.channels]
        assert "mqtt" in types and receiver.team
    urban = router.receivers["urban-management"]
    assert urban.channels[1]["url"].endswith("?key=wecom-urban-key")
    water = router.receivers["water-company"].channels
    assert [c["type"] for c in water] == ["mqtt", "dingtalk", "email"]
    assert water[1]["secret"] == "dt-secret"
    ops = router.receivers["ops-centre"].channels
    assert [c["type"] for c in ops] == ["mqtt", "webhook", "email"]
    teams = {name: r.team for name, r in router.receivers.items()}
    assert teams["flood-control"] == "flood" and teams["gas-company"] == "gas"
    assert teams["tunnel-operator"] == "tunnel"
    assert router.receivers["gas-company"].channels[1]["secret"] == "gas-dt-secret"


@pytest.mark.parametrize(
    ("kind", "severity", "repeat_s"),
    [("waterlogging", "critical", 1800), ("drainage", "minor", 4 * 3600), ("gas", "critical", 1800),
     ("tunnel", "critical", 1800), ("tunnel", "major", 4 * 3600)],
)  # fmt: skip
def test_critical_lifeline_alerts_are_repeated_every_half_hour(
    kind: str, severity: str, repeat_s: float
) -> None:
    routes = load_routing(DEFAULT_ROUTING_PATH, env=ALL_SECRETS).match(
        labels(kind=kind, severity=severity)
    )
    assert routes[1].repeat_interval == repeat_s, (kind, severity)


def test_default_channels_are_accepted_by_the_notifiers() -> None:
    from cityiot.rules.notifiers import build_channel

    async def publish(topic: str, payload: bytes) -> None:
        pass

    router = load_routing(DEFAULT_ROUTING_PATH, env=ALL_SECRETS)
    built = [
        build_channel(config, publish=publish)
        for receiver in router.receivers.values()
        for config in receiver.channels
    ]
    assert len(built) == 18


def test_channels_with_unset_variables_are_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"CITYIOT_URBAN_WECOM_KEY": "s3cret-key", "CITYIOT_WATER_DINGTALK_TOKEN": "s3cret-token"}
    with caplog.at_level(logging.WARNING, logger="cityiot.rules.routing"):
        router = load_routing(DEFAULT_ROUTING_PATH, env=env)
    names = {r: [c["name"] for c in v.channels] for r, v in router.receivers.items()}
    assert names == {
        "ops-centre": ["ops-mqtt"],
        "urban-management": ["urban-mqtt", "urban-wecom"],
        "water-company": ["water-mqtt"],  # dingtalk lacks its secret
        "fire-brigade": ["fire-mqtt"],
        "traffic-police": ["traffic-mqtt"],
        "flood-control": ["flood-mqtt"],
        "gas-company": ["gas-mqtt"],
        "tunnel-operator": ["tunnel-mqtt"],
    }
    assert len(router.warnings) == 9
    dingtalk = next(w for w in router.warnings if "water-dingtalk" in w)
    assert "CITYIOT_WATER_DINGTALK_SECRET" in dingtalk and "DINGTALK_TOKEN" not in dingtalk
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        "event=channel_dropped" in m and "channel=fire-wecom" in m and "CITYIOT_FIRE_WECOM_KEY" in m
        for m in logged
    )
    assert not any("s3cret" in m for m in [*logged, *router.warnings])


def test_env_substitution_with_defaults_and_errors_outside_channels(tmp_path: Path) -> None:
    document = copy.deepcopy(BASE)
    document["receivers"][1]["channels"].append(
        {"name": "urban-hook", "type": "webhook", "url": "https://${HOOK_HOST}/x?t=${TOKEN:-none}"}
    )
    router = parse_routing(document, env={"HOOK_HOST": "hooks.example"})
    assert router.receivers["urban"].channels[1]["url"] == "https://hooks.example/x?t=none"
    document["receivers"][1]["team"] = "${URBAN_TEAM}"
    router = parse_routing(document, env={"HOOK_HOST": "h", "URBAN_TEAM": "urban-east"})
    assert router.receivers["urban"].team == "urban-east"
    assert problems_of(tmp_path, document) == [
        "receivers[1].team: environment variable URBAN_TEAM is not set"
    ]


# --- validation errors -------------------------------------------------------------------


def _set(document: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        (
            "route.routes.2.routes.0.match",
            {"severity": "urgent"},
            "route.routes[2].routes[0].match.severity: 'urgent' is not a severity "
            "(critical, major, minor, warning)",
        ),
        (
            "route.routes.1.match",
            {"kind": "manhol"},
            f"route.routes[1].match.kind: 'manhol' is not a kind ({', '.join(KINDS)})",
        ),
        (
            "route.routes.1.match",
            {"colour": "red"},
            "route.routes[1].match.colour: 'colour' is not a label "
            "(rule, kind, district, severity, vendor, device_id, team)",
        ),
        (
            "route.routes.1.match",
            {"team": "urban"},
            "route.routes[1].match.team: 'team' comes from the route, routes cannot match on it; "
            "match on rule, kind, district, severity, vendor, device_id",
        ),
        (
            "route.routes.1.match_re",
            {"district": "(yicheng"},
            "route.routes[1].match_re.district: '(yicheng' is not a valid regular expression "
            "(missing ), unterminated subpattern at position 0)",
        ),
        (
            "route.routes.1.matchers",
            [{"label": "district", "op": "==", "value": "yicheng"}],
            "route.routes[1].matchers[0].op: '==' is not an operator (=, !=, =~, !~)",
        ),
        (
            "route.group_wait",
            "10x",
            "route.group_wait: '10x' is not a duration (e.g. 30s, 5m, 4h, 1h30m)",
        ),
        ("route.repeat_interval", "0s", "route.repeat_interval: must be longer than 0s"),
        (
            "route.group_by",
            ["rule", "zone"],
            "route.group_by[1]: 'zone' is not a label "
            "(rule, kind, district, severity, vendor, device_id, team)",
        ),
        (
            "route.routes.1.workorder",
            ["critical", "high"],
            "route.routes[1].workorder[1]: 'high' is not a severity (critical, major, minor, warning)",
        ),
        (
            "route.routes.1.continue",
            "yes",
            "route.routes[1].continue: expected true or false, got 'yes'",
        ),
        (
            "route.routes.1.recevier",
            "urban",
            "route.routes[1].recevier: unknown field; did you mean 'receiver'?",
        ),
        (
            "route.routes.1.receiver",
            "nobody",
            "route.routes[1].receiver: 'nobody' is not a receiver (ops, urban, utilities, county, traffic)",
        ),
        (
            "route.routes.0.workorder",
            ["critical"],
            "route.routes[0].workorder: receiver 'ops' has no team to give work orders to",
        ),
        (
            "route.match",
            {"kind": "manhole"},
            "route.match: the root route takes every alert; move it to a child route",
        ),
        (
            "receivers.1.channels.0.name",
            "ops-mqtt",
            "receivers[1].channels[0].name: 'ops-mqtt' is already the name of "
            "receivers[0].channels[0]; channel names are unique in the file",
        ),
        (
            "receivers.1.channels.0.type",
            "MQTT",
            "receivers[1].channels[0].type: 'MQTT' is not a channel type (e.g. mqtt, webhook, wecom, email)",
        ),
        (
            "receivers",
            [*BASE["receivers"], {"name": "urban"}],
            "receivers[5].name: 'urban' is already a receiver",
        ),
        (
            "receivers.0.channels.0.name",
            7,
            "receivers[0].channels[0].name: expected a string, got 7; quote it",
        ),
        ("receivers", [], "receivers: give at least one"),
        ("receivers.1.title", {"zh": "城市管理局"}, "receivers[1].title.en: required"),
        (
            "receivers.1.title",
            "城市管理局",
            "receivers[1].title: expected a mapping, got '城市管理局'",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, where: str, value: Any, problem: str
) -> None:
    assert problems_of(tmp_path, _set(BASE, where, value)) == [problem]


def test_window_errors(tmp_path: Path) -> None:
    window = {
        "name": "night-works",
        "matchers": [{"label": "district", "op": "=", "value": "yicheng"}],
        "schedule": {"weekdays": ["mon"], "start": "01:00", "end": "05:00"},
    }
    ok = parse_routing({**BASE, "maintenance_windows": [window]})
    assert [w.name for w in ok.maintenance_windows] == ["night-works"]
    cases = [
        (
            "schedule.start",
            60,
            'maintenance_windows[0].schedule.start: 60 is not a time of day: quote it, e.g. "01:00"',
        ),
        (
            "schedule.end",
            "25:00",
            'maintenance_windows[0].schedule.end: \'25:00\' is not a time of day ("HH:MM", "00:00" to "24:00")',
        ),
        (
            "schedule.end",
            "01:00",
            'maintenance_windows[0].schedule: start and end are equal; for a whole day write "00:00" to "24:00"',
        ),
        (
            "schedule.weekdays",
            ["mon", "funday"],
            "maintenance_windows[0].schedule.weekdays[1]: 'funday' is not a weekday (mon, tue, wed, thu, fri, sat, sun)",
        ),
        (
            "matchers",
            [],
            "maintenance_windows[0].matchers: give at least one matcher (an empty list would match every alert)",
        ),
        (
            "matchers",
            [{"label": "district", "op": "=", "value": "yichen"}],
            "maintenance_windows[0].matchers[0].value: 'yichen' is not a district (yicheng, kaifaqu, gaoxinqu, shifanqu, xiping, shangcai, pingyu, zhengyang, queshan, biyang, runan, suiping, xincai)",
        ),
    ]
    for where, value, problem in cases:
        document = {**BASE, "maintenance_windows": [_set(window, where, value)]}
        assert problems_of(tmp_path, document) == [problem], where


def test_unquoted_times_as_yaml_reads_them(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE) + (
        "maintenance_windows:\n"
        "  - name: w\n"
        "    matchers: [{label: kind, op: '=', value: manhole}]\n"
        "    schedule: {start: 23:30, end: '05:00'}\n"
    )
    assert problems_of(tmp_path, text) == [
        'maintenance_windows[0].schedule.start: 1410 is not a time of day: quote it, e.g. "01:00"'
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "route: [unclosed\n") == [
        "not valid YAML at line 2, column 1: did not find expected ',' or ']'"
    ]
    assert problems_of(tmp_path, "") == [
        "expected a mapping with route, receivers (the file is empty?)"
    ]
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(RoutingError, match=f"^{missing}: cannot read the file"):
        load_routing(missing)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    document = _set(BASE, "route.group_wait", "soon")
    document = _set(document, "receivers.0.channels.0.type", "")
    assert len(problems_of(tmp_path, document)) == 2
