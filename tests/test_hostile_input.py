"""Hostile input: bodies over the limit, bodies that are not JSON, endless model names, huge heads.

The head limits are uvicorn's and ours (exporter/httpserver.py): they are tested through a real
`llm-exporter serve` subprocess.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from exporter.config import parse_settings
from exporter.labels import ModelLabels
from tests.exporter_process import children, serve_cli
from tests.logdb import rows, wait_for_rows
from tests.scrape import Scrape
from tests.servers import running_exporter

CHAT = {"model": "demo-gpt-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "a b"}]}


def _settings(upstream_url: str, db: Path, **limits):
    return parse_settings({"upstreams": [{"name": "main", "url": upstream_url}], "db": {"path": str(db)},
                           "limits": limits, "telemetry": {"flush_interval_seconds": 0.1}})


def test_a_body_over_the_limit_gets_413_and_is_counted_and_logged(upstream_url, tmp_path):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db", max_request_bytes=1024)) as exporter:
        response = httpx.post(exporter + "/v1/chat/completions", json={**CHAT, "pad": "x" * 2000})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        streamed = httpx.post(exporter + "/v1/messages", content=iter([b"x" * 700] * 3))  # no content-length
        assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "request_too_large"
        wait_for_rows(tmp_path / "log.db", 2)
        assert Scrape.of(exporter).value("llm_requests_total", code="413") == 2
    assert [(r["status_code"], r["model"]) for r in rows(tmp_path / "log.db")] == [(413, "unknown")] * 2


@pytest.mark.parametrize("content", [b"not json at all", b'["a", "list"]', b"\xff\xfe\x00binary", b""])
def test_a_body_that_is_not_json_is_passed_through_and_counted_as_model_unknown(upstream_url, tmp_path, content):
    with running_exporter(_settings(upstream_url, tmp_path / "log.db")) as exporter:
        headers = {"content-type": "application/json"}
        direct = httpx.post(upstream_url + "/v1/chat/completions", content=content, headers=headers)
        proxied = httpx.post(exporter + "/v1/chat/completions", content=content, headers=headers)
        # The upstream got the bytes as sent: its own answer to them comes back unchanged.
        assert proxied.status_code == direct.status_code == 400
        assert proxied.content == direct.content
        wait_for_rows(tmp_path / "log.db", 1)
        scrape = Scrape.of(exporter)
        assert scrape.value("llm_requests_total", model="unknown", code="400", api="openai_chat") == 1
    assert rows(tmp_path / "log.db")[0]["model"] == "unknown"


def test_10000_distinct_model_names_leave_the_label_and_its_memory_bounded():
    labels = ModelLabels(limit=100, patterns=("keep-*",))
    seen = {labels.label(f"random-{i:05d}-{i * 7919 % 10007}") for i in range(10_000)}
    assert len(seen) == 101 and "other" in seen
    assert labels.label("keep-this-one") == "keep-this-one"
    assert len(labels._seen) <= 102  # names refused as "other" are not remembered
    # Through the proxy, with every request naming a new model: tests/test_soak.py.


def _raw(url: str, request: bytes, chunks: int = 1) -> bytes:
    """Send a request (its bytes repeated `chunks` times where it has {repeat}), read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            if chunks == 1:
                sock.sendall(request)
            else:
                head, _, tail = request.partition(b"{repeat}")
                sock.sendall(head)
                for _ in range(chunks):
                    sock.sendall(tail)
        except OSError:
            pass  # the server may refuse and close before everything is sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 4"):
                break
        return answer


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_oversized_heads_get_a_clean_4xx_and_the_server_keeps_serving(upstream_url, tmp_path):
    # One worker here; tests/test_workers.py checks that the workers refuse large heads too.
    with serve_cli("--upstream", upstream_url, "--db", str(tmp_path / "log.db")) as served:
        get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n"
        fine = _raw(served.url, get + b"x-fine: " + b"a" * 30_000 + b"\r\n\r\n")
        assert fine.startswith(b"HTTP/1.1 200"), fine[:100]
        big_header = _raw(served.url, get + b"x-big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert big_header.startswith(b"HTTP/1.1 431"), big_header[:100]
        many_headers = _raw(served.url, get + b"".join(b"x-h%d: v\r\n" % i for i in range(20_000)) + b"\r\n")
        assert many_headers.startswith(b"HTTP/1.1 431"), many_headers[:100]
        long_url = _raw(served.url, b"GET /v1/models?" + b"q" * 200_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert long_url[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 414", b"HTTP/1.1 400"), long_url[:100]
        # A header that never ends: refused once past the limit, not read into memory.
        processes = [served.pid, *children(served.pid)]
        before = sum(_rss_kib(pid) for pid in processes)
        endless = _raw(served.url, get + b"x-endless: {repeat}" + b"a" * 65536, chunks=300)  # up to ~20 MB
        assert endless.startswith(b"HTTP/1.1 431"), endless[:100]
        assert sum(_rss_kib(pid) for pid in processes) - before < 16 * 1024
        # Still serving, and none of these became a proxied request.
        assert httpx.post(served.url + "/v1/chat/completions", json=CHAT).status_code == 200
        assert Scrape.of(served.url).value("llm_requests_total") == 1
    assert "Traceback" not in served.output()
