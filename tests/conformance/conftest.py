"""Fixtures of the conformance tests: a real llama-server on loopback (tests/conformance/llama_server.py)
and the proxy in front of it.

The server is built once per machine (tests/conformance/build_llama_server.py, cached) and runs
the tiny random-weight model this project writes itself. Without cmake or a compiler the tests
skip locally; in CI (CI=true) a failed build fails the run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.binaries import unavailable
from tests.conformance import build_llama_server
from tests.conformance.llama_server import LlamaServer, proxy_for, start_llama_server
from tests.conformance.tiny_model import tiny_model


@pytest.fixture(scope="session")
def llama_files() -> tuple[Path, Path]:
    """The llama-server binary and the tiny model, built and written on first use."""
    try:
        binary = build_llama_server.build()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        unavailable(f"llama-server could not be built: {exc}")
    model = tiny_model(binary.parent, binary.parent / build_llama_server.VOCAB)
    return binary, model


@pytest.fixture(scope="session")
def llama(llama_files) -> Iterator[LlamaServer]:
    with start_llama_server(llama_files) as server:
        yield server


@pytest.fixture(scope="session")
def llama_embedder(llama_files) -> Iterator[LlamaServer]:
    """A second server for /v1/embeddings: llama-server serves embeddings only when started so."""
    with start_llama_server(llama_files, "--embeddings", "--pooling", "mean") as server:
        yield server


@pytest.fixture(scope="module", params=["llamacpp", "openai"])
def proxy(request, llama) -> Iterator[tuple[str, str]]:
    """The proxy in front of the session's llama-server, as upstream kind llamacpp and openai (per module:
    the access log's handler is one per process, taken by the first exporter that runs)."""
    with proxy_for(llama.url, request.param) as url:
        yield url, request.param
