"""The generated part of the vendors' access standard pages (docs/access-standard.*.md).

Every kind in force (the shipped kind files and ``CITYIOT_KINDS_PATH``'s), its metrics (type,
unit, physical range or values, Chinese and English titles, hexframe codes), attributes and
report interval, and the city's districts, are rendered from the model between the pages'
marker comments: the pages never list a metric the ingest does not know, nor miss one it
does. ``cityiot docs access-standard`` writes them; ``--check`` tells which page is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cityiot.domain.catalogue import COMMON_ATTRIBUTES, MODEL, Attribute, Kind, Metric
from cityiot.ingest.codecs.hexframe import TABLE, FrameKind

Language = Literal["zh", "en"]

BEGIN = "<!-- metrics:begin -->"
END = "<!-- metrics:end -->"
PAGES: dict[Language, str] = {"zh": "access-standard.zh.md", "en": "access-standard.en.md"}

# The attributes every device has are the registry's own, not a kind's: their titles live here.
COMMON_TITLES: dict[str, tuple[str, str]] = {
    "district": ("所在区县（下表之一）", "district id (one of the table below)"),
    "lat": ("纬度", "latitude"),
    "lon": ("经度", "longitude"),
    "address": ("地址", "street address"),
    "install_date": ("安装日期", "installation date"),
    "report_interval_s": (
        "上报间隔（秒）",
        "report interval, seconds (the kind's default unless set)",
    ),
}

_TYPE_WORDS: dict[Language, dict[str, str]] = {
    "zh": {"float": "数值", "bool": "开关量", "enum": "枚举", "int": "整数", "str": "文本"},
    "en": {
        "float": "number",
        "bool": "true/false",
        "enum": "enum",
        "int": "integer",
        "str": "text",
    },
}

_TYPES: dict[Language, list[str]] = {
    "zh": [
        "指标类型：",
        "",
        "- **数值**：JSON 数字，必须在物理范围内（含端点）；整数也接受，按小数存储。",
        "- **开关量**：JSON `true` / `false`。",
        "- **枚举**：JSON 字符串，必须是所列取值之一（区分大小写），按 InfluxDB 字符串字段存储。"
        "hexframe 帧中为该取值在 hexframe 码表中的序号（从 0 起）× 1000。",
        "",
        "属性类型：文本、数值（大于 0 的数）、整数（大于 0 的整数）。",
    ],
    "en": [
        "Metric types:",
        "",
        "- **number**: a JSON number inside the physical range (inclusive); an integer is "
        "accepted and stored as a decimal.",
        "- **true/false**: JSON `true` / `false`.",
        "- **enum**: a JSON string, one of the values listed (case matters), stored as an "
        "InfluxDB string field. In a hexframe frame it is the value's index in the hexframe "
        "code table (from 0) × 1000.",
        "",
        "Attribute types: text, number (greater than 0), integer (a whole number greater than 0).",
    ],
}


class AccessDocError(ValueError):
    """A page or the model cannot be rendered; the message says what to change."""


@dataclass(frozen=True, slots=True)
class PageState:
    """One page: its path and whether its generated part matches the model."""

    path: Path
    current: bool


def _number(value: float) -> str:
    # Whole numbers with thousands separators: a range of 0 … 1e+12 is hard to read.
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _range(metric: Metric) -> str:
    if metric.type == "enum":
        return ", ".join(f"`{v}`" for v in metric.values)
    if metric.type == "bool" or metric.low is None or metric.high is None:
        return "—"
    return f"{_number(metric.low)} … {_number(metric.high)}"


def _metric_row(lang: Language, metric: Metric, frame: FrameKind | None) -> str:
    coded = frame.by_name.get(metric.name) if frame is not None else None
    code = str(coded.code) if coded is not None else "—"
    unit = _cell(metric.unit) if metric.unit else "—"
    kind_word = _TYPE_WORDS[lang][metric.type]
    if lang == "zh":
        cells = [metric.title_zh, metric.title_en]
    else:
        cells = [metric.title_en, metric.title_zh, metric.description]
    cells = [f"`{metric.name}`", *map(_cell, cells), kind_word, unit, _range(metric), code]
    return "| " + " | ".join(cells) + " |"


def _attribute_row(lang: Language, attribute: Attribute) -> str:
    type_word = _TYPE_WORDS[lang][attribute.type.__name__]
    required = {"zh": ("是", "否"), "en": ("yes", "no")}[lang][0 if attribute.required else 1]
    if lang == "zh":
        cells = [attribute.title_zh, attribute.title_en]
    else:
        cells = [attribute.title_en, attribute.title_zh, attribute.description]
    cells = [f"`{attribute.name}`", *map(_cell, cells), type_word, required]
    return "| " + " | ".join(cells) + " |"


def _kind_section(lang: Language, kind: Kind) -> list[str]:
    frame = TABLE.by_name.get(kind.name)
    if lang == "zh":
        codes = (
            f"hexframe 设备类型码 {frame.code}"
            if frame is not None
            else "不支持 hexframe（请用 JSON）"
        )
        lines = [
            f"### `{kind.name}` {kind.title_zh}（{kind.title_en}）",
            "",
            f"默认上报间隔 {kind.report_interval_s} 秒；{codes}。",
            "",
            "| 指标 | 名称 | English | 类型 | 单位 | 物理范围（含端点）或取值 | hexframe 指标码 |",
            "|---|---|---|---|---|---|---|",
        ]
    else:
        codes = (
            f"hexframe kind code {frame.code}"
            if frame is not None
            else "no hexframe codes (send JSON)"
        )
        lines = [f"### `{kind.name}` — {kind.title_en} ({kind.title_zh})", ""]
        if kind.description:
            lines += [kind.description, ""]
        lines += [
            f"Default report interval {kind.report_interval_s} s; {codes}.",
            "",
            "| metric | title | 中文 | meaning | type | unit "
            "| physical range (inclusive) or values | hexframe metric code |",
            "|---|---|---|---|---|---|---|---|",
        ]
    lines += [_metric_row(lang, m, frame) for m in kind.metrics]
    lines.append("")
    if not kind.attributes:
        lines.append("本类设备没有特有属性。" if lang == "zh" else "No kind-specific attributes.")
    elif lang == "zh":
        lines += [
            "特有属性（设备登记 CSV 中的同名列）：",
            "",
            "| 属性 | 名称 | English | 类型 | 必填 |",
            "|---|---|---|---|---|",
        ]
    else:
        lines += [
            "Kind-specific attributes (the device CSV's columns of the same name):",
            "",
            "| attribute | title | 中文 | meaning | type | required |",
            "|---|---|---|---|---|---|",
        ]
    lines += [_attribute_row(lang, a) for a in kind.attributes]
    lines.append("")
    return lines


def _common(lang: Language) -> list[str]:
    missing = [name for name in COMMON_ATTRIBUTES if name not in COMMON_TITLES]
    if missing:
        raise AccessDocError(
            f"{', '.join(missing)} has no title; add it to COMMON_TITLES in "
            "cityiot/cli/accessdoc.py"
        )
    index = 0 if lang == "zh" else 1
    sep = "：" if lang == "zh" else ": "
    return [f"- `{name}`{sep}{COMMON_TITLES[name][index]}" for name in COMMON_ATTRIBUTES]


def _districts(lang: Language) -> list[str]:
    city = MODEL.city
    if lang == "zh":
        lines = [
            f"{city.name_zh}的区县（`district` 的取值）：",
            "",
            "| 区县标识 | 名称 | English |",
            "|---|---|---|",
        ]
    else:
        lines = [
            f"The districts of {city.name_en} (the values of `district`):",
            "",
            "| district id | name | 中文 |",
            "|---|---|---|",
        ]
    for d in city.districts.values():
        first, second = (d.name_zh, d.name_en) if lang == "zh" else (d.name_en, d.name_zh)
        lines.append(f"| `{d.id}` | {_cell(first)} | {_cell(second)} |")
    return lines


def render(lang: Language) -> str:
    """The generated block of the page in ``lang``, markers excluded, ending in a newline."""
    if lang == "zh":
        lines = [
            "<!-- 由 `cityiot docs access-standard` 从设备类型文件（cityiot/domain/kinds/、"
            "CITYIOT_KINDS_PATH）和城市文件（cityiot/domain/city.yaml 或 CITYIOT_CITY_PATH）生成，"
            "请勿手改。 -->",
            "",
            "所有设备都有的登记属性：",
            "",
        ]
    else:
        lines = [
            "<!-- Generated by `cityiot docs access-standard` from the kind files "
            "(cityiot/domain/kinds/, CITYIOT_KINDS_PATH) and the city file "
            "(cityiot/domain/city.yaml or CITYIOT_CITY_PATH); do not edit by hand. -->",
            "",
            "Registry attributes every device has:",
            "",
        ]
    lines += _common(lang)
    lines.append("")
    lines += _districts(lang)
    lines.append("")
    lines += _TYPES[lang]
    lines.append("")
    for name in sorted(MODEL.kinds):
        lines += _kind_section(lang, MODEL.kinds[name])
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
