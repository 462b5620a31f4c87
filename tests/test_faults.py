"""The fault suite: each case checks the status the client gets, the error_type counted and the row logged.

Real uvicorn on both sides: the demo upstream's fault controls (x-demo-*) for faults in HTTP,
raw TCP servers (tests/faulty.py) for faults below it, and raw sockets for clients that leave.
"""

from __future__ import annotations

import json
import random
import socket
import zlib
from pathlib import Path

import httpx
import pytest

from exporter.config import parse_settings
from tests.faulty import close_without_answer, raw_upstream, read_request, reset_mid_stream
from tests.logdb import rows, wait_for_rows, wait_until
from tests.scrape import Scrape
from tests.servers import free_port, running_exporter

CHAT = {"model": "demo-gpt-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "a b c"}]}


def _settings(url: str, db: Path, **timeouts):
    return parse_settings({
        "upstreams": [{"name": "main", "url": url, "timeouts": timeouts}],
        "db": {"path": str(db)},
        "telemetry": {"flush_interval_seconds": 0.1},
    })


def _outcome(exporter: str, db: Path, expected_rows: int = 1) -> tuple[Scrape, list[dict]]:
    """Metrics and rows once every request has been counted and written."""
    wait_for_rows(db, expected_rows)
    wait_until(lambda: Scrape.of(exporter).value("llm_requests_total") == expected_rows, "the requests counted")
    scrape = Scrape.of(exporter)
    assert scrape.value("llm_requests_in_flight") == 0
    return scrape, rows(db)


def _broken_stream(url: str, body: dict, headers: dict) -> tuple[int, bytes]:
    """Read a response the proxy cannot finish: its status, and the bytes that came before the break."""
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
            status = response.status_code
            for chunk in response.iter_raw():
                received.append(chunk)
    return status, b"".join(received)


# --- the upstream cannot be reached, or breaks off --------------------------------------------------

def test_upstream_refuses_the_connection(tmp_path):
    with running_exporter(_settings(f"http://127.0.0.1:{free_port()}", tmp_path / "log.db")) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json=CHAT)
        assert response.status_code == 502 and response.json()["error"]["code"] == "bad_gateway"
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="connect") == 1
    assert scrape.value("llm_requests_total", code="502") == 1
    assert [(r["status_code"], r["error_type"]) for r in logged] == [(502, "connect")]


def test_upstream_accepts_then_closes_without_an_answer(tmp_path):
    with raw_upstream(close_without_answer) as upstream, \
            running_exporter(_settings(upstream, tmp_path / "log.db")) as exporter:
        response = httpx.post(exporter + "/v1/messages", json=CHAT)
        assert response.status_code == 502 and response.json()["type"] == "error"
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="connect") == 1
    assert [(r["status_code"], r["error_type"]) for r in logged] == [(502, "connect")]


def test_upstream_resets_mid_stream(tmp_path):
    with raw_upstream(reset_mid_stream) as upstream, \
            running_exporter(_settings(upstream, tmp_path / "log.db")) as exporter:
        status, received = _broken_stream(exporter + "/v1/chat/completions", {**CHAT, "stream": True}, {})
        assert status == 200
        assert received.count(b"data: ") == 2  # what came before the reset reached the client
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="read") == 1
    assert scrape.value("llm_requests_total", code="200") == 1
    assert scrape.value("llm_usage_missing_total") == 0  # a broken answer is not a usage gap
    assert [(r["status_code"], r["error_type"], r["input_tokens"]) for r in logged] == [(200, "read", None)]
    assert logged[0]["ttft_seconds"] is not None


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", CHAT),  # a JSON body cut in half
    ("/api/generate", {**CHAT, "prompt": "a b", "stream": True}),  # NDJSON cut after 3 lines
])
def test_upstream_dies_mid_body(upstream_url, tmp_path, path, body):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db")) as exporter:
        status, _ = _broken_stream(exporter + path, body, {"x-demo-die-after": "3"})
        assert status == 200
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="read") == 1
    assert [(r["status_code"], r["error_type"]) for r in logged] == [(200, "read")]


