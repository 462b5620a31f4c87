"""The dashboards: committed JSON is what the sources generate, and the community's lint rules hold.

Grafana cannot run here, so the rules are checked on the generated JSON itself (what Grafana
loads), and every query is parsed by a real Prometheus.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from grafanalib._gen import loader, write_dashboard

from alerts import recording
from alerts.config import DEFAULT as CFG
from dashboards import common as C
from dashboards import queries as Q
from dashboards import slo as S
from exporter import catalog
from tests import dashboard_queries as D
from tests.binaries import prometheus

DASHBOARDS = D.load_dashboards()
QUERIES = D.panel_queries(DASHBOARDS)
ANNOTATION_QUERIES = D.annotation_queries(DASHBOARDS)
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
MODERN_PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "heatmap", "table", "alertlist", "row"}
# Rows only group panels: no query, no description, no unit.
ROW = "row"
PANEL_TYPES_WITH_UNIT = {"timeseries", "stat", "gauge", "bargauge"}
# What Grafana 11 and 12 write.
CURRENT_SCHEMA_VERSIONS = range(39, 42)
# Unit ids the dashboards may use: a subset of Grafana's valueFormats categories. Add one here only
# after checking it exists there (packages/grafana-data/src/valueFormats/categories.ts).
GRAFANA_UNITS = {"reqps", "percentunit", "s", "short", "currencyUSD", "bytes", "Bps", "ops", "none"}
FILTER_VARIABLES = list(Q.FILTER_LABELS)
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
# Series that are not in the catalog: prometheus-client's process collector and Prometheus's own.
STANDARD_SERIES = {
    "up", "scrape_duration_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes",
    "process_open_fds", "process_max_fds", Q.PROCESS_START,
}
# Series that answer for the whole Prometheus, not for one exporter: no variable may narrow them.
GLOBAL_SERIES = {
    Q.ALERTS_SERIES: "is anything paging: every alert of this Prometheus, whatever job or model it is about",
}
# The rule file Prometheus loads (tests/test_alert_rules.py keeps it what alerts/ generates).
RECORDING_RULES = D.REPO / "alerts" / "generated" / "recording_rules.yml"
# Dashboard variables a recording rule aggregates away, by the rule's level (the labels it keeps):
# a panel reading such a rule cannot honour them, and must say so in its description.
DROPPED_BY_RECORDING_RULES: dict[str, dict[str, str]] = {
    "_".join(recording.UPSTREAM): {
        Q.JOB: "the SLO rules select the exporter's job themselves (AlertsConfig.selector) and sum by "
               "upstream: the SLO covers the whole deployment",
        Q.INSTANCE: "the SLO is per upstream across every exporter replica: the rules sum the replicas",
        catalog.MODEL: "the SLO rules are per upstream (sum by (upstream)); a per-model SLO needs "
                       "recording rules of its own",
    },
}
# Values that make every query valid PromQL; the live test uses real ones.
PARSE_VALUES = {"__rate_interval": "4s", "__range": "60s", **{name: ".*" for name in FILTER_VARIABLES}}


def catalog_series() -> dict[str, catalog.MetricSpec]:
    """Every series name a catalog metric exposes, with its spec."""
    names = {}
    for spec in catalog.CATALOG:
        names[spec.series] = spec
        if spec.kind == "histogram":
            names.update({spec.name + suffix: spec for suffix in ("_bucket", "_sum", "_count")})
        if spec.kind == "summary":
            names.update({spec.name + suffix: spec for suffix in ("_sum", "_count")})
    return names


CATALOG_SERIES = catalog_series()


def recorded_series() -> dict[str, tuple[str, ...]]:
    """Every series the committed recording rules write, with the labels it keeps (its level)."""
    levels = {
        "_".join(level): level
        for level in (recording.UPSTREAM_MODEL, recording.UPSTREAM_MODEL_CODE, recording.UPSTREAM_MODEL_TYPE,
                      recording.UPSTREAM_API, recording.UPSTREAM, recording.JOB)
    }
    groups = yaml.safe_load(RECORDING_RULES.read_text())["groups"]
    records = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
    return {record: levels[record.split(":")[0]] for record in records}


RECORDED_SERIES = recorded_series()


def is_counter_series(name: str) -> bool:
    """Counters, and the cumulative _bucket/_sum/_count series of histograms and summaries."""
    spec = CATALOG_SERIES.get(name)
    return name.endswith("_total") or (spec is not None and spec.kind in ("histogram", "summary"))


# --- generated files --------------------------------------------------------------------------


def test_there_are_dashboards():
    assert len(D.source_paths()) >= 4
    assert QUERIES


@pytest.mark.parametrize("source", D.source_paths(), ids=lambda p: p.name)
def test_committed_json_is_what_the_source_generates(source: Path):
    """Exactly what `make generate-dashboards` writes (grafanalib's own loader and writer)."""
    out = io.StringIO()
    write_dashboard(loader(str(source)), out)
    committed = D.generated_path(source)
    assert committed.exists(), f"{committed} missing: run make generate-dashboards"
    assert committed.read_text() == out.getvalue(), f"{committed} is stale: run make generate-dashboards"


def test_every_generated_json_has_a_source():
    expected = {D.generated_path(source).name for source in D.source_paths()}
    assert {path.name for path in D.GENERATED.glob("*.json")} == expected


def test_generate_dashboard_command_works_from_anywhere(tmp_path: Path):
    """The console script runs a source by path from any directory (the sources import our helpers)."""
    command = shutil.which("generate-dashboard")
    assert command, "grafanalib's generate-dashboard is not on PATH: pip install -e '.[test]'"
    source = D.source_paths()[0]
    output = tmp_path / "out.json"
    subprocess.run([command, "-o", str(output), str(source)], cwd=tmp_path, check=True, timeout=60)
    assert output.read_text() == D.generated_path(source).read_text()


# --- dashboard-level rules --------------------------------------------------------------------


def test_uids_are_stable_and_unique():
    """Set in the source (links and bookmarks survive renames), unique, and valid Grafana uids."""
    uids = [dashboard.get("uid") for dashboard in DASHBOARDS.values()]
    assert all(uid and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid) for uid in uids), uids
    assert len(set(uids)) == len(uids)


