"""Backend state against a real llama-server: llm_backend_* equal what its own /v1/models, /slots
and /metrics report, read here with plain JSON and the llama-server's exposition."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from exporter.config import parse_settings
from tests.conformance.llama_server import MODEL_ALIAS, LlamaServer, start_llama_server
from tests.scrape import Scrape
from tests.servers import running_exporter


def _settings(url: str):
    return parse_settings({"upstreams": [{"name": "llama", "url": url, "kind": "llamacpp"}],
                           "probe": {"interval_seconds": 0.1}})


def _wait_for(url: str, done: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until the collectors have read what `done` wants (a bound, not a timing assertion)."""
    deadline = time.monotonic() + 60
    while True:
        scrape = Scrape.of(url)
        if done(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.05)


def _wait_idle(server: LlamaServer) -> None:
    deadline = time.monotonic() + 60
    while server.metrics().get("requests_processing", 0) > 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_slots_and_queue_equal_what_llama_server_reports(llama: LlamaServer):
    _wait_idle(llama)
    slots = httpx.get(llama.url + "/slots", timeout=10).json()
    own = llama.metrics()
    served = httpx.get(llama.url + "/v1/models", timeout=10).json()["data"]
    with running_exporter(_settings(llama.url)) as url:
        scrape = _wait_for(url, lambda s: len(s.label_values("llm_backend_up", "endpoint")) == 3)
    model = {"upstream": "llama", "model": MODEL_ALIAS}
    assert [m["id"] for m in served] == [MODEL_ALIAS]
    assert scrape.value("llm_backend_models_loaded", upstream="llama") == len(served)
    assert scrape.value("llm_backend_slots", **model) == len(slots) == 2
    assert scrape.value("llm_backend_slots_busy", **model) == sum(s["is_processing"] for s in slots)
    assert scrape.value("llm_backend_context_size_tokens", **model) == slots[0]["n_ctx"]
    assert scrape.value("llm_backend_requests_running", **model) == own["requests_processing"]
    assert scrape.value("llm_backend_requests_waiting", **model) == own["requests_deferred"]
    names = {name for name, _, _ in scrape.samples}
    assert {"llm_backend_requests_running", "llm_backend_requests_waiting"} <= names
    # This server version exports no KV-cache ratio: the series is absent, not a made-up 0.
    assert ("llm_backend_kv_cache_usage_ratio" in names) == ("kv_cache_usage_ratio" in own)
    assert all(value == 1 for name, _, value in scrape.samples if name == "llm_backend_up")
    assert all(value == 0 for name, _, value in scrape.samples if name == "llm_backend_scrape_errors_total")


def test_a_server_without_slots_or_metrics_is_not_an_error(llama_files):
    """--no-slots: llama-server answers 501 at /slots, which has no series and counts no error."""
    with start_llama_server(llama_files, "--no-slots") as server:
        own_slots = httpx.get(server.url + "/slots", timeout=10)
        with running_exporter(_settings(server.url)) as url:
            # Each round reads /v1/models, /slots, /metrics in turn: /metrics read means /slots was.
            scrape = _wait_for(url, lambda s: "/metrics" in s.label_values("llm_backend_up", "endpoint"))
    assert own_slots.status_code == 501
    assert scrape.label_values("llm_backend_up", "endpoint") == {"/v1/models", "/metrics"}
    assert scrape.value("llm_backend_scrape_errors_total", endpoint="/slots") == 0
    assert "llm_backend_slots" not in {name for name, _, _ in scrape.samples}
    assert scrape.value("llm_backend_models_loaded", upstream="llama") == 1
