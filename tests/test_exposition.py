"""The fast /metrics renderer writes exactly the bytes of prometheus-client's own encoders."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter import catalog, exposition
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
    metrics[catalog.IN_FLIGHT].labels("main").inc()
    metrics[catalog.UPSTREAM_UP].labels("main").set(1)
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


# --- exemplars: the request id on the latency histograms -----------------------------------


def _one(request_id: str, *, stream: bool = True) -> Metrics:
    metrics = Metrics()
    metrics.observe(Observation(
        request_id=request_id, ts=0.0, upstream="main", api="openai_chat", model="m", stream=stream,
        model_label="m", request_bytes=10, status_code=200, duration_seconds=1.5,
        ttft_seconds=0.3 if stream else None, usage=Usage(input=5, output=7),
    ))
    return metrics


def _bucket_lines(body: bytes, metric: str) -> list[str]:
    return [line for line in body.decode().splitlines() if line.startswith(metric + "_bucket{")]


@pytest.mark.parametrize("metric, le", [
    ("llm_request_duration_seconds", "2.56"),  # 1.5 s falls in (1.28, 2.56]
    ("llm_time_to_first_token_seconds", "0.5"),  # 0.3 s falls in (0.25, 0.5]
])
def test_the_bucket_an_observation_fell_in_carries_its_request_id(metric: str, le: str):
    body, _ = _one("req-42").exposition("application/openmetrics-text; version=1.0.0")
    with_exemplar = [line for line in _bucket_lines(body, metric) if " # " in line]
    assert len(with_exemplar) == 1
    assert f'le="{le}"' in with_exemplar[0]
    assert re.search(r' # \{request_id="req-42"\} \d+(\.\d+)? \d+\.\d+$', with_exemplar[0]), with_exemplar[0]


def test_the_text_format_has_no_exemplars():
    body, _ = _one("req-42").exposition(None)
    assert "req-42" not in body.decode()


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9._:/+=@-]{1,128}", fullmatch=True))
def test_every_request_id_the_proxy_accepts_is_observed_and_rendered_like_the_library(request_id: str):
    """Ids up to 118 characters become exemplars; longer ones (OpenMetrics allows 128 characters
    for name and value together) are observed without one, never refused."""
    metrics = _one(request_id)
    ours, _ = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert _stable(ours) == _stable(openmetrics_latest(metrics.registry))
    assert 'llm_request_duration_seconds_count{api="openai_chat",model="m",upstream="main"} 1.0' in ours.decode()
    assert (f'request_id="{request_id}"' in ours.decode()) == (len("request_id") + len(request_id) <= 128)
