"""Conformance at the edges, against a real llama-server: embeddings, the prompt cache, a prompt
longer than the context, a client leaving mid-stream, the server killed mid-stream, and down."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.conformance.exchange import Clients, masked, volatile_keys
from tests.conformance.llama_server import (
    MODEL_ALIAS, SAMPLING, LlamaServer, next_second, proxy_for, request_log_row, start_llama_server,
)
from tests.scrape import Scrape
from tests.servers import free_port


def _tokens(before: Scrape, after: Scrape, kind: str) -> int:
    return int(after.value("llm_tokens_total", type=kind) - before.value("llm_tokens_total", type=kind))


def _wait_idle(server: LlamaServer) -> None:
    """Until llama-server has no request in progress (a bound, not a timing assertion)."""
    deadline = time.monotonic() + 60
    while server.metrics().get("requests_processing", 0) > 0:
        assert time.monotonic() < deadline, "llama-server kept processing a request nobody reads"
        time.sleep(0.1)


def test_embeddings_same_bytes_and_tokens(llama_embedder: LlamaServer):
    def embed(clients: Clients):
        return clients.openai.embeddings.create(model=MODEL_ALIAS, input=["first text", "the second one"])

    with proxy_for(llama_embedder.url, "llamacpp") as proxy_url:
        direct = Clients(llama_embedder.url)
        embed(direct)
        next_second()
        embed(direct)
        proxied = Clients(proxy_url)
        before = Scrape.of(proxy_url)
        answer = embed(proxied)
        after = Scrape.of(proxy_url)
    first, second, got = (bytes(r.body) for r in (*direct.transport.responses[-2:], proxied.last))
    keys = volatile_keys(first, second)
    assert masked(got, keys) == masked(second, keys)
    assert answer.usage.prompt_tokens > 0
    assert _tokens(before, after, "input") == answer.usage.prompt_tokens


def test_the_same_long_prompt_twice_is_served_from_the_cache(llama: LlamaServer):
    """The second call reuses the first one's prompt: cached input as llama-server counts it."""
    messages = [{"role": "user", "content": " ".join(f"item{i}" for i in range(40))}]
    with proxy_for(llama.url, "llamacpp") as proxy_url:
        client = Clients(proxy_url).openai
        client.chat.completions.create(model=MODEL_ALIAS, messages=messages, max_tokens=2, **SAMPLING)
        llama_before, before = llama.metrics(), Scrape.of(proxy_url)
        again = client.chat.completions.create(model=MODEL_ALIAS, messages=messages, max_tokens=2, **SAMPLING)
        llama_after, after = llama.metrics(), Scrape.of(proxy_url)
    cached = int(llama_after["prompt_tokens_cached_total"] - llama_before["prompt_tokens_cached_total"])
    assert cached > 0
    assert again.usage.prompt_tokens_details.cached_tokens == cached == _tokens(before, after, "cached_input")
    assert _tokens(before, after, "input") == again.usage.prompt_tokens


def test_a_prompt_longer_than_the_context_passes_the_error_through(llama: LlamaServer):
    body = {"model": MODEL_ALIAS, "max_tokens": 2, "messages": [
        {"role": "user", "content": " ".join(f"w{i}" for i in range(700))}]}
    with proxy_for(llama.url, "llamacpp") as proxy_url:
        direct = [httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=60) for _ in range(2)]
        before = Scrape.of(proxy_url)
        got = httpx.post(proxy_url + "/v1/chat/completions", json=body, timeout=60)
        after = Scrape.of(proxy_url)
        row = request_log_row(proxy_url, got.headers["x-request-id"])
    assert got.status_code == direct[1].status_code == 400
    keys = volatile_keys(direct[0].content, direct[1].content)
    assert masked(got.content, keys) == masked(direct[1].content, keys)
    assert after.value("llm_requests_total", code="400") - before.value("llm_requests_total", code="400") == 1
    assert _tokens(before, after, "input") == 0 and row["input_tokens"] is None


def test_a_client_leaving_mid_stream_is_a_499_and_the_server_stops(llama: LlamaServer):
    body = {"prompt": "keep going", "n_predict": 200, "stream": True, **SAMPLING}
    with proxy_for(llama.url, "llamacpp") as proxy_url:
        with httpx.stream("POST", proxy_url + "/completion", json=body, timeout=60) as response:
            request_id = response.headers["x-request-id"]
            next(response.iter_raw())  # one chunk, then hang up
        row = request_log_row(proxy_url, request_id)
        _wait_idle(llama)
    assert row["status_code"] == 499


@pytest.fixture
def long_generation_server(llama_files):
    """A server of its own (the test kills it) with room for a generation long enough to interrupt."""
    with start_llama_server(llama_files, "-c", "4096") as server:
        yield server


def test_the_server_killed_mid_stream_is_a_read_error(long_generation_server: LlamaServer):
    server = long_generation_server
    body = {"prompt": "on and on", "n_predict": 3000, "ignore_eos": True, "stream": True, **SAMPLING}
    with proxy_for(server.url, "llamacpp") as proxy_url:
        received = b""
        with httpx.stream("POST", proxy_url + "/completion", json=body, timeout=60) as response:
            request_id = response.headers["x-request-id"]
            chunks = response.iter_raw()
            received += next(chunks)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
            with pytest.raises(httpx.HTTPError):  # a broken stream, never a falsely complete one
                for chunk in chunks:
                    received += chunk
        row = request_log_row(proxy_url, request_id)
        scrape = Scrape.of(proxy_url)
    assert b'"stop":true' not in received
    assert row["error_type"] == "read"
    assert scrape.value("llm_upstream_errors_total", error_type="read") == 1


def test_the_server_down_is_a_502_in_the_familys_error_shape():
    with proxy_for(f"http://127.0.0.1:{free_port()}", "llamacpp") as proxy_url:
        got = httpx.post(proxy_url + "/completion", json={"prompt": "x", "n_predict": 1}, timeout=60)
        scrape = Scrape.of(proxy_url)
    assert got.status_code == 502
    assert got.json()["error"]["code"] == 502
    assert scrape.value("llm_upstream_errors_total", error_type="connect") == 1
