"""The demo upstream: a fake LLM backend that speaks the real wire format of every API family.

`llm-exporter demo` and the docker-compose demo service run it with realistic pacing; the
integration tests run it with pacing off (no sleeps at all) and compute expected metric values
from the rules below, so these rules are a contract: change them only together with the tests.

Endpoints
    POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses   (OpenAI)
         the same without /v1 (but /responses), under /openai/v1/, and under
         /openai/deployments/{deployment}/ (Azure OpenAI: the deployment is the model
         when the body names none)
    POST /v1beta/models/{model}:generateContent, :streamGenerateContent, and Vertex AI's
         /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:...   (Gemini)
    POST /v1/messages                                                          (Anthropic)
    POST /api/chat, /api/generate, /api/embed                                  (Ollama)
    POST /completion, /infill                                                  (llama.cpp server)
    GET  /v1/models, /api/tags, /api/version, /health                          (probes)
    GET  /api/ps (Ollama), /metrics (vLLM), /slots (llama.cpp), /running (llama-swap): backend state
    /llamacpp/...: a llama.cpp server of its own, the same generation endpoints plus /health,
         /v1/models (its one model, qwen2.5-coder-1.5b), /slots and /metrics (llama.cpp's names)
    anything else: 404 with an OpenAI-style JSON error.

Backend state rules (exporter.demo.upstream.backends)
    * A model is loaded from its first request (of any family) on, listed in order of first
      request: /api/ps entries, llama-swap /running entries ("state": "ready"), vLLM series.
    * Size: 1_000_000_000 + 1_000_000 * (first byte of the SHA-256 of its name) bytes; size_vram
      = size * 3 // 4; expires_at = its last request's time + 300 s (RFC 3339, UTC, nanoseconds).
    * Running = its requests whose answer is not over yet (a request that got a fault status
      or a 400 never runs). vLLM: num_requests_running = running, num_requests_waiting = 0,
      kv_cache_usage_perc = min(1, running * 0.125), prefix_cache_queries_total = its input
      tokens so far, prefix_cache_hits_total = its cached input tokens so far (label
      model_name, engine "0"). llama.cpp (the llamacpp_completion model): 4 slots of n_ctx
      4096, the first `running` of them is_processing; requests_processing = min(running, 4),
      requests_deferred = the rest.

Token rules (deterministic)
    * A token is a whitespace-separated word.
    * Input tokens: the words of all prompt text in the request: OpenAI messages[].content
      (system included; a string or a list of parts with a "text"), `prompt` (a string or a list
      of strings), Responses `input` (a string or a message list) plus `instructions`, Anthropic
      `system` (string or blocks) plus messages, Ollama messages / `system` + `prompt`, llama.cpp
      `input_prefix` + `prompt` + `input_suffix`, embeddings `input` (a string or a list of
      strings), Gemini `systemInstruction` plus `contents` (each a message of `parts` texts).
      A list of token ids counts one token per id.
    * Cached input = the words of every message except the last (the conversation prefix).
      A system prompt (OpenAI system message, Anthropic `system`, Responses `instructions`)
      counts as a leading message. Prompt-string requests (completions, Ollama generate,
      llama.cpp, embeddings) and single-message requests have 0 cached.
        - OpenAI chat/completions: usage.prompt_tokens = input,
          prompt_tokens_details.cached_tokens = cached.
        - Responses: input_tokens = input, input_tokens_details.cached_tokens = cached.
        - Anthropic: cache_read_input_tokens = cached; cache_creation_input_tokens = words of the
          last message if the request has a "cache_control" key anywhere, else 0;
          input_tokens = input - cache_read - cache_creation.
        - llama.cpp: timings.cache_n = cached, timings.prompt_n = input - cached (so always 0
          and input under these rules, llama.cpp requests being prompt strings).
        - Ollama: prompt_eval_count = input (no cache reported).
        - Gemini: promptTokenCount = input, cachedContentTokenCount = cached (left out when 0),
          candidatesTokenCount = output - reasoning, thoughtsTokenCount = reasoning (left out
          when 0).
    * Output tokens = the first positive integer of max_completion_tokens, max_tokens,
      max_output_tokens, n_predict, options.num_predict, generationConfig.maxOutputTokens;
      else 12. The fake model always stops
      naturally at exactly that many tokens (finish_reason "stop", stop_reason "end_turn",
      done_reason "stop", stop_type "eos"; Responses status "completed").
    * Reasoning: for a model whose name contains "reason", OpenAI chat/completions report
      completion_tokens_details.reasoning_tokens = output // 4, Responses
      output_tokens_details.reasoning_tokens = output // 4, Gemini thoughtsTokenCount = output // 4. Those tokens are part of output but
      not shown: the visible text has output - reasoning words.
    * Text: deterministic words, one token per stream chunk or event (the first chunk carries a
      word, each later one a space and a word, so the chunks join to the full text).
    * Backend timings, fixed whatever the pacing (50 tokens/s generation, 1 ms per prompt
      token, 10 ms load): llama.cpp predicted_ms = predicted_n * 20.0, predicted_per_second =
      50.0, prompt_ms = prompt_n * 1.0; Ollama eval_duration = eval_count * 20_000_000 ns,
      prompt_eval_duration = prompt_eval_count * 1_000_000 ns, load_duration = 10_000_000 ns,
      total_duration = their sum.
    * Embeddings: one deterministic 8-dimensional unit vector per input.
    * The response `model` echoes the requested model (a family default when absent).
    * Identical requests give identical response bytes: words, ids, `created` and timestamps
      come from a hash of the request body (key order, whitespace, `stream` and
      `stream_options` ignored), never from the clock, so a direct call and a proxied one
      compare byte for byte, and a streamed answer has the same words as the JSON one.
    * Streams: OpenAI `data:` chunks then `data: [DONE]`; with stream_options.include_usage
      every chunk has "usage":null and a last chunk with "choices":[] carries the usage.
      Responses and Anthropic use `event:` + `data:` pairs; Ollama streams NDJSON unless
      "stream": false; llama.cpp streams `data:` events without [DONE] when "stream": true.
      Gemini's streamGenerateContent streams (its path says so, not the body): `data:` events
      ending in CRLF CRLF with ?alt=sse, else one JSON array sent element by element; every
      chunk has usageMetadata counting the output so far.
    * llama.cpp prompt lists: /completion with a list of several prompt strings answers one
      result per prompt (each with its `index`, its own counts and output): a JSON array, or
      each result's events in turn.

Fault controls (request headers, which a proxy passes through)
    x-demo-status: N        answer N (400-599) with the family's real error body; 429 adds
                            retry-after: 1
    x-demo-delay: S         wait S seconds before the response headers
    x-demo-chunk-delay: S   S seconds between stream chunks, and before the body's end
                            (replaces pacing)
    x-demo-die-after: N     drop the connection after N body chunks (for a non-streamed body:
                            after half of it, or right after the headers when N is 0); a stream
                            shorter than N still never finishes its body
    x-demo-encoding: E      gzip or deflate; streams are compressed per chunk with a sync flush
    x-demo-no-usage: 1      omit every usage, timing and count field (OpenAI: no usage chunk
                            and no "usage":null even if asked; Responses: "usage":null)
    x-demo-malformed: 1     every JSON object in the body loses its closing brace (SSE data,
                            NDJSON lines, a JSON body): the status and framing stay valid
    x-demo-content-type: T  send content-type T instead of the format's own (the body is unchanged)
    x-demo-backend: llamacpp  OpenAI chat/completions streams as llama-server sends them: its
                            `timings` on the last chunk (the usage chunk when the request
                            asked for usage, else the finishing chunk)
    x-demo-huge-chunk: N    the whole body in one message, after N bytes of padding every client
                            of the format skips (an SSE comment line, a blank NDJSON line,
                            whitespace before a JSON body); N up to 64 MiB; no pacing
    An invalid JSON body, or an invalid x-demo-* value, gets a 400 with the family's error body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from exporter.demo.upstream.backends import (
    DemoState, llamacpp_metrics, llamacpp_models, llamacpp_slots, llamaswap_running, ollama_ps, vllm_metrics,
)
from exporter.demo.upstream.delivery import (
    HEADER_CHUNK_DELAY, HEADER_DELAY, HEADER_DIE_AFTER, HEADER_ENCODING, HEADER_NO_USAGE,
    HEADER_STATUS, BadControl, Delivery, Faults, pace_for, parse_faults, quiet_deliberate_aborts,
)
from exporter.demo.upstream.formats import RENDERERS, dumps, json_body, openai_error, render_error
from exporter.demo.upstream.rules import EPOCH, make_call

__all__ = [
    "ALL_DEMO_MODELS", "DEMO_MODELS", "FAMILY_PATHS", "HEADER_BACKEND", "HEADER_CHUNK_DELAY", "HEADER_DELAY",
    "HEADER_DIE_AFTER", "HEADER_ENCODING", "HEADER_NO_USAGE", "HEADER_STATUS", "LLAMACPP_PREFIX", "STATE_KINDS",
    "create_app",
]

# Models the demo and a load generator can use, by API family (the `api` label); the first one is
# the family's default when a request names none.
DEMO_MODELS: dict[str, tuple[str, ...]] = {
    "openai_chat": ("demo-gpt-mini", "demo-gpt-large", "demo-reasoner"),
    "openai_completions": ("demo-gpt-mini",),
    "openai_embeddings": ("demo-embed-small",),
    "openai_responses": ("demo-gpt-mini", "demo-reasoner"),
    "anthropic_messages": ("demo-claude", "demo-claude-mini"),
    "ollama_chat": ("llama3.2:1b", "qwen2.5:7b"),
    "ollama_generate": ("llama3.2:1b",),
    "ollama_embed": ("nomic-embed-text",),
    "llamacpp_completion": ("qwen2.5-coder-1.5b",),
    "gemini_generate": ("gemini-2.5-flash", "gemini-2.5-flash-reasoning"),
    "gemini_stream_generate": ("gemini-2.5-flash", "gemini-2.5-flash-reasoning"),
}
ALL_DEMO_MODELS: tuple[str, ...] = tuple(dict.fromkeys(m for ms in DEMO_MODELS.values() for m in ms))

_OPENAI_PATHS = {"/chat/completions": "openai_chat", "/completions": "openai_completions",
                 "/embeddings": "openai_embeddings", "/responses": "openai_responses"}
_GEMINI_PREFIXES = ("/v1beta/models/{model}", "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}")
FAMILY_PATHS: dict[str, str] = {
    # OpenAI, also without /v1 (as llama.cpp and vLLM serve it) and as Azure OpenAI serves it
    **{prefix + tail: family for tail, family in _OPENAI_PATHS.items()
       for prefix in ("/v1", "/openai/v1", "/openai/deployments/{model}")},
    **{tail: family for tail, family in _OPENAI_PATHS.items() if tail != "/responses"},
    "/v1/messages": "anthropic_messages",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/api/embed": "ollama_embed",
    "/completion": "llamacpp_completion",
    "/infill": "llamacpp_completion",
    **{prefix + ":generateContent": "gemini_generate" for prefix in _GEMINI_PREFIXES},
    **{prefix + ":streamGenerateContent": "gemini_stream_generate" for prefix in _GEMINI_PREFIXES},
}
HEADER_BACKEND = "x-demo-backend"
LLAMACPP_PREFIX = "/llamacpp"  # a llama.cpp server under this prefix (its own /metrics, /v1/models)
# The kinds of backend whose state endpoints the demo answers, with the path each is under: an
# upstream of each kind at the demo's URL plus that path gets llm_backend_* series.
STATE_KINDS = (("ollama", ""), ("vllm", ""), ("llamacpp", LLAMACPP_PREFIX), ("llamaswap", ""))
OLLAMA_FAMILIES = ("ollama_chat", "ollama_generate", "ollama_embed")


class CompactJSON(JSONResponse):
    """Probe answers, compact like the generation endpoints."""

    def render(self, content: object) -> bytes:
        return dumps(content)


def _generation(family: str, pacing: bool, state: DemoState):
    """The endpoint of one API family: faults first, then the body, then the rendered answer."""

    async def endpoint(request: Request) -> Delivery:
        try:
            faults = parse_faults(request.headers)
        except BadControl as bad:
            return Delivery(render_error(family, 400, str(bad)), Faults())
        if faults.status:
            return Delivery(render_error(family, faults.status, f"demo upstream: status {faults.status} "
                                         f"requested by {HEADER_STATUS}"), faults)
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the interpreter allows
            body = None
        if not isinstance(body, dict):
            return Delivery(render_error(family, 400, "demo upstream: the request body is not a JSON object"),
                            faults)
        # Gemini and Azure deployments name the model in the path
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))  # as if not under a Mount
        call = make_call(family, path, body, request.path_params.get("model") or DEMO_MODELS[family][0])
        call = replace(call, llamacpp=request.headers.get(HEADER_BACKEND) == "llamacpp",
                       sse=request.query_params.get("alt") == "sse")
        rendered = RENDERERS[family](call, not faults.no_usage)
        pace = pace_for(call.model, call.prompt.input, call.reasoning > 0) if pacing else None
        state.started(call.model, call.prompt.input, call.prompt.cached)
        return Delivery(rendered, faults, pace, call.output, finished=lambda: state.finished(call.model))

    return endpoint


async def openai_models(request: Request) -> CompactJSON:
    data = [{"id": m, "object": "model", "created": EPOCH, "owned_by": "llm-exporter-demo"}
            for m in ALL_DEMO_MODELS]
    return CompactJSON({"object": "list", "data": data})


async def ollama_tags(request: Request) -> CompactJSON:
    names = dict.fromkeys(m for f in OLLAMA_FAMILIES for m in DEMO_MODELS[f])
    models = [{
        "name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z", "size": 1_000_000_000,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                    "parameter_size": name.split(":")[-1].upper() if ":" in name else "",
                    "quantization_level": "Q4_K_M"},
    } for name in names for family in [name.split(":")[0].rstrip(".0123456789")]]
    return CompactJSON({"models": models})


async def ollama_version(request: Request) -> CompactJSON:
    return CompactJSON({"version": "0.9.0"})


async def llamacpp_health(request: Request) -> CompactJSON:
    return CompactJSON({"status": "ok"})


async def not_found(request: Request, exc: Exception) -> Delivery:
    """Unknown paths answer like OpenAI does: an invalid_request_error naming the URL."""
    body = openai_error(404, f"Invalid URL ({request.method} {request.url.path})")
    body["error"]["code"] = None
    return Delivery(json_body(body, 404), Faults())


def create_app(pacing: bool = False) -> Starlette:
    """The demo upstream as an ASGI app; pacing=False answers instantly (tests), True like a real backend."""
    quiet_deliberate_aborts()
    state = DemoState()
    generation = [Route(path, _generation(family, pacing, state), methods=["POST"])
                  for path, family in FAMILY_PATHS.items()]
    llamacpp_model = DEMO_MODELS["llamacpp_completion"][0]
    llamacpp = [  # a llama.cpp server of its own: /metrics differs from vLLM's
        *generation, Route("/health", llamacpp_health), Route("/v1/models", llamacpp_models(llamacpp_model)),
        Route("/slots", llamacpp_slots(state, llamacpp_model)),
        Route("/metrics", llamacpp_metrics(state, llamacpp_model)),
    ]
    routes = [
        *generation,
        Route("/v1/models", openai_models), Route("/api/tags", ollama_tags),
        Route("/api/version", ollama_version), Route("/health", llamacpp_health),
        Route("/api/ps", ollama_ps(state)), Route("/running", llamaswap_running(state)),
        Route("/metrics", vllm_metrics(state)), Route("/slots", llamacpp_slots(state, llamacpp_model)),
        Mount(LLAMACPP_PREFIX, routes=llamacpp),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found})