def test_schema_version_is_current():
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["schemaVersion"] in CURRENT_SCHEMA_VERSIONS, name


def test_one_datasource_variable_named_datasource():
    for name, dashboard in DASHBOARDS.items():
        datasources = [v for v in D.template_variables(dashboard) if v["type"] == "datasource"]
        assert [(v["name"], v["query"]) for v in datasources] == [("datasource", "prometheus")], name


def test_filter_variables_are_multi_select_with_all_and_chained():
    """job -> instance -> upstream -> model: each narrowed by the ones before it, never by later ones."""
    for name, dashboard in DASHBOARDS.items():
        variables = {v["name"]: v for v in D.template_variables(dashboard) if v["type"] == "query"}
        assert list(variables) == FILTER_VARIABLES, name
        for i, label in enumerate(FILTER_VARIABLES):
            variable = variables[label]
            assert variable["multi"] and variable["includeAll"], (name, label)
            assert variable["datasource"] == DATASOURCE_REF, (name, label)
            selector, values_of = D.parse_label_values(variable["query"])
            assert values_of == label, (name, label)
            assert D.variables_in(variable["query"]) == set(FILTER_VARIABLES[:i]), (name, label)


def _overlaps(panels: list[dict]) -> list[str]:
    taken: set[tuple[int, int]] = set()
    wrong = []
    for panel in panels:
        pos = panel["gridPos"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        if pos["x"] + pos["w"] > 24 or cells & taken:
            wrong.append(panel["title"])
        taken |= cells
    return wrong


def test_panels_do_not_overlap():
    """Neither on the dashboard as loaded, nor inside a collapsed row once it is opened."""
    for name, dashboard in DASHBOARDS.items():
        assert _overlaps(dashboard["panels"]) == [], name
        for row in dashboard["panels"]:
            assert _overlaps(row.get("panels", [])) == [], (name, row["title"])


def test_every_dashboard_is_organised_in_rows():
    """Rows first (Grafana folds a row's panels away when it is collapsed); collapsed rows carry
    their panels, open rows none (theirs follow them), and every row has panels."""
    for name, dashboard in DASHBOARDS.items():
        top = dashboard["panels"]
        assert top[0]["type"] == ROW, name
        for i, panel in enumerate(top):
            if panel["type"] != ROW:
                continue
            following = next((j for j in range(i + 1, len(top)) if top[j]["type"] == ROW), len(top))
            if panel["collapsed"]:
                assert panel["panels"] and following == i + 1, (name, panel["title"])
            else:
                assert not panel["panels"] and following > i + 1, (name, panel["title"])


def test_no_panel_caps_its_data_points():
    """maxDataPoints would flatten a short outage on a long range: Grafana's default is one point
    per pixel."""
    assert [(n, p["title"], p["maxDataPoints"]) for n, p in all_panels() if p.get("maxDataPoints") is not None] == []


# --- panel rules ------------------------------------------------------------------------------


def all_panels() -> list[tuple[str, dict]]:
    return [(name, panel) for name, dashboard in DASHBOARDS.items() for panel in D.panels(dashboard)]


def test_modern_panel_types_only():
    assert [(n, p["title"], p["type"]) for n, p in all_panels() if p["type"] not in MODERN_PANEL_TYPES] == []


def test_every_panel_and_target_uses_the_datasource_variable():
    wrong = [(n, p["title"]) for n, p in all_panels() if p["type"] != ROW and p.get("datasource") != DATASOURCE_REF]
    wrong += [
        (n, p["title"], t["refId"]) for n, p in all_panels() for t in p["targets"] if t.get("datasource") != DATASOURCE_REF
    ]
    assert wrong == []


def test_every_panel_has_a_description():
    assert [(n, p["title"]) for n, p in all_panels() if p["type"] != ROW and not (p.get("description") or "").strip()] == []


def test_every_panel_that_shows_numbers_has_a_unit():
    missing = [
        (n, p["title"], p["fieldConfig"]["defaults"].get("unit"))
        for n, p in all_panels()
        if p["type"] in PANEL_TYPES_WITH_UNIT and p["fieldConfig"]["defaults"].get("unit") not in GRAFANA_UNITS
    ]
    assert missing == []


def test_panel_ids_and_titles_are_unique_per_dashboard():
    for name, dashboard in DASHBOARDS.items():
        ids = [p["id"] for p in D.panels(dashboard)]
        titles = [p["title"] for p in D.panels(dashboard)]
        assert len(set(ids)) == len(ids) and len(set(titles)) == len(titles), name


def test_heatmaps_show_histogram_buckets():
    """Format "heatmap" (Grafana turns cumulative le buckets into rows), one bucket series per le."""
    for name, panel in all_panels():
        if panel["type"] != "heatmap":
            continue
        assert panel["options"]["calculate"] is False, (name, panel["title"])
        for target in panel["targets"]:
            assert target["format"] == "heatmap", (name, panel["title"])
            assert target["legendFormat"] == "{{le}}", (name, panel["title"])
            assert f"by ({Q.LE})" in target["expr"] and "_bucket{" in target["expr"], (name, panel["title"])


# --- query rules ------------------------------------------------------------------------------


def test_rates_use_rate_interval():
    """rate/irate over $__rate_interval; increase also over $__range (totals); no fixed windows."""
    wrong = []
    for query in QUERIES:
        for function, window in D.range_calls(query.expr):
            allowed = {Q.RATE_INTERVAL, Q.RANGE} if function == "increase" else {Q.RATE_INTERVAL}
            if function not in RANGE_FUNCTIONS or window not in allowed:
                wrong.append((query.key, function, window))
        wrong += [(query.key, "window", w) for w in D.windows(query.expr) if w not in (Q.RATE_INTERVAL, Q.RANGE)]
    assert wrong == []


def test_counters_appear_only_inside_rate_irate_increase():
    wrong = []
    for query in QUERIES:
        for name, _, position in D.selectors(query.expr):
            calls = D.enclosing_calls(query.expr, position)
            if is_counter_series(name) and (not calls or calls[0] not in RANGE_FUNCTIONS):
                wrong.append((query.key, name, calls[:1]))
    assert wrong == []


def test_metric_names_come_from_the_catalog():
    """A typo or a renamed metric fails here, before a panel silently goes blank. Recording rules
    count as known only if the committed rule file writes them."""
    known = set(CATALOG_SERIES) | STANDARD_SERIES | set(RECORDED_SERIES) | set(GLOBAL_SERIES)
    wrong = [(q.key, name) for q in QUERIES for name, _, _ in D.selectors(q.expr) if name not in known]
    # A metric without braces would escape the variables: every known series must have a selector.
    wrong += [
        (q.key, name) for q in QUERIES for name, pos in D.identifiers(q.expr)
        if name in known and not q.expr[pos + len(name):].startswith("{")
    ]
    assert wrong == []


def panel_description(query: D.PanelQuery) -> str:
    return next(p["description"] for p in D.panels(DASHBOARDS[query.dashboard]) if p["title"] == query.panel)


def test_every_query_honours_the_variables():
    """job and instance on every series; upstream and model wherever the metric carries them.

    A recording rule keeps only the labels of its level: it must honour the variables of those, and
    each variable it drops must be allowed (with a reason) in DROPPED_BY_RECORDING_RULES, carry no
    matcher (it would match nothing) and be named in the panel's description.
    """
    wrong = []
    for query in QUERIES:
        for name, matchers, _ in D.selectors(query.expr):
            if name in GLOBAL_SERIES:
                wrong += [(query.key, name, label) for label in FILTER_VARIABLES if label in matchers]
                continue
            if name in RECORDED_SERIES:
                level = RECORDED_SERIES[name]
                allowed = DROPPED_BY_RECORDING_RULES.get("_".join(level), {})
                for label in FILTER_VARIABLES:
                    if label in level and matchers.get(label) != ("=~", "$" + label):
                        wrong.append((query.key, name, label))
                    if label not in level and (label not in allowed or label in matchers):
                        wrong.append((query.key, name, label, "dropped by the rule"))
                    if label not in level and not re.search(rf"\b{label}\b", panel_description(query)):
                        wrong.append((query.key, name, label, "not named in the description"))
                continue
            spec = CATALOG_SERIES.get(name)
            labels = [Q.JOB, Q.INSTANCE] + [l for l in (catalog.UPSTREAM, catalog.MODEL) if spec and l in spec.labels]
            for label in labels:
                if matchers.get(label) != ("=~", "$" + label):
                    wrong.append((query.key, name, label))
    assert wrong == []


def test_dropped_variable_allowances_are_used_and_real():
    """Every allowance is for a level some panel reads, and for a variable that level really drops."""
    levels_read = {
        "_".join(RECORDED_SERIES[name]) for q in QUERIES for name, _, _ in D.selectors(q.expr) if name in RECORDED_SERIES
    }
    assert set(DROPPED_BY_RECORDING_RULES) <= levels_read
    for level, allowed in DROPPED_BY_RECORDING_RULES.items():
        assert all(reason.strip() for reason in allowed.values())
        assert set(allowed) <= set(FILTER_VARIABLES) - set(level.split("_")), level


def test_queries_use_only_known_variables():
    known = set(FILTER_VARIABLES) | {"__rate_interval", "__range"}
    assert [(q.key, D.variables_in(q.expr) - known) for q in QUERIES if D.variables_in(q.expr) - known] == []


@pytest.mark.parametrize("code", ["500", "502", "503", "504", "429"])
def test_error_codes_count_as_errors(code: str):
    assert re.fullmatch(Q.ERROR_CODES, code)  # Prometheus anchors label regexes like fullmatch


@pytest.mark.parametrize("code", ["200", "201", "400", "401", "404", "413", catalog.CODE_CLIENT_CLOSED])
def test_other_codes_do_not_count_as_errors(code: str):
    assert not re.fullmatch(Q.ERROR_CODES, code)


# --- on call ----------------------------------------------------------------------------------


def overview_rows() -> list[tuple[dict, list[dict]]]:
    """The Overview's rows, each with the panels it shows when open."""
    rows: list[tuple[dict, list[dict]]] = []
    for panel in DASHBOARDS["overview"]["panels"]:
        if panel["type"] == ROW:
            rows.append((panel, list(panel["panels"])))
        else:
            rows[-1][1].append(panel)
    return rows


def test_the_overviews_first_row_answers_paging_burning_upstreams_up():
    row, panels = overview_rows()[0]
    assert not row["collapsed"]
    by_type = {}
    for panel in panels:
        by_type.setdefault(panel["type"], []).append(panel)
    assert len(by_type["alertlist"]) == 1
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in by_type["stat"]}
    assert any(f'{Q.ALERTS_SERIES}{{alertstate="firing"' in expr for expr in exprs.values()), exprs
    budget = [p for p in by_type["stat"] if p.get("timeFrom") == S.PERIOD]
    assert budget and S.AVAILABILITY.budget_left_in_period() in budget[0]["targets"][0]["expr"]
    assert any(S.AVAILABILITY.burn_rate(S.FAST_BURN.long) in expr for expr in exprs.values())
    assert any(catalog.UPSTREAM_UP.name in expr for expr in exprs.values())


