"""The panel shapes the dashboards repeat: time series, stats, tables, bar gauges.

Each function returns a grafana-foundation-sdk panel builder with its data source set from
its queries (InfluxDB, the API, or mixed when a panel joins both), so every query in the
exported JSON can be traced back to the data source that runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import bargauge, common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as viz
from grafana_foundation_sdk.models import dashboard as model

from cityiot.domain.catalogue import MODEL
from cityiot.grafana.queries import (
    InfinityQuery,
    InfluxQLQuery,
    api_source,
    influx_source,
    mixed_source,
)

Query = cogbuilder.Builder[cogvariants.Dataquery]
# (value the colour starts at, colour); the first value is None: "from minus infinity".
Steps = Sequence[tuple[float | None, str]]

OK_ONLY: Steps = ((None, "green"),)


def source_of(queries: Sequence[Query]) -> model.DataSourceRef:
    """The panel's data source: the one all its queries use, or mixed."""
    built = [q.build() for q in queries]
    if all(isinstance(q, InfluxQLQuery) for q in built):
        return influx_source()
    if all(isinstance(q, InfinityQuery) for q in built):
        return api_source()
    return mixed_source()


def thresholds(steps: Steps) -> board.ThresholdsConfig:
    return (
        board.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=colour) for value, colour in steps])
    )


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 12,
    height: int = 8,
    steps: Steps = OK_ONLY,
    stacked: bool = False,
    bars: bool = False,
    min_value: float | None = None,
) -> timeseries.Panel:
    """A time series; with ``steps`` beyond the first, the thresholds are drawn as lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(source_of(queries))
        .targets(list(queries))
        .unit(unit)
        .span(span)
        .height(height)
        .thresholds(thresholds(steps))
        .legend(
            common.VizLegendOptions()
            .display_mode(viz.LegendDisplayMode.LIST)
            .placement(viz.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common.VizTooltipOptions().mode(viz.TooltipDisplayMode.MULTI))
        .fill_opacity(60 if bars else 10)
        .span_nulls(True)
    )
    if bars:
        panel = panel.draw_style(viz.GraphDrawStyle.BARS)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(viz.StackingMode.NORMAL))
    if len(steps) > 1:
        panel = panel.thresholds_style(
            common.GraphThresholdsStyleConfig().mode(viz.GraphTresholdsStyleMode.LINE_AND_AREA)
        )
    if min_value is not None:
        panel = panel.min(min_value)
    return panel


def stat_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 4,
    height: int = 4,
    steps: Steps = OK_ONLY,
    no_value: str = "0",
) -> stat.Panel:
    """One big number per field: the last value of each."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(source_of(queries))
        .targets(list(queries))
        .unit(unit)
        .span(span)
        .height(height)
        .thresholds(thresholds(steps))
        .no_value(no_value)
        .color_mode(viz.BigValueColorMode.BACKGROUND)
        .graph_mode(viz.BigValueGraphMode.NONE)
        .text_mode(viz.BigValueTextMode.AUTO)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def table_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    span: int = 12,
    height: int = 8,
    transformations: Sequence[model.DataTransformerConfig] = (),
) -> table.Panel:
    """A table of the queries' rows (InfluxQL queries here should be ``.table()``)."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(source_of(queries))
        .targets(list(queries))
        .span(span)
        .height(height)
        .show_header(True)
        .thresholds(thresholds(OK_ONLY))
    )
    for transformation in transformations:
        panel = panel.with_transformation(transformation)
    return panel


def bargauge_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 12,
    height: int = 8,
    steps: Steps = OK_ONLY,
    all_values: bool = False,
) -> bargauge.Panel:
    """Horizontal bars, one per series (or per row with ``all_values``)."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(source_of(queries))
        .targets(list(queries))
        .unit(unit)
        .span(span)
        .height(height)
        .thresholds(thresholds(steps))
        .orientation(viz.VizOrientation.HORIZONTAL)
        .display_mode(viz.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(all_values))
    )


def transformation(id_: str, options: dict[str, object]) -> model.DataTransformerConfig:
    """A Grafana transformation (``joinByField``, ``organize``, ...)."""
    return model.DataTransformerConfig(id_val=id_, options=options)


def city_dashboard(uid: str, title: str, description: str) -> board.Dashboard:
    """A dashboard of the ``cityiot`` set: the city's time zone, last 6 h, links to the rest."""
    return (
        board.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["cityiot"])
        .timezone(MODEL.city.timezone)
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .variables([])
        .annotations([])
        .link(
            board.DashboardLink("City IoT dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["cityiot"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )


def district_variable(measurement: str) -> board.QueryVariable:
    """``$district``: the districts ``measurement`` has data for; several or All (``.*``).

    Queries use it as ``"district" =~ /^$district$/``: Grafana writes one value as itself,
    several as ``(a|b)`` and All as ``.*``.
    """
    return (
        board.QueryVariable("district")
        .label("District 区县")
        .datasource(influx_source())
        .query(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "district"')
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
