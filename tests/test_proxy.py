"""The proxy through real uvicorn against the demo upstream: bytes, metrics, usage, per family.

Expected token numbers follow the demo upstream's documented token rules (a token is a word;
cached input is the conversation prefix; output is the requested maximum), not the proxy's code.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass

import httpx
import pytest

from tests.scrape import Scrape


@dataclass
class Case:
    api: str
    path: str
    body: dict
    tokens: dict[str, int]  # expected llm_tokens_total by type; absent types must stay 0
    streams: bool = True
    backend_speed: float | None = None  # tokens/s the backend itself reports
    model: str = "unknown"  # the model when the body names none (an Azure deployment in the path)

    def __post_init__(self) -> None:
        self.model = self.body.get("model", self.model)


CASES = [
    Case("openai_chat", "/v1/chat/completions", {
        "model": "demo-reasoner", "max_tokens": 6, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": [{"type": "text", "text": "five six"}]},
        ]}, {"input": 8, "cached_input": 6, "output": 6, "reasoning": 1}),
    Case("openai_completions", "/v1/completions",
         {"model": "demo-gpt-mini", "prompt": "a b c d", "max_tokens": 5}, {"input": 4, "output": 5}),
    Case("openai_embeddings", "/v1/embeddings",
         {"model": "demo-embed", "input": ["a b", "c d e"]}, {"input": 5}, streams=False),
    Case("openai_responses", "/v1/responses", {
        "model": "demo-reasoner", "instructions": "be kind", "max_output_tokens": 4,
        "input": [{"role": "user", "content": "x y z"}]},
        {"input": 5, "cached_input": 2, "output": 4, "reasoning": 1}),
    Case("anthropic_messages", "/v1/messages", {
        "model": "demo-claude", "max_tokens": 5, "system": "s t", "messages": [
            {"role": "user", "content": "a b c"},
            {"role": "assistant", "content": "d"},
            {"role": "user", "content": [{"type": "text", "text": "e f", "cache_control": {"type": "ephemeral"}}]},
        ]}, {"input": 8, "cached_input": 6, "cache_write_input": 2, "output": 5}),
    Case("ollama_chat", "/api/chat", {
        "model": "llama3.2:1b", "options": {"num_predict": 4},
        "messages": [{"role": "user", "content": "a b c"}]},
        {"input": 3, "output": 4}, backend_speed=50.0),
    Case("ollama_generate", "/api/generate",
         {"model": "llama3.2:1b", "prompt": "a b c d e", "options": {"num_predict": 3}},
         {"input": 5, "output": 3}, backend_speed=50.0),
    Case("ollama_embed", "/api/embed", {"model": "nomic-embed-text", "input": "a b c"}, {"input": 3}, streams=False),
    Case("llamacpp_completion", "/completion", {"prompt": "a b c", "n_predict": 4},
         {"input": 3, "output": 4}, backend_speed=50.0),
    Case("llamacpp_completion", "/infill", {"input_prefix": "a", "prompt": "", "input_suffix": "b c", "n_predict": 2},
         {"input": 3, "output": 2}, backend_speed=50.0),
    # The OpenAI paths without /v1 (llama.cpp, vLLM and most compatible servers serve them)
    Case("openai_chat", "/chat/completions", {"model": "demo-gpt-mini", "max_tokens": 3,
                                              "messages": [{"role": "user", "content": "a b"}]},
         {"input": 2, "output": 3}),
    Case("openai_completions", "/completions", {"model": "demo-gpt-mini", "prompt": "a b c", "max_tokens": 2},
         {"input": 3, "output": 2}),
    Case("openai_embeddings", "/embeddings", {"model": "demo-embed", "input": "a b c d"}, {"input": 4}, streams=False),
    # Azure OpenAI: the deployment in the path is the model when the body names none
    Case("openai_chat", "/openai/deployments/my-gpt-4o/chat/completions?api-version=2024-10-21",
         {"max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}, {"input": 3, "output": 4},
         model="my-gpt-4o"),
    Case("openai_embeddings", "/openai/deployments/my-embedder/embeddings?api-version=2024-10-21",
         {"input": ["a", "b c"]}, {"input": 3}, streams=False, model="my-embedder"),
    Case("openai_responses", "/openai/v1/responses", {"model": "demo-gpt-mini", "max_output_tokens": 2, "input": "a b"},
         {"input": 2, "output": 2}),
]
STREAM_CASES = [(case, stream) for case in CASES for stream in ((False, True) if case.streams else (False,))]


def _id(param) -> str:
    case, stream = param
    return f"{case.path.split('?')[0].strip('/').replace('/', '_')}-{'stream' if stream else 'json'}"


@pytest.mark.parametrize("case_stream", STREAM_CASES, ids=[_id(p) for p in STREAM_CASES])
def test_every_family_passes_bytes_unchanged_and_counts_exact_tokens(case_stream, upstream_url, exporter_url):
    case, stream = case_stream
    body = json.dumps({**case.body, "stream": stream}).encode()
    headers = {"content-type": "application/json"}
    direct = httpx.post(upstream_url + case.path, content=body, headers=headers)
    proxied = httpx.post(exporter_url + case.path, content=body, headers=headers)

    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert proxied.headers["content-type"] == direct.headers["content-type"]

    scrape = Scrape.of(exporter_url)
    labels = {"upstream": "default", "model": case.model}
    assert scrape.value("llm_requests_total", api=case.api, code="200", **labels) == 1
    for token_type in ("input", "cached_input", "cache_write_input", "output", "reasoning"):
        assert scrape.value("llm_tokens_total", type=token_type, **labels) == case.tokens.get(token_type, 0), token_type
    assert scrape.value("llm_request_tokens_sum", type="input", **labels) == case.tokens["input"]
    assert scrape.value("llm_usage_missing_total") == 0
    assert scrape.value("llm_request_duration_seconds_count", api=case.api, **labels) == 1
    # Time to first token and per output token exist for streams only.
    assert scrape.value("llm_time_to_first_token_seconds_count", api=case.api) == (1 if stream else 0)
    assert scrape.value("llm_time_per_output_token_seconds_count", api=case.api) == (1 if stream else 0)
    if case.backend_speed:
        assert scrape.value("llm_output_tokens_per_second_sum", **labels) == case.backend_speed
    elif "output" in case.tokens:
        assert scrape.value("llm_output_tokens_per_second_count", **labels) == 1
        assert scrape.value("llm_output_tokens_per_second_sum", **labels) > 0
    else:
        assert scrape.value("llm_output_tokens_per_second_count", **labels) == 0
    assert scrape.value("llm_request_size_bytes_sum", api=case.api) == len(body)
    assert scrape.value("llm_response_size_bytes_sum", api=case.api) == len(direct.content)
    assert scrape.value("llm_requests_in_flight") == 0


def test_ollama_streams_by_default(upstream_url, exporter_url):
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "a b"}], "options": {"num_predict": 3}}
    proxied = httpx.post(exporter_url + "/api/chat", json=body)
    assert proxied.headers["content-type"].startswith("application/x-ndjson")
    assert proxied.content == httpx.post(upstream_url + "/api/chat", json=body).content
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_time_to_first_token_seconds_count", api="ollama_chat") == 1
    assert scrape.value("llm_tokens_total", type="output") == 3


def test_openai_stream_usage_is_asked_for_and_hidden_when_the_client_did_not_ask(upstream_url, exporter_url):
    body = {"model": "demo-gpt-mini", "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    direct = httpx.post(upstream_url + "/v1/chat/completions", json=body).content
    proxied = httpx.post(exporter_url + "/v1/chat/completions", json=body).content
    assert b'"usage"' not in direct
    assert proxied == direct
    assert Scrape.of(exporter_url).value("llm_tokens_total", type="output") == 3


def test_openai_stream_usage_reaches_a_client_that_asked_for_it(upstream_url, exporter_url):
    body = {"model": "demo-gpt-mini", "stream": True, "max_tokens": 3, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    direct = httpx.post(upstream_url + "/v1/chat/completions", json=body).content
    proxied = httpx.post(exporter_url + "/v1/chat/completions", json=body).content
    assert b'"completion_tokens":3' in proxied
    assert proxied == direct
    assert Scrape.of(exporter_url).value("llm_tokens_total", type="output") == 3


@pytest.mark.parametrize("encoding, decompress", [
    ("gzip", gzip.decompress),
    ("deflate", zlib.decompress),
])
@pytest.mark.parametrize("stream", [False, True])
def test_compressed_bodies_pass_as_sent_and_are_still_read(upstream_url, exporter_url, encoding, decompress, stream):
    body = {"model": "demo-claude", "stream": stream, "max_tokens": 7, "messages": [{"role": "user", "content": "a b c"}]}
    headers = {"x-demo-encoding": encoding}
    direct = _raw_body(upstream_url + "/v1/messages", body, headers)
    proxied = _raw_body(exporter_url + "/v1/messages", body, headers)
    assert proxied == direct
    assert b"message" in decompress(proxied)
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_tokens_total", type="input") == 3
    assert scrape.value("llm_tokens_total", type="output") == 7


def _raw_body(url: str, body: dict, headers: dict) -> bytes:
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        assert response.headers["content-encoding"] in ("gzip", "deflate")
        return b"".join(response.iter_raw())