def _steps(dashboard: str, title: str) -> list[float]:
    panel = next(p for p in D.panels(DASHBOARDS[dashboard]) if p["title"] == title)
    return [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]


@pytest.mark.parametrize("title, values", [
    ("Error ratio", [CFG.error_ratio_warning.value, CFG.error_ratio_critical.value]),
    ("Latency p95", [CFG.latency_p95_seconds.value]),
    ("Time to first token p95", [CFG.ttft_p95_seconds.value]),
    ("Cost per hour", [CFG.cost_budget_usd_per_hour.value]),
    ("In flight, busiest", [CFG.in_flight_max.value]),
    (f"Burn rate, {S.FAST_BURN.long}", [min(w.factor for w in CFG.slo_windows), S.FAST_BURN.factor]),
])
def test_overview_stats_turn_color_at_the_alert_configs_thresholds(title: str, values: list[float]):
    assert _steps("overview", title) == values


@pytest.mark.parametrize("title, values", [
    ("Requests waiting by model", [CFG.backend_queue_waiting.value]),
    ("KV cache usage", [CFG.kv_cache_usage_max.value]),
])
def test_backend_graphs_draw_the_backend_alerts_thresholds(title: str, values: list[float]):
    assert _steps("backends", title) == values


def test_the_overview_links_to_the_backends_dashboard():
    """A button at the top, and a click on an upstream's state opens its backend state."""
    path = f"/d/{DASHBOARDS['backends']['uid']}/"
    buttons = [link for link in DASHBOARDS["overview"]["links"] if link["type"] == "link"]
    assert any(link["url"].startswith(path) and link["includeVars"] and link["keepTime"] for link in buttons)
    [link] = next(p for p in D.panels(DASHBOARDS["overview"]) if p["title"] == "Upstreams up")[
        "fieldConfig"]["defaults"]["links"]
    assert link["url"].startswith(path)
    for param in (f"var-{catalog.UPSTREAM}=${{__field.labels.{catalog.UPSTREAM}:percentencode}}",
                  "${datasource:queryparam}", "${__url_time_range}"):
        assert param in link["url"], param


