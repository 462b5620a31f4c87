"""The API families: one table row per LLM API the proxy understands.

A family says where its usage lives, how its streams are framed, which event carries the first
generated content, and what its error bodies look like. The proxy and the usage tap read this
table; nothing else in the code branches on an API's name.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.observation import Usage

JSON = dict[str, Any]


@dataclass(frozen=True)
class ApiFamily:
    name: str  # the `api` label
    # POST paths routed to this family; `{model}` takes the model from the path, `{_}` any segment
    paths: tuple[str, ...]
    stream_default: bool  # whether a request without "stream" streams (Ollama: yes)
    usage: Callable[[JSON], Usage | None]  # usage in one decoded body or stream event
    has_content: Callable[[JSON], bool]  # does this stream event carry generated content?
    usage_markers: tuple[bytes, ...]  # bytes only a usage-bearing event contains
    usage_keys: tuple[str, ...]  # top-level keys holding usage, for bodies too big to decode
    error: Callable[[int, str], JSON]  # the family's error body for a status and message
    # OpenAI streams carry usage only when the client sets stream_options.include_usage.
    asks_stream_usage: bool = False
    # Which result of a response a usage report belongs to: reports of one result supersede
    # each other (cumulative), reports of different results add up (prompt lists, n > 1).
    # None: the report is a result of its own.
    result_of: Callable[[JSON], int | None] = lambda event: 0
    # Does this stream event (its raw data) end the answer? SDKs hang up right after it, before
    # the body's last bytes, so a disconnect after it is the normal end, not a 499.
    ends_stream: Callable[[bytes], bool] = lambda data: False
    # A stream whose content type is JSON (neither SSE nor NDJSON) is one JSON array of events.
    json_array_stream: bool = False


# --- usage extraction ------------------------------------------------------------------------


# A per-request token count beyond this is not a backend's report: no real call comes near a
# billion tokens of one type. Such a count, or a negative, fractional, boolean or non-numeric one,
# makes the whole response's usage implausible: it reports no tokens (llm_usage_missing_total and
# llm_telemetry_dropped_total{reason="implausible_usage"} count it). The bound keeps every sum
# downstream exact and small: counters, SQLite's 64-bit SUM over billions of rows, /api/usage.
MAX_TOKENS = 10**9
# Ollama's eval_duration is in nanoseconds: a generation of a few hours fits well below this.
MAX_NANOSECONDS = 2**53


class ImplausibleCount(ValueError):
    """A token count no real response carries."""


def _int(value: Any) -> int | None:
    """A token count: None when absent, else an int from 0 to MAX_TOKENS or ImplausibleCount."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    raise ImplausibleCount(value)


def _nanoseconds(value: Any) -> int | None:
    if type(value) is int and 0 < value <= MAX_NANOSECONDS:
        return value
    return None


def _checked(reader: Callable[[JSON], Usage | None]) -> Callable[[JSON], Usage | None]:
    """The usage reader, with an implausible count turning the whole answer into no usage."""
    @functools.wraps(reader)
    def read(body: JSON) -> Usage | None:
        try:
            return reader(body)
        except ImplausibleCount:
            return Usage(implausible=True)

    return read


