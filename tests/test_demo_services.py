"""The compose stack's helper services, run natively: the load generator and the Slack receiver."""

from __future__ import annotations

import asyncio

import httpx

from exporter import loadgen
from exporter.demo_upstream import DEMO_MODELS
from exporter.slack_receiver import create_app as create_slack_receiver
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


def test_slack_receiver_keeps_and_shows_what_was_posted():
    with serve(create_slack_receiver()) as url:
        message = {"channel": "#llm-alerts-critical", "attachments": [{"title": "[FIRING:1] HighErrorRatio", "text": "x"}]}
        assert httpx.post(url + "/services/T0/B0/x", json=message).text == "ok"
        assert httpx.post(url + "/services/T0/B0/x", content=b"not json").status_code == 400
        assert httpx.get(url + "/messages").json()[0]["message"] == message
        assert "HighErrorRatio" in httpx.get(url + "/").text