def test_upstream_stalls_past_the_idle_timeout_mid_stream(upstream_url, tmp_path):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db", idle=0.3)) as exporter:
        status, received = _broken_stream(exporter + "/v1/messages", {**CHAT, "stream": True},
                                          {"x-demo-chunk-delay": "2"})
        assert status == 200 and b"message_start" in received
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="timeout") == 1
    assert [(r["status_code"], r["error_type"]) for r in logged] == [(200, "timeout")]


def test_upstream_stalls_before_the_headers(upstream_url, tmp_path):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db", idle=0.3)) as exporter:
        response = httpx.post(exporter + "/api/chat", json=CHAT, headers={"x-demo-delay": "3"})
        assert response.status_code == 504 and "timed out" in response.json()["error"]
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_upstream_errors_total", error_type="timeout") == 1
    assert [(r["status_code"], r["error_type"]) for r in logged] == [(504, "timeout")]


# --- the upstream answers, but not as it should ------------------------------------------------------

@pytest.mark.parametrize("path, body, headers", [
    ("/v1/chat/completions", {**CHAT, "stream": True}, {"x-demo-malformed": "1"}),  # malformed SSE
    ("/v1/chat/completions", CHAT, {"x-demo-malformed": "1"}),  # malformed JSON
    ("/api/chat", {**CHAT, "stream": True}, {"x-demo-malformed": "1"}),  # malformed NDJSON
    ("/v1/chat/completions", {**CHAT, "stream": True}, {"x-demo-content-type": "application/json"}),
    ("/v1/messages", CHAT, {"x-demo-content-type": "text/plain"}),  # wrong content types
    ("/api/chat", {**CHAT, "stream": True}, {"x-demo-content-type": "text/event-stream"}),
    ("/v1/messages", {**CHAT, "stream": True}, {"x-demo-no-usage": "1"}),  # no usage at all
    ("/api/generate", {**CHAT, "prompt": "a", "stream": False}, {"x-demo-no-usage": "1"}),
])
def test_odd_answers_pass_through_unchanged_and_count_as_usage_missing(upstream_url, tmp_path, path, body, headers):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db")) as exporter:
        direct = httpx.post(upstream_url + path, json=body, headers=headers)
        proxied = httpx.post(exporter + path, json=body, headers=headers)
        assert proxied.status_code == direct.status_code == 200
        assert proxied.content == direct.content  # byte for byte what the upstream sent
        if "x-demo-content-type" in headers:
            assert proxied.headers["content-type"] == headers["x-demo-content-type"]
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_usage_missing_total") == 1
    assert scrape.value("llm_tokens_total") == 0
    assert scrape.value("llm_upstream_errors_total") == 0
    assert [(r["status_code"], r["error_type"], r["input_tokens"], r["output_tokens"]) for r in logged] == [
        (200, None, None, None)]


@pytest.mark.parametrize("path, body, size", [
    ("/v1/chat/completions", {**CHAT, "stream": True}, 3 * 1024 * 1024),  # an SSE line over the event limit
    ("/api/chat", {**CHAT, "stream": True}, 2 * 1024 * 1024),  # an NDJSON line over the limit
    ("/v1/chat/completions", CHAT, 9 * 1024 * 1024),  # a JSON body over the size decoded whole
])
def test_a_single_huge_chunk_passes_whole_and_usage_is_still_read(upstream_url, tmp_path, path, body, size):
    headers = {"x-demo-huge-chunk": str(size)}
    with running_exporter(_settings(upstream_url, tmp_path / "log.db")) as exporter:
        direct = httpx.post(upstream_url + path, json=body, headers=headers, timeout=60)
        proxied = httpx.post(exporter + path, json=body, headers=headers, timeout=60)
        assert proxied.status_code == 200 and len(proxied.content) > size
        assert proxied.content == direct.content
        scrape, logged = _outcome(exporter, tmp_path / "log.db")
    assert scrape.value("llm_tokens_total", type="output") == 5
    assert scrape.value("llm_tokens_total", type="input") == 3
    assert [(r["status_code"], r["error_type"], r["output_tokens"]) for r in logged] == [(200, None, 5)]