def test_the_backends_dashboard_shows_every_backend_metric():
    """Every llm_backend_* series of the catalog is on some Backends panel."""
    read = {name for q in QUERIES if q.dashboard == "backends" for name, _, _ in D.selectors(q.expr)}
    shown = {CATALOG_SERIES[name] for name in read if name in CATALOG_SERIES}
    assert set(catalog.BACKEND_STATE_METRICS) | {catalog.MODEL_LOAD_DURATION} <= shown


def test_the_slo_period_is_the_one_the_burn_rate_factors_assume():
    """The SRE workbook's factors spend 2% (1h), 5% (6h) and 10% (1d, 3d) of a budget over the
    period: factor x window / period. A different period would need other factors (alerts/config.py)."""
    period = recording.seconds(S.PERIOD)
    spent = {w.long: round(w.factor * recording.seconds(w.long) / period, 3) for w in CFG.slo_windows}
    assert spent == {"1h": 0.02, "6h": 0.05, "1d": 0.1, "3d": 0.1}


def test_every_dashboard_marks_firing_alerts_and_exporter_starts():
    for name, dashboard in DASHBOARDS.items():
        annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
        assert annotations["Firing alerts"]["expr"] == Q.FIRING_ALERTS, name
        starts = annotations["Exporter starts"]
        assert starts["expr"] == Q.exporter_starts() and starts["useValueForTime"] is True, name
        assert all(a["datasource"] == DATASOURCE_REF for a in annotations.values() if "expr" in a), name


