"""The generated part of the vendors' access standard pages (docs/access-standard.*.md).

Every kind's metrics (type, unit, physical range, meaning) and attributes are rendered from
the catalogue between the pages' marker comments, so the pages never list a metric the
ingest does not know, nor miss one it does. ``cityiot docs access-standard`` writes them;
``--check`` tells which page is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cityiot.domain.catalogue import COMMON_ATTRIBUTES, KINDS, Attribute, Kind, Metric
from cityiot.ingest.codecs.hexframe import KIND_CODES

Language = Literal["zh", "en"]

BEGIN = "<!-- metrics:begin -->"
END = "<!-- metrics:end -->"
PAGES: dict[Language, str] = {"zh": "access-standard.zh.md", "en": "access-standard.en.md"}

# Chinese titles of metrics and attributes; the catalogue has English descriptions only
# (a later issue moves titles into the kinds' own files).
ZH_TITLES: dict[str, str] = {
    # metrics
    "tilt_deg": "倾斜角",
    "cover_open": "井盖打开",
    "water_level_cm": "井内水位",
    "gas_ch4_ppm": "甲烷浓度",
    "battery_pct": "剩余电量",
    "rssi_dbm": "信号强度",
    "power_on": "灯已开启",
    "dim_pct": "调光比例",
    "voltage_v": "电压",
    "current_a": "电流",
    "power_w": "有功功率",
    "energy_kwh": "累计电能",
    "lux": "环境照度",
    "leakage_ma": "漏电电流",
    "lamp_fault": "灯具故障",
    "pressure_mpa": "水压（表压）",
    "valve_open": "出水阀打开",
    "flow_lps": "出水流量",
    "temperature_c": "栓体温度",
    "flow_m3h": "瞬时流量（负值为反向）",
    "volume_m3": "累计水量",
    "ph": "pH 值",
    "turbidity_ntu": "浊度",
    "chlorine_mgl": "余氯",
    "occupied": "车位有车",
    # attributes, kind-specific and common
    "depth_cm": "井深（井盖到井底）",
    "zone": "供水分区 / 计量分区",
    "lot_id": "所属停车场或路段",
    "max_stay_min": "最长停放时间（分钟）",
    "district": "所在区县",
    "lat": "纬度",
    "lon": "经度",
    "address": "地址",
    "install_date": "安装日期",
    "report_interval_s": "上报间隔（秒）",
}

_COMMON_EN: dict[str, str] = {
    "district": "district id (yicheng, xiping, …)",
    "lat": "latitude",
    "lon": "longitude",
    "address": "street address",
    "install_date": "installation date",
    "report_interval_s": "report interval, seconds (the kind's default unless set)",
}

_TYPE_WORDS: dict[Language, dict[str, str]] = {
    "zh": {"float": "数值", "bool": "布尔", "int": "整数", "str": "文本"},
    "en": {"float": "number", "bool": "true/false", "int": "integer", "str": "text"},
}


class AccessDocError(ValueError):
    """A page or the catalogue cannot be rendered; the message says what to change."""


@dataclass(frozen=True, slots=True)
class PageState:
    """One page: its path and whether its generated part matches the catalogue."""

    path: Path
    current: bool


def _zh(name: str) -> str:
    title = ZH_TITLES.get(name)
    if title is None:
        raise AccessDocError(
            f"{name!r} has no Chinese title; add it to ZH_TITLES in cityiot/cli/accessdoc.py"
        )
    return title


def _number(value: float) -> str:
    # Whole numbers with thousands separators: a range of 0 … 1e+12 is hard to read.
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


def _range(metric: Metric) -> str:
    if metric.type == "bool" or metric.low is None or metric.high is None:
        return "—"
    return f"{_number(metric.low)} … {_number(metric.high)}"


def _metric_row(lang: Language, code: int, metric: Metric) -> str:
    type_word = _TYPE_WORDS[lang][metric.type]
    unit = metric.unit or "—"
    meaning = _zh(metric.name) if lang == "zh" else metric.description
    cells = [f"`{metric.name}`", meaning, type_word, unit, _range(metric), str(code)]
    return "| " + " | ".join(cells) + " |"


def _attribute_row(lang: Language, attribute: Attribute) -> str:
    type_word = _TYPE_WORDS[lang][attribute.type.__name__]
    meaning = _zh(attribute.name) if lang == "zh" else attribute.description
    required = {"zh": ("是", "否"), "en": ("yes", "no")}[lang][0 if attribute.required else 1]
    return f"| `{attribute.name}` | {meaning} | {type_word} | {required} |"


def _kind_section(lang: Language, kind: Kind) -> list[str]:
    code = KIND_CODES.get(kind.name)
    if lang == "zh":
        lines = [
            f"### `{kind.name}` {kind.title_zh}",
            "",
            f"默认上报间隔 {kind.report_interval_s} 秒；hexframe 设备类型码 {code or '—'}。",
            "",
            "| 指标 | 含义 | 类型 | 单位 | 物理范围（含端点） | hexframe 指标码 |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines = [
            f"### `{kind.name}` — {kind.title_en}",
            "",
            f"Default report interval {kind.report_interval_s} s; hexframe kind code "
            f"{code or '—'}.",
            "",
            "| metric | meaning | type | unit | physical range (inclusive) "
            "| hexframe metric code |",
            "|---|---|---|---|---|---|",
        ]
    # hexframe's metric code is the metric's 1-based position in its kind (its decoder's rule).
    lines += [_metric_row(lang, i + 1, m) for i, m in enumerate(kind.metrics)]
    lines.append("")
    if not kind.attributes:
        lines.append("本类设备没有特有属性。" if lang == "zh" else "No kind-specific attributes.")
    else:
        if lang == "zh":
            lines += ["特有属性：", "", "| 属性 | 含义 | 类型 | 必填 |", "|---|---|---|---|"]
        else:
            lines += [
                "Kind-specific attributes:",
                "",
                "| attribute | meaning | type | required |",
                "|---|---|---|---|",
            ]
        lines += [_attribute_row(lang, a) for a in kind.attributes]
    lines.append("")
    return lines


def render(lang: Language) -> str:
    """The generated block of the page in ``lang``, markers excluded, ending in a newline."""
    if lang == "zh":
        lines = [
            "<!-- 由 `cityiot docs access-standard` 从 cityiot/domain/catalogue.py 生成，"
            "请勿手改。 -->",
            "",
            "所有设备都有的登记属性：",
            "",
        ]
        lines += [f"- `{name}`：{_zh(name)}" for name in COMMON_ATTRIBUTES]
    else:
        lines = [
            "<!-- Generated from cityiot/domain/catalogue.py by `cityiot docs access-standard`; "
            "do not edit by hand. -->",
            "",
            "Registry attributes every device has:",
            "",
        ]
        lines += [f"- `{name}`: {_COMMON_EN[name]}" for name in COMMON_ATTRIBUTES]
    lines.append("")
    for kind in KINDS.values():
        lines += _kind_section(lang, kind)
    return "\n".join(lines)


def rewrite(text: str, lang: Language, name: str = "the page") -> str:
    """``text`` with the block between the markers replaced by :func:`render` ``(lang)``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise AccessDocError(
            f"{name} needs exactly one {BEGIN} followed by one {END} (on lines of their own) "
            "where the metric tables go"
        )
    head = text[: start + len(BEGIN)]
    return f"{head}\n{render(lang)}\n{text[end:]}"


def pages(docs_dir: Path) -> dict[Language, Path]:
    """The two pages' paths under ``docs_dir``."""
    return {lang: docs_dir / name for lang, name in PAGES.items()}


def refresh(docs_dir: Path, write: bool) -> list[PageState]:
    """Compare (and with ``write``, update) both pages; the state of each before writing."""
    states: list[PageState] = []
    for lang, path in pages(docs_dir).items():
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AccessDocError(
                f"{path} is missing; the access standard pages live in {docs_dir}"
            ) from None
        wanted = rewrite(text, lang, str(path))
        states.append(PageState(path, wanted == text))
        if write and wanted != text:
            path.write_text(wanted, encoding="utf-8")
    return states
