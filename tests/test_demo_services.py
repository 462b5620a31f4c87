"""The compose stack's helper services, run natively: the load generator and the Slack receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx

from alerts.config import DEFAULT as ALERTS
from exporter.demo import loadgen
from exporter.cli import build_parser
from exporter.demo.upstream import DEMO_MODELS
from exporter.demo.slack_receiver import create_app as create_slack_receiver
from tests.scrape import Scrape
from tests.servers import serve


def test_loadgen_drives_every_family_with_streams_and_some_errors(exporter_url):
    statuses = asyncio.run(loadgen.run(exporter_url, rate=200, concurrency=16, duration=3, error_share=0.2, seed=7))
    assert statuses.get(200, 0) > 0
    assert set(statuses) - {200} <= set(loadgen.ERROR_STATUSES) and len(statuses) > 1
    scrape = Scrape.of(exporter_url)
    assert scrape.label_values("llm_requests_total", "api") == set(DEMO_MODELS)
    assert scrape.value("llm_time_to_first_token_seconds_count") > 0
    assert scrape.value("llm_tokens_total", type="cached_input") > 0
    assert scrape.value("llm_requests_total") == sum(statuses.values())


def test_the_demos_default_failure_share_burns_less_than_the_budget_allows():
    """The demo must not page itself: its failures burn the availability budget slower than the
    slowest burn-rate alert fires (1x over 3 days), let alone the paging ones (6x, 14.4x)."""
    share = build_parser().parse_args(["loadgen"]).error_share
    burn_rate = share / (1 - ALERTS.availability_objective)
    assert 0 < burn_rate <= 0.5 * min(window.factor for window in ALERTS.slo_windows)


def _loadgen(exporter_url: str, upstream: str) -> subprocess.CompletedProcess:
    env = {**os.environ, loadgen.REAL_UPSTREAM_ENV: upstream}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "loadgen", "--target", exporter_url, "--rate", "50", "--duration", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_with_a_real_upstream_set_the_demo_load_stays_off(exporter_url):
    """LLM_UPSTREAM (compose passes it to the load generator) means the exporter reaches a real
    backend: not one demo request may go there. The URL (it may hold a key) is not printed."""
    off = _loadgen(exporter_url, "http://user:secret@backend.invalid:11434")
    assert off.returncode == 0, off.stderr
    assert "demo load stays off" in off.stdout and "secret" not in off.stdout + off.stderr
    assert Scrape.of(exporter_url).value("llm_requests_total") == 0
    on = _loadgen(exporter_url, "")
    assert on.returncode == 0, on.stderr
    assert Scrape.of(exporter_url).value("llm_requests_total") > 0


def test_slack_receiver_keeps_and_shows_what_was_posted():
    with serve(create_slack_receiver()) as url:
        message = {"channel": "#llm-alerts-critical", "attachments": [{"title": "[FIRING:1] HighErrorRatio", "text": "x"}]}
        assert httpx.post(url + "/services/T0/B0/x", json=message).text == "ok"
        assert httpx.post(url + "/services/T0/B0/x", content=b"not json").status_code == 400
        assert httpx.get(url + "/messages").json()[0]["message"] == message
        assert "HighErrorRatio" in httpx.get(url + "/").text