def test_annotation_queries_honour_job_and_instance():
    wrong = []
    for query in ANNOTATION_QUERIES:
        for name, matchers, _ in D.selectors(query.expr):
            if name not in GLOBAL_SERIES:
                wrong += [(query.key, name, label) for label in (Q.JOB, Q.INSTANCE)
                          if matchers.get(label) != ("=~", "$" + label)]
    assert wrong == []


def _per_model(panel: dict) -> bool:
    """A panel whose series or table rows are models."""
    legends = [t.get("legendFormat", "") for t in panel.get("targets", [])]
    rows = [t["options"].get("rowField") for t in panel.get("transformations", []) if t["id"] == "groupingToMatrix"]
    return any(legend.startswith("{{" + catalog.MODEL + "}}") for legend in legends) or catalog.MODEL in rows


def test_per_model_series_and_rows_link_to_model_performance():
    """Every panel showing models (outside Model Performance itself) links there with var-model
    set from what was clicked, keeping upstream, datasource and time range."""
    assert C.MODEL_PERFORMANCE_UID in {d["uid"] for d in DASHBOARDS.values()}
    checked = 0
    for name, panel in all_panels():
        if DASHBOARDS[name]["uid"] == C.MODEL_PERFORMANCE_UID or not _per_model(panel):
            continue
        checked += 1
        [link] = panel["fieldConfig"]["defaults"].get("links") or [None]
        assert link, (name, panel["title"])
        model = C.ROW_FIRST_FIELD if panel["type"] == "table" else C.SERIES_MODEL
        assert link["url"].startswith(f"/d/{C.MODEL_PERFORMANCE_UID}/"), (name, panel["title"])
        for param in (f"var-{catalog.MODEL}={model}", "${upstream:queryparam}", "${datasource:queryparam}",
                      "${__url_time_range}"):
            assert param in link["url"], (name, panel["title"], param)
    assert checked >= 5