def _rate(value: Any) -> float | None:
    """A positive, finite speed (JSON allows Infinity and NaN, and integers of any size)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        rate = float(value)
    except OverflowError:
        return None
    return rate if rate > 0 and math.isfinite(rate) else None


def _dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@_checked
def openai_usage(body: JSON) -> Usage | None:
    """Chat, completions, embeddings: `usage`, plus llama.cpp's `timings` where it adds them.

    llama.cpp's last chunk of a stream carries `timings` even when the client did not ask for
    usage, so they stand in for the usage the proxy then need not ask for.
    """
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return _timings_usage(body.get("timings"), None)
    return Usage(
        input=_int(usage.get("prompt_tokens")),
        cached_input=_int(_dict(usage.get("prompt_tokens_details")).get("cached_tokens")),
        output=_int(usage.get("completion_tokens")),
        reasoning=_int(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens")),
        output_tokens_per_second=_rate(_dict(body.get("timings")).get("predicted_per_second")),
    )


@_checked
def responses_usage(body: JSON) -> Usage | None:
    """The Responses API: `usage` of the response, which a stream sends in response.completed."""
    response = body.get("response")
    usage = (response if isinstance(response, dict) else body).get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        input=_int(usage.get("input_tokens")),
        cached_input=_int(_dict(usage.get("input_tokens_details")).get("cached_tokens")),
        output=_int(usage.get("output_tokens")),
        reasoning=_int(_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
    )


@_checked
def anthropic_usage(body: JSON) -> Usage | None:
    """Messages: input_tokens excludes cache reads and writes, so input adds them back.

    A stream reports it twice: message_start's message.usage, then message_delta's usage with
    the final output count (and, in newer API versions, the input counts again).
    """
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = _dict(body.get("message")).get("usage")
    if not isinstance(usage, dict):
        return None
    uncached = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    return Usage(
        input=None if uncached is None else uncached + (read or 0) + (write or 0),
        cached_input=read,
        cache_write_input=write,
        output=_int(usage.get("output_tokens")),
    )


@_checked
def ollama_usage(body: JSON) -> Usage | None:
    """Ollama's final line (done=true) or embed body; eval_duration and load_duration are in nanoseconds."""
    prompt = _int(body.get("prompt_eval_count"))
    output = _int(body.get("eval_count"))
    if prompt is None and output is None:
        return None
    duration = _nanoseconds(body.get("eval_duration"))
    speed = _rate(output / (duration / 1e9)) if output and duration else None
    load = _nanoseconds(body.get("load_duration"))
    return Usage(input=prompt, output=output, output_tokens_per_second=speed,
                 load_seconds=load / 1e9 if load else None)


def _timings_usage(timings: Any, evaluated: int | None) -> Usage | None:
    """llama.cpp's `timings`: prompt_n excludes the cache_n tokens reused from the prompt cache.

    `evaluated` (tokens_evaluated) is the whole prompt where the server reports it: servers of
    early 2025 have no cache_n, so prompt_n alone would leave the cached part out.
    """
    if not isinstance(timings, dict):
        return None
    prompt, cached = _int(timings.get("prompt_n")), _int(timings.get("cache_n"))
    if evaluated is None and prompt is not None:
        evaluated = prompt + (cached or 0)
    return Usage(
        input=evaluated,
        cached_input=cached,
        output=_int(timings.get("predicted_n")),
        output_tokens_per_second=_rate(timings.get("predicted_per_second")),
    )


@_checked
def llamacpp_usage(body: JSON) -> Usage | None:
    """llama.cpp's /completion: tokens_evaluated and timings, else the bare counts."""
    evaluated = _int(body.get("tokens_evaluated"))
    if (usage := _timings_usage(body.get("timings"), evaluated)) is not None:
        return usage
    output = _int(body.get("tokens_predicted"))
    if evaluated is None and output is None:
        return None
    return Usage(input=evaluated, output=output)


@_checked
def gemini_usage(body: JSON) -> Usage | None:
    """Gemini's usageMetadata. promptTokenCount includes the cached content; tool-use prompt
    tokens (e.g. search results fed back) are input too. candidatesTokenCount leaves the thinking
    tokens out, which are billed as output: output adds thoughtsTokenCount, its reasoning part.
    """
    usage = body.get("usageMetadata")
    if not isinstance(usage, dict):
        return None
    prompt, tool_use = _int(usage.get("promptTokenCount")), _int(usage.get("toolUsePromptTokenCount"))
    candidates, thoughts = _int(usage.get("candidatesTokenCount")), _int(usage.get("thoughtsTokenCount"))
    return Usage(
        input=None if prompt is None and tool_use is None else (prompt or 0) + (tool_use or 0),
        cached_input=_int(usage.get("cachedContentTokenCount")),
        output=None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0),
        reasoning=thoughts,
    )


def no_usage(body: JSON) -> Usage | None:
    return None


# --- which result a report belongs to ------------------------------------------------------------


# --- the event that ends a stream ----------------------------------------------------------------
# A quoted key and value can only be JSON structure: inside a string the quotes are escaped.


def openai_done(data: bytes) -> bool:
    return data == b"[DONE]"


def responses_done(data: bytes) -> bool:
    return b'"type":"response.completed"' in data