# --- the client goes away ------------------------------------------------------------------------------

def _raw_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


def _leave(port: int, request: bytes, send: int, read: int) -> None:
    """Send the first `send` bytes of the request, read `read` bytes of the answer (or all of it),
    then hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request[:send])
        got = b""
        while len(got) < read and not got.endswith(b"\r\n0\r\n\r\n"):  # the end of a chunked body
            chunk = sock.recv(min(65536, read - len(got)))
            if not chunk:
                break
            got += chunk


def test_clients_leaving_at_random_points_of_a_stream(upstream_url, tmp_path):
    rng = random.Random(20260523)
    body = json.dumps({**CHAT, "stream": True, "max_tokens": 30}).encode()
    # 50 ms between chunks: a client leaving in the first half leaves the stream over 0.7 s from its end,
    # a margin that holds on a loaded machine.
    headers = {"x-demo-chunk-delay": "0.05"}
    full = len(httpx.post(upstream_url + "/v1/chat/completions", content=body,
                          headers={**headers, "x-demo-chunk-delay": "0"}).content)
    with running_exporter(_settings(upstream_url, tmp_path / "log.db")) as exporter:
        port = int(exporter.rsplit(":", 1)[1])
        request = _raw_request(port, "/v1/chat/completions", body, headers)
        head = request.index(b"\r\n\r\n") + 4  # leaving before the head is complete is no request at all
        cases = [(rng.randrange(head + 1, len(request)), 0) for _ in range(4)]  # mid-body: always 499
        cases += [(len(request), rng.randrange(0, full // 2)) for _ in range(8)]  # mid-stream: 499
        cases += [(len(request), rng.randrange(full // 2, full + 400)) for _ in range(8)]  # anywhere
        for send, read in cases:
            _leave(port, request, send, read)
        scrape, logged = _outcome(exporter, tmp_path / "log.db", len(cases))
    statuses = [r["status_code"] for r in logged]
    assert statuses.count(499) >= 12  # the first twelve left long before the end
    assert set(statuses) <= {499, 200}
    # Metrics and rows tell the same story.
    assert scrape.value("llm_requests_total", code="499") == statuses.count(499)
    assert scrape.value("llm_requests_total", code="200") == statuses.count(200)
    assert all(r["error_type"] is None for r in logged)
    assert all(r["output_tokens"] == 30 for r in logged if r["status_code"] == 200)


def test_a_compression_bomb_passes_through_unchanged_and_its_usage_is_not_read(tmp_path):
    """1 GiB of zeros in about 1 MB of gzip, as a JSON answer: the client gets the upstream's
    bytes exactly, the tap gives up at its bound (counted), and the proxy serves the next request."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(1024)) + compressor.flush()
    usage = b'{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    answers = iter([
        (b"content-encoding: gzip\r\n", bomb),
        (b"", usage),
    ])

    def answer(conn) -> None:
        probe = read_request(conn).startswith(b"GET ")  # the proxy's upstream probe
        extra, body = (b"", b"{}") if probe else next(answers)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra +
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        conn.close()

    with raw_upstream(answer) as upstream, running_exporter(_settings(upstream, tmp_path / "log.db")) as exporter:
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", exporter + "/v1/chat/completions", json=CHAT) as response:
                assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
                assert b"".join(response.iter_raw()) == bomb
            assert client.post(exporter + "/v1/chat/completions", json=CHAT).json()["usage"]["prompt_tokens"] == 3
        scrape, logged = _outcome(exporter, tmp_path / "log.db", expected_rows=2)
    assert scrape.value("llm_telemetry_dropped_total", reason="inflate_limit") == 1
    assert scrape.value("llm_usage_missing_total") == 1
    assert scrape.value("llm_tokens_total", type="input") == 3
    assert [(r["response_bytes"], r["input_tokens"]) for r in logged] == [(len(bomb), None), (len(usage), 3)]
