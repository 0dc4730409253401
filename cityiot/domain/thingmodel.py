"""Kind files (thing models, docs/design.md §4a): parsing, checking, comparing.

A kind file is YAML with the kind's id, titles, report interval, metrics and registry
attributes. :func:`parse_kind` turns one into a :class:`Kind` or raises :class:`ModelError`
naming the file, kind, field and what to change; :func:`incompatibilities` says why a new
version of a kind may not replace the old one (InfluxDB field types cannot change, and
stored data must stay inside the ranges).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cityiot.domain.yamltext import load_yaml

MetricType = Literal["float", "bool", "enum"]
METRIC_TYPES: tuple[MetricType, ...] = ("float", "bool", "enum")
ATTRIBUTE_TYPES: dict[str, type[int] | type[float] | type[str]] = {
    "str": str,
    "float": float,
    "int": int,
}
KIND_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")
METRIC_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Enum values are written into InfluxDB string fields and rule expressions as they are.
ENUM_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Names a device carries whatever its kind (docs/design.md §4): no kind may redefine them.
COMMON_ATTRIBUTES = ("district", "lat", "lon", "address", "install_date", "report_interval_s")
# A device's identities on the networks it reports through (docs/design.md §4a), optional on
# every kind and unique when present: the links find the device by them.
IDENTITY_ATTRIBUTES = ("dev_eui", "imei", "onenet_dev_id")
# A device's own fields, which are also the registry's CSV columns: no attribute may take them.
DEVICE_FIELDS = ("device_id", "vendor", "kind", *COMMON_ATTRIBUTES, *IDENTITY_ATTRIBUTES)
# Names a metric may not take: InfluxDB's time column, the tags of a kind's series, the field
# the platform adds to a reading without its own time, the attributes every device has (a
# rule could not tell them apart), and the words of the rule language.
RESERVED_METRICS = frozenset(
    {"time", "ts_assumed", "vendor", "kind", *DEVICE_FIELDS, *keyword.kwlist, "true", "false"}
)
# Measurements the platform writes itself (presence): no kind may be one.
RESERVED_KINDS = frozenset({"device_status"})
_KIND_FIELDS = {"kind", "title", "report_interval_s", "metrics", "attributes", "description"}
_METRIC_FIELDS = {"type", "unit", "range", "values", "title", "description"}
_ATTRIBUTE_FIELDS = {"type", "required", "title", "description"}


class ModelError(ValueError):
    """A kind or city file is wrong; the message names the file, field and what to change."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity of a kind. Floats carry an inclusive physical range; enums
    their allowed values."""

    name: str
    type: MetricType
    unit: str
    low: float | None = None
    high: float | None = None
    description: str = ""
    title_zh: str = ""
    title_en: str = ""
    values: tuple[str, ...] = ()

    def label(self, lang: str = "zh") -> str:
        """The title in ``lang`` with the unit, as screens show it: ``倾角 (°)``."""
        title = self.title_zh if lang == "zh" else self.title_en
        return f"{title} ({self.unit})" if self.unit else title


@dataclass(frozen=True, slots=True)
class Attribute:
    """A registry attribute specific to one kind (``depth_cm`` for manholes, ...)."""

    name: str
    type: type[int] | type[float] | type[str]
    description: str
    required: bool = False
    title_zh: str = ""
    title_en: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of city device: its metrics, its default report interval and attributes."""

    name: str
    title_zh: str
    title_en: str
    metrics: tuple[Metric, ...]
    report_interval_s: int
    attributes: tuple[Attribute, ...] = field(default=())
    description: str = ""
    source: str = ""  # the file (or "api") this version came from

    def metric(self, name: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None

    def attribute(self, name: str) -> Attribute | None:
        for a in self.attributes:
            if a.name == name:
                return a
        return None


def _titles(raw: Any, where: str) -> tuple[str, str]:
    if not isinstance(raw, Mapping):
        raise ModelError(f"{where}: title is missing; write title: {{zh: 中文名, en: English}}")
    zh, en = raw.get("zh"), raw.get("en")
    for lang, value in (("zh", zh), ("en", en)):
        if not isinstance(value, str) or not value.strip():
            raise ModelError(
                f"{where}.title.{lang}: missing or empty; screens, dashboards and docs show it "
                "instead of the raw name"
            )
    return str(zh).strip(), str(en).strip()


def _unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(str(k) for k in set(raw) - known)
    if extra:
        raise ModelError(f"{where}: unknown field(s) {extra}; known: {sorted(known)}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_metric(name: Any, raw: Any, where: str) -> Metric:
    if not isinstance(name, str) or not METRIC_ID.fullmatch(name):
        raise ModelError(
            f"{where}: metric name {name!r} must match [a-z][a-z0-9_]{{0,63}} "
            "(lower case, the unit as its suffix: water_depth_cm)"
        )
    if name in RESERVED_METRICS:
        raise ModelError(
            f"{where}.{name}: {name!r} is reserved (InfluxDB's time, a tag, a device field or "
            "a word of the rule language); rename the metric, e.g. with its unit: "
            f"{name}_value"
        )
    where = f"{where}.{name}"
    if not isinstance(raw, Mapping):
        raise ModelError(f"{where}: must be a mapping with type and title")
    _unknown(raw, _METRIC_FIELDS, where)
    mtype = raw.get("type")
    if mtype not in METRIC_TYPES:
        raise ModelError(f"{where}.type: {mtype!r}; use one of {', '.join(METRIC_TYPES)}")
    zh, en = _titles(raw.get("title"), where)
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise ModelError(f"{where}.unit: {unit!r} must be text (°C, mg/L, %LEL)")
    description = str(raw.get("description", "") or "")
    low = high = None
    values: tuple[str, ...] = ()
    if mtype == "float":
        rng = raw.get("range")
        if (
            not isinstance(rng, list | tuple)
            or len(rng) != 2
            or not all(_number(v) for v in rng)
            or not rng[0] < rng[1]
        ):
            raise ModelError(
                f"{where}.range: {rng!r}; a float metric needs its physical range as "
                "[low, high] with low < high (readings outside it are refused)"
            )
        low, high = float(rng[0]), float(rng[1])
    elif "range" in raw:
        raise ModelError(f"{where}.range: only float metrics have a range; remove it")
    if mtype == "enum":
        vals = raw.get("values")
        if not isinstance(vals, list | tuple) or not vals:
            raise ModelError(f"{where}.values: an enum metric needs values: [a, b, ...]")
        bad = [v for v in vals if not isinstance(v, str) or not ENUM_VALUE.fullmatch(v)]
        if bad:
            raise ModelError(
                f"{where}.values: {bad!r} must be words of [A-Za-z0-9_.-] (quote yes/no/on/off "
                "in YAML, or they are read as true/false)"
            )
        if len(set(vals)) != len(vals):
            raise ModelError(f"{where}.values: {list(vals)!r} repeats a value")
        values = tuple(vals)
    elif "values" in raw:
        raise ModelError(f"{where}.values: only enum metrics have values; remove it")
    return Metric(name, mtype, unit, low, high, description or en, zh, en, values)


def _parse_attribute(name: Any, raw: Any, where: str) -> Attribute:
    if not isinstance(name, str) or not METRIC_ID.fullmatch(name):
        raise ModelError(f"{where}: attribute name {name!r} must match [a-z][a-z0-9_]{{0,63}}")
    if name in DEVICE_FIELDS:
        raise ModelError(
            f"{where}.{name}: every device already has {name}; remove it from the kind"
        )
    if name in RESERVED_METRICS:
        raise ModelError(f"{where}.{name}: {name!r} is a word of the rule language; rename it")
    where = f"{where}.{name}"
    if not isinstance(raw, Mapping):
        raise ModelError(f"{where}: must be a mapping with type and title")
    _unknown(raw, _ATTRIBUTE_FIELDS, where)
    atype = raw.get("type")
    if atype not in ATTRIBUTE_TYPES:
        raise ModelError(f"{where}.type: {atype!r}; use one of {', '.join(ATTRIBUTE_TYPES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ModelError(f"{where}.required: {required!r}; write true or false")
    zh, en = _titles(raw.get("title"), where)
    description = str(raw.get("description", "") or "") or en
    return Attribute(name, ATTRIBUTE_TYPES[atype], description, required, zh, en)


def parse_kind(raw: Any, source: str) -> Kind:
    """A :class:`Kind` from a kind file's mapping; :class:`ModelError` says what to change."""
    if not isinstance(raw, Mapping):
        raise ModelError(f"{source}: a kind file is a mapping (kind:, title:, metrics:, ...)")
    kind_id = raw.get("kind")
    if not isinstance(kind_id, str) or not KIND_ID.fullmatch(kind_id):
        raise ModelError(
            f"{source}: kind: {kind_id!r} must match [a-z][a-z0-9_]{{0,31}} "
            "(it is also the InfluxDB measurement)"
        )
    if kind_id in RESERVED_KINDS:
        raise ModelError(
            f"{source}: kind: {kind_id!r} is the platform's own measurement (device presence); "
            "choose another id"
        )
    where = f"{source}: kind {kind_id}"
    _unknown(raw, _KIND_FIELDS, where)
    zh, en = _titles(raw.get("title"), where)
    interval = raw.get("report_interval_s")
    if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
        raise ModelError(
            f"{where}: report_interval_s: {interval!r}; the seconds between a device's "
            "reports, a positive integer (devices may override it in the registry)"
        )
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, Mapping) or not metrics_raw:
        raise ModelError(f"{where}: metrics: a kind needs at least one metric")
    metrics = tuple(_parse_metric(n, m, f"{where}: metrics") for n, m in metrics_raw.items())
    attrs_raw = raw.get("attributes") or {}
    if not isinstance(attrs_raw, Mapping):
        raise ModelError(f"{where}: attributes: must be a mapping of name → {{type, title}}")
    attributes = tuple(_parse_attribute(n, a, f"{where}: attributes") for n, a in attrs_raw.items())
    clash = sorted({m.name for m in metrics} & {a.name for a in attributes})
    if clash:
        raise ModelError(
            f"{where}: {clash} is both a metric and an attribute; rules could not tell them apart"
        )
    description = str(raw.get("description", "") or "")
    return Kind(kind_id, zh, en, metrics, interval, attributes, description, source)


def read_kind_file(path: Path) -> Kind:
    """The kind in ``path``; :class:`ModelError` when it cannot be read or is wrong."""
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    kind = parse_kind(raw, str(path))
    if path.stem != kind.name:
        raise ModelError(f"{path}: holds kind {kind.name}; name the file {kind.name}.yaml")
    return kind


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


def read_kind_folder(folder: Path) -> dict[str, Kind]:
    """Every ``*.yaml`` / ``*.yml`` kind file in ``folder`` by kind id."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder; CITYIOT_KINDS_PATH names a folder of kind files")
    kinds: dict[str, Kind] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        kind = read_kind_file(path)
        if kind.name in kinds:
            raise ModelError(f"{path}: kind {kind.name} is also in {kinds[kind.name].source}")
        kinds[kind.name] = kind
    return kinds


def incompatibilities(old: Kind, new: Kind) -> list[str]:
    """Why ``new`` may not replace ``old`` (empty when it may): a metric removed, its type
    changed, its range narrowed or an enum value dropped, an attribute removed or retyped."""
    problems: list[str] = []
    for m in old.metrics:
        n = new.metric(m.name)
        if n is None:
            problems.append(
                f"metric {m.name} is removed; stored readings and rules use it (keep it)"
            )
        elif n.type != m.type:
            problems.append(
                f"metric {m.name} changes type {m.type} → {n.type}; an InfluxDB field's type "
                "cannot change (add a new metric instead)"
            )
        elif m.type == "float":
            assert m.low is not None and m.high is not None
            assert n.low is not None and n.high is not None
            if n.low > m.low or n.high < m.high:
                problems.append(
                    f"metric {m.name} narrows its range {m.low:g}..{m.high:g} → "
                    f"{n.low:g}..{n.high:g}; stored data would fall outside (only widen it)"
                )
        elif m.type == "enum":
            dropped = [v for v in m.values if v not in n.values]
            if dropped:
                problems.append(
                    f"metric {m.name} drops value(s) {', '.join(dropped)}; stored readings "
                    "hold them (only add values)"
                )
    for a in old.attributes:
        b = new.attribute(a.name)
        if b is None:
            problems.append(f"attribute {a.name} is removed; devices carry it (keep it)")
        elif b.type is not a.type:
            problems.append(
                f"attribute {a.name} changes type {a.type.__name__} → {b.type.__name__}; "
                "registered devices hold the old type"
            )
    for b in new.attributes:
        was = old.attribute(b.name)
        if b.required and was is None:
            problems.append(
                f"attribute {b.name} is new and required; devices registered before lack it "
                "(make it optional)"
            )
        elif b.required and was is not None and not was.required:
            problems.append(
                f"attribute {b.name} becomes required; devices registered without it would "
                "fail every change (keep it optional)"
            )
    return problems


def kind_spec(kind: Kind) -> dict[str, Any]:
    """The kind as its file's mapping (GET /kinds, the database's copy of an API change)."""
    metrics: dict[str, Any] = {}
    for m in kind.metrics:
        spec: dict[str, Any] = {"type": m.type}
        if m.unit:
            spec["unit"] = m.unit
        if m.type == "float":
            spec["range"] = [m.low, m.high]
        if m.type == "enum":
            spec["values"] = list(m.values)
        spec["title"] = {"zh": m.title_zh, "en": m.title_en}
        if m.description and m.description != m.title_en:
            spec["description"] = m.description
        metrics[m.name] = spec
    attributes: dict[str, Any] = {}
    for a in kind.attributes:
        aspec: dict[str, Any] = {"type": a.type.__name__}
        if a.required:
            aspec["required"] = True
        aspec["title"] = {"zh": a.title_zh, "en": a.title_en}
        if a.description and a.description != a.title_en:
            aspec["description"] = a.description
        attributes[a.name] = aspec
    out: dict[str, Any] = {
        "kind": kind.name,
        "title": {"zh": kind.title_zh, "en": kind.title_en},
        "report_interval_s": kind.report_interval_s,
        "metrics": metrics,
        "attributes": attributes,
    }
    if kind.description:
        out["description"] = kind.description
    return out