def anthropic_done(data: bytes) -> bool:
    return b'"type":"message_stop"' in data


def ollama_done(data: bytes) -> bool:
    return b'"done":true' in data


def openai_result(event: JSON) -> int | None:
    """The choice index; a usage-only chunk (no choices) is a report of its own: llama.cpp sends
    one per result for n > 1 and prompt lists, OpenAI one for the whole response."""
    choices = _list(event.get("choices"))
    index = _dict(choices[0]).get("index") if choices else None
    return index if isinstance(index, int) else None


def llamacpp_result(event: JSON) -> int | None:
    """`index` names the prompt of a prompt list; its partial events count up to its final one."""
    index = event.get("index")
    return index if isinstance(index, int) else 0


# --- first generated content ---------------------------------------------------------------------


def openai_chat_content(event: JSON) -> bool:
    """Any delta field but the role: content, reasoning, tool calls, refusal."""
    for choice in _list(event.get("choices")):
        delta = _dict(_dict(choice).get("delta"))
        if any(value for key, value in delta.items() if key != "role"):
            return True
    return False


def openai_completions_content(event: JSON) -> bool:
    return any(_dict(choice).get("text") for choice in _list(event.get("choices")))


def responses_content(event: JSON) -> bool:
    """response.output_text.delta, reasoning and function-argument deltas all count."""
    kind = event.get("type")
    return isinstance(kind, str) and kind.endswith(".delta")


def anthropic_content(event: JSON) -> bool:
    return event.get("type") == "content_block_delta"


def ollama_content(event: JSON) -> bool:
    message = _dict(event.get("message"))
    return bool(
        event.get("response") or event.get("thinking")
        or message.get("content") or message.get("thinking") or message.get("tool_calls")
    )


def llamacpp_content(event: JSON) -> bool:
    return bool(event.get("content"))


def gemini_content(event: JSON) -> bool:
    """Any non-empty part of a candidate's content: text, thought, function call."""
    for candidate in _list(event.get("candidates")):
        for part in _list(_dict(_dict(candidate).get("content")).get("parts")):
            if any(value for value in _dict(part).values()):
                return True
    return False


def no_content(event: JSON) -> bool:
    return False


# --- error bodies --------------------------------------------------------------------------------

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    408: ("invalid_request_error", "request_timeout"), 413: ("invalid_request_error", "request_too_large"),
    502: ("server_error", "bad_gateway"), 504: ("server_error", "gateway_timeout"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 408: "invalid_request_error", 413: "request_too_large",
}
_LLAMACPP_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 408: "invalid_request_error", 413: "invalid_request_error", 502: "unavailable_error", 504: "unavailable_error",
}


def openai_error(status: int, message: str) -> JSON:
    kind, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str) -> JSON:
    return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}


def ollama_error(status: int, message: str) -> JSON:
    return {"error": message}


def llamacpp_error(status: int, message: str) -> JSON:
    return {"error": {"code": status, "message": message, "type": _LLAMACPP_ERROR_TYPES.get(status, "server_error")}}


_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_error(status: int, message: str) -> JSON:
    """Google's error shape (google.rpc.Status as JSON)."""
    return {"error": {"code": status, "message": message, "status": _GEMINI_STATUSES.get(status, "INTERNAL")}}


# --- the table -----------------------------------------------------------------------------------

_TOKENS = (b'_tokens"',)  # prompt_tokens", input_tokens", output_tokens"... never inside a string
_OPENAI = (*_TOKENS, b'"timings"')  # llama.cpp's timings stand in for usage it was not asked for
_OLLAMA = (b'eval_count"',)
_OLLAMA_KEYS = ("prompt_eval_count", "eval_count", "eval_duration", "load_duration")
_GEMINI = (b'TokenCount"',)

# Azure OpenAI serves the OpenAI families under /openai/deployments/{deployment}/... (the
# deployment names the model) and /openai/v1/...; most OpenAI-compatible servers also without /v1.
_AZURE = "/openai/deployments/{model}"


def _openai_paths(tail: str) -> tuple[str, ...]:
    return (f"/v1{tail}", tail, f"/openai/v1{tail}", f"{_AZURE}{tail}")


