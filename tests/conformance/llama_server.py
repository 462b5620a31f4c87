"""A real llama-server on loopback running the tiny model, and the proxy in front of it.

Support for the conformance tests (their fixtures are in conftest.py): start a server, read its
own counters, start the proxy for it, read the request log's row of a call.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from exporter.config import parse_settings
from tests.binaries import stop
from tests.scrape import Scrape
from tests.servers import free_port, running_exporter

MODEL_ALIAS = "tiny"
CONTEXT = 512
SAMPLING = {"temperature": 0, "seed": 42}


@dataclass
class LlamaServer:
    url: str
    process: subprocess.Popen

    def metrics(self) -> dict[str, float]:
        """llama-server's own counters (llamacpp:*), by name without the prefix."""
        scrape = Scrape(httpx.get(self.url + "/metrics", timeout=10).text)
        return {name.removeprefix("llamacpp:"): value for name, _, value in scrape.samples}

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def start_llama_server(files: tuple[Path, Path], *extra: str) -> Iterator[LlamaServer]:
    binary, model = files
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--metrics",
             "-c", str(CONTEXT), "-np", "2", "-t", "1", "--no-webui", "--alias", MODEL_ALIAS, "--no-warmup", *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
        server = LlamaServer(f"http://127.0.0.1:{port}", process)
        try:
            deadline = time.monotonic() + 120  # a bound for a loaded machine, not a timing test
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama-server exited: {log.read()[-3000:].decode(errors='replace')}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("llama-server did not become healthy")
                time.sleep(0.2)
            yield server
        finally:
            if process.poll() is None:
                stop(process)


def proxy_settings(url: str, kind: str):
    return parse_settings({"upstreams": [{"name": "llama", "url": url, "kind": kind}]})


@contextlib.contextmanager
def proxy_for(url: str, kind: str) -> Iterator[str]:
    with running_exporter(proxy_settings(url, kind)) as proxy_url:
        yield proxy_url


def request_log_row(proxy_url: str, request_id: str) -> dict[str, Any]:
    """The request log's row, once the writer has flushed it (a bound, not a timing assertion)."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(f"{proxy_url}/api/requests/{request_id}", timeout=10)
        if response.status_code == 200:
            return response.json()["request"]
        assert time.monotonic() < deadline, f"no request-log row for {request_id}"
        time.sleep(0.2)


def next_second() -> None:
    """Wait for the clock's next second, so timestamps of two calls differ where the server sets them."""
    time.sleep(1 - time.time() % 1 + 0.01)
