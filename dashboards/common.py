"""Panels, variables and the dashboard frame shared by every dashboard.

Every panel reads from the one `datasource` variable and has a title, a description and a unit;
the dashboard sources only choose queries and layout. grafanalib 0.7 writes the pre-Grafana-8
JSON for heatmaps and bar gauges and has no field for a query variable's `definition`, so the
small subclasses below fill in the current schema (grafanalib's documented extension point).

No panel caps its data points (`maxDataPoints`): Grafana then asks for one point per pixel, so a
5-minute outage stays visible on a 24-hour range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import attr
from grafanalib import core as G

from alerts.config import Threshold
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
ALERT_LIST_TYPE = "alertlist"


def steps(*colored: tuple[str, float | None]) -> list[dict]:
    """Threshold steps: the first color applies from minus infinity (value None)."""
    return [{"color": color, "value": value} for color, value in colored]


def alert_steps(warning: Threshold | None, critical: Threshold | None = None) -> list[dict]:
    """Green below the alert config's warning value, yellow from it, red from the critical one:
    a stat turns the color of the alert that would fire (thresholds from alerts/config.py)."""
    colored: list[tuple[str, float | None]] = [(GREEN, None)]
    if warning is not None:
        colored.append((YELLOW, warning.value))
    if critical is not None:
        colored.append((RED, critical.value))
    return steps(*colored)


BASE_STEPS = steps((GREEN, None))
ERROR_RATIO_STEPS = alert_steps(Q.ALERTS.error_ratio_warning, Q.ALERTS.error_ratio_critical)
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


@attr.s
class Target(G.Target):
    """grafanalib's Target plus `exemplar`: also fetch the exemplars of the query's series."""

    exemplar = attr.ib(default=False)

    def to_json_data(self) -> dict:
        return {**super().to_json_data(), "exemplar": self.exemplar}


def target(
    expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series", exemplar: bool = False,
) -> Target:
    """One Prometheus query; refIds are given by the panel helpers. `exemplar`: show the request
    ids the exporter attaches to histogram buckets (a click leads to the request log's row)."""
    return Target(
        expr=expr, legendFormat=legend, instant=instant, format=fmt, datasource=DATASOURCE,
        intervalFactor=1, step=G.DEFAULT_STEP, exemplar=exemplar,
    )


# --- data links: from a model's series or table row to its Model Performance dashboard ---------

MODEL_PERFORMANCE_UID = "llm-model-performance"
# What a link fills in: the series' own model label, or a table row's first column (the model);
# percent-encoded, as model names may hold any character.
SERIES_MODEL = "${__field.labels." + catalog.MODEL + ":percentencode}"
ROW_FIRST_FIELD = "${__data.fields[0]:percentencode}"


def model_links(model: str = SERIES_MODEL) -> list[dict]:
    """A data link to Model Performance with `var-model` set from what was clicked and the
    dashboard's own upstream selection (`var-upstream`), time range and datasource kept."""
    url = (
        f"/d/{MODEL_PERFORMANCE_UID}/model-performance?var-{catalog.MODEL}={model}"
        f"&${{{catalog.UPSTREAM}:queryparam}}&${{datasource:queryparam}}&${{__url_time_range}}"
    )
    return [{"title": "Model Performance of this model", "url": url, "targetBlank": False}]


BACKENDS_UID = "llm-backends"
BACKENDS_PATH = f"/d/{BACKENDS_UID}/backends"
SERIES_UPSTREAM = "${__field.labels." + catalog.UPSTREAM + ":percentencode}"


def backend_links() -> list[dict]:
    """A data link to the Backends dashboard with `var-upstream` set from the clicked series."""
    url = (f"{BACKENDS_PATH}?var-{catalog.UPSTREAM}={SERIES_UPSTREAM}"
           f"&${{datasource:queryparam}}&${{__url_time_range}}")
    return [{"title": "Backend state of this upstream", "url": url, "targetBlank": False}]


def _links(links: list[dict] | None) -> dict | None:
    """Field links as grafanalib's extraJson (merged into fieldConfig.defaults)."""
    return {"fieldConfig": {"defaults": {"links": links}}} if links else None


def _with_ref_ids(targets: Sequence[G.Target]) -> list[G.Target]:
    return [attr.evolve(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)]


def _common(title: str, description: str, targets: Sequence[G.Target], w: int, h: int) -> dict:
    return {
        "title": title,
        "description": description,
        "dataSource": DATASOURCE,
        "targets": _with_ref_ids(targets),
        "gridPos": G.GridPos(h=h, w=w, x=0, y=0),  # placed by layout()
        "maxDataPoints": None,
    }


def timeseries(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 12, h: int = 8,
    stack: bool = False, thresholds: list[dict] | None = None, threshold_lines: bool = False,
    links: list[dict] | None = None,
) -> G.TimeSeries:
    """`threshold_lines` draws each threshold step as a dashed line across the graph; `links` are
    data links on every series (see model_links)."""
    return G.TimeSeries(
        **_common(title, description, targets, w, h), extraJson=_links(links),
        unit=unit, thresholds=thresholds or BASE_STEPS, fillOpacity=10, lineWidth=1,
        tooltipMode="multi", tooltipSort="desc", legendDisplayMode="list",
        stacking={"mode": "normal", "group": "A"} if stack else {"mode": "none", "group": "A"},
        valueMin=0, showPoints="never", thresholdsStyleMode="dashed" if threshold_lines else "off",
    )


def stat(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 4, h: int = 4,
    thresholds: list[dict] | None = None, mappings: list[dict] | None = None, decimals: int | None = None,
    time_from: str | None = None, links: list[dict] | None = None,
) -> G.Stat:
    """`time_from` gives the panel a time range of its own (e.g. an SLO's period, as $__range)."""
    return G.Stat(
        **_common(title, description, targets, w, h), extraJson=_links(links),
        format=unit, thresholds=thresholds or BASE_STEPS, mappings=mappings or [],
        color={"mode": "thresholds"}, reduceCalc="lastNotNull", graphMode="area",
        noValue="No data", decimals=decimals, timeFrom=time_from, textMode="auto",
    )


def table(
    title: str, description: str, unit: str, targets: Sequence[G.Target], *, w: int = 12, h: int = 8,
    transformations: list[dict] | None = None, links: list[dict] | None = None,
) -> G.Table:
    return G.Table(
        **_common(title, description, targets, w, h), extraJson=_links(links),
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
    links: list[dict] | None = None,
) -> BarGauge:
    return BarGauge(**_common(title, description, targets, w, h), unit=unit, thresholds=BASE_STEPS,
                    extraJson=_links(links))


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
    return Heatmap(**_common(title, description, [buckets], w, h), yUnit=y_unit, thresholds=BASE_STEPS)


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


def dashboard_link(title: str, path: str, tooltip: str) -> G.DashboardLink:
    """A button to one sibling dashboard, keeping the variables and the time range."""
    return G.DashboardLink(
        title=title, type="link", uri=path, tooltip=tooltip, icon="dashboard", includeVars=True, keepTime=True,
    )


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


@dataclass(frozen=True)
class Row:
    """A titled, collapsible row of panels. Collapsed rows keep their panels folded away until
    opened, so the first screen holds only what on-call reads first."""

    title: str
    panels: Sequence[G.Panel]
    collapsed: bool = False


def _grid(panels: Iterable[G.Panel], top: int) -> tuple[list[G.Panel], int]:
    """Place panels left to right from line `top`, wrapping at the grid's 24 columns; the placed
    panels and the height they take."""
    placed, x, y, row_height = [], 0, top, 0
    for panel in panels:
        pos = panel.gridPos
        if x + pos.w > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append(attr.evolve(panel, gridPos=G.GridPos(h=pos.h, w=pos.w, x=x, y=y)))
        x, row_height = x + pos.w, max(row_height, pos.h)
    return placed, y + row_height - top


def layout(rows: Iterable[Row]) -> list[G.Panel]:
    """Rows one below the other; an open row's panels follow it, a collapsed row holds them."""
    placed: list[G.Panel] = []
    y = 0
    for row in rows:
        panels, height = _grid(row.panels, y + 1)
        header = G.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)
        if row.collapsed:
            placed.append(G.RowPanel(title=row.title, collapsed=True, panels=panels, gridPos=header, maxDataPoints=None))
            y += 1
        else:
            placed += [G.RowPanel(title=row.title, gridPos=header, maxDataPoints=None), *panels]
            y += 1 + height
    return placed


