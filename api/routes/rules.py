"""The rule catalogue: ``GET /rules``, ``GET /rules/{id}``, ``PUT /rules/{id}``.

The catalogue is the rule files (``CITYIOT_RULES_PATH``, under version control) with the
rules put through this API on top: a rule put here replaces the file's rule of the same id,
or adds a new one. A rule is the same mapping as in the YAML files, as JSON. The running
rules stage picks a change up within a few seconds, keeping its timers and open alerts.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
import yaml
from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cityiot.api.access import allow
from cityiot.api.audit import audit
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, decode_cursor, encode_cursor
from cityiot.api.problems import Problem
from cityiot.domain.catalogue import KINDS, MODEL
from cityiot.domain.expressions import thresholds as fixed_limits
from cityiot.domain.yamltext import load_yaml
from cityiot.rules.definitions import (
    Rule,
    RuleError,
    catalogue_path,
    load_rules,
    parse_rule,
    rule_files,
)
from cityiot.rules.events import city_time
from cityiot.storage.tables.rules import RuleOverride
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["rules"])

READERS = ("admin", "operator", "field", "department")

RuleId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="snake_case rule id")]

_EXAMPLE_DEFINITION: dict[str, Any] = {
    "id": "manhole_cover_open",
    "kind": "manhole",
    "severity": "critical",
    "when": "cover_open or tilt_deg > 12",
    "clear": "not cover_open and tilt_deg < 8",
    "for": "0s",
    "summary": {
        "zh": "井盖打开或倾斜（倾角 {tilt_deg}°）",
        "en": "Manhole cover open or tilted ({tilt_deg}°)",
    },
}
_EXAMPLE: dict[str, Any] = {
    "id": "manhole_cover_open",
    "kind": "manhole",
    "kinds": ["manhole"],
    "type": "threshold",
    "severity": "critical",
    "summary": _EXAMPLE_DEFINITION["summary"],
    "for": "0s",
    "schedule": None,
    "source": "api",
    "definition": _EXAMPLE_DEFINITION,
    "thresholds": [{"metric": "tilt_deg", "op": ">", "value": 12.0}],
    "updated_at": "2026-11-23T10:00:00+08:00",
    "updated_by": "key:3f2a1b0c9d8e (test admin)",
}


class Summary(BaseModel):
    zh: str
    en: str


class Threshold(BaseModel):
    metric: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class RuleOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]}, populate_by_name=True)

    id: str
    kind: str = Field(description="as written: a kind, or * for every kind")
    kinds: list[str] = Field(description="the kinds it applies to")
    type: Literal["threshold", "absence", "rate"]
    severity: Literal["critical", "major", "minor", "warning"]
    summary: Summary
    for_: str | float | None = Field(
        None, alias="for", description="how long the condition must hold (e.g. 5m)"
    )
    schedule: str | dict[str, Any] | None = Field(None, description="night, day or hours")
    source: str = Field(description='the rule file it comes from, or "api"')
    definition: dict[str, Any] = Field(description="the rule's mapping, as in the YAML file")
    thresholds: list[Threshold] = Field(
        default_factory=list,
        description="a threshold rule's fixed limits on metrics (metric OP number in its "
        "condition), for charts to draw; limits that depend on an attribute are not listed",
    )
    updated_at: str | None = Field(None, description="when it was put through the API")
    updated_by: str | None = None


@dataclass(frozen=True)
class Entry:
    """One rule of the catalogue: parsed, and the mapping it was written as."""

    rule: Rule
    definition: dict[str, Any]
    source: str
    updated_at: str | None = None
    updated_by: str | None = None

    def out(self) -> dict[str, Any]:
        raw = self.definition
        summary = raw.get("summary") or {}
        return {
            "id": self.rule.id,
            "kind": str(raw.get("kind")),
            "kinds": sorted(self.rule.kinds),
            "type": self.rule.type,
            "severity": self.rule.severity,
            "summary": {"zh": str(summary.get("zh", "")), "en": str(summary.get("en", ""))},
            "for": _plain(raw.get("for")),
            "schedule": _plain(raw.get("schedule")),
            "source": self.source,
            "definition": raw,
            "thresholds": self.thresholds(),
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    def thresholds(self) -> list[dict[str, Any]]:
        """The fixed limits of a threshold rule's condition on its kinds' metrics."""
        when = self.definition.get("when")
        if self.rule.type != "threshold" or not isinstance(when, str):
            return []
        metrics = {
            m.name for k in self.rule.kinds if (kind := MODEL.kinds.get(k)) for m in kind.metrics
        }
        return [
            {"metric": name, "op": op, "value": value}
            for name, op, value in fixed_limits(when)
            if name in metrics
        ]


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | dict):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return str(value)


async def catalogue(ctx: ApiContext) -> dict[str, Entry]:
    """Every rule by id: the files' rules, with the API's overrides applied."""
    path = catalogue_path(ctx.settings.rules_path)
    try:
        parsed = load_rules(path)
        definitions: dict[str, dict[str, Any]] = {}
        for file in rule_files(path):
            for raw in load_yaml(file.read_text(encoding="utf-8")) or []:
                definitions[raw["id"]] = raw
    except (RuleError, OSError, yaml.YAMLError) as exc:
        raise Problem(
            503,
            f"the rule catalogue cannot be read ({exc}); fix the rule file or CITYIOT_RULES_PATH",
        ) from None
    entries = {r.id: Entry(r, definitions[r.id], r.source) for r in parsed}
    async with ctx.sessions() as session:
        overrides = list(await session.scalars(select(RuleOverride)))
    for override in overrides:
        definition = {**override.definition, "id": override.id}
        try:
            rule = parse_rule(definition, "api", 0)
        except RuleError:
            continue  # the rules stage logs it and keeps the file's rule; so do we
        entries[rule.id] = Entry(
            rule, definition, "api", city_time(override.updated_at), override.updated_by
        )
    return entries


# JSON types of a rule's fields, checked before the rule language sees them.
_TEXT = (str,)
_NUMBER = (int, float)
_SHAPES: dict[str, tuple[type, ...]] = {
    "kind": _TEXT,
    "type": _TEXT,
    "severity": _TEXT,
    "when": (str, bool, int, float),
    "clear": (str, bool, int, float),
    "for": (str, int, float),
    "schedule": (str, dict),
    "factor": _NUMBER,
    "metric": _TEXT,
    "drop_pct": _NUMBER,
    "within": (str, int, float),
    "action": (dict,),
    "summary": (dict,),
    "description": _TEXT,
    "source": _TEXT,
}
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_shape(definition: dict[str, Any]) -> None:
    """422 naming the field whose JSON type no rule file could have."""
    try:
        encoded = orjson.dumps(definition)
    except TypeError:
        raise Problem(422, "body: a number in the rule is too large; use smaller ones") from None
    if b"\\u0000" in encoded:
        raise Problem(422, "body: a rule holds no NUL characters (\\u0000); remove them")
    for name, types in _SHAPES.items():
        value = definition.get(name)
        wrong_flag = isinstance(value, bool) and bool not in types
        if value is not None and (wrong_flag or not isinstance(value, types)):
            wanted = " or ".join(sorted({_JSON_NAMES[t] for t in types}))
            raise Problem(422, f"body: rule field {name!r} must be {wanted}")
    summary = definition.get("summary") or {}
    for language in ("zh", "en"):
        line = summary.get(language)
        if line is not None and not isinstance(line, str):
            raise Problem(422, f"body: summary.{language} must be a string")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(line or "") if f is not None]
        except ValueError as exc:
            raise Problem(422, f"body: summary.{language}: {exc}; write {{metric}}") from None
        for field in fields:
            if not _PLACEHOLDER.fullmatch(field):
                raise Problem(
                    422,
                    f"body: summary.{language}: placeholder {{{field}}} must be a metric or "
                    "attribute name, e.g. {tilt_deg}",
                )
    schedule = definition.get("schedule")
    if isinstance(schedule, dict):
        weekdays = schedule.get("weekdays", [])
        if not isinstance(schedule.get("hours", ""), str) or not (
            isinstance(weekdays, list) and all(isinstance(d, str) for d in weekdays)
        ):
            raise Problem(
                422, 'body: schedule must look like {"hours": "22:00-06:00", "weekdays": ["mon"]}'
            )
    action = definition.get("action")
    if isinstance(action, dict):
        for name in ("command", "target", "group_kind"):
            if action.get(name) is not None and not isinstance(action[name], str):
                raise Problem(422, f"body: action.{name} must be a string")


_JSON_NAMES = {str: "a string", bool: "true/false", int: "a number", float: "a number",
               dict: "an object"}  # fmt: skip


def _granted(principal: Principal, entry: Entry) -> bool:
    return principal.kinds is None or bool(entry.rule.kinds & principal.kinds)


@router.get(
    "/rules",
    response_model=Page[RuleOut],
    response_model_by_alias=True,
    summary="The rule catalogue",
    responses={503: {"description": "the rule files cannot be read"}},
)
async def list_rules(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
    kind: Annotated[
        str | None,
        Query(
            max_length=32,
            description="rules that apply to this kind: a kind id (see GET /api/v1/kinds)",
            examples=["manhole"],
        ),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every rule in id order: the catalogue files with the rules put through the API on
    top (``source`` says which). A department key sees the rules of its granted kinds."""
    if kind is not None and kind not in KINDS:
        raise Problem(422, f"unknown kind {kind[:32]!r}; use one of {', '.join(KINDS)}")
    entries = sorted(
        (e for e in (await catalogue(ctx)).values() if _granted(principal, e)),
        key=lambda e: e.rule.id,
    )
    if kind is not None:
        entries = [e for e in entries if kind in e.rule.kinds]
    if cursor is not None:
        (last,) = decode_cursor(cursor, 1)
        entries = [e for e in entries if e.rule.id > str(last)]
    page = entries[:limit]
    return {
        "items": [e.out() for e in page],
        "next_cursor": encode_cursor([page[-1].rule.id]) if len(entries) > limit else None,
    }


