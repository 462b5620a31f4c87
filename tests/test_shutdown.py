"""Graceful shutdown: SIGTERM stops accepting, lets streams in flight finish, flushes the request log.

Real `llm-exporter serve` subprocesses in front of the demo upstream, streams held open by slow
chunks. No timing assertions: every wait is a poll with a generous bound.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import httpx
import pytest

from tests.exporter_process import serve_cli
from tests.logdb import rows, wait_until

STREAM = {"model": "demo-gpt-mini", "stream": True, "max_tokens": 30,
          "messages": [{"role": "user", "content": "a b c"}]}


def _stream(url: str, started: threading.Semaphore, results: list) -> None:
    try:
        with httpx.Client(timeout=120) as client, client.stream(
                "POST", url + "/v1/chat/completions", json=STREAM, headers={"x-demo-chunk-delay": "0.05"}) as response:
            chunks = response.iter_raw()
            received = [next(chunks)]
            started.release()
            received += list(chunks)
        results.append(b"".join(received))
    except httpx.HTTPError as exc:
        started.release()
        results.append(exc)


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            # Accepted by a listening socket: is anyone serving it?
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            return not sock.recv(100)
    except OSError:
        return True


def _config(tmp_path: Path, upstream_url: str, grace: float) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "upstreams": [{"name": "main", "url": upstream_url}],
        "db": {"path": str(tmp_path / "log.db")},
        # Batches wait up to 60 s: only the shutdown flush can write these rows in time.
        "telemetry": {"flush_interval_seconds": 60, "batch_size": 1000},
        "server": {"shutdown_grace_seconds": grace},
    }))
    return config


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_streams_in_flight_finish_and_writes_their_rows(upstream_url, tmp_path, workers):
    streams = 4
    with serve_cli("--config", str(_config(tmp_path, upstream_url, 60)), "--workers", workers) as served:
        for _ in range(3):
            assert httpx.post(served.url + "/v1/embeddings", json={"model": "e", "input": "a"}).status_code == 200
        started = threading.Semaphore(0)
        results: list = []
        threads = [threading.Thread(target=_stream, args=(served.url, started, results)) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for _ in range(streams):
            assert started.acquire(timeout=60)
        served.process.send_signal(signal.SIGTERM)
        if workers == "1":  # the one server closes its socket at once; with workers the parent holds it
            wait_until(lambda: _refused(served.url), "new connections to be refused")
        for thread in threads:
            thread.join(timeout=120)
        assert served.stop() in (0, -signal.SIGTERM), served.output()

    assert len(results) == streams
    for result in results:
        assert isinstance(result, bytes), result
        assert result.rstrip().endswith(b"data: [DONE]")
    logged = rows(tmp_path / "log.db")
    assert len(logged) == 3 + streams
    assert sorted(row["status_code"] for row in logged) == [200] * (3 + streams)
    assert sum(row["output_tokens"] for row in logged if row["stream"]) == 30 * streams
    assert "Traceback" not in served.output()


def test_streams_longer_than_the_grace_period_are_cut_and_still_logged(upstream_url, tmp_path):
    streams = 2
    with serve_cli("--config", str(_config(tmp_path, upstream_url, 0.5))) as served:
        started = threading.Semaphore(0)
        results: list = []
        slow = {**STREAM, "max_tokens": 1000}  # 100 s at 0.1 s a chunk: far past the grace period

        def stream() -> None:
            try:
                with httpx.Client(timeout=120) as client, client.stream(
                        "POST", served.url + "/v1/chat/completions", json=slow,
                        headers={"x-demo-chunk-delay": "0.1"}) as response:
                    chunks = response.iter_raw()
                    next(chunks)
                    started.release()
                    for _ in chunks:
                        pass
                results.append("complete")
            except httpx.HTTPError:
                results.append("cut")

        threads = [threading.Thread(target=stream) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for _ in range(streams):
            assert started.acquire(timeout=60)
        assert served.stop() in (0, -signal.SIGTERM), served.output()
        for thread in threads:
            thread.join(timeout=60)
    assert results == ["cut"] * streams
    logged = rows(tmp_path / "log.db")
    assert len(logged) == streams
    assert all(row["stream"] == 1 and row["status_code"] == 200 for row in logged)
