"""The last good read of every backend state endpoint, exposed as a prometheus-client collector.

A read replaces its endpoint's samples; a failed read removes them (a backend that does not
answer has no series, never a zero), sets llm_backend_up to 0 and counts an error in
llm_backend_scrape_errors_total, a prometheus-client counter (with several workers their counts
add up, where one worker's own count would look like a reset whenever another answers a scrape). An endpoint
the backend does not offer (404, 501: llama.cpp without --metrics) has no series at all.
Everything runs on the event loop's thread: the reads and the scrapes never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import catalog
from exporter.backends.reading import Sample
from exporter.catalog import MetricSpec

# Several backend entries can share a label set (names past the model-label limit become
# "other"; vLLM's data-parallel engines): amounts add up, ratios and times take the largest.
_COMBINE: dict[MetricSpec, Callable[[float, float], float]] = {
    catalog.BACKEND_MODEL_EXPIRY: max,
    catalog.BACKEND_KV_CACHE_USAGE: max,
    catalog.BACKEND_CONTEXT_SIZE: max,
}
_FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}

Key = tuple[str, str]  # (upstream, endpoint)


class BackendState:
    """Reads per (upstream, endpoint); collect() yields the catalog's llm_backend_* families."""

    def __init__(self, errors: Counter) -> None:
        self._samples: dict[Key, dict[tuple[MetricSpec, tuple[str, ...]], float]] = {}
        self._up: dict[Key, float] = {}
        self._errors = errors  # llm_backend_scrape_errors_total

    def configure(self, upstream: str, endpoints: Iterable[str]) -> None:
        """An upstream whose endpoints are read: its error counters start at 0."""
        for endpoint in endpoints:
            self._errors.labels(upstream, endpoint)

    def succeeded(self, upstream: str, endpoint: str, samples: list[Sample]) -> None:
        combined: dict[tuple[MetricSpec, tuple[str, ...]], float] = {}
        for sample in samples:
            key = (sample.spec, sample.labels)
            known = combined.get(key)
            combined[key] = sample.value if known is None else _COMBINE.get(sample.spec, _add)(known, sample.value)
        self._samples[(upstream, endpoint)] = combined
        self._up[(upstream, endpoint)] = 1.0

    def failed(self, upstream: str, endpoint: str) -> None:
        key = (upstream, endpoint)
        self._samples.pop(key, None)
        self._up[key] = 0.0
        self._errors.labels(upstream, endpoint).inc()

    def not_offered(self, upstream: str, endpoint: str) -> None:
        key = (upstream, endpoint)
        self._samples.pop(key, None)
        self._up.pop(key, None)

    def describe(self) -> list[Metric]:
        return []  # nothing for a registry to check names against: the catalog keeps them apart

    def collect(self) -> Iterator[Metric]:
        families = {spec: _FAMILIES[spec.kind](spec.name, spec.help, labels=spec.labels)
                    for spec in catalog.BACKEND_STATE_METRICS}
        for (upstream, endpoint), value in self._up.items():
            families[catalog.BACKEND_UP].add_metric((upstream, endpoint), value)
        for (upstream, _), samples in self._samples.items():
            for (spec, labels), value in samples.items():
                families[spec].add_metric((upstream, *labels), value)
        for spec in catalog.BACKEND_STATE_METRICS:
            if families[spec].samples:
                yield families[spec]


def _add(a: float, b: float) -> float:
    return a + b
