"""The prometheus-client objects of the metric catalog, and how one observation updates them."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
    gc_collector,
    multiprocess,
    platform_collector,
    process_collector,
)
from prometheus_client.exposition import choose_encoder

from exporter import __version__, catalog
from exporter.backends.state import BackendState
from exporter.catalog import MetricSpec
from exporter.exposition import Renderer
from exporter.observation import Observation

# Prometheus 2.x ingests OpenMetrics `_created` samples as series of their own (one more per
# counter, histogram and summary child) and reads nothing from them: they are not exposed.
disable_created_metrics()

_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram, "summary": Summary}


def _build(spec: MetricSpec, registry: CollectorRegistry):
    options = {}
    if spec.buckets:
        options["buckets"] = spec.buckets
    if spec.multiprocess_mode:
        options["multiprocess_mode"] = spec.multiprocess_mode
    return _KINDS[spec.kind](spec.name, spec.help, spec.labels, registry=registry, **options)


class Metrics:
    """One set of the catalog's metrics in its own registry (so several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        collectors: list = []  # in registration order, for the renderer
        self._process_source = None
        self._process_gauges: dict[str, Gauge] = {}
        if not multiprocess_dir():
            collectors += [
                process_collector.ProcessCollector(registry=registry),
                platform_collector.PlatformCollector(registry=registry),
                gc_collector.GCCollector(registry=registry),
            ]
        else:
            # A scrape reaches one worker, whose own process collector would describe only itself:
            # each worker writes its process metrics to the shared files instead, one series per
            # live worker (label pid), refreshed by the app every few seconds (refresh_process_metrics).
            self._process_source = process_collector.ProcessCollector(registry=None)
            for family in self._process_source.collect():
                for sample in family.samples:
                    self._process_gauges[sample.name] = Gauge(
                        sample.name, family.documentation, registry=registry, multiprocess_mode="liveall")
        # The catalog is the only list of metrics: each spec the proxy measures built once, in its order.
        self._families = {spec: _build(spec, registry) for spec in catalog.PROXY_METRICS}
        collectors += self._families.values()
        # Read from the backends (exporter.backends): rendered from the last reads at each scrape.
        self.backend_state = BackendState(self[catalog.BACKEND_SCRAPE_ERRORS])
        collectors.append(self.backend_state)
        self._child_cache: dict[tuple[MetricSpec, tuple[str, ...]], object] = {}
        self._started: set[tuple[str, str, str]] = set()  # (upstream, model, api) seen so far
        for reason in catalog.DROP_REASONS:  # every reason a series from the start, at 0
            self._child(catalog.TELEMETRY_DROPPED, reason)
        self[catalog.BUILD_INFO].labels(__version__).set(1)
        self._renderer = Renderer(collectors)

    def __getitem__(self, spec: MetricSpec):
        """The prometheus-client object of one catalog metric."""
        return self._families[spec]

    def observe(self, obs: Observation) -> None:
        """Count one finished request in every metric it concerns."""
        child = self._child
        upstream, model, api = obs.upstream, obs.model_label, obs.api
        if (upstream, model, api) not in self._started:
            self.start_series(upstream, model, api)
        exemplar = _exemplar(obs.request_id)
        child(catalog.REQUESTS, upstream, model, api, str(obs.status_code)).inc()
        child(catalog.REQUEST_DURATION, upstream, model, api).observe(obs.duration_seconds, exemplar)
        child(catalog.REQUEST_SIZE, upstream, api).observe(obs.request_bytes)
        child(catalog.RESPONSE_SIZE, upstream, api).observe(obs.response_bytes)
        if obs.error_type:
            child(catalog.UPSTREAM_ERRORS, upstream, obs.error_type).inc()
        if obs.ttft_seconds is not None:
            child(catalog.TIME_TO_FIRST_TOKEN, upstream, model, api).observe(obs.ttft_seconds, exemplar)
        usage = obs.usage
        if not usage.reported:
            if 200 <= obs.status_code < 300 and obs.error_type is None and api != "other":
                child(catalog.USAGE_MISSING, upstream, api).inc()
            if usage.implausible:
                child(catalog.TELEMETRY_DROPPED, catalog.DROP_IMPLAUSIBLE_USAGE).inc()
            return
        for token_type in catalog.TOKEN_TYPES:
            count = getattr(usage, token_type)
            if count:
                child(catalog.TOKENS, upstream, model, token_type).inc(count)
        for token_type in (catalog.TOKEN_INPUT, catalog.TOKEN_OUTPUT):
            count = getattr(usage, token_type)
            if count is not None:
                child(catalog.REQUEST_TOKENS, upstream, model, token_type).observe(count)
        if (tpot := obs.time_per_output_token) is not None:
            child(catalog.TIME_PER_OUTPUT_TOKEN, upstream, model, api).observe(tpot)
        if (speed := obs.output_tokens_per_second) is not None:
            child(catalog.OUTPUT_TOKENS_PER_SECOND, upstream, model).observe(speed)
        if usage.load_seconds is not None:
            child(catalog.MODEL_LOAD_DURATION, upstream, model).observe(usage.load_seconds)
        if obs.cost_usd:
            child(catalog.COST, upstream, model).inc(obs.cost_usd)

    def start_series(self, upstream: str, model: str, api: str) -> None:
        """Create at 0 the counters the rules read for a new (upstream, model, api).

        Prometheus only sees an increase between two samples: a child created by its first
        increment is first scraped at 1, and rate()/increase() never count that first failure,
        token or cent. Created here at 0 (in multiprocess mode: written to this worker's file),
        they are scraped at 0 before they grow. Histograms are left out: ~20 series each, and the
        rules read them as shares of requests whose first observation comes with the series.
        """
        self._started.add((upstream, model, api))
        for code in catalog.STARTED_CODES:
            self._child(catalog.REQUESTS, upstream, model, api, code)
        for token_type in catalog.TOKEN_TYPES:
            self._child(catalog.TOKENS, upstream, model, token_type)
        self._child(catalog.COST, upstream, model)
        if api != "other":
            self._child(catalog.USAGE_MISSING, upstream, api)
        self.start_upstream(upstream)

    def start_upstream(self, upstream: str) -> None:
        """Create llm_upstream_errors_total at 0 for every error type (at start-up, per upstream)."""
        for error_type in catalog.ERROR_TYPES:
            self._child(catalog.UPSTREAM_ERRORS, upstream, error_type)

    def dropped(self, reason: str, count: int = 1) -> None:
        """Count request-log rows, or a response's usage, lost for one of catalog.DROP_REASONS; thread-safe."""
        self._child(catalog.TELEMETRY_DROPPED, reason).inc(count)

    def refresh_process_metrics(self) -> None:
        """Multiprocess mode: this worker's CPU, memory and file descriptors into the shared files."""
        if self._process_source is None:
            return
        for family in self._process_source.collect():
            for sample in family.samples:
                gauge = self._process_gauges.get(sample.name)
                if gauge is not None:
                    gauge.set(sample.value)

    def _child(self, spec: MetricSpec, *values: str):
        """The metric's labels(*values), remembered: prometheus-client's labels() checks its arguments
        and takes a lock on every call (about 1 us, a dozen calls per request). The label values
        are bounded (the model label is, see exporter.labels), so this dict is too."""
        key = (spec, values)
        child = self._child_cache.get(key)
        if child is None:
            child = self._child_cache[key] = self._families[spec].labels(*values)
        return child

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type: OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept)
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self.backend_state)  # this worker's own reads
            return encoder(registry), content_type
        # The same bytes as encoder(self.registry), several times faster (exporter.exposition).
        return self._renderer.render(openmetrics=content_type.startswith("application/openmetrics-text")), content_type


def _exemplar(request_id: str) -> dict[str, str] | None:
    """The request id as an exemplar, so a latency spike leads to its row in the request log.

    None when the id is too long for OpenMetrics (a client's X-Request-ID may have 128 characters):
    prometheus-client would refuse the observation. Multiprocess mode keeps no exemplars at all
    (prometheus-client does not implement them there).
    """
    if len(catalog.EXEMPLAR_REQUEST_ID) + len(request_id) > catalog.EXEMPLAR_MAX_CHARS:
        return None
    return {catalog.EXEMPLAR_REQUEST_ID: request_id}


def multiprocess_dir() -> str | None:
    """Set when several uvicorn workers share their metrics through files (multiprocess mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def mark_worker_dead(pid: int | None = None) -> None:
    """Multiprocess mode: a worker is gone, so its live gauges (in flight, upstream up) stop
    counting. Each worker calls it as it shuts down; the supervisor calls it for one that died."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid() if pid is None else pid)
