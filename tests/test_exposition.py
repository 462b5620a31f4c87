"""The fast /metrics renderer writes exactly the bytes of prometheus-client's own encoders."""

from __future__ import annotations

import re

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter import exposition
from exporter.families import API_NAMES
from exporter.metrics import Metrics
from exporter.observation import Observation, Usage

# Process and GC metrics change between two renders; the catalog's must match byte for byte.
_VOLATILE = re.compile(r"^(# (HELP|TYPE) )?(process_|python_gc_)", re.M)


def _stable(body: bytes) -> str:
    return "\n".join(line for line in body.decode().splitlines() if not _VOLATILE.match(line))


def _populated() -> Metrics:
    metrics = Metrics()
    for i, api in enumerate(API_NAMES):
        for stream in (False, True):
            metrics.observe(Observation(
                request_id="r", ts=0.0, upstream="main", api=api, model=f"m{i}", stream=stream,
                model_label='odd "name"\\ with\nnewline' if i == 0 else f"model-{i}", request_bytes=100 + i,
                status_code=200 if i % 3 else 503, error_type=None if i % 3 else "status",
                duration_seconds=0.5 * i + 0.001, ttft_seconds=0.1 if stream else None, response_bytes=12345678,
                usage=Usage(input=10 * i, output=i + 2, cached_input=i, reasoning=1, output_tokens_per_second=None),
                cost_usd=0.001 * i,
            ))
    metrics.in_flight.labels("main").inc()
    metrics.upstream_up.labels("main").set(1)
    metrics.dropped("queue_full", 3)
    return metrics


def test_the_registry_takes_the_fast_path():
    assert exposition._INTERNALS_OK


@pytest.mark.parametrize("accept, library", [
    (None, generate_latest),
    ("application/openmetrics-text; version=1.0.0", openmetrics_latest),
])
def test_same_bytes_as_prometheus_client(accept, library):
    metrics = _populated()
    ours, _ = metrics.exposition(accept)
    assert _stable(ours) == _stable(library(metrics.registry))
    assert b"llm_request_duration_seconds_bucket{" in ours


def test_an_empty_registry_renders_the_same_too():
    metrics = Metrics()
    for accept, library in ((None, generate_latest), ("application/openmetrics-text", openmetrics_latest)):
        assert _stable(metrics.exposition(accept)[0]) == _stable(library(metrics.registry))
