"""The metric catalog: every metric name, label name and bucket boundary, defined once.

The proxy builds its prometheus-client objects from this module (see `exporter.metrics`), and the
dashboard and rule generators import the same names, so a rename cannot leave a panel or an alert
behind. Plain data only: importing it starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

# Label names.
UPSTREAM = "upstream"
MODEL = "model"
API = "api"
CODE = "code"
TYPE = "type"
ERROR_TYPE = "error_type"
VERSION = "version"
# The label of the exemplars on the latency histograms: the request's id in the request log
# (/api/requests/{id}). OpenMetrics allows 128 characters for an exemplar's names and values.
EXEMPLAR_REQUEST_ID = "request_id"
EXEMPLAR_MAX_CHARS = 128
REASON = "reason"
MEMORY = "memory"  # llm_backend_model_memory_bytes: MEMORY_TOTAL or MEMORY_VRAM
ENDPOINT = "endpoint"  # the backend's state endpoint a collector read (/api/ps, /slots, /metrics...)

# Values of the `type` label of the token metrics; the same meaning for every API family.
TOKEN_INPUT = "input"  # all prompt tokens, cached ones included
TOKEN_CACHED_INPUT = "cached_input"  # prompt tokens served from the backend's prompt cache
TOKEN_CACHE_WRITE_INPUT = "cache_write_input"  # prompt tokens written to the cache (Anthropic)
TOKEN_OUTPUT = "output"  # generated tokens
TOKEN_REASONING = "reasoning"  # the part of output the backend reports as reasoning
TOKEN_TYPES = (TOKEN_INPUT, TOKEN_CACHED_INPUT, TOKEN_CACHE_WRITE_INPUT, TOKEN_OUTPUT, TOKEN_REASONING)

# Values of the `error_type` label of llm_upstream_errors_total.
# connect: no answer began (refused, not resolved, no connection within the connect timeout, or the
# connection closed before the answer's first byte); a connect timeout is `connect`, not `timeout`.
ERROR_CONNECT = "connect"
ERROR_TIMEOUT = "timeout"  # the idle timeout (before the head or between chunks) or the total timeout
ERROR_READ = "read"  # the upstream broke off a response it had started
ERROR_STATUS = "status"  # the upstream answered 5xx or 429
ERROR_PROTOCOL = "protocol"  # the upstream's answer was malformed, over a size limit, or a 101
ERROR_TYPES = (ERROR_CONNECT, ERROR_TIMEOUT, ERROR_READ, ERROR_STATUS, ERROR_PROTOCOL)

# Values of the `reason` label of llm_telemetry_dropped_total: why a request-log row, or a response's
# usage, was lost. Access-log lines dropped by a blocked output are not counted.
DROP_QUEUE_FULL = "queue_full"  # the request log's writer fell behind and its queue was full
DROP_BAD_ROW = "bad_row"  # the database or its driver refused this one row (the others are written)
DROP_WRITE_ERROR = "write_error"  # the database refused a whole batch (disk full, I/O error, locked)
DROP_IMPLAUSIBLE_USAGE = "implausible_usage"  # a token count no real call reaches: usage ignored
DROP_INFLATE_LIMIT = "inflate_limit"  # a compressed response inflated past the tap's bounds: usage not read
DROP_REASONS = (DROP_QUEUE_FULL, DROP_BAD_ROW, DROP_WRITE_ERROR, DROP_IMPLAUSIBLE_USAGE, DROP_INFLATE_LIMIT)

# Special values of the `code` and `model` labels.
CODE_CLIENT_CLOSED = "499"
# The `code` values whose llm_requests_total series exist at 0 from the first request of their
# (upstream, model, api), so the first failure is an increase rate() can see. Every code the
# alerts' failure regex (5..|429) and success regex (2..) usually meet, and the proxy's own.
STARTED_CODES = ("200", "429", "499", "500", "502", "503", "504")
MODEL_OTHER = "other"  # a name beyond the model-label limit
MODEL_UNKNOWN = "unknown"  # no model in the request

# Values of the `memory` label of llm_backend_model_memory_bytes.
MEMORY_TOTAL = "total"  # all memory the loaded model takes (Ollama: size)
MEMORY_VRAM = "vram"  # the part of it in GPU memory (Ollama: size_vram)

# Bucket boundaries. The OpenTelemetry GenAI semantic conventions' recommended boundaries,
# extended where LLM calls run longer (reasoning models and long generations take minutes).
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    163.84, 327.68, 655.36,
)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)
TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5,
)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
)
TOKENS_PER_SECOND_BUCKETS = (
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000,
)
# A model load takes from tens of milliseconds (already in memory) to minutes (a large model from disk).
LOAD_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a cheap dict key per request
class MetricSpec:
    """One metric of the catalog; `name` is the base name (no `_total`, `_bucket` suffix added)."""

    name: str
    kind: str  # counter, histogram, summary, gauge
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None
    # How a gauge combines across uvicorn workers in multiprocess mode.
    multiprocess_mode: str | None = None

    @property
    def series(self) -> str:
        """The name a PromQL query uses for the metric's main series (counters end in _total)."""
        return self.name + "_total" if self.kind == "counter" else self.name


