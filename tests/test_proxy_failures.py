"""Failures and edges through real uvicorn: upstream down, slow, dying; clients leaving; limits."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from exporter.config import parse_settings
from tests.scrape import Scrape
from tests.servers import free_port, lifespan_of_a_plain_app, running_exporter, serve

CHAT = {"model": "demo-gpt-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "a b c"}]}


def _settings(url: str, **upstream):
    return parse_settings({"upstreams": [{"name": "main", "url": url, **upstream}]})


def _wait_for(condition, timeout: float = 20.0):
    """Poll until `condition()` is truthy; a generous bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


# --- the upstream cannot be reached, or is too slow ---------------------------------------------

@pytest.mark.parametrize("path, body, error_shape", [
    ("/v1/chat/completions", CHAT, lambda e: e["error"]["type"] == "server_error" and "message" in e["error"]),
    ("/v1/messages", CHAT, lambda e: e["type"] == "error" and e["error"]["type"] == "api_error"),
    ("/api/chat", CHAT, lambda e: isinstance(e["error"], str)),
    ("/completion", {"prompt": "x"}, lambda e: e["error"]["code"] == 502),
])
def test_unreachable_upstream_gets_502_in_the_family_error_shape(path, body, error_shape):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_exporter(_settings(dead)) as exporter:
        response = httpx.post(exporter + path, json=body)
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/json"
        assert error_shape(response.json())
        scrape = _wait_for(lambda: (s := Scrape.of(exporter)).value("llm_upstream_up") == 0
                           and s.label_values("llm_upstream_up", "upstream") == {"main"} and s)
        assert scrape.value("llm_requests_total", code="502", upstream="main") == 1
        assert scrape.value("llm_upstream_errors_total", error_type="connect") == 1


def test_upstream_slower_than_the_idle_timeout_gets_504(upstream_url):
    with running_exporter(_settings(upstream_url, timeouts={"idle": 0.3})) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={"x-demo-delay": "5"})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "gateway_timeout"
        scrape = Scrape.of(exporter)
        assert scrape.value("llm_requests_total", code="504") == 1
        assert scrape.value("llm_upstream_errors_total", error_type="timeout") == 1


def test_stream_past_the_total_timeout_is_cut_and_counted(upstream_url):
    with running_exporter(_settings(upstream_url, timeouts={"total": 0.5})) as exporter:
        body = {**CHAT, "stream": True, "max_tokens": 200}
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", exporter + "/v1/chat/completions", json=body,
                              headers={"x-demo-chunk-delay": "0.1"}) as response:
                assert response.status_code == 200
                response.read()
        scrape = _wait_for(lambda: (s := Scrape.of(exporter)).value("llm_upstream_errors_total") and s)
        assert scrape.value("llm_upstream_errors_total", error_type="timeout") == 1


# --- the upstream answers with an error, or dies mid-stream ------------------------------------

@pytest.mark.parametrize("status, counted_as_upstream_error", [(500, True), (503, True), (429, True), (400, False), (401, False)])
def test_upstream_error_status_passes_through_unchanged(upstream_url, exporter_url, status, counted_as_upstream_error):
    headers = {"x-demo-status": str(status)}
    direct = httpx.post(upstream_url + "/v1/messages", json=CHAT, headers=headers)
    proxied = httpx.post(exporter_url + "/v1/messages", json=CHAT, headers=headers)
    assert proxied.status_code == direct.status_code == status
    assert proxied.content == direct.content
    assert proxied.headers.get("retry-after") == direct.headers.get("retry-after")
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_requests_total", code=str(status), api="anthropic_messages") == 1
    assert scrape.value("llm_upstream_errors_total", error_type="status") == (1 if counted_as_upstream_error else 0)
    assert scrape.value("llm_usage_missing_total") == 0


def test_upstream_dying_mid_stream_ends_the_client_stream_and_counts_read(exporter_url):
    body = {**CHAT, "stream": True, "max_tokens": 50}
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", exporter_url + "/v1/chat/completions", json=body,
                          headers={"x-demo-die-after": "3"}) as response:
            for chunk in response.iter_raw():
                received.append(chunk)
    assert b"".join(received).count(b"data: ") == 3
    scrape = _wait_for(lambda: (s := Scrape.of(exporter_url)).value("llm_upstream_errors_total") and s)
    assert scrape.value("llm_upstream_errors_total", error_type="read") == 1
    assert scrape.value("llm_requests_total", code="200") == 1
    assert scrape.value("llm_requests_in_flight") == 0


