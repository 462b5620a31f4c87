"""prometheus/prometheus.yml: valid for promtool, loads the generated rules in the compose layout,
scrapes every exporter replica exactly once under the job the rules select."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from alerts.config import DEFAULT
from tests.binaries import run_tool

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "prometheus" / "prometheus.yml"
RULES = sorted((REPO / "alerts" / "generated").glob("*.yml"))


def compose_layout(tmp_path: Path) -> Path:
    """prometheus.yml with alerts/generated/ mounted as rules/ beside it, as docker-compose does."""
    shutil.copy(CONFIG, tmp_path / "prometheus.yml")
    (tmp_path / "rules").mkdir()
    for rule_file in RULES:
        shutil.copy(rule_file, tmp_path / "rules" / rule_file.name)
    return tmp_path / "prometheus.yml"


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def jobs() -> dict[str, dict]:
    return {job["job_name"]: job for job in config()["scrape_configs"]}


def test_promtool_check_config_with_the_rule_files_mounted(tmp_path: Path):
    result = run_tool("promtool", "check", "config", str(compose_layout(tmp_path)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{len(RULES)} rule files found" in output
    for rule_file in RULES:
        assert f"rules/{rule_file.name}" in output


def test_promtool_check_config_as_committed():
    result = run_tool("promtool", "check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_intervals():
    assert config()["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}


def test_rule_files_match_every_generated_file():
    [pattern] = config()["rule_files"]
    assert not Path(pattern).is_absolute()  # resolved against the config file's directory
    matched = {p.name for p in (REPO / "alerts" / "generated").glob(Path(pattern).name)}
    assert matched == {p.name for p in RULES}


def test_sends_to_alertmanager():
    [manager] = config()["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_exporter_replicas_are_found_by_dns_under_the_job_the_rules_select():
    exporter = next(job for name, job in jobs().items() if f'job="{name}"' == DEFAULT.selector)
    assert exporter["dns_sd_configs"] == [
        {"names": ["exporter"], "type": "A", "port": 8080, "refresh_interval": "15s"}]
    # A static exporter:8080 beside DNS discovery would scrape one replica twice.
    assert "static_configs" not in exporter


def test_the_static_service_target_keeps_no_samples():
    """exporter:8080 as a static target only contributes its up series: no double counting."""
    service = jobs()["llm-exporter-service"]
    assert service["static_configs"] == [{"targets": ["exporter:8080"]}]
    assert service["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]
    assert f'job="{service["job_name"]}"' != DEFAULT.selector


def test_prometheus_and_alertmanager_are_scraped():
    assert jobs()["prometheus"]["static_configs"] == [{"targets": ["localhost:9090"]}]
    assert jobs()["alertmanager"]["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_backend_federation_jobs_name_a_configured_upstream_of_their_kind():
    """A backend's own /metrics is scraped as the exporter's upstream of that backend: the target's
    `upstream` label is an upstream of the compose config, of the job's kind, at the same address."""
    exporter_config = yaml.safe_load((REPO / "config" / "llm-exporter.yaml").read_text())
    upstreams = {u["name"]: u for u in exporter_config["upstreams"]}
    backends = {name: job for name, job in jobs().items() if name.startswith("backend-")}
    assert "backend-vllm" in backends
    for name, job in backends.items():
        kind = name.removeprefix("backend-")
        for group in job["static_configs"]:
            upstream = upstreams[group["labels"]["upstream"]]
            assert upstream.get("kind") == kind, (name, upstream)
            assert [upstream["url"].removeprefix("http://")] == group["targets"], (name, upstream)
    # vLLM names its model `model_name`; the exporter's series call it `model`.
    assert {"source_labels": ["model_name"], "regex": "(.+)", "target_label": "model"} in backends[
        "backend-vllm"]["metric_relabel_configs"]
