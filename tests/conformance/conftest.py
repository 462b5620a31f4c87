"""A real llama-server on loopback and the proxy in front of it, for the conformance tests.

The server is built once per machine (tests/conformance/build_llama_server.py, cached) and runs
the tiny random-weight model this project writes itself. Without cmake or a compiler the tests
skip locally; in CI (CI=true) a failed build fails the run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from exporter.config import parse_settings
from tests.conftest import running_exporter
from tests.conformance import build_llama_server
from tests.conformance.tiny_model import tiny_model
from tests.scrape import Scrape
from tests.servers import free_port

MODEL_ALIAS = "tiny"
CONTEXT = 512


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def llama_files() -> tuple[Path, Path]:
    """The llama-server binary and the tiny model, built and written on first use."""
    try:
        binary = build_llama_server.build()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        if _in_ci():
            pytest.fail(f"llama-server could not be built: {exc}")
        pytest.skip(f"llama-server could not be built: {exc}")
    model = tiny_model(binary.parent, binary.parent / build_llama_server.VOCAB)
    return binary, model


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
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="session")
def llama(llama_files) -> Iterator[LlamaServer]:
    with start_llama_server(llama_files) as server:
        yield server


@pytest.fixture(scope="session")
def llama_embedder(llama_files) -> Iterator[LlamaServer]:
    """A second server for /v1/embeddings: llama-server serves embeddings only when started so."""
    with start_llama_server(llama_files, "--embeddings", "--pooling", "mean") as server:
        yield server


def proxy_settings(url: str, kind: str):
    return parse_settings({"upstreams": [{"name": "llama", "url": url, "kind": kind}]})


@contextlib.contextmanager
def proxy_for(url: str, kind: str) -> Iterator[str]:
    with running_exporter(proxy_settings(url, kind)) as proxy_url:
        yield proxy_url


@pytest.fixture(scope="module", params=["llamacpp", "openai"])
def proxy(request, llama) -> Iterator[tuple[str, str]]:
    """The proxy in front of the session's llama-server, as upstream kind llamacpp and openai (per module:
    the access log's handler is one per process, taken by the first exporter that runs)."""
    with proxy_for(llama.url, request.param) as url:
        yield url, request.param
