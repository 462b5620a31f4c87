"""The wire formats: what each API family's real backend sends, built from a `Call`.

One render function per family, each returning the whole response as pieces (one piece per
SSE event / NDJSON line, or a single JSON body). Pacing, faults and encoding are applied later by
`delivery`, so these functions stay pure and the bytes stay deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from exporter.demo.upstream.rules import JSON, VOCABULARY, Call, make_call

# Simulated backend speed, reported in timings whatever the pacing: 50 tokens/s generation,
# 1000 tokens/s prompt processing, a fixed model load time.
TOKEN_MS = 20
PROMPT_TOKEN_MS = 1
LOAD_NS = 10_000_000
EMBEDDING_DIMENSIONS = 8

SSE = "text/event-stream; charset=utf-8"
NDJSON = "application/x-ndjson"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Piece:
    """One body chunk as sent; `token` marks a chunk carrying one generated token (paced so)."""

    data: bytes
    token: bool = False


@dataclass(frozen=True)
class Rendered:
    status: int
    content_type: str
    pieces: tuple[Piece, ...]
    stream: bool
    headers: tuple[tuple[str, str], ...] = ()


def dumps(value: Any) -> bytes:
    """Compact JSON, the way OpenAI serializes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def data_event(value: Any) -> bytes:
    return b"data: " + (value if isinstance(value, bytes) else dumps(value)) + b"\n\n"


def named_event(value: JSON) -> bytes:
    return b"event: " + value["type"].encode() + b"\n" + data_event(value)


def json_body(value: JSON, status: int = 200) -> Rendered:
    return Rendered(status, JSON_TYPE, (Piece(dumps(value)),), False)


def stream_of(content_type: str, pieces: list[Piece]) -> Rendered:
    return Rendered(200, content_type, tuple(pieces), True)


# --- OpenAI chat and completions ---------------------------------------------------------------


