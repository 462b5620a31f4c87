"""The demo upstream's own state, answered in the shapes of the backends' state endpoints.

Ollama's /api/ps, llama.cpp's /slots and /metrics, vLLM's /metrics and llama-swap's /running,
all derived from what the demo is doing: a model is loaded from its first request on, with a
size fixed by its name; requests in flight are running; prompt tokens (and their cached part)
add up in vLLM's prefix-cache counters. The rules are in the package docstring.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from exporter.demo.upstream.formats import dumps

KEEP_ALIVE_SECONDS = 300  # Ollama's default keep_alive: expires_at is the last request plus this
LLAMACPP_SLOTS = 4
LLAMACPP_CONTEXT = 4096
VLLM_KV_PER_REQUEST = 0.125  # KV-cache share one running request takes (at most 1 in all)
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def model_size(model: str) -> int:
    """Bytes a loaded model takes: 1 GB plus 1 MB per unit of its name's SHA-256 first byte."""
    return 1_000_000_000 + hashlib.sha256(model.encode()).digest()[0] * 1_000_000


def vram_size(model: str) -> int:
    return model_size(model) * 3 // 4


@dataclass
class _Model:
    last_request: float  # unix seconds
    in_flight: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


class DemoState:
    """What the demo has served: loaded models, requests in flight, prompt tokens per model."""

    def __init__(self) -> None:
        self.models: dict[str, _Model] = {}  # in order of first request

    def started(self, model: str, prompt_tokens: int, cached_tokens: int) -> None:
        entry = self.models.setdefault(model, _Model(time.time()))
        entry.last_request = time.time()
        entry.in_flight += 1
        entry.prompt_tokens += prompt_tokens
        entry.cached_tokens += cached_tokens

    def finished(self, model: str) -> None:
        self.models[model].in_flight -= 1


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e9):09d}Z"


def ollama_ps(state: DemoState):
    async def endpoint(request: Request) -> Response:
        models = [{
            "name": name, "model": name, "size": model_size(name),
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                        "parameter_size": "", "quantization_level": "Q4_K_M"},
            "expires_at": _rfc3339(entry.last_request + KEEP_ALIVE_SECONDS),
            "size_vram": vram_size(name), "context_length": LLAMACPP_CONTEXT,
        } for name, entry in state.models.items() for family in [name.split(":")[0].rstrip(".0123456789")]]
        return Response(dumps({"models": models}), media_type="application/json")
    return endpoint


def llamaswap_running(state: DemoState):
    async def endpoint(request: Request) -> Response:
        running = [{"model": name, "state": "ready"} for name in state.models]
        return Response(dumps({"running": running}), media_type="application/json")
    return endpoint


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value!r}" for labels, value in samples]


def vllm_metrics(state: DemoState):
    """vLLM V1's /metrics: one series per loaded model (label model_name) and engine 0."""
    async def endpoint(request: Request) -> Response:
        lines: list[str] = []
        models = list(state.models.items())
        labels = [f'{{engine="0",model_name="{name}"}}' for name, _ in models]
        for name, kind, help_text, value in (
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
             lambda m: float(m.in_flight)),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", lambda m: 0.0),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
             lambda m: min(1.0, m.in_flight * VLLM_KV_PER_REQUEST)),
            ("vllm:prefix_cache_queries_total", "counter",
             "Prefix cache queries, in terms of number of queried tokens.", lambda m: float(m.prompt_tokens)),
            ("vllm:prefix_cache_hits_total", "counter",
             "Prefix cache hits, in terms of number of cached tokens.", lambda m: float(m.cached_tokens)),
        ):
            _family(lines, name, kind, help_text, [(label, value(m)) for label, (_, m) in zip(labels, models)])
        return Response("\n".join(lines) + "\n", media_type=_PROMETHEUS)
    return endpoint


def _llamacpp_busy(state: DemoState, model: str) -> int:
    entry = state.models.get(model)
    return entry.in_flight if entry else 0


def llamacpp_slots(state: DemoState, model: str):
    async def endpoint(request: Request) -> Response:
        busy = _llamacpp_busy(state, model)
        slots = [{"id": i, "n_ctx": LLAMACPP_CONTEXT, "speculative": False, "is_processing": i < busy}
                 for i in range(LLAMACPP_SLOTS)]
        return Response(dumps(slots), media_type="application/json")
    return endpoint


def llamacpp_metrics(state: DemoState, model: str):
    """llama.cpp's /metrics (--metrics): requests beyond the slots are deferred."""
    async def endpoint(request: Request) -> Response:
        busy = _llamacpp_busy(state, model)
        entry = state.models.get(model)
        lines: list[str] = []
        _family(lines, "llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.",
                [("", float(entry.prompt_tokens if entry else 0))])
        _family(lines, "llamacpp:requests_processing", "gauge", "Number of requests processing.",
                [("", float(min(busy, LLAMACPP_SLOTS)))])
        _family(lines, "llamacpp:requests_deferred", "gauge", "Number of requests deferred.",
                [("", float(max(busy - LLAMACPP_SLOTS, 0)))])
        return Response("\n".join(lines) + "\n", media_type=_PROMETHEUS)
    return endpoint


def llamacpp_models(model: str):
    """llama.cpp's /v1/models: the one model it serves, OpenAI's list plus Ollama's `models`."""
    async def endpoint(request: Request) -> Response:
        data = [{"id": model, "aliases": [model], "tags": [], "object": "model", "created": 1_735_689_600,
                 "owned_by": "llamacpp", "meta": {"n_ctx_train": LLAMACPP_CONTEXT, "size": model_size(model)}}]
        models = [{"name": model, "model": model, "type": "model", "capabilities": ["completion"]}]
        return Response(dumps({"models": models, "object": "list", "data": data}), media_type="application/json")
    return endpoint
