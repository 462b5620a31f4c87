"""The demo upstream under real uvicorn: wire framing per API family, token rules, fault controls.

Expected numbers are worked out by hand from the rules in exporter.demo.upstream's docstring
(a token is a whitespace-separated word), not by calling the module's own helpers.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import socket
import time
import zlib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.upstream import ALL_DEMO_MODELS, DEMO_MODELS, create_app
from exporter.demo.upstream.delivery import Encoder, pace_for, speed_class
from tests.servers import serve

SYSTEM = {"role": "system", "content": "you are terse"}  # 3 words
USER_1 = {"role": "user", "content": "what is a proxy"}  # 4 words
ASSISTANT = {"role": "assistant", "content": [{"type": "text", "text": "a middleman"}]}  # 2 words
USER_2 = {"role": "user", "content": "and an exporter then"}  # 4 words
CONVERSATION = [SYSTEM, USER_1, ASSISTANT, USER_2]  # 13 words; prefix (all but last) 9


@pytest.fixture(scope="module")
def base_url():
    with serve(create_app()) as url:
        yield url


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def sse(text: str) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data); asserts the exact framing on the way."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        name = lines.pop(0)[len("event: "):] if lines[0].startswith("event: ") else None
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        events.append((name, lines[0][len("data: "):]))
    return events


def ndjson(text: str) -> list[dict]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text[:-1].split("\n")]


def words(text: str) -> int:
    return len(text.split())


def assert_compact(raw: str) -> None:
    assert ", " not in raw.replace('", "', "") and '": ' not in raw


# --- OpenAI chat completions -------------------------------------------------------------------


def test_chat_json_usage_follows_the_token_rules(client):
    r = client.post("/v1/chat/completions", json={"model": "demo-gpt-mini", "messages": CONVERSATION})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert_compact(r.text)
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "demo-gpt-mini"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert words(choice["message"]["content"]) == 12
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (13, 12, 25)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 9
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_chat_stream_without_include_usage_has_no_usage_at_all(client):
    r = client.post("/v1/chat/completions", json={
        "model": "demo-gpt-large", "messages": [USER_1], "stream": True, "max_tokens": 5})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(contents) == 5 and words("".join(contents)) == 5
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert len({c["id"] for c in chunks}) == 1


def test_chat_stream_with_include_usage_adds_a_usage_chunk_before_done(client):
    r = client.post("/v1/chat/completions", json={
        "model": "demo-gpt-mini", "messages": CONVERSATION, "stream": True,
        "stream_options": {"include_usage": True}, "max_completion_tokens": 4})
    events = sse(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 13 and last["usage"]["completion_tokens"] == 4
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 9
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert len(chunks) == 1 + 4 + 1 + 1  # role, one per token, finish, usage


def test_reasoning_models_report_a_quarter_of_output_as_reasoning(client):
    r = client.post("/v1/chat/completions", json={
        "model": "demo-reasoner", "messages": [USER_1], "max_tokens": 10})
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 10
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2
    assert words(r.json()["choices"][0]["message"]["content"]) == 8  # reasoning is not shown

    r = client.post("/v1/completions", json={"model": "demo-reasoner", "prompt": "go", "max_tokens": 8})
    assert r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2

    r = client.post("/v1/responses", json={"model": "demo-reasoner", "input": "go", "max_output_tokens": 9})
    body = r.json()
    assert body["usage"]["output_tokens"] == 9 and body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    assert [item["type"] for item in body["output"]] == ["reasoning", "message"]


# --- OpenAI completions and embeddings ---------------------------------------------------------


def test_completions_json_and_stream(client):
    request = {"model": "demo-gpt-mini", "prompt": "once upon a time", "max_tokens": 3}
    body = client.post("/v1/completions", json=request).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert words(body["choices"][0]["text"]) == 3
    assert body["usage"]["prompt_tokens"] == 4 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0

    r = client.post("/v1/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}})
    events = sse(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    texts = [c["choices"][0]["text"] for c in chunks[:-1] if c["choices"]]
    assert "".join(texts) == body["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7


def test_openai_embeddings(client):
    r = client.post("/v1/embeddings", json={"model": "demo-embed-small", "input": ["hello world", "a b c"]})
    body = r.json()
    assert body["object"] == "list" and body["model"] == "demo-embed-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 and d["object"] == "embedding" for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    again = client.post("/v1/embeddings", json={"model": "demo-embed-small", "input": "hello world"}).json()
    assert again["data"][0]["embedding"] == body["data"][0]["embedding"]  # per input, deterministic


# --- OpenAI Responses --------------------------------------------------------------------------

RESPONSES_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.content_part.added", *["response.output_text.delta"] * 3, "response.output_text.done",
    "response.content_part.done", "response.output_item.done", "response.completed",
]


def test_responses_stream_events_and_usage(client):
    r = client.post("/v1/responses", json={
        "model": "demo-gpt-mini", "instructions": "be kind", "stream": True, "max_output_tokens": 3,
        "input": [{"role": "user", "content": "hi there"},
                  {"role": "user", "content": [{"type": "input_text", "text": "tell me more"}]}]})
    events = sse(r.text)
    assert [name for name, _ in events] == RESPONSES_EVENTS
    payloads = [json.loads(data) for _, data in events]
    assert [p["type"] for p in payloads] == RESPONSES_EVENTS
    assert [p["sequence_number"] for p in payloads] == list(range(len(events)))
    deltas = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
    assert payloads[7]["text"] == deltas
    completed = payloads[-1]["response"]
    assert completed["status"] == "completed"
    # instructions (2) + "hi there" (2) + "tell me more" (3); prefix = all but the last message
    assert completed["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 4},
                                  "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                                  "total_tokens": 10}
    assert completed["output"][0]["content"][0]["text"] == deltas


def test_responses_json(client):
    body = client.post("/v1/responses", json={"model": "demo-gpt-mini", "input": "one two three"}).json()
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["usage"]["input_tokens"] == 3 and body["usage"]["input_tokens_details"]["cached_tokens"] == 0
    assert body["usage"]["output_tokens"] == 12
    assert words(body["output"][0]["content"][0]["text"]) == 12


# --- Anthropic Messages ------------------------------------------------------------------------

ANTHROPIC_MESSAGES = [{"role": "user", "content": "what is a proxy"},  # 4
                      {"role": "assistant", "content": "a middleman"},  # 2
                      {"role": "user", "content": [{"type": "text", "text": "and an exporter"}]}]  # 3


def test_anthropic_stream_events_and_usage(client):
    r = client.post("/v1/messages", json={
        "model": "demo-claude", "system": [{"type": "text", "text": "you are terse"}],
        "messages": ANTHROPIC_MESSAGES, "max_tokens": 4, "stream": True})
    events = sse(r.text)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
                     "content_block_stop", "message_delta", "message_stop"]
    payloads = [json.loads(data) for _, data in events]
    assert [p["type"] for p in payloads] == names
    start = payloads[0]["message"]
    assert start["model"] == "demo-claude" and start["content"] == [] and start["stop_reason"] is None
    # system 3 + 4 + 2 + 3 = 12 words; read = all but the last message = 9; no cache_control
    assert start["usage"] == {"input_tokens": 3, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 9, "output_tokens": 1}
    assert all(p["delta"]["type"] == "text_delta" for p in payloads[3:7])
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"] == {"output_tokens": 4}


def test_anthropic_cache_control_makes_the_last_message_a_cache_write(client):
    messages = [*ANTHROPIC_MESSAGES[:-1],
                {"role": "user", "content": [{"type": "text", "text": "and an exporter",
                                              "cache_control": {"type": "ephemeral"}}]}]
    body = client.post("/v1/messages", json={"model": "demo-claude", "messages": messages}).json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 0, "cache_creation_input_tokens": 3,
                             "cache_read_input_tokens": 6, "output_tokens": 12}
    assert words(body["content"][0]["text"]) == 12


# --- Ollama ------------------------------------------------------------------------------------


def test_ollama_chat_streams_ndjson_by_default(client):
    r = client.post("/api/chat", json={"model": "llama3.2:1b", "messages": CONVERSATION[1:],
                                       "options": {"num_predict": 3}})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(r.text)
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert all(line["model"] == "llama3.2:1b" and line["message"]["role"] == "assistant" for line in lines)
    assert words("".join(line["message"]["content"] for line in lines)) == 3
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert final["prompt_eval_count"] == 10 and final["eval_count"] == 3
    assert final["eval_duration"] == 3 * 20_000_000
    assert final["total_duration"] == final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]


def test_ollama_generate_json_when_stream_false(client):
    r = client.post("/api/generate", json={"model": "qwen2.5:7b", "system": "be brief", "prompt": "why is the sky",
                                           "stream": False})
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["done"] is True and words(body["response"]) == 12
    assert body["prompt_eval_count"] == 6 and body["eval_count"] == 12
    assert body["eval_duration"] == 12 * 20_000_000

    lines = ndjson(client.post("/api/generate", json={"model": "qwen2.5:7b", "prompt": "x"}).text)
    assert len(lines) == 13 and "response" in lines[0] and lines[-1]["done"] is True


def test_ollama_embed(client):
    body = client.post("/api/embed", json={"model": "nomic-embed-text", "input": ["a b", "c d e"]}).json()
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert len(body["embeddings"]) == 2 and all(len(v) == 8 for v in body["embeddings"])
    assert body["prompt_eval_count"] == 5


# --- llama.cpp ---------------------------------------------------------------------------------


def test_llamacpp_completion_json_by_default(client):
    r = client.post("/completion", json={"prompt": "def add(a, b):", "n_predict": 5})
    body = r.json()
    assert body["stop"] is True and words(body["content"]) == 5
    assert body["tokens_predicted"] == 5 and body["tokens_evaluated"] == 3
    assert body["timings"] == {
        "cache_n": 0, "prompt_n": 3, "prompt_ms": 3.0, "prompt_per_token_ms": 1.0, "prompt_per_second": 1000.0,
        "predicted_n": 5, "predicted_ms": 100.0, "predicted_per_token_ms": 20.0, "predicted_per_second": 50.0}


def test_llamacpp_stream_has_no_done_marker(client):
    r = client.post("/infill", json={"input_prefix": "def add(a, b):", "input_suffix": "return c",
                                     "prompt": "", "n_predict": 4, "stream": True})
    events = sse(r.text)
    payloads = [json.loads(data) for name, data in events]
    assert all(name is None for name, _ in events) and "[DONE]" not in r.text
    assert [p["stop"] for p in payloads] == [False] * 4 + [True]
    assert [p["tokens_predicted"] for p in payloads[:4]] == [1, 2, 3, 4]
    assert words("".join(p["content"] for p in payloads)) == 4
    final = payloads[-1]
    assert final["content"] == "" and final["tokens_evaluated"] == 5  # prefix 3 + suffix 2
    assert final["timings"]["predicted_n"] == 4 and final["timings"]["predicted_per_second"] == 50.0


def test_llamacpp_prompt_list_answers_one_result_per_prompt(client):
    body = client.post("/completion", json={"prompt": ["a b", "c d e"], "n_predict": 2}).json()
    assert [(r["index"], r["tokens_evaluated"], r["tokens_predicted"]) for r in body] == [(0, 2, 2), (1, 3, 2)]
    events = [json.loads(data) for _, data in sse(client.post(
        "/completion", json={"prompt": ["a b", "c d e"], "n_predict": 2, "stream": True}).text)]
    assert [(e["index"], e["stop"]) for e in events] == [(0, False)] * 2 + [(0, True)] + [(1, False)] * 2 + [(1, True)]


@pytest.mark.parametrize("include_usage", [False, True])
def test_llamacpp_backend_puts_timings_on_the_last_chunk(client, include_usage):
    body = {"model": "m", "stream": True, "max_tokens": 2, "messages": [USER_1],
            "stream_options": {"include_usage": include_usage}}
    events = [data for _, data in sse(client.post("/v1/chat/completions", json=body,
                                                  headers={"x-demo-backend": "llamacpp"}).text)]
    last = json.loads(events[-2])  # before [DONE]
    assert last["timings"]["prompt_n"] == 4 and last["timings"]["predicted_n"] == 2
    assert (last["choices"] == []) == include_usage  # the usage chunk when asked for, else the finishing one
    assert sum('"timings"' in e for e in events) == 1


# --- Azure OpenAI and the paths without /v1 ----------------------------------------------------


@pytest.mark.parametrize("path", ["/chat/completions", "/openai/v1/chat/completions",
                                  "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"])
def test_openai_chat_under_other_paths(client, path):
    body = client.post(path, json={"max_tokens": 3, "messages": [USER_1]}).json()
    assert body["usage"]["prompt_tokens"] == 4 and body["usage"]["completion_tokens"] == 3
    # an Azure deployment is the model when the body names none
    assert body["model"] == ("my-deployment" if "deployments" in path else DEMO_MODELS["openai_chat"][0])


# --- Gemini ------------------------------------------------------------------------------------

GEMINI = {"systemInstruction": {"parts": [{"text": "be terse"}]},
          "contents": [{"role": "user", "parts": [{"text": "what is a proxy"}]}],
          "generationConfig": {"maxOutputTokens": 4}}


def test_gemini_generate_content(client):
    body = client.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI).json()
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert words(body["candidates"][0]["content"]["parts"][0]["text"]) == 4
    assert body["usageMetadata"] == {"promptTokenCount": 6, "cachedContentTokenCount": 2,
                                     "candidatesTokenCount": 4, "totalTokenCount": 10}


def test_gemini_stream_is_a_json_array_counting_up_or_sse_with_alt(client):
    path = "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash-reasoning:streamGenerateContent"
    r = client.post(path, json=GEMINI)
    assert r.headers["content-type"] == "application/json"
    chunks = json.loads(r.text)
    counts = [c["usageMetadata"].get("candidatesTokenCount") for c in chunks]
    assert counts == [1, 2, 3] and chunks[-1]["usageMetadata"]["thoughtsTokenCount"] == 1
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    sse_text = client.post(path + "?alt=sse", json=GEMINI).text
    assert sse_text.count("\r\n\r\n") == 3
    assert [json.loads(line[6:]) for line in sse_text.split("\r\n\r\n") if line] == chunks


# --- Probes, unknown paths, determinism --------------------------------------------------------


def test_probe_endpoints(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == list(ALL_DEMO_MODELS)
    tags = client.get("/api/tags").json()
    assert {m["name"] for m in tags["models"]} >= set(DEMO_MODELS["ollama_chat"])
    assert "version" in client.get("/api/version").json()
    assert client.get("/health").json() == {"status": "ok"}


def test_unknown_path_is_a_json_404(client):
    r = client.post("/v2/whatever", json={})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_identical_requests_give_identical_bytes(client):
    request = {"model": "demo-gpt-mini", "messages": CONVERSATION, "stream": True}
    first, second = (client.post("/v1/chat/completions", json=request).content for _ in range(2))
    assert first == second
    # Re-serialized or given stream_options (as a proxy may), the ids stay the same.
    rewritten = json.dumps({**request, "stream_options": {"include_usage": False}}, indent=2)
    third = client.post("/v1/chat/completions", content=rewritten).content
    assert third == first
    other = client.post("/v1/chat/completions", json={**request, "messages": [USER_1]}).content
    assert json.loads(sse(other.decode())[0][1])["id"] != json.loads(sse(first.decode())[0][1])["id"]


def test_missing_model_gets_the_family_default(client):
    assert client.post("/api/chat", json={"messages": [USER_1], "stream": False}).json()["model"] == "llama3.2:1b"


# --- Fault controls ----------------------------------------------------------------------------

ERROR_SHAPES = [
    ("/v1/chat/completions", lambda b: set(b["error"]) == {"message", "type", "param", "code"}),
    ("/v1/responses", lambda b: set(b["error"]) == {"message", "type", "param", "code"}),
    ("/v1/messages", lambda b: b["type"] == "error" and set(b["error"]) == {"type", "message"}),
    ("/api/generate", lambda b: set(b) == {"error"} and isinstance(b["error"], str)),
    ("/completion", lambda b: set(b["error"]) == {"code", "message", "type"}),
    ("/v1beta/models/gemini-2.5-flash:generateContent", lambda b: set(b["error"]) == {"code", "message", "status"}),
]


@pytest.mark.parametrize("path,shape", ERROR_SHAPES)
@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_status_fault_uses_the_family_error_body(client, path, shape, status):
    r = client.post(path, json={"model": "m", "prompt": "x", "messages": [USER_1]},
                    headers={"x-demo-status": str(status)})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert shape(r.json())
    assert ("retry-after" in r.headers) == (status == 429)


def test_error_types_match_the_real_apis(client):
    def error(path, status):
        return client.post(path, json={}, headers={"x-demo-status": str(status)}).json()

    assert error("/v1/chat/completions", 429)["error"]["code"] == "rate_limit_exceeded"
    assert error("/v1/chat/completions", 500)["error"]["type"] == "server_error"
    assert error("/v1/messages", 529)["error"]["type"] == "overloaded_error"
    assert error("/v1/messages", 429)["error"]["type"] == "rate_limit_error"
    llamacpp = error("/completion", 503)["error"]
    assert (llamacpp["code"], llamacpp["type"]) == (503, "unavailable_error")


@pytest.mark.parametrize("path,shape", ERROR_SHAPES)
def test_invalid_json_body_is_a_400_in_the_family_shape(client, path, shape):
    r = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and shape(r.json())


def test_invalid_control_value_is_a_400(client):
    r = client.post("/v1/messages", json={}, headers={"x-demo-delay": "soon"})
    assert r.status_code == 400 and "x-demo-delay" in r.json()["error"]["message"]


def test_delay_applies_before_the_response_headers(client):
    # Only "no answer within 1 s of a 5 s delay": a slow machine cannot make this fail.
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"messages": [USER_1]}, headers={"x-demo-delay": "5"},
                    timeout=httpx.Timeout(10, read=1))


def test_chunk_delay_spaces_stream_chunks(client):
    request = {"model": "demo-gpt-mini", "messages": [USER_1], "stream": True, "max_tokens": 2}
    with client.stream("POST", "/v1/chat/completions", json=request, headers={"x-demo-chunk-delay": "5"},
                       timeout=httpx.Timeout(10, read=1.5)) as r:
        chunks = r.iter_raw()
        first = next(chunks)
        assert first.startswith(b"data: {")
        with pytest.raises(httpx.ReadTimeout):
            next(chunks)
    quick = client.post("/v1/chat/completions", json=request, headers={"x-demo-chunk-delay": "0.01"})
    assert quick.content == client.post("/v1/chat/completions", json=request).content


def read_until_broken(client, path, request, headers) -> bytes:
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", path, json=request, headers=headers) as r:
            for chunk in r.iter_raw():
                received += chunk
    return received


@pytest.mark.parametrize("path,request_body", [
    ("/v1/chat/completions", {"messages": [USER_1], "stream": True}),
    ("/v1/messages", {"messages": [USER_1], "stream": True}),
    ("/api/chat", {"messages": [USER_1]}),
    ("/completion", {"prompt": "x", "stream": True}),
])
def test_die_after_drops_the_connection_mid_stream(client, path, request_body):
    full = client.post(path, json=request_body).content
    received = read_until_broken(client, path, request_body, {"x-demo-die-after": "3"})
    separator = b"\n" if path == "/api/chat" else b"\n\n"
    pieces = full.split(separator)
    assert received == separator.join(pieces[:3]) + separator


def test_die_after_beyond_the_end_still_never_finishes(client):
    request = {"messages": [USER_1], "stream": True, "max_tokens": 2}
    full = client.post("/v1/chat/completions", json=request).content
    assert read_until_broken(client, "/v1/chat/completions", request, {"x-demo-die-after": "100"}) == full


@pytest.mark.parametrize("count", ["0", "1"])
def test_die_after_on_a_json_body_sends_part_of_it(client, count):
    request = {"messages": [USER_1]}
    full = client.post("/v1/chat/completions", json=request).content
    received = read_until_broken(client, "/v1/chat/completions", request, {"x-demo-die-after": count})
    assert full.startswith(received) and len(received) < len(full)
    assert (received == b"") == (count == "0")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_encoding_of_json_and_streams(client, encoding):
    for path, request in [("/v1/messages", {"messages": [USER_1]}),
                          ("/v1/messages", {"messages": [USER_1], "stream": True}),
                          ("/api/chat", {"messages": [USER_1]})]:
        plain = client.post(path, json=request)
        encoded = client.post(path, json=request, headers={"x-demo-encoding": encoding})
        assert encoded.headers["content-encoding"] == encoding
        assert encoded.content == plain.content  # httpx decodes


@pytest.mark.parametrize("encoding,wbits", [("gzip", 31), ("deflate", 15)])
def test_encoded_stream_is_usable_chunk_by_chunk(client, encoding, wbits):
    request = {"messages": [USER_1], "stream": True}
    plain = client.post("/v1/messages", json=request).content
    # Cut after two events: what arrived must decode, without the end of the stream, to those events.
    received = read_until_broken(client, "/v1/messages", request,
                                 {"x-demo-encoding": encoding, "x-demo-die-after": "2"})
    decoded = zlib.decompressobj(wbits).decompress(received)
    assert decoded == b"\n\n".join(plain.split(b"\n\n")[:2]) + b"\n\n"


def test_encoder_flushes_every_piece():
    encoder, decoder = Encoder("gzip"), zlib.decompressobj(31)
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    for i, piece in enumerate(pieces):
        assert decoder.decompress(encoder.encode(piece, last=i == len(pieces) - 1)) == piece
    assert decoder.eof


def test_no_usage_omits_every_count(client):
    h = {"x-demo-no-usage": "1"}
    chat = client.post("/v1/chat/completions", json={"messages": [USER_1]}, headers=h).json()
    assert "usage" not in chat
    stream = client.post("/v1/chat/completions", headers=h, json={
        "messages": [USER_1], "stream": True, "stream_options": {"include_usage": True}}).text
    assert "usage" not in stream and stream.endswith("data: [DONE]\n\n")
    responses = client.post("/v1/responses", json={"input": "x", "stream": True}, headers=h).text
    assert json.loads(sse(responses)[-1][1])["response"]["usage"] is None
    anthropic = [json.loads(d) for _, d in sse(client.post("/v1/messages", headers=h, json={
        "messages": [USER_1], "stream": True}).text)]
    assert "usage" not in anthropic[0]["message"] and "usage" not in anthropic[-2]
    assert "usage" not in client.post("/v1/messages", json={"messages": [USER_1]}, headers=h).json()
    final = ndjson(client.post("/api/chat", json={"messages": [USER_1]}, headers=h).text)[-1]
    counts = {"eval_count", "prompt_eval_count", "eval_duration", "total_duration"}
    assert final["done"] is True and not counts & set(final)
    llama = client.post("/completion", json={"prompt": "x"}, headers=h).json()
    assert not {"timings", "tokens_predicted", "tokens_evaluated", "tokens_cached"} & set(llama)
    assert "usage" not in client.post("/v1/embeddings", json={"input": "x"}, headers=h).json()
    assert set(client.post("/api/embed", json={"input": "x"}, headers=h).json()) == {"model", "embeddings"}


# --- Pacing ------------------------------------------------------------------------------------


def test_pacing_changes_timing_not_bytes(base_url):
    request = {"model": "demo-gpt-mini", "messages": [USER_1], "stream": True, "max_tokens": 3}
    with serve(create_app(pacing=True)) as paced_url:
        paced = httpx.post(paced_url + "/v1/chat/completions", json=request, timeout=10).content
    assert paced == httpx.post(base_url + "/v1/chat/completions", json=request, timeout=10).content


def test_pace_grows_with_model_and_prompt_size():
    assert speed_class("demo-gpt-mini") == "fast" and speed_class("llama3.2:1b") == "fast"
    assert speed_class("demo-gpt-large") == "slow" and speed_class("llama3.1:70b") == "slow"
    assert speed_class("demo-claude") == "medium" and speed_class("qwen2.5:7b") == "medium"
    small, large = pace_for("demo-gpt-mini", 10, False), pace_for("demo-gpt-large", 10, False)
    assert 0.15 <= small.ttft < large.ttft <= 0.8 and 0.01 <= small.gap < large.gap <= 0.06
    assert pace_for("demo-gpt-mini", 1000, False).ttft > small.ttft
    assert pace_for("demo-reasoner", 10, True).ttft > pace_for("demo-gpt-medium", 10, False).ttft
    assert pace_for("demo-gpt-large", 10**6, True).ttft == 0.8


# --- Backend state endpoints -----------------------------------------------------------------------


@pytest.fixture
def fresh():
    """A demo upstream of its own: no model loaded, nothing running."""
    with serve(create_app()) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def _size(model: str) -> int:
    return 1_000_000_000 + hashlib.sha256(model.encode()).digest()[0] * 1_000_000


def _prometheus(text: str) -> dict[tuple[str, str], float]:
    families = list(text_string_to_metric_families(text))
    assert all(f.documentation for f in families)  # every family has its HELP line
    return {(s.name, s.labels.get("model_name", "")): s.value for f in families for s in f.samples}


def test_models_load_on_their_first_request_with_a_size_from_their_name(fresh):
    assert fresh.get("/api/ps").json() == {"models": []}
    assert fresh.get("/running").json() == {"running": []}
    before = time.time()
    fresh.post("/api/chat", json={"model": "qwen2.5:7b", "messages": [USER_1], "stream": False})
    fresh.post("/v1/chat/completions", json={"model": "demo-gpt-mini", "messages": CONVERSATION})
    after = time.time()
    models = fresh.get("/api/ps").json()["models"]
    assert [m["name"] for m in models] == ["qwen2.5:7b", "demo-gpt-mini"]
    for model in models:
        assert model["model"] == model["name"] and model["size"] == _size(model["name"])
        assert model["size_vram"] == model["size"] * 3 // 4
        assert {"digest", "details", "expires_at", "context_length"} <= set(model)
        stamp, fraction = model["expires_at"].removesuffix("Z").split(".")
        assert len(fraction) == 9
        expires = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + float("0." + fraction)
        assert before + 300 - 1 <= expires <= after + 300
    assert fresh.get("/running").json() == {"running": [{"model": "qwen2.5:7b", "state": "ready"},
                                                        {"model": "demo-gpt-mini", "state": "ready"}]}


def test_vllm_metrics_count_prompt_tokens_per_model(fresh):
    assert _prometheus(fresh.get("/metrics").text) == {}
    fresh.post("/v1/chat/completions", json={"model": "demo-gpt-mini", "messages": CONVERSATION})  # 13 in, 9 cached
    fresh.post("/v1/chat/completions", json={"model": "demo-gpt-mini", "messages": [USER_1]})  # 4 in, 0 cached
    response = fresh.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE vllm:prefix_cache_queries_total counter" in response.text
    assert _prometheus(response.text) == {
        ("vllm:num_requests_running", "demo-gpt-mini"): 0, ("vllm:num_requests_waiting", "demo-gpt-mini"): 0,
        ("vllm:kv_cache_usage_perc", "demo-gpt-mini"): 0,
        ("vllm:prefix_cache_queries_total", "demo-gpt-mini"): 17, ("vllm:prefix_cache_hits_total", "demo-gpt-mini"): 9,
    }


def test_a_request_runs_until_its_answer_is_over(fresh):
    """A held request (x-demo-delay) runs: vLLM's running count, a busy llama.cpp slot."""
    host, port = fresh.base_url.host, fresh.base_url.port
    body = json.dumps({"model": "qwen2.5-coder-1.5b", "prompt": "a b"}).encode()
    with socket.create_connection((host, port)) as held:
        held.sendall(f"POST /llamacpp/completion HTTP/1.1\r\nhost: {host}\r\nx-demo-delay: 60\r\n"
                     f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 10
        while not fresh.get("/running").json()["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        vllm = _prometheus(fresh.get("/metrics").text)
        assert vllm["vllm:num_requests_running", "qwen2.5-coder-1.5b"] == 1
        assert vllm["vllm:kv_cache_usage_perc", "qwen2.5-coder-1.5b"] == 0.125
        slots = fresh.get("/llamacpp/slots").json()
        assert [s["is_processing"] for s in slots] == [True, False, False, False]
        assert {s["n_ctx"] for s in slots} == {4096}
        llama = _prometheus(fresh.get("/llamacpp/metrics").text)
        assert llama["llamacpp:requests_processing", ""] == 1 and llama["llamacpp:requests_deferred", ""] == 0
    deadline = time.monotonic() + 10  # the client hung up: the request is over
    while _prometheus(fresh.get("/metrics").text)["vllm:num_requests_running", "qwen2.5-coder-1.5b"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_llamacpp_server_under_its_prefix(fresh):
    assert fresh.get("/llamacpp/health").json() == {"status": "ok"}
    assert [m["id"] for m in fresh.get("/llamacpp/v1/models").json()["data"]] == ["qwen2.5-coder-1.5b"]
    direct = fresh.post("/completion", json={"prompt": "one two three"}).content
    assert fresh.post("/llamacpp/completion", json={"prompt": "one two three"}).content == direct
