"""Counters the rules read exist at 0 before their first increment, in one process and across
workers, and /metrics carries no `_created` series for Prometheus 2.x to ingest as extra series."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.metrics import Metrics
from exporter.observation import Observation, Usage

REPO = Path(__file__).resolve().parent.parent


def observation(api: str = "openai_chat", status: int = 200, **fields) -> Observation:
    return Observation(request_id="r", ts=0.0, upstream="main", api=api, model="m", model_label="m",
                       stream=False, request_bytes=1, status_code=status, duration_seconds=1.0,
                       usage=Usage(input=5, output=3), **fields)


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_the_first_request_of_a_model_starts_the_counters_the_rules_read():
    metrics = Metrics()
    metrics.observe(observation())
    found = samples(metrics.exposition(None)[0])
    triplet = {"upstream": "main", "model": "m", "api": "openai_chat"}
    assert value(found, "llm_requests_total", **triplet, code="200") == 1
    for code in set(catalog.STARTED_CODES) - {"200"}:
        assert value(found, "llm_requests_total", **triplet, code=code) == 0, code
    for token_type in catalog.TOKEN_TYPES:
        expected = {"input": 5, "output": 3}.get(token_type, 0)
        assert value(found, "llm_tokens_total", upstream="main", model="m", type=token_type) == expected
    assert value(found, "llm_cost_usd_total", upstream="main", model="m") == 0
    assert value(found, "llm_usage_missing_total", upstream="main", api="openai_chat") == 0
    for error_type in catalog.ERROR_TYPES:
        assert value(found, "llm_upstream_errors_total", upstream="main", error_type=error_type) == 0


def test_started_codes_cover_what_the_error_ratio_counts():
    """Every code the failure regex matches among those the proxy and backends commonly send."""
    import re

    from alerts.config import DEFAULT

    failure = re.compile(f"^(?:{DEFAULT.failure_codes})$")
    common = ("200", "429", "499", "500", "502", "503", "504")
    assert {c for c in common if failure.match(c)} <= set(catalog.STARTED_CODES)
    assert "200" in catalog.STARTED_CODES  # the usage-missing ratio's denominator


def test_other_api_does_not_start_usage_missing():
    metrics = Metrics()
    metrics.observe(observation(api="other"))
    found = samples(metrics.exposition(None)[0])
    assert value(found, "llm_usage_missing_total", upstream="main", api="other") is None


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_no_created_series(accept):
    metrics = Metrics()
    metrics.observe(observation())
    body = metrics.exposition(accept)[0]
    assert b"_created" not in body
    assert b"llm_requests_total" in body


def test_series_start_at_zero_across_workers(tmp_path: Path):
    """Multiprocess mode: a worker writes the zero children to its file; a scrape (any worker)
    reads every file and reports them. Two real processes: one observes, one scrapes."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(REPO)}
    observe = (
        "from exporter.metrics import Metrics\n"
        "from tests.test_series_at_zero import observation\n"
        "Metrics().observe(observation(status=503))\n"
    )
    scrape = (
        "import sys\nfrom exporter.metrics import Metrics\n"
        "sys.stdout.write(Metrics().exposition(None)[0].decode())\n"
    )
    subprocess.run([sys.executable, "-c", observe], env=env, check=True, cwd=REPO, timeout=60)
    body = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, cwd=REPO, timeout=60,
                          capture_output=True).stdout
    found = samples(body)
    triplet = {"upstream": "main", "model": "m", "api": "openai_chat"}
    assert value(found, "llm_requests_total", **triplet, code="503") == 1
    assert value(found, "llm_requests_total", **triplet, code="500") == 0
    assert value(found, "llm_requests_total", **triplet, code="200") == 0
    assert value(found, "llm_tokens_total", upstream="main", model="m", type="cached_input") == 0
    assert b"_created" not in body