def _outside(principal: Principal, rule_id: str) -> Problem:
    granted = ", ".join(sorted(principal.kinds or ()))
    return Problem(403, f"rule {rule_id} is about kinds this key is not granted ({granted})")


@router.get(
    "/rules/{rule_id}",
    response_model=RuleOut,
    response_model_by_alias=True,
    summary="One rule",
    responses={
        403: {"description": "a rule of kinds outside the key's grant"},
        404: {"description": "no such rule"},
        503: {"description": "the rule files cannot be read"},
    },
)
async def get_rule(
    rule_id: RuleId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
) -> dict[str, Any]:
    """One rule as it runs now."""
    entry = (await catalogue(ctx)).get(rule_id)
    if entry is None:
        raise Problem(404, f"no rule {rule_id!r}; the catalogue is at GET /api/v1/rules")
    if not _granted(principal, entry):
        raise _outside(principal, rule_id)
    return entry.out()


@router.put(
    "/rules/{rule_id}",
    response_model=RuleOut,
    response_model_by_alias=True,
    summary="Change a rule, or add one",
    responses={
        409: {"description": "put by someone else at the same moment"},
        422: {"description": "the rule is invalid; the detail names the field"},
        503: {"description": "the rule files cannot be read"},
    },
)
async def put_rule(
    rule_id: RuleId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    definition: Annotated[
        dict[str, Any],
        Body(
            description="the rule's mapping, with the fields of the YAML rule files",
            openapi_examples={
                "threshold": {
                    "summary": "a stricter tilt threshold",
                    "value": {k: v for k, v in _EXAMPLE_DEFINITION.items() if k != "id"},
                }
            },
        ),
    ],
) -> dict[str, Any]:
    """Store the rule (replacing the file's rule of that id, or adding one); the rules
    stage uses it within seconds. Validated exactly like a rule file; audited."""
    if "id" in definition and definition["id"] != rule_id:
        raise Problem(
            422,
            f"the body's id {definition['id']!r} differs from the path's {rule_id!r}; "
            "leave id out of the body or make them equal",
        )
    definition = {**definition, "id": rule_id}
    _check_shape(definition)
    try:
        rule = parse_rule(definition, "body", 0)
    except RuleError as exc:
        raise Problem(422, str(exc)) from None
    except (RecursionError, MemoryError):
        raise Problem(422, "body: an expression is nested too deeply; simplify it") from None
    before = (await catalogue(ctx)).get(rule_id)
    now = utcnow()
    try:
        async with ctx.sessions() as session, session.begin():
            row = await session.get(RuleOverride, rule_id)
            if row is None:
                row = RuleOverride(id=rule_id, definition=definition)
                session.add(row)
            row.definition = definition
            row.updated_at = now
            row.updated_by = principal.actor[:128]
            audit(
                session,
                principal,
                "rule.put",
                f"rules/{rule_id}",
                definition=definition,
                replaced=before.source if before is not None else None,
            )
    except IntegrityError:
        raise Problem(
            409, f"rule {rule_id} was put by someone else at the same moment; retry"
        ) from None
    entry = Entry(rule, definition, "api", city_time(now), row.updated_by)
    return entry.out()
