"""The generated rule files: current, valid for promtool, unit-tested, and complete per alert."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import alerts.__main__ as generator
from alerts import links, recording, rules, series
from alerts.config import DEFAULT, SEVERITIES, AlertsConfig
from alerts.runbooks import github_anchor
from exporter import catalog
from tests.alerting import short_windows, write_rule_files
from tests.binaries import run_tool

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((REPO / "alerts" / "generated").glob("*.yml"))
UNIT_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_PARTS = ("**Meaning.**", "**Impact.**", "**Look at.**", "**What to do.**")
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def alerting_rules(cfg: AlertsConfig = DEFAULT) -> list[dict]:
    return [rule for group in rules.alert_groups(cfg) for rule in group["rules"]]


def recording_rules(cfg: AlertsConfig = DEFAULT) -> list[dict]:
    return [rule for group in rules.recording_groups(cfg) for rule in group["rules"]]


def runbook_sections() -> dict[str, str]:
    """Anchor -> section text of docs/runbooks.md's second-level headings."""
    sections, anchor = {}, None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            anchor = github_anchor(line[3:])
            sections[anchor] = ""
        elif anchor:
            sections[anchor] += line + "\n"
    return sections


def test_committed_files_are_what_the_generator_writes_now():
    stale = [str(path.relative_to(REPO)) for path, text in generator.generated_files().items()
             if not path.exists() or path.read_text() != text]
    assert stale == [], "run `make generate` (python -m alerts) and commit the result"


def test_generator_owns_every_file_in_its_directories():
    owned = set(generator.generated_files())
    assert set(RULE_FILES) | set(UNIT_TESTS) <= owned


