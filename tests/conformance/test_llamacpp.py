"""Conformance: the proxy in front of a real llama-server, driven by the real openai and anthropic SDKs.

For every call: the bytes the client gets through the proxy equal those of a direct call (fields
the server itself varies between two direct calls masked), the proxy's token counters move by
exactly llama-server's own /metrics counters and by the response's own usage, and the request
log's row holds the same numbers. Generations are a few tokens of a tiny random model at
temperature 0 with a fixed seed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conformance.exchange import Call, Clients, masked, volatile_keys
from tests.conformance.llama_server import MODEL_ALIAS, SAMPLING, LlamaServer, next_second, request_log_row
from tests.scrape import Scrape

# llama-server picks one of its two slots by what each holds; the slot shows in the answer
# (id_slot, cache_n), so single-prompt native calls name theirs.
SLOT = {"id_slot": 0}


def _consume(result: Any) -> Any:
    """Read a whole SDK stream (or return a plain result)."""
    if hasattr(result, "__iter__") and not isinstance(result, (dict, list, str, bytes)) and hasattr(result, "response"):
        return list(result)
    return result


def _native(path: str, body: dict) -> Call:
    def call(c: Clients) -> Any:
        if body.get("stream"):
            with c.http.stream("POST", path, json=body) as response:
                return list(response.iter_bytes())
        return c.http.post(path, json=body).json()
    return call


@dataclass
class Case:
    name: str
    call: Call
    # False where llama.cpp's answer reports less than it did: a non-streamed n > 1 or prompt
    # list on the OpenAI paths carries the first result's usage only (the proxy counts what
    # the answer says; the backend's counters say more).
    usage_complete: bool = True
    copies: int = 1  # n: every copy's report repeats the shared prompt
    # Results generated side by side in llama-server's slots interleave differently on every
    # call: their events are compared result by result.
    interleaved: bool = False

    def __str__(self) -> str:
        return self.name


def _chat(stream: bool, include_usage: bool | None = None, **extra: Any) -> Call:
    def call(c: Clients) -> Any:
        options = {} if include_usage is None else {"stream_options": {"include_usage": include_usage}}
        return _consume(c.openai.chat.completions.create(
            model=MODEL_ALIAS, messages=[{"role": "user", "content": "hello there"}], max_tokens=4,
            stream=stream, **options, **SAMPLING, **extra))
    return call


def _completions(stream: bool, include_usage: bool | None = None, prompt: Any = "once upon a time") -> Call:
    def call(c: Clients) -> Any:
        options = {} if include_usage is None else {"stream_options": {"include_usage": include_usage}}
        return _consume(c.openai.completions.create(
            model=MODEL_ALIAS, prompt=prompt, max_tokens=4, stream=stream, **options, **SAMPLING))
    return call


def _responses(stream: bool) -> Call:
    def call(c: Clients) -> Any:
        return _consume(c.openai.responses.create(
            model=MODEL_ALIAS, input="tell me", max_output_tokens=4, stream=stream, extra_body=SAMPLING))
    return call


def _messages(stream: bool) -> Call:
    def call(c: Clients) -> Any:
        return _consume(c.anthropic.messages.create(
            model=MODEL_ALIAS, max_tokens=4, messages=[{"role": "user", "content": "hi claude"}],
            stream=stream, extra_body=SAMPLING))
    return call


CASES = [
    Case("chat", _chat(False)),
    Case("chat-stream", _chat(True)),
    Case("chat-stream-usage", _chat(True, True)),
    Case("chat-stream-no-usage", _chat(True, False)),
    Case("chat-n2", _chat(False, n=2), usage_complete=False),  # one report, for the first result
    Case("chat-stream-n2", _chat(True, n=2), copies=2, interleaved=True),
    Case("chat-stream-usage-n2", _chat(True, True, n=2), copies=2, interleaved=True),
    Case("completions", _completions(False)),
    Case("completions-stream", _completions(True)),
    Case("completions-stream-usage", _completions(True, True)),
    Case("completions-prompt-list", _completions(False, prompt=["one two", "three four five"]),
         usage_complete=False),
    Case("completions-stream-prompt-list", _completions(True, prompt=["one two", "three four five"]),
         interleaved=True),
    Case("responses", _responses(False)),
    Case("responses-stream", _responses(True)),
    Case("messages", _messages(False)),
    Case("messages-stream", _messages(True)),
    Case("native", _native("/completion", {"prompt": "the cat", "n_predict": 4, **SAMPLING, **SLOT})),
    Case("native-stream", _native("/completion", {"prompt": "the cat", "n_predict": 4, "stream": True,
                                                   **SAMPLING, **SLOT})),
    Case("native-prompt-list", _native("/completion", {"prompt": ["a b", "c d e"], "n_predict": 3, **SAMPLING})),
    Case("native-stream-prompt-list", _native("/completion", {"prompt": ["a b", "c d e"], "n_predict": 3,
                                                              "stream": True, **SAMPLING}), interleaved=True),
    Case("infill", _native("/infill", {"input_prefix": "def f(", "input_suffix": "):", "prompt": "",
                                       "n_predict": 3, **SAMPLING, **SLOT})),
    Case("infill-stream", _native("/infill", {"input_prefix": "x =", "input_suffix": "", "prompt": "",
                                              "n_predict": 3, "stream": True, **SAMPLING, **SLOT})),
    Case("chat-no-v1", _native("/chat/completions", {"model": MODEL_ALIAS, "max_tokens": 3, **SAMPLING,
                                                     "messages": [{"role": "user", "content": "no prefix"}]})),
    Case("completions-no-v1-stream", _native("/completions", {"model": MODEL_ALIAS, "prompt": "no prefix",
                                                              "max_tokens": 3, "stream": True, **SAMPLING})),
]

# With kind openai the proxy asks llama-server for usage the client did not ask for and hides it
# again; llama.cpp then moves `timings` from the last chunk into the hidden one. Kind llamacpp
# (the right kind for llama-server) asks for nothing and passes every byte as is.
TIMINGS_MOVE_UNDER_KIND_OPENAI = {"chat-stream", "chat-stream-no-usage", "chat-stream-n2"}


def _llama_tokens(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """llama-server's counters: prompt_tokens_total excludes the tokens reused from its cache."""
    delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
    return {"input": delta["prompt_tokens_total"] + delta["prompt_tokens_cached_total"],
            "cached_input": delta["prompt_tokens_cached_total"], "output": delta["tokens_predicted_total"]}


