"""Soak: 10,000 requests with random faults, disconnects and distinct model names.

The exporter runs in a process of its own exactly as `llm-exporter serve` runs it (tests/
harness_server.py adds only a test-only hook that counts its asyncio tasks), the demo upstream in
another. Afterwards the proxy still serves, its open file descriptors (from /proc) and asyncio
tasks are back at their baseline, and metrics and rows agree with what was sent.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.exporter_process import open_fds
from tests.harness_server import DEBUG_TASKS_PATH
from tests.logdb import query, wait_for_rows, wait_until
from tests.scrape import Scrape
from tests.servers import free_port, wait_ready

SOAK_REQUESTS = 10_000
WARMUP_REQUESTS = 300
CONCURRENCY = 24
MAX_MODELS = 100
MAX_REQUEST_BYTES = 64 * 1024

# name: weight. Every request names a model no other request names.
KINDS = {
    "ok": 34, "stream": 20, "status_500": 5, "status_429": 3, "dies": 5, "no_usage": 5, "malformed": 4,
    "refused": 4, "disconnect": 12, "too_large": 4, "not_json": 4,
}
STREAM_PATHS = ("/v1/chat/completions", "/v1/messages", "/api/chat", "/completion")


def _body(path: str, model: str, tokens: int, stream: bool) -> dict:
    if path == "/completion":
        return {"model": model, "prompt": "a b c", "n_predict": tokens, "stream": stream}
    body = {"model": model, "max_tokens": tokens, "stream": stream, "messages": [{"role": "user", "content": "a b c"}]}
    if path == "/api/chat":
        body["options"] = {"num_predict": tokens}
    return body


class Expected:
    def __init__(self) -> None:
        self.codes: collections.Counter[int] = collections.Counter()
        self.input = 0
        self.output = 0


async def _one(session: aiohttp.ClientSession, url: str, rng: random.Random, expected: Expected) -> None:
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    model = f"soak-{rng.getrandbits(64):016x}"
    tokens = rng.randint(1, 8)
    path, headers, counted = "/v1/chat/completions", {}, False
    body: dict | None = _body(path, model, tokens, False)
    code = 200
    if kind == "ok":
        path = rng.choice(("/v1/chat/completions", "/v1/messages"))
        body, counted = _body(path, model, tokens, False), True
    elif kind == "stream":
        path = rng.choice(STREAM_PATHS)
        body, counted = _body(path, model, tokens, True), True
    elif kind in ("status_500", "status_429"):
        code = int(kind[-3:])
        headers["x-demo-status"] = str(code)
    elif kind == "dies":
        body = _body(path, model, 5, True)
        headers["x-demo-die-after"] = "2"
    elif kind == "no_usage":
        headers["x-demo-no-usage"] = "1"
    elif kind == "malformed":
        headers["x-demo-malformed"] = "1"
    elif kind == "refused":
        body, code = _body(path, "dead-" + model, tokens, False), 502
    elif kind == "disconnect":
        body, code = _body(path, model, 40, True), 499
        headers["x-demo-chunk-delay"] = "0.01"
    elif kind == "too_large":
        body, code = {**body, "padding": "x" * MAX_REQUEST_BYTES}, 413
    elif kind == "not_json":
        body, code = None, 400  # the demo upstream's answer, passed on
    data = json.dumps(body).encode() if body is not None else b"{not json"
    expected.codes[code] += 1
    if counted:
        expected.input += 3
        expected.output += tokens
    async with session.post(url + path, data=data, headers={"content-type": "application/json", **headers}) as response:
        if kind == "disconnect":
            await response.content.readany()
            response.close()  # hang up mid-stream
            return
        if kind == "dies":
            with pytest.raises(aiohttp.ClientError):
                await response.read()
            return
        await response.read()
        assert response.status == code, (kind, response.status)


async def _traffic(url: str, count: int, seed: int) -> Expected:
    rng = random.Random(seed)
    expected = Expected()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout) as session:
        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await _one(session, url, rng, expected)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return expected


def _start(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen([sys.executable, "-m", "tests.harness_server", *args], stdout=output,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent, env=os.environ.copy())


@pytest.fixture
def soak_servers(tmp_path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    upstream_port, exporter_port = free_port(), free_port()
    db = tmp_path / "log.db"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "upstreams": [
            {"name": "main", "url": f"http://127.0.0.1:{upstream_port}"},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "models": ["dead-*"]},
        ],
        "db": {"path": str(db)},
        "limits": {"max_request_bytes": MAX_REQUEST_BYTES},
        "metrics": {"max_models": MAX_MODELS},
        "telemetry": {"flush_interval_seconds": 0.2},
        "access_log": {"path": str(tmp_path / "access.log")},
    }))
    upstream = _start("upstream", "--port", str(upstream_port), log=tmp_path / "upstream.log")
    exporter = _start("exporter", "--config", str(config), "--port", str(exporter_port), log=tmp_path / "exporter.log")
    try:
        url = f"http://127.0.0.1:{exporter_port}"
        wait_ready(url, exporter)
        yield url, exporter, db
    finally:
        for process in (exporter, upstream):
            process.terminate()
            process.wait(timeout=60)
    log = (tmp_path / "exporter.log").read_text()
    assert "Traceback" not in log, log[-5000:]


def _tasks(url: str) -> int:
    return httpx.get(url + DEBUG_TASKS_PATH, timeout=10).json()["tasks"]


def _settled(url: str, pid: int) -> tuple[int, int]:
    """File descriptors and tasks once idle connections are gone: the smallest seen over a second."""
    seen = []
    for _ in range(10):
        seen.append((open_fds(pid), _tasks(url)))
        time.sleep(0.1)
    return min(f for f, _ in seen), min(t for _, t in seen)


def test_soak_10000_requests_with_faults_and_disconnects(soak_servers):
    url, exporter, db = soak_servers
    warmup = asyncio.run(_traffic(url, WARMUP_REQUESTS, seed=1))
    wait_for_rows(db, WARMUP_REQUESTS)
    time.sleep(2)  # idle keep-alive connections to the upstream close after 1 s
    base_fds, base_tasks = _settled(url, exporter.pid)

    sent = asyncio.run(_traffic(url, SOAK_REQUESTS, seed=2))

    # The proxy still serves.
    final = httpx.post(url + "/v1/embeddings", json={"model": "final", "input": "a b"}, timeout=30)
    assert final.status_code == 200
    total = WARMUP_REQUESTS + SOAK_REQUESTS + 1
    wait_for_rows(db, total)

    # Nothing leaked: descriptors and tasks come back to the baseline (a bound, not a timing test).
    def back_to_baseline() -> bool:
        fds, tasks = _settled(url, exporter.pid)
        return fds <= base_fds and tasks <= base_tasks

    wait_until(back_to_baseline, f"fds back to {base_fds} and tasks to {base_tasks}")

    # Metrics and rows agree with what was sent.
    codes = warmup.codes + sent.codes
    codes[200] += 1
    scrape = Scrape.of(url)
    assert scrape.value("llm_requests_in_flight") == 0
    assert scrape.value("llm_telemetry_dropped_total") == 0
    assert scrape.value("llm_requests_total") == total
    logged = dict(query(db, "SELECT status_code, COUNT(*) FROM requests GROUP BY status_code"))
    assert logged == dict(codes)
    for code, count in codes.items():
        assert scrape.value("llm_requests_total", code=str(code)) == count, code
    input_tokens = warmup.input + sent.input + 2
    output_tokens = warmup.output + sent.output
    assert scrape.value("llm_tokens_total", type="input") == input_tokens
    assert scrape.value("llm_tokens_total", type="output") == output_tokens
    assert query(db, "SELECT SUM(input_tokens), SUM(output_tokens) FROM requests") == [(input_tokens, output_tokens)]
    assert scrape.value("llm_upstream_errors_total", error_type="connect") == codes[502]
    assert scrape.value("llm_upstream_errors_total", error_type="status") == codes[500] + codes[429]

    # 10,000 distinct model names, and the model label stays bounded.
    assert query(db, "SELECT COUNT(DISTINCT model) FROM requests")[0][0] > SOAK_REQUESTS * 0.9
    models = scrape.label_values("llm_requests_total", "model")
    assert len(models - {"other", "unknown"}) <= MAX_MODELS
    assert {"other", "unknown"} <= models