def openai_usage(call: Call) -> JSON:
    prompt = call.prompt
    return {
        "prompt_tokens": prompt.input, "completion_tokens": call.output,
        "total_tokens": prompt.input + call.output,
        "prompt_tokens_details": {"cached_tokens": prompt.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": call.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def include_usage(call: Call) -> bool:
    options = call.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def render_openai(call: Call, usage: bool) -> Rendered:
    """Chat completions and legacy completions share ids, usage and the [DONE] framing."""
    chat = call.family == "openai_chat"
    head = {
        "id": ("chatcmpl-" if chat else "cmpl-") + call.ident(),
        "object": ("chat.completion" if chat else "text_completion") + (".chunk" if chat and call.stream else ""),
        "created": call.created, "model": call.model,
    }
    if chat:
        head["service_tier"] = "default"
    head["system_fingerprint"] = "fp_" + call.ident(24, 10)
    if not call.stream:
        if chat:
            message = {"role": "assistant", "content": call.text(), "refusal": None, "annotations": []}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        else:
            choice = {"text": call.text(), "index": 0, "logprobs": None, "finish_reason": "stop"}
        return json_body({**head, "choices": [choice]} | ({"usage": openai_usage(call)} if usage else {}))

    with_usage = usage and include_usage(call)
    tail = {"usage": None} if with_usage else {}

    def chunk(choices: list[JSON]) -> bytes:
        return data_event({**head, "choices": choices, **tail})

    def choice(part: Any, finish: str | None) -> JSON:
        if chat:
            return {"index": 0, "delta": part, "logprobs": None, "finish_reason": finish}
        return {"text": part, "index": 0, "logprobs": None, "finish_reason": finish}

    # llama-server puts its timings on the last chunk: the usage chunk when asked for, else the
    # finishing one (so a proxy asking for usage the client did not would move them).
    timings = {"timings": llamacpp_timings(call)} if call.llamacpp and usage else {}
    pieces = []
    if chat:
        pieces.append(Piece(chunk([choice({"role": "assistant", "content": "", "refusal": None}, None)])))
    for delta in call.deltas():
        pieces.append(Piece(chunk([choice({"content": delta} if chat else delta, None)]), token=True))
    finish = {**head, "choices": [choice({} if chat else "", "stop")], **tail}
    pieces.append(Piece(data_event(finish if with_usage else finish | timings)))
    if with_usage:
        pieces.append(Piece(data_event({**head, "choices": [], "usage": openai_usage(call)} | timings)))
    pieces.append(Piece(data_event(b"[DONE]")))
    return stream_of(SSE, pieces)


# --- Embeddings --------------------------------------------------------------------------------


def embedding(model: str, text: str) -> list[float]:
    """A deterministic unit vector for one input."""
    digest = hashlib.sha256(f"{model}\n{text}".encode()).digest()
    raw = [b / 127.5 - 1.0 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def embedding_inputs(call: Call) -> list[str]:
    """One entry per input; token-id lists are keyed by their JSON text."""
    given = call.body.get("input")
    items = given if isinstance(given, list) and not all(isinstance(i, int) for i in given) else [given]
    return [item if isinstance(item, str) else json.dumps(item) for item in items]


def render_openai_embeddings(call: Call, usage: bool) -> Rendered:
    data = [{"object": "embedding", "index": i, "embedding": embedding(call.model, text)}
            for i, text in enumerate(embedding_inputs(call))]
    body: JSON = {"object": "list", "data": data, "model": call.model}
    if usage:
        body["usage"] = {"prompt_tokens": call.prompt.input, "total_tokens": call.prompt.input}
    return json_body(body)


def render_ollama_embed(call: Call, usage: bool) -> Rendered:
    body: JSON = {"model": call.model,
                  "embeddings": [embedding(call.model, text) for text in embedding_inputs(call)]}
    if usage:
        prompt_ns = call.prompt.input * PROMPT_TOKEN_MS * 1_000_000
        body |= {"total_duration": LOAD_NS + prompt_ns, "load_duration": LOAD_NS,
                 "prompt_eval_count": call.prompt.input}
    return json_body(body)


# --- OpenAI Responses --------------------------------------------------------------------------


def responses_usage(call: Call) -> JSON:
    return {
        "input_tokens": call.prompt.input,
        "input_tokens_details": {"cached_tokens": call.prompt.cached},
        "output_tokens": call.output,
        "output_tokens_details": {"reasoning_tokens": call.reasoning},
        "total_tokens": call.prompt.input + call.output,
    }


def render_responses(call: Call, usage: bool) -> Rendered:
    """A reasoning model first emits a (hidden) reasoning item, then the message."""
    msg_id, text = "msg_" + call.ident(0, 48), call.text()
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    message = {"id": msg_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    items = ([{"id": "rs_" + call.ident(16, 48), "type": "reasoning", "summary": []}]
             if call.reasoning else []) + [message]
    budget = call.body.get("max_output_tokens")
    instructions = call.body.get("instructions")

    def response(status: str, output: list[JSON], final: bool) -> JSON:
        return {
            "id": "resp_" + call.ident(8, 48), "object": "response", "created_at": call.created,
            "status": status, "error": None, "incomplete_details": None,
            "instructions": instructions if isinstance(instructions, str) else None,
            "max_output_tokens": budget if isinstance(budget, int) else None,
            "model": call.model, "output": output, "parallel_tool_calls": True,
            "previous_response_id": None, "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled",
            "usage": responses_usage(call) if final and usage else None,
            "user": None, "metadata": {},
        }

    if not call.stream:
        return json_body(response("completed", items, True))

    events: list[tuple[JSON, bool]] = []

    def emit(kind: str, token: bool = False, **fields: Any) -> None:
        events.append(({"type": kind, "sequence_number": len(events), **fields}, token))

    emit("response.created", response=response("in_progress", [], False))
    emit("response.in_progress", response=response("in_progress", [], False))
    index = len(items) - 1
    if call.reasoning:
        emit("response.output_item.added", output_index=0, item=items[0])
        emit("response.output_item.done", output_index=0, item=items[0])
    started = {**message, "status": "in_progress", "content": []}
    emit("response.output_item.added", output_index=index, item=started)
    where = {"item_id": msg_id, "output_index": index, "content_index": 0}
    emit("response.content_part.added", **where, part={**part, "text": ""})
    for delta in call.deltas():
        emit("response.output_text.delta", True, **where, delta=delta, logprobs=[])
    emit("response.output_text.done", **where, text=text, logprobs=[])
    emit("response.content_part.done", **where, part=part)
    emit("response.output_item.done", output_index=index, item=message)
    emit("response.completed", response=response("completed", items, True))
    return stream_of(SSE, [Piece(named_event(event), token) for event, token in events])


# --- Anthropic Messages ------------------------------------------------------------------------


def anthropic_usage(call: Call, output: int) -> JSON:
    read, write = call.prompt.cached, call.cache_write
    return {"input_tokens": call.prompt.input - read - write, "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read, "output_tokens": output}


def render_anthropic(call: Call, usage: bool) -> Rendered:
    message: JSON = {"id": "msg_" + call.ident(), "type": "message", "role": "assistant",
                     "model": call.model, "content": [{"type": "text", "text": call.text()}],
                     "stop_reason": "end_turn", "stop_sequence": None}
    if not call.stream:
        return json_body(message | ({"usage": anthropic_usage(call, call.output)} if usage else {}))
    start = message | {"content": [], "stop_reason": None}
    if usage:  # like the real API, message_start counts the first output token only
        start["usage"] = anthropic_usage(call, min(call.output, 1))
    events: list[tuple[JSON, bool]] = [
        ({"type": "message_start", "message": start}, False),
        ({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, False),
        ({"type": "ping"}, False),
    ]
    events += [({"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": delta}}, True) for delta in call.deltas()]
    final: JSON = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    if usage:
        final["usage"] = {"output_tokens": call.output}
    events += [({"type": "content_block_stop", "index": 0}, False), (final, False),
               ({"type": "message_stop"}, False)]
    return stream_of(SSE, [Piece(named_event(event), token) for event, token in events])


# --- Ollama ------------------------------------------------------------------------------------


def ollama_time(call: Call, step: int) -> str:
    """created_at of the step-th line, deterministic: the request's time plus 20 ms per token."""
    moment = datetime.fromtimestamp(call.created, timezone.utc) + timedelta(milliseconds=TOKEN_MS * step)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ollama_counts(call: Call) -> JSON:
    prompt_ns = call.prompt.input * PROMPT_TOKEN_MS * 1_000_000
    eval_ns = call.output * TOKEN_MS * 1_000_000
    return {"total_duration": LOAD_NS + prompt_ns + eval_ns, "load_duration": LOAD_NS,
            "prompt_eval_count": call.prompt.input, "prompt_eval_duration": prompt_ns,
            "eval_count": call.output, "eval_duration": eval_ns}


def render_ollama(call: Call, usage: bool) -> Rendered:
    chat = call.family == "ollama_chat"

    def line(step: int, text: str, done: bool) -> JSON:
        content = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        body = {"model": call.model, "created_at": ollama_time(call, step), **content}
        if not done:
            return body | {"done": False}
        return body | {"done_reason": "stop", "done": True} | (ollama_counts(call) if usage else {})

    if not call.stream:
        return json_body(line(call.visible, call.text(), True))
    pieces = [Piece(dumps(line(i, delta, False)) + b"\n", token=True) for i, delta in enumerate(call.deltas())]
    pieces.append(Piece(dumps(line(call.visible, "", True)) + b"\n"))
    return stream_of(NDJSON, pieces)


# --- llama.cpp server --------------------------------------------------------------------------


def llamacpp_timings(call: Call) -> JSON:
    prompt_n = call.prompt.input - call.prompt.cached
    return {
        "cache_n": call.prompt.cached,
        "prompt_n": prompt_n, "prompt_ms": float(prompt_n * PROMPT_TOKEN_MS),
        "prompt_per_token_ms": float(PROMPT_TOKEN_MS), "prompt_per_second": 1000.0 / PROMPT_TOKEN_MS,
        "predicted_n": call.output, "predicted_ms": float(call.output * TOKEN_MS),
        "predicted_per_token_ms": float(TOKEN_MS), "predicted_per_second": 1000.0 / TOKEN_MS,
    }


def render_llamacpp(call: Call, usage: bool) -> Rendered:
    """/completion and /infill: SSE `data:` events without [DONE]; the last one has stop=true.

    A prompt list gets one result per prompt, each with its `index`: a JSON array, or the
    results' events one after the other.
    """
    prompts = call.body.get("prompt")
    if not (isinstance(prompts, list) and len(prompts) > 1 and all(isinstance(p, str) for p in prompts)):
        return _render_llamacpp_one(call, usage, 0)
    results = [_render_llamacpp_one(make_call(call.family, call.path, {**call.body, "prompt": prompt}, call.model),
                                    usage, index) for index, prompt in enumerate(prompts)]
    if call.stream:
        return Rendered(200, "text/event-stream", tuple(p for r in results for p in r.pieces), True)
    return Rendered(200, JSON_TYPE, (Piece(b"[" + b",".join(r.pieces[0].data for r in results) + b"]"),), False)


def _render_llamacpp_one(call: Call, usage: bool, index: int) -> Rendered:
    budget = call.body.get("n_predict")
    final: JSON = {
        "index": index, "content": "" if call.stream else call.text(), "tokens": [], "id_slot": 0,
        "stop": True, "model": call.model,
    }
    if usage:
        final |= {"tokens_predicted": call.output, "tokens_evaluated": call.prompt.input}
    final |= {
        "generation_settings": {"n_predict": budget if isinstance(budget, int) else -1, "seed": 4294967295,
                                "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
                                "stream": call.stream},
        "prompt": " ".join(call.prompt.texts), "has_new_line": False, "truncated": False,
        "stop_type": "eos", "stopping_word": "",
    }
    if usage:
        final |= {"tokens_cached": call.prompt.cached, "timings": llamacpp_timings(call)}
    if not call.stream:
        return json_body(final)
    pieces = []
    start = int(call.digest[8:16], 16)
    for i, delta in enumerate(call.deltas()):
        partial: JSON = {"index": index, "content": delta, "tokens": [1000 + (start + 7 * i) % len(VOCABULARY)],
                         "stop": False, "id_slot": 0}
        if usage:
            partial |= {"tokens_predicted": i + 1, "tokens_evaluated": call.prompt.input}
        pieces.append(Piece(data_event(partial), token=True))
    pieces.append(Piece(data_event(final)))
    return Rendered(200, "text/event-stream", tuple(pieces), True)


# --- Google Gemini ------------------------------------------------------------------------------


def gemini_usage(call: Call, output: int) -> JSON:
    """usageMetadata: candidatesTokenCount leaves the thinking (reasoning) tokens out."""
    thoughts = min(call.reasoning, output)
    usage: JSON = {"promptTokenCount": call.prompt.input, "candidatesTokenCount": output - thoughts,
                   "totalTokenCount": call.prompt.input + output}
    if call.prompt.cached:
        usage["cachedContentTokenCount"] = call.prompt.cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def render_gemini(call: Call, usage: bool) -> Rendered:
    """generateContent: one JSON body. streamGenerateContent: one chunk per token, SSE (alt=sse,
    `data:` events ending in CRLF CRLF) or a JSON array; each chunk's usageMetadata counts up."""
    def chunk(text: str, output: int, finish: bool) -> JSON:
        candidate: JSON = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = "STOP"
        body: JSON = {"candidates": [candidate]}
        if usage:
            body["usageMetadata"] = gemini_usage(call, output)
        return body | {"modelVersion": call.model, "responseId": call.ident(0, 22)}

    if not call.stream:
        return json_body(chunk(call.text(), call.output, True))
    deltas = call.deltas() or [""]
    bodies = [chunk(d, call.reasoning + i + 1 if i < len(deltas) - 1 else call.output, i == len(deltas) - 1)
              for i, d in enumerate(deltas)]
    if call.sse:
        return stream_of(SSE, [Piece(b"data: " + dumps(b) + b"\r\n\r\n", token=True) for b in bodies])
    pieces = [Piece((b"[" if i == 0 else b",\r\n") + dumps(b), token=True) for i, b in enumerate(bodies)]
    return Rendered(200, JSON_TYPE, (*pieces, Piece(b"]")), True)


RENDERERS: dict[str, Callable[[Call, bool], Rendered]] = {
    "openai_chat": render_openai,
    "openai_completions": render_openai,
    "openai_embeddings": render_openai_embeddings,
    "openai_responses": render_responses,
    "anthropic_messages": render_anthropic,
    "ollama_chat": render_ollama,
    "ollama_generate": render_ollama,
    "ollama_embed": render_ollama_embed,
    "llamacpp_completion": render_llamacpp,
    "gemini_generate": render_gemini,
    "gemini_stream_generate": render_gemini,
}


# --- Errors ------------------------------------------------------------------------------------

OPENAI_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error",
                      429: "requests"}
OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
ANTHROPIC_ERROR_TYPES = {401: "authentication_error", 402: "billing_error", 403: "permission_error",
                         404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                         504: "timeout_error", 529: "overloaded_error"}
LLAMACPP_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                        429: "unavailable_error", 501: "not_supported_error", 503: "unavailable_error"}


def openai_error(status: int, message: str) -> JSON:
    kind = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": OPENAI_ERROR_CODES.get(status)}}


def anthropic_error(status: int, message: str) -> JSON:
    kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def ollama_error(status: int, message: str) -> JSON:
    return {"error": message}


def llamacpp_error(status: int, message: str) -> JSON:
    kind = LLAMACPP_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"code": status, "message": message, "type": kind}}


GEMINI_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                   429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(status: int, message: str) -> JSON:
    return {"error": {"code": status, "message": message,
                      "status": GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")}}


ERROR_BODIES: dict[str, Callable[[int, str], JSON]] = {
    "openai_chat": openai_error, "openai_completions": openai_error, "openai_embeddings": openai_error,
    "openai_responses": openai_error, "anthropic_messages": anthropic_error,
    "ollama_chat": ollama_error, "ollama_generate": ollama_error, "ollama_embed": ollama_error,
    "llamacpp_completion": llamacpp_error,
    "gemini_generate": gemini_error, "gemini_stream_generate": gemini_error,
}


def render_error(family: str, status: int, message: str) -> Rendered:
    """The family's own error body; a 429 tells the client when to retry, as real APIs do."""
    rendered = json_body(ERROR_BODIES[family](status, message), status)
    if status == 429:
        return Rendered(rendered.status, rendered.content_type, rendered.pieces, False, (("retry-after", "1"),))
    return rendered