def test_promtool_check_rules():
    result = run_tool("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(unit_test: Path):
    result = run_tool("promtool", "test", "rules", str(unit_test))
    assert result.returncode == 0, result.stdout + result.stderr


def test_short_window_variant_is_valid_too(tmp_path: Path):
    """The end-to-end test runs this variant: it must load in Prometheus like the real one."""
    paths = write_rule_files(short_windows(DEFAULT), tmp_path)
    result = run_tool("promtool", "check", "rules", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


def test_issue_alert_list_is_covered():
    names = {rule["alert"] for rule in alerting_rules()}
    assert names >= {
        rules.EXPORTER_DOWN, rules.UPSTREAM_DOWN, rules.HIGH_ERROR_RATIO, rules.HIGH_LATENCY,
        rules.SLOW_FIRST_TOKEN, rules.THROUGHPUT_DROPPED, rules.IN_FLIGHT_SATURATION,
        rules.COST_BUDGET, rules.LOW_CACHE_HIT, rules.TELEMETRY_DROPPING, rules.MEMORY_HIGH,
        rules.USAGE_MISSING, rules.ERROR_BUDGET_BURN, rules.LATENCY_BUDGET_BURN,
        # Issue 15: the alerting path, LLM-shaped SLOs, traffic and cost against their past.
        rules.WATCHDOG, rules.NOTIFICATIONS_FAILING, rules.RULE_FAILURES, rules.NO_ALERTMANAGER,
        rules.ALERT_SEND_ERRORS, rules.MONITORING_TARGET_DOWN, rules.EXPORTER_SERVICE_DOWN,
        rules.TTFT_BUDGET_BURN, rules.TPOT_REGRESSION, rules.NO_TRAFFIC, rules.TRAFFIC_DROP,
        rules.COST_SPIKE, rules.DAILY_BUDGET_FORECAST,
    }
    severities = {rule["labels"]["severity"] for rule in alerting_rules()
                  if rule["alert"] == rules.HIGH_ERROR_RATIO}
    assert severities == {"warning", "critical"}


@pytest.mark.parametrize("name", [rules.ERROR_BUDGET_BURN, rules.TTFT_BUDGET_BURN])
def test_burn_rate_alerts_use_the_sre_workbook_windows(name: str):
    pairs = {(r["labels"]["severity"], r["labels"]["long_window"], r["labels"]["short_window"])
             for r in alerting_rules() if r["alert"] == name}
    assert pairs == {("critical", "1h", "5m"), ("critical", "6h", "30m"),
                     ("warning", "1d", "2h"), ("warning", "3d", "6h")}


def test_whole_request_latency_never_notifies():
    """It measures answer length as much as health: shown (info), never paged or ticketed."""
    latency = [r for r in alerting_rules() if r["alert"] in (rules.LATENCY_BUDGET_BURN, rules.HIGH_LATENCY)]
    assert len(latency) == 5 and {r["labels"]["severity"] for r in latency} == {"info"}


@pytest.mark.parametrize("name", [rules.ERROR_BUDGET_BURN, rules.TTFT_BUDGET_BURN])
def test_burn_rate_alerts_need_traffic_in_their_long_window(name: str):
    for rule in alerting_rules():
        if rule["alert"] == name:
            long = rule["labels"]["long_window"]
            floor = f"* {recording.seconds(long):g} >= {DEFAULT.slo_min_requests:g}"
            assert f":rate{long} {floor}" in rule["expr"], rule["expr"]


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_alert_is_complete(rule: dict):
    name, labels, annotations = rule["alert"], rule["labels"], rule["annotations"]
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name) and len(name) <= 40
    assert labels["severity"] in SEVERITIES
    assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
    assert "{{" not in annotations["summary"] and annotations["summary"].endswith(".")
    assert "$labels." in annotations["description"] or name == rules.WATCHDOG  # it has no labels
    assert re.search(r"\$value \| humanize", annotations["description"])
    base, _, anchor = annotations["runbook_url"].partition("#")
    assert base == DEFAULT.runbook_base_url and anchor == github_anchor(name)


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_dashboard_link_opens_a_generated_dashboard_with_the_alerts_labels(rule: dict):
    url = rule["annotations"]["dashboard_url"]
    path, _, query = url.partition("?")
    uids = {json.loads(p.read_text())["uid"] for p in (REPO / "dashboards" / "generated").glob("*.json")}
    assert path.startswith(DEFAULT.grafana_base_url + "/d/") and path.rsplit("/", 1)[1] in uids
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        label = name.removeprefix("var-")
        assert value == f"{{{{ $labels.{label} | urlquery }}}}"
        # The expression keeps the label (by or on it), so Prometheus has a value to fill in.
        assert re.search(rf"\b{label}\b", rule["expr"]) or label in rule["annotations"]["description"]
    if "$labels.model" in rule["annotations"]["description"]:
        assert "var-model=" in query


def test_dashboard_links_render_as_prometheus_escapes_them():
    url = links.dashboard_url(DEFAULT, links.MODEL_PERFORMANCE, rules.BY_MODEL)
    assert links.rendered(url, {"upstream": "local", "model": "llama3:8b instruct/q4"}) == (
        f"{DEFAULT.grafana_base_url}/d/{links.uid(links.MODEL_PERFORMANCE)}"
        "?var-upstream=local&var-model=llama3%3A8b+instruct%2Fq4")


def test_the_promtool_series_come_from_what_the_exporter_exports():
    """The scenarios ask the real metrics which series exist at the first request of a model."""
    labels = {"upstream": "u", "model": "m", "api": "openai_chat"}
    started = series.exported_at_first_request
    assert started(catalog.REQUESTS, tuple(sorted({**labels, "code": "503"}.items())))
    assert started(catalog.TOKENS, tuple(sorted({**labels, "type": "cached_input"}.items())))
    assert started(catalog.COST, tuple(sorted(labels.items())))
    assert not started(catalog.REQUESTS, tuple(sorted({**labels, "code": "418"}.items())))
    assert not started(catalog.TIME_TO_FIRST_TOKEN, tuple(sorted(labels.items())))


def test_every_alert_has_a_complete_runbook_section():
    sections = runbook_sections()
    for name in {rule["alert"] for rule in alerting_rules()}:
        section = sections.get(github_anchor(name))
        assert section is not None, f"docs/runbooks.md has no section `## {name}`"
        assert all(part in section for part in RUNBOOK_PARTS), f"{name}: {RUNBOOK_PARTS}"


def test_runbooks_describe_no_alert_that_does_not_exist():
    anchors = {github_anchor(rule["alert"]) for rule in alerting_rules()}
    assert set(runbook_sections()) <= anchors


def test_every_alert_rule_fires_and_stays_silent_in_a_unit_test():
    """Each rule (name and labels) is expected to fire somewhere, and each name to be silent."""
    fired, silent = [], set()
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group["alert_rule_test"]:
                if not case.get("exp_alerts"):
                    silent.add(case["alertname"])
                fired += [(case["alertname"], e["exp_labels"]) for e in case.get("exp_alerts") or []]
    for rule in alerting_rules():
        assert any(name == rule["alert"] and rule["labels"].items() <= labels.items()
                   for name, labels in fired), f"no unit test fires {rule['alert']} {rule['labels']}"
        if rule["alert"] != rules.WATCHDOG:  # always firing, by definition
            assert rule["alert"] in silent, f"no unit test where {rule['alert']} stays silent"


def test_recording_rule_names_follow_the_convention():
    metrics = tuple(spec.name for spec in catalog.CATALOG)
    for rule in recording_rules():
        level, metric, operations = rule["record"].split(":")
        assert RECORD_NAME.match(rule["record"]), rule["record"]
        assert metric.startswith(metrics), f"{rule['record']}: not a catalog metric"
        assert set(level.split("_")) <= {catalog.UPSTREAM, catalog.MODEL, catalog.API,
                                         catalog.CODE, catalog.TYPE, "job"}


def test_recording_rule_names_are_unique():
    names = [rule["record"] for rule in recording_rules()]
    assert len(names) == len(set(names))


def test_alerts_only_read_recorded_names_that_are_recorded():
    recorded = {rule["record"] for rule in recording_rules()}
    for rule in alerting_rules():
        used = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]))
        assert used <= recorded, f"{rule['alert']} reads unrecorded {used - recorded}"


