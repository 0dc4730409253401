"""The two kinds of panel query the dashboards use, as grafana-foundation-sdk data queries.

The SDK ships no model for InfluxDB (InfluxQL) nor for the Infinity data source, so they are
defined here, with builders in the SDK's style, and :func:`register` teaches the SDK's JSON
decoder both, so a dashboard read back from JSON holds these types again (the round trip).

- :class:`InfluxQLQuery`: a raw InfluxQL statement on the ``cityiot-influxdb`` data source
  (database ``city``). Grafana replaces ``$timeFilter``, ``$__interval``, ``$__interval_ms``
  and dashboard variables (``$district``) before sending it.
- :class:`InfinityQuery`: a ``GET`` of the platform's API (``/api/v1/...``) on the
  ``cityiot-api`` Infinity data source, whose base URL and Bearer key are provisioned;
  ``root_selector`` and ``columns`` (GJSON paths) pick the table out of the JSON answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import datasource as grafana_datasource
from grafana_foundation_sdk.models.dashboard import DataSourceRef

INFLUX_TYPE = "influxdb"
INFINITY_TYPE = "yesoreyeram-infinity-datasource"
# The uids deploy/grafana/provisioning/datasources/cityiot.yaml gives the data sources.
INFLUX_UID = "cityiot-influxdb"
API_UID = "cityiot-api"
# Grafana's pseudo data source of a panel whose queries each name their own.
MIXED_UID = "-- Mixed --"

ResultFormat = Literal["time_series", "table"]
ColumnType = Literal["string", "number", "timestamp", "boolean"]


def influx_source() -> DataSourceRef:
    """The provisioned InfluxDB data source (InfluxQL, database ``city``)."""
    return DataSourceRef(type_val=INFLUX_TYPE, uid=INFLUX_UID)


def api_source() -> DataSourceRef:
    """The provisioned Infinity data source pointed at the platform's API."""
    return DataSourceRef(type_val=INFINITY_TYPE, uid=API_UID)


def mixed_source() -> DataSourceRef:
    """A panel whose queries come from both data sources (each query names its own)."""
    return DataSourceRef(type_val="datasource", uid=MIXED_UID)


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL query of a panel or variable (Grafana's ``rawQuery`` mode)."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format: ResultFormat = result_format
        self.alias = alias
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": influx_source(),
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            ref_id=data.get("refId", "A"),
            query=data.get("query", ""),
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias"),
            hide=data.get("hide"),
        )


@dataclass(frozen=True, slots=True)
class InfinityColumn:
    """One column of an Infinity table: a GJSON ``selector`` into each row, its title and type."""

    selector: str
    text: str
    type: ColumnType = "string"

    def to_json(self) -> dict[str, object]:
        return {"selector": self.selector, "text": self.text, "type": self.type}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InfinityColumn:
        return cls(data["selector"], data.get("text", data["selector"]), data.get("type", "string"))


@dataclass(slots=True)
class InfinityQuery(cogvariants.Dataquery):
    """A ``GET`` of ``url`` (a path under the data source's base URL) with query ``params``.

    ``cursor_pages`` > 1 follows the API's cursor pagination (``limit``/``cursor`` in,
    ``next_cursor`` out) for up to that many pages (Infinity allows at most 5).
    """

    ref_id: str = "A"
    url: str = ""
    params: list[tuple[str, str]] = field(default_factory=list)
    root_selector: str = ""
    columns: list[InfinityColumn] = field(default_factory=list)
    cursor_pages: int = 1
    hide: bool | None = None

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "columns": [c.to_json() for c in self.columns],
            "datasource": api_source(),
            "filters": [],
            "format": "table",
            "parser": "backend",
            "refId": self.ref_id,
            "root_selector": self.root_selector,
            "source": "url",
            "type": "json",
            "url": self.url,
            "url_options": {
                "data": "",
                "method": "GET",
                "params": [{"key": k, "value": v} for k, v in self.params],
            },
        }
        if self.cursor_pages > 1:
            payload.update(
                {
                    "pagination_max_pages": self.cursor_pages,
                    "pagination_mode": "cursor",
                    "pagination_param_cursor_extraction_path": "next_cursor",
                    "pagination_param_cursor_field_name": "cursor",
                    "pagination_param_cursor_field_type": "query",
                }
            )
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        options = data.get("url_options") or {}
        paged = data.get("pagination_mode") == "cursor"
        return cls(
            ref_id=data.get("refId", "A"),
            url=data.get("url", ""),
            params=[(p["key"], p["value"]) for p in options.get("params", [])],
            root_selector=data.get("root_selector", ""),
            columns=[InfinityColumn.from_json(c) for c in data.get("columns", [])],
            cursor_pages=int(data.get("pagination_max_pages", 1)) if paged else 1,
            hide=data.get("hide"),
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder: ``InfluxQL('SELECT ...').ref_id('B').table().alias('$tag_district')``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=" ".join(query.split()))

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        """Results as one table (tags become columns), for table panels and joins."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series names, e.g. ``$tag_district`` or ``$col``."""
        self._internal.alias = alias
        return self


class Infinity(cogbuilder.Builder[InfinityQuery]):
    """Builder: ``Infinity('/api/v1/alerts').param('state', 'firing').root('items')...``."""

    def __init__(self, url: str) -> None:
        self._internal = InfinityQuery(url=url)

    def build(self) -> InfinityQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def param(self, key: str, value: str) -> Self:
        self._internal.params.append((key, value))
        return self

    def root(self, selector: str) -> Self:
        """Where the rows are in the answer (``items`` for the API's lists)."""
        self._internal.root_selector = selector
        return self

    def column(self, selector: str, text: str, type_: ColumnType = "string") -> Self:
        self._internal.columns.append(InfinityColumn(selector, text, type_))
        return self

    def cursor_pages(self, pages: int) -> Self:
        """Follow ``next_cursor`` for up to ``pages`` pages (1 to 5)."""
        if not 1 <= pages <= 5:
            raise ValueError(f"Infinity follows 1 to 5 pages, not {pages}")
        self._internal.cursor_pages = pages
        return self


def _target_from_json(data: dict[str, Any]) -> cogvariants.Dataquery:
    """A mixed panel's query, decoded by the data source it names itself."""
    kind = (data.get("datasource") or {}).get("type", "")
    if kind == INFLUX_TYPE:
        return InfluxQLQuery.from_json(data)
    if kind == INFINITY_TYPE:
        return InfinityQuery.from_json(data)
    return grafana_datasource.Dataquery.from_json(data)


def register() -> None:
    """Register the SDK's panel types and these queries with the SDK's JSON decoder.

    Idempotent. The decoder picks a query type by its panel's data source type; a mixed
    panel's type is ``datasource``, so that entry dispatches on each query's own source.
    """
    register_default_plugins()
    for identifier, hook in (
        (INFLUX_TYPE, InfluxQLQuery.from_json),
        (INFINITY_TYPE, InfinityQuery.from_json),
        ("datasource", _target_from_json),
    ):
        cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier, hook))