def _proxy_tokens(before: Scrape, after: Scrape) -> dict[str, int]:
    return {t: int(after.value("llm_tokens_total", type=t) - before.value("llm_tokens_total", type=t))
            for t in ("input", "cached_input", "output")}


def _usage_in(body: bytes) -> dict[str, int]:
    """The response's own usage, read from its bytes: every usage report added up per result.

    OpenAI-style `usage`, Responses/Anthropic usage, llama.cpp timings; a JSON array is a list
    of results. Independent of the proxy's own reader on purpose.
    """
    values: list[Any] = []
    text = body.decode()
    if text.lstrip().startswith(("{", "[")):
        parsed = json.loads(text)
        values = parsed if isinstance(parsed, list) else [parsed]
    else:
        for line in text.splitlines():
            if line.startswith("data: ") and line[6:].strip() not in ("", "[DONE]"):
                values.append(json.loads(line[6:]))
    per_result: dict[Any, dict[str, int]] = {}
    for n, value in enumerate(values):
        if not isinstance(value, dict):
            continue  # llama.cpp opens a multi-result stream with `data: null`
        usage = value.get("usage") or (value.get("response") or {}).get("usage") \
            or (value.get("message") or {}).get("usage")
        timings = value.get("timings")
        choices = value.get("choices") or []
        result = choices[0].get("index") if choices else value.get("index", f"own{n}")
        if isinstance(usage, dict) and ("prompt_tokens" in usage or "input_tokens" in usage):
            found = {"input": usage.get("prompt_tokens", usage.get("input_tokens")),
                     "output": usage.get("completion_tokens", usage.get("output_tokens"))}
            if "cache_read_input_tokens" in usage:
                found["input"] += usage["cache_read_input_tokens"]
        elif isinstance(usage, dict) and "output_tokens" in usage:  # Anthropic's message_delta
            found = {**per_result.get(result, {}), "output": usage["output_tokens"]}
        elif isinstance(timings, dict) and "prompt_n" in timings:
            found = {"input": value.get("tokens_evaluated", timings["prompt_n"] + timings.get("cache_n", 0)),
                     "output": timings["predicted_n"]}
        else:
            continue
        per_result[result if value.get("type") != "message_start" else "message"] = found
        if value.get("type") == "message_delta":
            per_result.pop(result, None)
            per_result["message"] = {**per_result.get("message", {}), "output": usage["output_tokens"]}
    return {t: sum(r.get(t) or 0 for r in per_result.values()) for t in ("input", "output")}