# Gemini's model is in the path: the Gemini API's /v1beta/models/{model}:method and Vertex AI's
# /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:method.
_GEMINI_PREFIXES = ("/v1beta/models/{model}", "/v1/models/{model}",
                    "/v1/projects/{_}/locations/{_}/publishers/google/models/{model}",
                    "/v1beta1/projects/{_}/locations/{_}/publishers/google/models/{model}")

FAMILIES: tuple[ApiFamily, ...] = (
    ApiFamily("openai_chat", _openai_paths("/chat/completions"), False, openai_usage,
              openai_chat_content, _OPENAI, ("usage", "timings"), openai_error, asks_stream_usage=True,
              result_of=openai_result, ends_stream=openai_done),
    ApiFamily("openai_completions", _openai_paths("/completions"), False, openai_usage,
              openai_completions_content, _OPENAI, ("usage", "timings"), openai_error, asks_stream_usage=True,
              result_of=openai_result, ends_stream=openai_done),
    ApiFamily("openai_embeddings", _openai_paths("/embeddings"), False, openai_usage, no_content,
              _TOKENS, ("usage",), openai_error),
    ApiFamily("openai_responses", ("/v1/responses", "/openai/v1/responses", "/openai/responses",
                                   f"{_AZURE}/responses"), False, responses_usage, responses_content,
              _TOKENS, ("usage",), openai_error, ends_stream=responses_done),
    ApiFamily("anthropic_messages", ("/v1/messages",), False, anthropic_usage, anthropic_content,
              _TOKENS, ("usage",), anthropic_error, ends_stream=anthropic_done),
    ApiFamily("ollama_chat", ("/api/chat",), True, ollama_usage, ollama_content,
              _OLLAMA, _OLLAMA_KEYS, ollama_error, ends_stream=ollama_done),
    ApiFamily("ollama_generate", ("/api/generate",), True, ollama_usage, ollama_content,
              _OLLAMA, _OLLAMA_KEYS, ollama_error, ends_stream=ollama_done),
    ApiFamily("ollama_embed", ("/api/embed",), False, ollama_usage, no_content,
              _OLLAMA, ("prompt_eval_count", "load_duration"), ollama_error),
    ApiFamily("llamacpp_completion", ("/completion", "/infill"), False, llamacpp_usage, llamacpp_content,
              (b'"timings"', b'tokens_predicted"'), ("timings", "tokens_evaluated", "tokens_predicted"), llamacpp_error,
              result_of=llamacpp_result),
    ApiFamily("gemini_generate", tuple(p + ":generateContent" for p in _GEMINI_PREFIXES), False,
              gemini_usage, gemini_content, _GEMINI, ("usageMetadata",), gemini_error),
    # A stream: SSE with ?alt=sse, else one JSON array whose elements arrive as they are made.
    ApiFamily("gemini_stream_generate", tuple(p + ":streamGenerateContent" for p in _GEMINI_PREFIXES),
              True, gemini_usage, gemini_content, _GEMINI, ("usageMetadata",), gemini_error, json_array_stream=True),
)

OTHER = ApiFamily("other", (), False, no_usage, no_content, (), (), openai_error)

_BY_PATH = {path: family for family in FAMILIES for path in family.paths if "{" not in path}


def _template(path: str) -> re.Pattern[str]:
    """A path with `{model}` (one segment up to a colon) and `{_}` (any one segment) as a regex."""
    pattern = re.escape(path).replace(r"\{model\}", "(?P<model>[^/:]{1,256})").replace(r"\{_\}", "[^/]+")
    return re.compile(pattern)


_TEMPLATES = tuple((_template(path), family) for family in FAMILIES for path in family.paths if "{" in path)

API_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES) + (OTHER.name,)


def route(method: str, path: str) -> tuple[ApiFamily, str | None]:
    """The family of a request and the model its path names (Gemini, Azure deployments), if any.

    Anything not in the table is passed through as `other`.
    """
    if method != "POST":
        return OTHER, None
    path = path.rstrip("/") or "/"
    if (family := _BY_PATH.get(path)) is not None:
        return family, None
    for pattern, family in _TEMPLATES:
        if (match := pattern.fullmatch(path)) is not None:
            return family, match.group("model")
    return OTHER, None


def family_for(method: str, path: str) -> ApiFamily:
    return route(method, path)[0]
