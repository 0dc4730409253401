"""The operators' page on adding a kind and running another city proves itself: its kind
files, device CSV, rules and city file load as the page says, and the messages it quotes are
the platform's."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityiot.domain.catalogue import MODEL, ModelError
from cityiot.domain.city import read_city
from cityiot.domain.thingmodel import incompatibilities, parse_kind
from cityiot.rules.definitions import parse_rule_file
from cityiot.storage.device_csv import parse_device_csv
from tests.operator_files import model

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("kinds.zh.md", "kinds.en.md")
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(page: str, language: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


def kind_files(page: str) -> list[dict[str, Any]]:
    found = [yaml.safe_load(b) for b in blocks(page, "yaml")]
    return [f for f in found if isinstance(f, dict) and "metrics" in f]


def flat(text: str) -> str:
    """``text`` with every run of white space one space: the pages wrap long messages."""
    return " ".join(text.split())


@pytest.fixture(params=PAGES)
def page(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def worked_example(page: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The model with the page's worked example (the last kind file it shows) in a kinds
    folder; the example's mapping."""
    example = kind_files(page)[-1]
    (tmp_path / f"{example['kind']}.yaml").write_text(
        yaml.safe_dump(example, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    with model(tmp_path, None):
        yield example


def test_both_pages_show_the_same_examples() -> None:
    for language in ("yaml", "csv", "json", "sh"):
        zh, en = (blocks(p, language) for p in PAGES)
        if language in ("csv", "json"):
            assert zh == en, language
        else:
            assert len(zh) == len(en), language
    assert kind_files(PAGES[0]) == kind_files(PAGES[1])


def test_the_kind_files_are_valid(page: str) -> None:
    files = kind_files(page)
    assert len(files) == 2
    for spec in files:
        kind = parse_kind(spec, page)
        assert kind.name == "noise"
        assert {m.type for m in kind.metrics} == {"float", "bool", "enum"}
        assert kind.attribute("zone_class") is not None
        assert kind.attribute("zone_class").required  # type: ignore[union-attr]


def test_the_put_body_is_the_short_kind_file(page: str) -> None:
    (command,) = [b for b in blocks(page, "sh") if "PUT" in b]
    body = json.loads(command.split("-d '", 1)[1].split("'", 1)[0])
    short = {k: v for k, v in kind_files(page)[0].items() if k != "description"}
    assert {"kind": "noise", **body} == short


def test_the_device_csv_imports_and_the_quoted_messages_are_the_platforms(
    page: str, worked_example: dict[str, Any]
) -> None:
    (csv,) = blocks(page, "csv")
    parsed = parse_device_csv(csv)
    assert parsed.errors == []
    assert [(r.device_id, r.attributes) for r in parsed.rows] == [
        ("ns-0001", {"zone_class": "4a", "limit_db": 70.0}),
        ("ns-0002", {"zone_class": "1", "limit_db": 55.0}),
    ]
    text = flat((DOCS / page).read_text(encoding="utf-8"))
    header = csv.splitlines()[0]
    row = csv.splitlines()[1]
    quoted = [
        parse_device_csv(f"{header}\n{row.replace(',4a,', ',,')}\n").errors[0],
        parse_device_csv(f"{header},depth_cm\n{row},150\n").errors[0],
        parse_device_csv(f"{header}\n{row.replace(',yicheng,', ',shihe,')}\n").errors[0],
        parse_device_csv(f"{header.replace('zone_class', 'zone_clas')}\n{row}\n").errors[0],
    ]
    assert f"`{quoted[0]}`" in text
    assert f"`{quoted[1].column}: {quoted[1].message}`" in text
    assert quoted[2].message.startswith(
        "'shihe' is not a district of Zhumadian (驻马店市); use one of yicheng, kaifaqu, "
    )
    assert (
        "'shihe' is not a district of Zhumadian (驻马店市); use one of yicheng, kaifaqu, …" in text
    )
    before, after = str(quoted[3]).split(" use one of ")
    assert before in text and after.endswith("(did you mean 'zone_class'?)")


def test_the_rules_load(page: str, worked_example: dict[str, Any]) -> None:
    (rules_text,) = [
        b for b in blocks(page, "yaml") if b.lstrip().startswith(("#", "-")) and "- id:" in b
    ]
    rules = parse_rule_file(rules_text, page)
    assert [r.id for r in rules] == ["noise_over_limit", "noise_night_alarm"]


def test_the_409_is_what_the_platform_answers(page: str) -> None:
    (answer,) = [json.loads(b) for b in blocks(page, "json") if '"status": 409' in b]
    short = kind_files(page)[0]
    changed = copy.deepcopy(short)
    changed["metrics"]["laeq_db"]["range"] = [30, 140]
    changed["metrics"]["alarm"] = {**changed["metrics"]["alarm"], "type": "float", "range": [0, 1]}
    problems = incompatibilities(parse_kind(short, "old"), parse_kind(changed, "new"))
    assert answer["problems"] == problems
    assert answer["detail"] == "kind noise: " + "; ".join(problems)


def test_the_start_up_error_is_the_platforms(page: str, tmp_path: Path) -> None:
    spec = copy.deepcopy(kind_files(page)[0])
    del spec["metrics"]["laeq_db"]["range"]
    (tmp_path / "noise.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(ModelError) as caught, model(tmp_path, None):
        pass
    shown = str(caught.value).replace(str(tmp_path), "/etc/cityiot/kinds")
    assert f"error: invalid kind or city file: {shown}\n" in (DOCS / page).read_text(
        encoding="utf-8"
    )


def test_the_city_file_and_its_boundaries_load(page: str, tmp_path: Path) -> None:
    (city_text,) = [b for b in blocks(page, "yaml") if b.startswith("name:")]
    (geojson,) = [b for b in blocks(page, "json") if "FeatureCollection" in b]
    (tmp_path / "city.yaml").write_text(city_text, encoding="utf-8")
    (tmp_path / "districts.geojson").write_text(geojson, encoding="utf-8")
    city = read_city(tmp_path / "city.yaml")
    assert (city.name_zh, city.name_en, list(city.districts)) == (
        "信阳市",
        "Xinyang",
        ["shihe", "pingqiao"],
    )
    assert city.boundaries is not None and len(city.boundaries["features"]) == 2
    with model(None, tmp_path / "city.yaml"):
        assert list(MODEL.districts) == ["shihe", "pingqiao"]