def _by_result(body: bytes) -> bytes:
    """A stream's events grouped by result (stable within each), for results made side by side."""
    events = [e for e in body.split(b"\n\n") if e]
    def result(event: bytes) -> int:
        found = re.search(rb'"index":(\d+)', event)
        return int(found.group(1)) if found else -1
    return b"\n\n".join(sorted(events, key=result))


def _assert_same(got: bytes, expected: bytes) -> None:
    """Equal bytes, or a failure showing where they part."""
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"differ at {at}: {got[at - 120:at + 60]!r} != {expected[at - 120:at + 60]!r}")


def _call_both_ways(case: Case, llama: LlamaServer, proxy_url: str):
    """Two direct calls a clock second apart, the proxied one, and a third direct call after it:
    the direct answers show which fields llama-server varies from call to call by itself."""
    direct = Clients(llama.url)
    case.call(direct)
    next_second()
    case.call(direct)
    proxied = Clients(proxy_url)
    llama_before, proxy_before = llama.metrics(), Scrape.of(proxy_url)
    case.call(proxied)
    llama_after, proxy_after = llama.metrics(), Scrape.of(proxy_url)
    case.call(direct)
    return (direct.transport.responses[-3:], proxied.last, _llama_tokens(llama_before, llama_after),
            _proxy_tokens(proxy_before, proxy_after))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_same_bytes_and_exact_tokens(case: Case, llama: LlamaServer, proxy):
    proxy_url, kind = proxy
    directs, got, llama_tokens, proxy_tokens = _call_both_ways(case, llama, proxy_url)
    first, second, third = directs
    assert got.status == second.status == 200
    bodies = [bytes(r.body) for r in (first, second, got, third)]
    if case.interleaved:
        bodies = [_by_result(body) for body in bodies]
    keys = volatile_keys(bodies[0], bodies[1]) | volatile_keys(bodies[1], bodies[3])
    if not (kind == "openai" and case.name in TIMINGS_MOVE_UNDER_KIND_OPENAI):
        # like the direct call just before it, or the one just after (the slot's cache moves on)
        if masked(bodies[2], keys) != masked(bodies[3], keys):
            _assert_same(masked(bodies[2], keys), masked(bodies[1], keys))
    own = _usage_in(bodies[2])
    own["input"] //= case.copies  # each copy's report repeats the prompt llama-server read once
    if own["input"] or own["output"]:  # what the client got reports usage: the proxy counts exactly it
        assert {t: proxy_tokens[t] for t in own} == own
    if case.usage_complete:
        assert proxy_tokens == llama_tokens
    row = request_log_row(proxy_url, got.headers["x-request-id"])
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (
        proxy_tokens["input"], proxy_tokens["cached_input"], proxy_tokens["output"])
    assert row["status_code"] == 200
