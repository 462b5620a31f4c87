"""Backends beyond the plain OpenAI shape, through the proxy against the demo upstream:
llama.cpp's timings and prompt lists, Gemini, and keys in a query string.

Expected numbers follow the demo upstream's documented token rules (a token is a word).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from exporter.config import parse_settings
from tests.logdb import rows, wait_for_rows, wait_until
from tests.scrape import Scrape
from tests.servers import running_exporter, serve

CHAT = {"model": "qwen2.5-coder-1.5b", "stream": True, "max_tokens": 3,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a b"}]}
LLAMACPP = {"x-demo-backend": "llamacpp"}


def _exporter(upstream_url: str, kind: str = "openai", **extra):
    return running_exporter(parse_settings({"upstreams": [{"name": "default", "url": upstream_url, "kind": kind}],
                                            **extra}))


# --- llama.cpp: the stream the client would get without the proxy ---------------------------------


def test_a_llamacpp_upstream_is_not_asked_for_usage_so_its_timings_stay_where_they_were(upstream_url):
    direct = httpx.post(upstream_url + "/v1/chat/completions", json=CHAT, headers=LLAMACPP).content
    assert b'"timings"' in direct and b'"usage"' not in direct
    with _exporter(upstream_url, kind="llamacpp") as url:
        proxied = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=LLAMACPP).content
        scrape = Scrape.of(url)
    assert proxied == direct
    # the timings stand in for usage: prompt_n + cache_n input, cache_n cached, predicted_n output
    assert [scrape.value("llm_tokens_total", type=t) for t in ("input", "cached_input", "output")] == [3, 1, 3]
    assert scrape.value("llm_usage_missing_total") == 0


def test_an_openai_kind_upstream_is_asked_for_usage_and_the_counts_are_the_same(upstream_url):
    with _exporter(upstream_url, kind="openai") as url:
        proxied = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=LLAMACPP).content
        scrape = Scrape.of(url)
    assert b'"usage"' not in proxied
    assert [scrape.value("llm_tokens_total", type=t) for t in ("input", "cached_input", "output")] == [3, 1, 3]


# --- several results, several reports ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_every_result_of_a_prompt_list_is_counted(upstream_url, exporter_url, stream):
    body = {"prompt": ["a b", "c d e", "f"], "n_predict": 2, "stream": stream}
    direct = httpx.post(upstream_url + "/completion", json=body)
    proxied = httpx.post(exporter_url + "/completion", json=body)
    assert proxied.content == direct.content
    if not stream:
        assert isinstance(direct.json(), list) and len(direct.json()) == 3
    scrape = Scrape.of(exporter_url)
    assert scrape.value("llm_tokens_total", type="input") == 6
    assert scrape.value("llm_tokens_total", type="output") == 6
    assert scrape.value("llm_usage_missing_total") == 0


# --- Gemini --------------------------------------------------------------------------------------

GEMINI_BODY = {
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "contents": [{"role": "user", "parts": [{"text": "one two"}]}, {"role": "model", "parts": [{"text": "three"}]},
                 {"role": "user", "parts": [{"text": "four five six"}]}],
    "generationConfig": {"maxOutputTokens": 8},
}
# input 2 + 2 + 1 + 3 = 8 words, cached 5 (every message but the last); a "reason" model thinks
# output // 4 = 2 of its 8 output tokens.
GEMINI_TOKENS = {"input": 8, "cached_input": 5, "output": 8, "reasoning": 2}


@pytest.mark.parametrize("path, streams, content_type", [
    ("/v1beta/models/gemini-2.5-flash-reasoning:generateContent", False, "application/json"),
    ("/v1beta/models/gemini-2.5-flash-reasoning:streamGenerateContent?alt=sse", True, "text/event-stream"),
    ("/v1beta/models/gemini-2.5-flash-reasoning:streamGenerateContent", True, "application/json"),
    ("/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash-reasoning"
     ":streamGenerateContent", True, "application/json"),
])
def test_gemini_passes_bytes_unchanged_and_counts_exact_tokens(upstream_url, exporter_url, path, streams, content_type):
    direct = httpx.post(upstream_url + path, json=GEMINI_BODY)
    proxied = httpx.post(exporter_url + path, json=GEMINI_BODY)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert proxied.headers["content-type"].startswith(content_type)
    api = "gemini_stream_generate" if streams else "gemini_generate"
    scrape = Scrape.of(exporter_url)
    labels = {"upstream": "default", "model": "gemini-2.5-flash-reasoning"}
    assert scrape.value("llm_requests_total", api=api, code="200", **labels) == 1
    for token_type, expected in GEMINI_TOKENS.items():
        assert scrape.value("llm_tokens_total", type=token_type, **labels) == expected, token_type
    assert scrape.value("llm_time_to_first_token_seconds_count", api=api) == (1 if streams else 0)
    assert scrape.value("llm_usage_missing_total") == 0


def test_a_gemini_key_in_the_query_is_never_logged(upstream_url, tmp_path: Path):
    secret = "AIzaSyTHIS-IS-A-SECRET-KEY-0123456789"
    access_log, db = tmp_path / "access.log", tmp_path / "log.db"
    path = f"/v1beta/models/gemini-2.5-flash:generateContent?key={secret}"
    with _exporter(upstream_url, access_log={"path": str(access_log)}, db={"path": str(db)}) as url:
        assert httpx.post(url + path, json=GEMINI_BODY).status_code == 200
        assert httpx.post(url + path, json=GEMINI_BODY, headers={"x-goog-api-key": secret}).status_code == 200
        wait_for_rows(db, 2)
        metrics = httpx.get(url + "/metrics").text
        api_rows = httpx.get(url + "/api/requests").text
    assert [row["api"] for row in rows(db)] == ["gemini_generate"] * 2
    assert access_log.read_text().count('"api":"gemini_generate"') == 2  # the log was written, without the key
    for place in (metrics, api_rows, access_log.read_text(), db.read_bytes().decode("latin-1")):
        assert secret not in place


def test_the_proxys_own_errors_on_gemini_paths_have_googles_shape():
    with _exporter("http://127.0.0.1:9") as url:  # nothing listens on the discard port
        got = httpx.post(url + "/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI_BODY)
    assert got.status_code == 502
    error = got.json()["error"]
    assert (error["code"], error["status"]) == (502, "UNAVAILABLE") and error["message"]


@pytest.mark.parametrize("kind, header, value", [
    ("azure", "api-key", "azure-secret-1"),
    ("gemini", "x-goog-api-key", "AIza-secret-1"),
    ("anthropic", "x-api-key", "sk-ant-secret-1"),
    ("openai", "authorization", "Bearer sk-secret-1"),
])
def test_the_configured_key_goes_in_the_kinds_header(kind, header, value, monkeypatch):
    """An echoing upstream shows the headers the proxy sent: the key in the kind's header only."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        return JSONResponse({name: request.headers.get(name) for name in
                             ("api-key", "x-goog-api-key", "x-api-key", "authorization")})

    monkeypatch.setenv("UPSTREAM_KEY", value.removeprefix("Bearer "))
    app = Starlette(routes=[Route("/{path:path}", echo, methods=["POST"])])
    with serve(app) as upstream, running_exporter(parse_settings({"upstreams": [
            {"name": "u", "url": upstream, "kind": kind, "api_key_env": "UPSTREAM_KEY"}]})) as url:
        sent = httpx.post(url + "/v1/chat/completions", json={"model": "m"}).json()
        # a client's own key (here Azure's header) goes on alone
        own = httpx.post(url + "/v1/chat/completions", json={"model": "m"}, headers={"api-key": "mine"}).json()
    assert {name: v for name, v in sent.items() if v is not None} == {header: value}
    assert {name: v for name, v in own.items() if v is not None} == {"api-key": "mine"}