REQUESTS = MetricSpec(
    "llm_requests", "counter", (UPSTREAM, MODEL, API, CODE),
    "Proxied LLM API requests, by the HTTP status the client got (499: the client went away).",
)
REQUEST_DURATION = MetricSpec(
    "llm_request_duration_seconds", "histogram", (UPSTREAM, MODEL, API),
    "Time from request received to the last byte of the response sent.",
    DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = MetricSpec(
    "llm_time_to_first_token_seconds", "histogram", (UPSTREAM, MODEL, API),
    "Streams only: time from request received to the first chunk carrying generated content.",
    TTFT_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = MetricSpec(
    "llm_time_per_output_token_seconds", "histogram", (UPSTREAM, MODEL, API),
    "Streams only: (duration - time to first token) / (output tokens - 1).",
    TPOT_BUCKETS,
)
TOKENS = MetricSpec(
    "llm_tokens", "counter", (UPSTREAM, MODEL, TYPE),
    "Tokens as reported by the backend, by type (input, cached_input, cache_write_input, output, reasoning).",
)
REQUEST_TOKENS = MetricSpec(
    "llm_request_tokens", "histogram", (UPSTREAM, MODEL, TYPE),
    "Tokens per request, by type (input, output).",
    TOKEN_BUCKETS,
)
OUTPUT_TOKENS_PER_SECOND = MetricSpec(
    "llm_output_tokens_per_second", "histogram", (UPSTREAM, MODEL),
    "Generation speed per request: the backend's own timing where it reports one, else computed.",
    TOKENS_PER_SECOND_BUCKETS,
)
REQUEST_SIZE = MetricSpec(
    "llm_request_size_bytes", "summary", (UPSTREAM, API),
    "Request body size as received from the client.",
)
RESPONSE_SIZE = MetricSpec(
    "llm_response_size_bytes", "summary", (UPSTREAM, API),
    "Response body size as sent to the client (encoded bytes on the wire).",
)
COST = MetricSpec(
    "llm_cost_usd", "counter", (UPSTREAM, MODEL),
    "Cost of the tokens used, in US dollars, from the pricing table.",
)
IN_FLIGHT = MetricSpec(
    "llm_requests_in_flight", "gauge", (UPSTREAM,),
    "Requests being proxied right now.",
    multiprocess_mode="livesum",
)
UPSTREAM_ERRORS = MetricSpec(
    "llm_upstream_errors", "counter", (UPSTREAM, ERROR_TYPE),
    "Upstream failures: connect, timeout, read (broke off mid-response), status (5xx or 429).",
)
UPSTREAM_UP = MetricSpec(
    "llm_upstream_up", "gauge", (UPSTREAM,),
    "1 when the last periodic probe of the upstream got an HTTP answer below 500, else 0.",
    multiprocess_mode="livemax",  # a worker that is gone no longer says up
)
USAGE_MISSING = MetricSpec(
    "llm_usage_missing", "counter", (UPSTREAM, API),
    "Successful responses that carried no token usage (no tokens are estimated).",
)
TELEMETRY_DROPPED = MetricSpec(
    "llm_telemetry_dropped", "counter", (REASON,),
    "Telemetry lost, by reason: request-log rows dropped (queue_full, bad_row, write_error), "
    "responses whose usage was ignored as implausible (implausible_usage) or not read because their "
    "compressed body inflated past the tap's bounds (inflate_limit).",
)
BUILD_INFO = MetricSpec(
    "llm_exporter_build_info", "gauge", (VERSION,),
    "Always 1; the version label names the running llm-exporter.",
    multiprocess_mode="max",
)

MODEL_LOAD_DURATION = MetricSpec(
    "llm_backend_model_load_duration_seconds", "histogram", (UPSTREAM, MODEL),
    "Time the backend reports it spent loading the model for a request (Ollama: load_duration).",
    LOAD_DURATION_BUCKETS,
)

# Backend state: read from each upstream's own endpoints by exporter's backend collectors on the
# probe schedule, exposed at scrape time from the last successful read. A backend that does not
# answer has no series here (never a zero), and counts in BACKEND_SCRAPE_ERRORS.
BACKEND_UP = MetricSpec(
    "llm_backend_up", "gauge", (UPSTREAM, ENDPOINT),
    "1 when the last read of this backend state endpoint succeeded, else 0.",
)
BACKEND_SCRAPE_ERRORS = MetricSpec(
    "llm_backend_scrape_errors", "counter", (UPSTREAM, ENDPOINT),
    "Reads of a backend state endpoint that failed (no answer, an error status, or an unreadable body).",
)
BACKEND_MODELS_LOADED = MetricSpec(
    "llm_backend_models_loaded", "gauge", (UPSTREAM,),
    "Models the backend has loaded right now (Ollama /api/ps, llama-swap /running, llama.cpp and vLLM: served models).",
)
BACKEND_MODELS_AVAILABLE = MetricSpec(
    "llm_backend_models_available", "gauge", (UPSTREAM,),
    "Models the backend can load (Ollama /api/tags).",
)
BACKEND_MODEL_MEMORY = MetricSpec(
    "llm_backend_model_memory_bytes", "gauge", (UPSTREAM, MODEL, MEMORY),
    "Memory a loaded model takes, by kind of memory (total, vram).",
)
BACKEND_MODEL_EXPIRY = MetricSpec(
    "llm_backend_model_expiry_timestamp_seconds", "gauge", (UPSTREAM, MODEL),
    "When the backend unloads an idle loaded model (Ollama expires_at), in Unix seconds.",
)
BACKEND_REQUESTS_RUNNING = MetricSpec(
    "llm_backend_requests_running", "gauge", (UPSTREAM, MODEL),
    "Requests the backend is processing right now (vLLM num_requests_running, llama.cpp requests_processing).",
)
BACKEND_REQUESTS_WAITING = MetricSpec(
    "llm_backend_requests_waiting", "gauge", (UPSTREAM, MODEL),
    "Requests queued in the backend, waiting for a slot (vLLM num_requests_waiting, llama.cpp requests_deferred).",
)
BACKEND_KV_CACHE_USAGE = MetricSpec(
    "llm_backend_kv_cache_usage_ratio", "gauge", (UPSTREAM, MODEL),
    "Share of the backend's KV cache in use, 0 to 1.",
)
BACKEND_SLOTS_BUSY = MetricSpec(
    "llm_backend_slots_busy", "gauge", (UPSTREAM, MODEL),
    "llama.cpp server slots processing a request.",
)
BACKEND_SLOTS = MetricSpec(
    "llm_backend_slots", "gauge", (UPSTREAM, MODEL),
    "llama.cpp server slots in all (busy and idle).",
)
BACKEND_CONTEXT_SIZE = MetricSpec(
    "llm_backend_context_size_tokens", "gauge", (UPSTREAM, MODEL),
    "Context size of one llama.cpp server slot, in tokens.",
)
BACKEND_PREFIX_CACHE_QUERIED = MetricSpec(
    "llm_backend_prefix_cache_queried_tokens", "counter", (UPSTREAM, MODEL),
    "Prompt tokens the backend looked up in its prefix cache (vLLM prefix_cache_queries).",
)
BACKEND_PREFIX_CACHE_HITS = MetricSpec(
    "llm_backend_prefix_cache_hit_tokens", "counter", (UPSTREAM, MODEL),
    "Prompt tokens the backend found in its prefix cache (vLLM prefix_cache_hits).",
)

# The histograms whose buckets carry the request id as an exemplar (EXEMPLAR_REQUEST_ID).
EXEMPLAR_HISTOGRAMS: tuple[MetricSpec, ...] = (REQUEST_DURATION, TIME_TO_FIRST_TOKEN)

# Measured by the proxy itself: prometheus-client objects built by exporter.metrics.
PROXY_METRICS: tuple[MetricSpec, ...] = (
    REQUESTS, REQUEST_DURATION, TIME_TO_FIRST_TOKEN, TIME_PER_OUTPUT_TOKEN, TOKENS, REQUEST_TOKENS,
    OUTPUT_TOKENS_PER_SECOND, REQUEST_SIZE, RESPONSE_SIZE, COST, IN_FLIGHT, UPSTREAM_ERRORS,
    UPSTREAM_UP, USAGE_MISSING, TELEMETRY_DROPPED, BUILD_INFO, MODEL_LOAD_DURATION,
    # Counted by this process, so that with several workers their counts add up: a per-worker
    # count shown by whichever worker a scrape reaches would look like a counter reset.
    BACKEND_SCRAPE_ERRORS,
)
# Read from the backends: yielded at scrape time from the collectors' last reads.
BACKEND_STATE_METRICS: tuple[MetricSpec, ...] = (
    BACKEND_UP, BACKEND_MODELS_LOADED, BACKEND_MODELS_AVAILABLE, BACKEND_MODEL_MEMORY,
    BACKEND_MODEL_EXPIRY, BACKEND_REQUESTS_RUNNING, BACKEND_REQUESTS_WAITING, BACKEND_KV_CACHE_USAGE,
    BACKEND_SLOTS_BUSY, BACKEND_SLOTS, BACKEND_CONTEXT_SIZE, BACKEND_PREFIX_CACHE_QUERIED,
    BACKEND_PREFIX_CACHE_HITS,
)
CATALOG: tuple[MetricSpec, ...] = PROXY_METRICS + BACKEND_STATE_METRICS