def test_response_without_usage_counts_as_missing_and_adds_no_tokens(exporter_url):
    response = httpx.post(exporter_url + "/api/chat", json={**CHAT, "stream": False}, headers={"x-demo-no-usage": "1"})
    assert response.status_code == 200
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_usage_missing_total", api="ollama_chat") == 1
    assert scrape.value("llm_tokens_total") == 0


# --- the client goes away -----------------------------------------------------------------------

class EndlessUpstream:
    """Streams SSE forever; notes when its client (the proxy) hangs up."""

    def __init__(self) -> None:
        self.hung_up = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan_of_a_plain_app(receive, send)
        await receive()  # the request body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def stream() -> None:
            while True:
                await send({"type": "http.response.body", "body": b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n', "more_body": True})
                await asyncio.sleep(0.02)

        task = asyncio.create_task(stream())
        while (await receive())["type"] != "http.disconnect":
            pass
        self.hung_up.set()
        task.cancel()


def test_client_leaving_mid_stream_cancels_the_upstream_request_and_counts_499():
    upstream = EndlessUpstream()
    with serve(upstream) as upstream_url, running_exporter(_settings(upstream_url)) as exporter:
        with httpx.stream("POST", exporter + "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert next(response.iter_raw())
        assert upstream.hung_up.wait(timeout=20)
        scrape = _wait_for(lambda: (s := Scrape.of(exporter)).value("llm_requests_total") and s)
        assert scrape.value("llm_requests_total", code="499") == 1
        assert scrape.value("llm_requests_in_flight") == 0
        assert scrape.value("llm_time_to_first_token_seconds_count") == 1


# --- what the upstream receives ------------------------------------------------------------------

class EchoUpstream:
    """Answers every request with a JSON echo of the headers and body it received."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan_of_a_plain_app(receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        echo = json.dumps({
            "path": scope["path"], "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]], "body": body.decode(),
        }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"x-upstream", b"echo"),
                                (b"connection", b"keep-alive, x-upstream-private"), (b"x-upstream-private", b"1")]})
        await send({"type": "http.response.body", "body": echo})


@pytest.fixture
def echo_url():
    with serve(EchoUpstream()) as url:
        yield url


def test_headers_and_path_reach_the_upstream_without_hop_by_hop_ones(echo_url, monkeypatch):
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-env")
    with running_exporter(_settings(echo_url + "/prefix", api_key_env="TEST_UPSTREAM_KEY")) as exporter:
        response = httpx.post(
            exporter + "/v1/chat/completions?api-version=2024", json=CHAT,
            headers={"connection": "keep-alive, x-hop", "x-hop": "1", "x-trace": "t1", "accept-encoding": "br, gzip"},
        )
        echo = response.json()
        headers = dict(echo["headers"])
        assert echo["path"] == "/prefix/v1/chat/completions"
        assert echo["query"] == "api-version=2024"
        assert headers["x-trace"] == "t1"
        assert "x-hop" not in headers
        assert headers["accept-encoding"] == "gzip"  # only what the tap can read is offered
        assert headers["authorization"] == "Bearer sk-from-env"  # the client sent no key
        assert response.headers["x-upstream"] == "echo"
        assert "x-upstream-private" not in response.headers

        own_key = httpx.post(exporter + "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-client"})
        assert dict(own_key.json()["headers"])["authorization"] == "Bearer sk-client"


def test_anthropic_upstream_key_goes_in_x_api_key(echo_url, monkeypatch):
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-ant")
    with running_exporter(_settings(echo_url, kind="anthropic", api_key_env="TEST_UPSTREAM_KEY")) as exporter:
        headers = dict(httpx.post(exporter + "/v1/messages", json=CHAT).json()["headers"])
        assert headers["x-api-key"] == "sk-ant"
        assert "authorization" not in headers


def test_stream_options_are_added_for_openai_streams_only(echo_url):
    with running_exporter(_settings(echo_url)) as exporter:
        streamed = json.loads(httpx.post(exporter + "/v1/chat/completions", json={**CHAT, "stream": True}).json()["body"])
        assert streamed["stream_options"] == {"include_usage": True}
        plain = httpx.post(exporter + "/v1/chat/completions", json=CHAT).json()["body"]
        assert json.loads(plain) == CHAT
        anthropic = json.loads(httpx.post(exporter + "/v1/messages", json={**CHAT, "stream": True}).json()["body"])
        assert "stream_options" not in anthropic


# --- limits and labels ----------------------------------------------------------------------------

@pytest.mark.parametrize("path, check", [
    ("/v1/chat/completions", lambda e: e["error"]["code"] == "request_too_large"),
    ("/v1/messages", lambda e: e["error"]["type"] == "request_too_large"),
    ("/api/generate", lambda e: "larger" in e["error"]),
])
def test_body_over_the_limit_gets_413(upstream_url, path, check):
    settings = parse_settings({"upstreams": [{"name": "main", "url": upstream_url}], "limits": {"max_request_bytes": 1000}})
    with running_exporter(settings) as exporter:
        big = {"model": "m", "prompt": "x " * 1000}
        response = httpx.post(exporter + path, json=big)
        assert response.status_code == 413
        assert check(response.json())
        # A body sent without Content-Length (chunked) is cut off just the same.
        chunked = httpx.post(exporter + path, content=iter([json.dumps(big).encode()[:600]] * 3))
        assert chunked.status_code == 413
        assert Scrape.of(exporter).value("llm_requests_total", code="413") == 2


def test_model_label_is_bounded(upstream_url):
    settings = parse_settings({"upstreams": [{"name": "main", "url": upstream_url}],
                               "metrics": {"max_models": 3, "models": ["keep-*"]}})
    with running_exporter(settings) as exporter:
        for model in [f"model-{i}" for i in range(10)] + ["keep-me"]:
            assert httpx.post(exporter + "/v1/embeddings", json={"model": model, "input": "a"}).status_code == 200
        httpx.post(exporter + "/v1/embeddings", content=b"not json", headers={"content-type": "application/json"})
        labels = Scrape.of(exporter).label_values("llm_requests_total", "model")
        assert labels == {"model-0", "model-1", "model-2", "keep-me", "other", "unknown"}


def test_upstream_is_chosen_by_model_pattern(upstream_url):
    settings = parse_settings({
        "upstreams": [
            {"name": "claude", "url": upstream_url, "models": ["demo-claude*"]},
            {"name": "local", "url": upstream_url, "models": ["llama*"]},
            {"name": "fallback", "url": upstream_url},
        ],
        "default_upstream": "fallback",
    })
    with running_exporter(settings) as exporter:
        for model in ("demo-claude-3", "llama3.2:1b", "gpt-4o"):
            httpx.post(exporter + "/v1/embeddings", json={"model": model, "input": "a"})
        scrape = Scrape.of(exporter)
        assert scrape.value("llm_requests_total", upstream="claude", model="demo-claude-3") == 1
        assert scrape.value("llm_requests_total", upstream="local", model="llama3.2:1b") == 1
        assert scrape.value("llm_requests_total", upstream="fallback", model="gpt-4o") == 1


def test_other_paths_are_proxied_and_counted_without_tokens(upstream_url, exporter_url):
    response = httpx.get(exporter_url + "/v1/models")
    assert response.content == httpx.get(upstream_url + "/v1/models").content
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_requests_total", api="other", code="200") == 1
    assert scrape.value("llm_usage_missing_total") == 0


# --- the exporter's own endpoints -----------------------------------------------------------------

def test_metrics_speak_openmetrics_when_asked(exporter_url):
    plain = httpx.get(exporter_url + "/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "llm_exporter_build_info" in plain.text
    assert "process_resident_memory_bytes" in plain.text
    open_metrics = httpx.get(exporter_url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


def test_health_and_readiness(exporter_url):
    assert httpx.get(exporter_url + "/healthz").json() == {"status": "ok"}
    ready = _wait_for(lambda: httpx.get(exporter_url + "/readyz").status_code == 200)
    assert ready
    assert Scrape.of(exporter_url).value("llm_upstream_up", upstream="default") == 1