# --- SDKs hang up after the final event ----------------------------------------------------------


@pytest.mark.parametrize("path, body, final", [
    ("/v1/chat/completions", {"model": "demo-gpt-mini", "stream": True, "max_tokens": 3,
                              "messages": [{"role": "user", "content": "a"}]}, b"data: [DONE]"),
    ("/v1/messages", {"model": "demo-claude", "stream": True, "max_tokens": 3,
                      "messages": [{"role": "user", "content": "a"}]}, b'"type":"message_stop"'),
])
def test_a_client_hanging_up_right_after_the_final_event_is_no_499(upstream_url, path, body, final):
    """The openai and anthropic SDKs close the connection once they read [DONE] / message_stop,
    before the body's terminating chunk: the client got the whole answer."""
    with _exporter(upstream_url) as url:
        # the upstream ends the body this long after the final event
        headers = {"x-demo-chunk-delay": "0.3"}
        with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as response:
            received = b""
            for chunk in response.iter_raw():
                received += chunk
                if final in received:
                    break  # hang up, as the SDKs do
        wait_until(lambda: Scrape.of(url).value("llm_requests_total") == 1, "the request's observation")
        scrape = Scrape.of(url)
    assert scrape.value("llm_requests_total", code="200") == 1
    assert scrape.value("llm_requests_total", code="499") == 0
