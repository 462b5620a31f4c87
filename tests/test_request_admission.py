"""What the proxy admits: origin-form targets only, request heads and bodies within time limits,
large and deeply nested bodies without holding the event loop. Through `llm-exporter serve`, whose
HTTP protocol (exporter/httpserver.py) is part of what is tested."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import yaml

from tests.exporter_process import serve_cli
from tests.logdb import rows, wait_for_rows
from tests.scrape import Scrape

CHAT = {"model": "demo-gpt-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "a b"}]}


@pytest.fixture
def served(upstream_url, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "upstreams": [{"name": "main", "url": upstream_url}],
        "db": {"path": str(tmp_path / "log.db")},
        "limits": {"request_head_timeout_seconds": 1, "request_body_timeout_seconds": 1},
        "telemetry": {"flush_interval_seconds": 0.1},
    }))
    with serve_cli("--config", str(config)) as process:
        yield process
    assert "Traceback" not in process.output()


def _exchange(url: str, request: bytes, pause_after: float = 0.0) -> bytes:
    """Send raw bytes, optionally wait, then read until the server closes or 30 s pass (a hang guard)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        time.sleep(pause_after)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                length = [int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length"]
                if length and len(body) >= length[0]:
                    break
        except ConnectionResetError:
            pass
        return answer


@pytest.mark.parametrize("target", [
    b"http://127.0.0.2:9/v1/chat/completions", b"*", b"https://user:pw@example.invalid/v1/chat/completions",
])
def test_targets_that_are_not_paths_get_400_in_the_family_shape_and_are_counted(served, target):
    body = json.dumps(CHAT).encode()
    answer = _exchange(served.url, b"POST " + target + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    if target.endswith(b"/v1/chat/completions"):  # absolute-form names the path: OpenAI's error shape
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "invalid_request_error"
    assert Scrape.of(served.url).value("llm_requests_total", code="400") == 1
    assert httpx.post(served.url + "/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize("target", [b"127.0.0.2:9", b"@127.0.0.2:9/v1/models", b"example.invalid/x", b"\\x"])
def test_targets_the_http_parser_refuses_get_its_400_and_reach_no_app_code(served, target):
    answer = _exchange(served.url, b"GET " + target + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert Scrape.of(served.url).value("llm_requests_total") == 0


def test_a_head_slower_than_its_time_limit_gets_408(served):
    answer = _exchange(served.url, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n", pause_after=0)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    silent = _exchange(served.url, b"")  # a connection that never sends a byte is closed quietly
    assert silent == b""
    assert "refused with 408" in served.output()
    assert httpx.post(served.url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_a_body_slower_than_its_time_limit_gets_408_in_the_family_shape(served, tmp_path):
    answer = _exchange(served.url, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                       b"content-length: 1000\r\n\r\n{\"model\": ")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["type"] == "error"  # Anthropic's shape
    assert Scrape.of(served.url).value("llm_requests_total", code="408", api="anthropic_messages") == 1
    wait_for_rows(tmp_path / "log.db", 1)
    assert rows(tmp_path / "log.db")[0]["status_code"] == 408


def test_large_and_deeply_nested_bodies_are_passed_through_and_read_without_a_full_parse(served, tmp_path):
    messages = [{"role": "user", "content": "word " * 200}] * 20_000  # about 20 MB
    large = httpx.post(served.url + "/v1/chat/completions", timeout=60,
                       json={"model": "demo-gpt-mini", "max_tokens": 2, "stream": True, "messages": messages})
    assert large.status_code == 200 and large.text.rstrip().endswith("data: [DONE]")
    assert '"usage"' not in large.text  # asked for on the client's behalf, and hidden again
    nested = httpx.post(served.url + "/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000,
                        headers={"content-type": "application/json"})
    assert nested.status_code == 400  # the upstream's own answer to a body that is not an object
    wait_for_rows(tmp_path / "log.db", 2)
    assert [(r["model"], r["stream"], r["input_tokens"] is not None) for r in rows(tmp_path / "log.db")] == [
        ("demo-gpt-mini", 1, True), ("unknown", 0, False)]