@attr.s
class AlertList(G.Panel):
    """Grafana's alert list (unified alerting): the Prometheus rules firing or pending right now,
    by name, with their labels. grafanalib's AlertList writes the legacy options."""

    def to_json_data(self) -> dict:
        return self.panel_json(
            {
                "type": ALERT_LIST_TYPE,
                "options": {
                    "viewMode": "list",
                    "groupMode": "default",
                    "groupBy": [],
                    "maxItems": 20,
                    "sortOrder": 3,  # importance: critical first
                    "dashboardAlerts": False,
                    "alertName": "",
                    "alertInstanceLabelFilter": "",
                    "showInstances": True,
                    "stateFilter": {
                        "firing": True, "pending": True, "error": True, "noData": False, "normal": False,
                    },
                },
            }
        )


def alert_list(title: str, description: str, *, w: int = 8, h: int = 8) -> AlertList:
    return AlertList(**_common(title, description, [], w, h))


# --- annotations ---------------------------------------------------------------------------

EXPORTER_STARTS = Q.exporter_starts()
ANNOTATIONS = [
    {
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
        "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
    },
    {
        "name": "Firing alerts", "datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": RED,
        "expr": Q.FIRING_ALERTS, "step": "1m", "titleFormat": "{{alertname}}",
        "textFormat": "{{severity}} {{upstream}} {{model}}", "tagKeys": "severity,upstream,model",
        "useValueForTime": False,
    },
    {
        "name": "Exporter starts", "datasource": DATASOURCE, "enable": True, "hide": False,
        "iconColor": "blue", "expr": EXPORTER_STARTS, "step": "1m",
        "titleFormat": "llm-exporter started", "textFormat": "{{instance}}: version {{version}}",
        "tagKeys": "instance,version",
        # The expression's value is the start time (ms): one mark per process start, new versions too.
        "useValueForTime": True,
    },
]


def dashboard(
    title: str, uid: str, description: str, rows: Iterable[Row], links: Sequence[G.DashboardLink] = (),
) -> G.Dashboard:
    """The frame every dashboard shares: variables, annotations, links to its siblings, stable uid
    and ids. `links` go before the siblings' dropdown (a sibling worth a button of its own)."""
    return G.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=[TAG],
        panels=layout(rows),
        annotations=G.Annotations(list=ANNOTATIONS),
        templating=variables(),
        links=[
            *links,
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
    """One target per quantile of a histogram, legends like "{{model}} p95". The histograms whose
    buckets carry the request id (catalog.EXEMPLAR_HISTOGRAMS) fetch their exemplars too."""
    prefix = " ".join("{{" + label + "}}" for label in by_labels)
    exemplar = spec in catalog.EXEMPLAR_HISTOGRAMS
    return [
        target(Q.quantile(q, spec, *matchers, by_labels=by_labels), f"{prefix} p{round(q * 100)}".strip(),
               exemplar=exemplar)
        for q in qs
    ]