def test_raw_selectors_carry_the_job_selector():
    """Every raw metric a rule reads is restricted to the exporter's job."""
    exprs = [r["expr"] for r in recording_rules() + alerting_rules()]
    raw = re.compile(r"\b(llm_[a-z_]+|up|" + DEFAULT.memory_metric + r")\{([^}]*)\}")
    for expr in exprs:
        for metric, matchers in raw.findall(expr):
            if metric == "up":  # the exporter's replicas, its service address, or the alerting path
                assert any(sel in matchers for sel in (
                    DEFAULT.selector, DEFAULT.service_selector, DEFAULT.prometheus_selector,
                    DEFAULT.alertmanager_selector)), f"up{{{matchers}}}"
            else:
                assert DEFAULT.selector in matchers, f"{metric}{{{matchers}}}"
    path = re.compile(r"\b((?:prometheus|alertmanager)_[a-z_]+)\{([^}]*)\}")
    for expr in exprs:
        for metric, matchers in path.findall(expr):
            selector = DEFAULT.prometheus_selector if metric.startswith("prometheus") else DEFAULT.alertmanager_selector
            assert selector in matchers, f"{metric}{{{matchers}}}"


def test_selectors_name_jobs_that_prometheus_yml_scrapes():
    jobs = {job["job_name"] for job in yaml.safe_load(
        (REPO / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    for selector in (DEFAULT.selector, DEFAULT.service_selector, DEFAULT.prometheus_selector,
                     DEFAULT.alertmanager_selector):
        assert re.fullmatch(r'job="([^"]+)"', selector)[1] in jobs, selector


def test_failure_codes_are_5xx_and_429_only():
    failure = re.compile(f"^(?:{DEFAULT.failure_codes})$")
    assert all(failure.match(code) for code in ("500", "502", "503", "504", "429"))
    assert not any(failure.match(code) for code in ("200", "400", "401", "404", "499"))


def test_config_rejects_a_latency_threshold_that_is_not_a_bucket():
    with pytest.raises(ValueError, match="bucket"):
        dataclasses.replace(DEFAULT, latency_threshold_seconds=30.0)
    with pytest.raises(ValueError, match="ttft_threshold_seconds"):
        dataclasses.replace(DEFAULT, ttft_threshold_seconds=3.0)
    assert DEFAULT.latency_threshold_seconds in catalog.REQUEST_DURATION.buckets
    assert DEFAULT.ttft_threshold_seconds in catalog.TIME_TO_FIRST_TOKEN.buckets


def test_rule_names_follow_the_config():
    """Windows are part of recorded names, so a variant config renames consistently."""
    variant = dataclasses.replace(DEFAULT, rate_window="1m")
    assert recording.requests_rate(variant) == "upstream_model:llm_requests:rate1m"
    assert all("rate5m" not in rule["expr"] for rule in alerting_rules(variant)
               if rule["alert"] == rules.HIGH_ERROR_RATIO)


def expand(values: str) -> list[float | None]:
    """promtool's expanding notation, sample by sample (None for a missing sample)."""
    out: list[float | None] = []
    for token in values.split():
        if token.startswith("_x"):
            out += [None] * int(token[2:])
        elif "x" in token:
            start_step, count = token.split("x")
            start, step = (float(v) for v in re.fullmatch(r"(-?[\d.e+]+)\+(-?[\d.e+]+)", start_step).groups())
            out += [start + step * i for i in range(int(count) + 1)]
        else:
            out.append(float(token))
    return out


@given(st.lists(st.sampled_from([0.0, 1.0, 2.5, 600.0]), min_size=1, max_size=40), st.data())
def test_born_series_are_the_running_totals_from_their_birth(increments, data):
    birth = data.draw(st.integers(min_value=0, max_value=len(increments) - 1))
    samples = expand(series.born(birth, increments))
    totals = [sum(increments[: i + 1]) for i in range(len(increments))]
    assert samples == [None] * birth + totals[birth:]