def test_exemplars_are_on_for_the_histograms_that_carry_request_ids():
    """Graphs of the duration and time-to-first-token buckets fetch exemplars; nothing else asks."""
    exemplar_buckets = {spec.name + "_bucket" for spec in catalog.EXEMPLAR_HISTOGRAMS}
    wrong, on = [], 0
    for name, panel in all_panels():
        for target in panel.get("targets", []):
            reads = {series for series, _, _ in D.selectors(target["expr"])} & exemplar_buckets
            expected = bool(reads) and panel["type"] == "timeseries"
            on += expected
            if target.get("exemplar", False) != expected:
                wrong.append((name, panel["title"], target["refId"]))
    assert wrong == [] and on >= 4


def test_an_exemplar_leads_to_its_request_log_row():
    """Grafana's Prometheus datasource turns the request_id exemplar label into a link to the
    exporter's /api/requests/{id} (through the stack's entry point)."""
    from exporter.app import create_app
    from exporter.config import parse_settings

    provisioning = yaml.safe_load((D.SOURCES / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [destination] = provisioning["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == catalog.EXEMPLAR_REQUEST_ID
    # $$ is Grafana provisioning's escape for a literal $: Grafana sees ${__value.raw}, the exemplar's value.
    assert destination["url"] == "http://127.0.0.1:8080/api/requests/$${__value.raw}"
    app = create_app(parse_settings({"upstreams": [{"name": "u", "url": "http://127.0.0.1:9"}]}))
    assert "/api/requests/{request_id}" in {getattr(route, "path", None) for route in app.routes}


# --- every query parses -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("prometheus-empty")
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs: []\n")
    with prometheus(config, workdir) as url:
        yield url


def test_every_query_parses(empty_prometheus: str):
    """Prometheus answers bad_data for PromQL it cannot parse; an empty result is fine here."""
    errors = []
    with httpx.Client(base_url=empty_prometheus, timeout=10) as client:
        for query in QUERIES + ANNOTATION_QUERIES:
            response = client.post("/api/v1/query", data={"query": D.substitute(query.expr, PARSE_VALUES)})
            if response.json()["status"] != "success":
                errors.append((query.key, response.json().get("error")))
        for name, dashboard in DASHBOARDS.items():
            for variable in D.template_variables(dashboard):
                if variable["type"] != "query":
                    continue
                selector, _ = D.parse_label_values(variable["query"])
                response = client.post("/api/v1/query", data={"query": D.substitute(selector, PARSE_VALUES)})
                if response.json()["status"] != "success":
                    errors.append((name, variable["name"], response.json().get("error")))
    assert errors == []
