"""Panels, variables and the dashboard frame shared by every dashboard.

Every panel reads from the one `datasource` variable and has a title, a description and a unit;
the dashboard sources only choose queries and layout. grafanalib 0.7 writes the pre-Grafana-8
JSON for heatmaps and bar gauges and has no field for a query variable's `definition`, so the
small subclasses below fill in the current schema (grafanalib's documented extension point).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attr
from grafanalib import core as G

from dashboards import queries as Q
from exporter import catalog

# What current Grafana (11.x) writes; Grafana 12 loads it and migrates on save.
SCHEMA_VERSION = 39
TAG = "llm-exporter"
DATASOURCE_TYPE = "prometheus"
DATASOURCE = {"type": DATASOURCE_TYPE, "uid": "${datasource}"}
GRID_WIDTH = 24
ALL = "$__all"

# Units (ids from Grafana's valueFormats categories).
REQUESTS_PER_SECOND = "reqps"
RATIO = "percentunit"
SECONDS = "s"
NUMBER = "short"
USD = "currencyUSD"
BYTES = "bytes"
BYTES_PER_SECOND = "Bps"
PER_SECOND = "ops"
NO_UNIT = "none"

GREEN, YELLOW, RED = "green", "yellow", "red"


def steps(*colored: tuple[str, float | None]) -> list[dict]:
    """Threshold steps: the first color applies from minus infinity (value None)."""
    return [{"color": color, "value": value} for color, value in colored]


BASE_STEPS = steps((GREEN, None))
ERROR_RATIO_STEPS = steps((GREEN, None), (YELLOW, 0.01), (RED, 0.05))
# Error budget left: below 0 the SLO is broken, under a quarter left it is at risk.
BUDGET_STEPS = steps((RED, None), (YELLOW, 0), (GREEN, 0.25))
UP_DOWN_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": RED, "index": 0},
            "1": {"text": "UP", "color": GREEN, "index": 1},
        },
    }
]


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> G.Target:
    """One Prometheus query; refIds are given by the panel helpers."""
    return G.Target(
        expr=expr, legendFormat=legend, instant=instant, format=fmt, datasource=DATASOURCE,
        intervalFactor=1, step=G.DEFAULT_STEP,
    )


def _with_ref_ids(targets: Sequence[G.Target]) -> list[G.Target]:
    return [attr.evolve(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)]


def _common(title: str, description: str, targets: Sequence[G.Target], w: int, h: int) -> dict:
    return {
        "title": title,
        "description": description,
        "dataSource": DATASOURCE,
        "targets": _with_ref_ids(targets),
        "gridPos": G.GridPos(h=h, w=w, x=0, y=0),  # placed by layout()
    }


def timeseries(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 12, h: int = 8,
    stack: bool = False, thresholds: list[dict] | None = None, threshold_lines: bool = False,
) -> G.TimeSeries:
    """`threshold_lines` draws each threshold step as a dashed line across the graph."""
    return G.TimeSeries(
        **_common(title, description, targets, w, h),
        unit=unit, thresholds=thresholds or BASE_STEPS, fillOpacity=10, lineWidth=1,
        tooltipMode="multi", tooltipSort="desc", legendDisplayMode="list",
        stacking={"mode": "normal", "group": "A"} if stack else {"mode": "none", "group": "A"},
        valueMin=0, showPoints="never", thresholdsStyleMode="dashed" if threshold_lines else "off",
    )


def stat(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 4, h: int = 4,
    thresholds: list[dict] | None = None, mappings: list[dict] | None = None, decimals: int | None = None,
    time_from: str | None = None,
) -> G.Stat:
    return G.Stat(
        **_common(title, description, targets, w, h),
        format=unit, thresholds=thresholds or BASE_STEPS, mappings=mappings or [],
        color={"mode": "thresholds"}, reduceCalc="lastNotNull", graphMode="area",
        noValue="No data", decimals=decimals, timeFrom=time_from, textMode="auto",
    )


def table(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 12, h: int = 8,
    transformations: list[dict] | None = None,
) -> G.Table:
    return G.Table(
        **_common(title, description, targets, w, h),
        unit=unit, transformations=transformations or [], filterable=True, thresholds=BASE_STEPS,
    )


@attr.s
class BarGauge(G.Panel):
    """A bar gauge in the current schema (grafanalib's BarGauge writes Grafana 6 `fieldOptions`)."""

    unit = attr.ib(default=NUMBER)
    displayMode = attr.ib(default=G.GAUGE_DISPLAY_MODE_GRADIENT)
    orientation = attr.ib(default=G.ORIENTATION_HORIZONTAL)

    def to_json_data(self) -> dict:
        return self.panel_json(
            {
                "fieldConfig": {
                    "defaults": {
                        "unit": self.unit,
                        "min": 0,
                        "color": {"mode": "thresholds"},
                        "thresholds": {"mode": "absolute", "steps": self.thresholds},
                    },
                    "overrides": [],
                },
                "options": {
                    "displayMode": self.displayMode,
                    "orientation": self.orientation,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showUnfilled": True,
                    "valueMode": "color",
                    "namePlacement": "auto",
                    "sizing": "auto",
                },
                "type": G.BARGAUGE_TYPE,
            }
        )


def bargauge(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 12, h: int = 8,
) -> BarGauge:
    return BarGauge(**_common(title, description, targets, w, h), unit=unit, thresholds=BASE_STEPS)


@attr.s
class Heatmap(G.Panel):
    """A heatmap of pre-bucketed Prometheus histograms in the current schema.

    grafanalib's Heatmap writes the old (angular) heatmap; this one tells Grafana the data already
    are buckets (`calculate: false`), so the `le` boundaries become the rows.
    """

    yUnit = attr.ib(default=NUMBER)
    cellUnit = attr.ib(default=REQUESTS_PER_SECOND)

    def to_json_data(self) -> dict:
        return self.panel_json(
            {
                "fieldConfig": {
                    "defaults": {
                        "unit": self.cellUnit,
                        "custom": {
                            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                            "scaleDistribution": {"type": "linear"},
                        },
                    },
                    "overrides": [],
                },
                "options": {
                    "calculate": False,
                    "cellGap": 1,
                    "cellValues": {"unit": self.cellUnit},
                    "color": {
                        "mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                        "scale": "exponential", "exponent": 0.5, "steps": 64, "reverse": False,
                    },
                    "filterValues": {"le": 1e-9},
                    "legend": {"show": True},
                    "rowsFrame": {"layout": "auto"},
                    "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
                    "yAxis": {"axisPlacement": "left", "reverse": False, "unit": self.yUnit},
                    "showValue": "never",
                },
                "type": G.HEATMAP_TYPE,
            }
        )


def heatmap(title: str, description: str, y_unit: str, expr: str, *, w: int = 12, h: int = 8) -> Heatmap:
    """A heatmap of one histogram's per-bucket rates (`expr` from queries.bucket_rates)."""
    buckets = target(expr, "{{" + Q.LE + "}}", fmt="heatmap")
    return Heatmap(**_common(title, description, [buckets], w, h), yUnit=y_unit, maxDataPoints=60, thresholds=BASE_STEPS)


@attr.s
class QueryVariable(G.Template):
    """grafanalib's Template plus `definition` (the query text Grafana's variable editor shows) and
    "All" preselected the way Grafana itself stores it for a multi-value variable."""

    def to_json_data(self) -> dict:
        data = super().to_json_data()
        data["definition"] = self.query
        if self.default == ALL:
            data["current"] = {"selected": True, "text": ["All"], "value": [ALL]}
        return data


def _filter_variable(label: str, query: str, title: str) -> QueryVariable:
    # "All" for job and instance is Grafana's default, the list of the exporter's own values, so
    # `up` and the process metrics never pick up other targets; for upstream and model it is ".*",
    # which keeps queries short however many models there are.
    all_value = None if label in (Q.JOB, Q.INSTANCE) else ".*"
    return QueryVariable(
        name=label, label=title, query=query, dataSource=DATASOURCE, default=ALL,
        includeAll=True, multi=True, allValue=all_value, refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
        sort=G.SORT_ALPHA_ASC, regex="",
    )


def variables() -> G.Templating:
    """datasource, then job -> instance -> upstream -> model, each narrowed by the ones before."""
    # Each variable's values come from a series every exporter has, narrowed by the variables
    # before it: build_info exists from start-up, upstream_up for every configured upstream.
    sources = (
        (Q.JOB, catalog.BUILD_INFO, "Job"),
        (Q.INSTANCE, catalog.BUILD_INFO, "Instance"),
        (catalog.UPSTREAM, catalog.UPSTREAM_UP, "Upstream"),
        (catalog.MODEL, catalog.REQUESTS, "Model"),
    )
    filters = []
    for label, spec, title in sources:
        before = Q.FILTER_LABELS[: Q.FILTER_LABELS.index(label)]
        filters.append(_filter_variable(label, f"label_values({Q.series(spec, filters=before)}, {label})", title))
    datasource = G.Template(
        name="datasource", label="Data source", query=DATASOURCE_TYPE, type="datasource",
        regex="", refresh=G.REFRESH_ON_DASHBOARD_LOAD,
    )
    return G.Templating(list=[datasource, *filters])


def layout(panels: Iterable[G.Panel]) -> list[G.Panel]:
    """Place panels left to right in their listed order, wrapping at the grid's 24 columns."""
    placed, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        pos = panel.gridPos
        if x + pos.w > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append(attr.evolve(panel, gridPos=G.GridPos(h=pos.h, w=pos.w, x=x, y=y)))
        x, row_height = x + pos.w, max(row_height, pos.h)
    return placed


def dashboard(title: str, uid: str, description: str, panels: Iterable[G.Panel]) -> G.Dashboard:
    """The frame every dashboard shares: variables, links to its siblings, stable uid and ids."""
    return G.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=[TAG],
        panels=layout(panels),
        templating=variables(),
        links=[
            G.DashboardLink(
                title="LLM Exporter", type="dashboards", tags=[TAG], asDropdown=True,
                includeVars=True, keepTime=True,
            )
        ],
        schemaVersion=SCHEMA_VERSION,
        graphTooltip=G.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        refresh="30s",
        time=G.Time("now-1h", "now"),
        timezone="browser",
    ).auto_panel_ids()


def quantile_targets(
    spec: catalog.MetricSpec, *matchers: str, by_labels: Sequence[str] = (), qs: Sequence[float] = (0.5, 0.95, 0.99),
) -> list[G.Target]:
    """One target per quantile of a histogram, legends like "{{model}} p95"."""
    prefix = " ".join("{{" + label + "}}" for label in by_labels)
    return [
        target(Q.quantile(q, spec, *matchers, by_labels=by_labels), f"{prefix} p{round(q * 100)}".strip())
        for q in qs
    ]
