"""The compose stack's gateway (config/gateway.nginx.conf), run natively with the real nginx in
front of a real exporter: clients get the exporter's bytes as they stream, its own errors and
request ids, through the one entry point that `--scale exporter=N` needs.

Only the addresses change: the compose file's `exporter:8080` (found through Docker's DNS) becomes
this test's exporter, and nginx listens on a free port. Locally a missing nginx skips; in CI
(CI=true) it fails (.ci/run installs Debian's nginx-light).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.demo.upstream import HEADER_CHUNK_DELAY
from tests.binaries import unavailable, wait_healthy
from tests.scrape import Scrape
from tests.servers import free_port

CONF = Path(__file__).resolve().parent.parent / "config" / "gateway.nginx.conf"
COMPOSE_EXPORTER = "exporter:8080"
COMPOSE_LISTEN = "listen 8080;"


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if path:
        return path
    unavailable("nginx not found: apt-get install -y nginx-light")


def local_conf(workdir: Path, exporter: str, port: int) -> Path:
    """The committed config with this machine's addresses and paths."""
    text = CONF.read_text()
    assert text.count(COMPOSE_EXPORTER) == 1 and text.count(COMPOSE_LISTEN) == 1
    text = text.replace(COMPOSE_EXPORTER, exporter).replace(COMPOSE_LISTEN, f"listen 127.0.0.1:{port};")
    text = text.replace("/tmp/", f"{workdir}/")
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


@contextlib.contextmanager
def gateway(exporter_url: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    conf = local_conf(workdir, exporter_url.removeprefix("http://"), port)
    log = workdir / "nginx.log"
    with open(log, "wb") as out:
        # As root the workers would switch to `nobody`, who may not enter the test's directory.
        process = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(workdir), "-g", "daemon off; user root;"],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/healthz", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def gateway_url(exporter_url: str, tmp_path: Path) -> Iterator[str]:
    with gateway(exporter_url, tmp_path) as url:
        yield url


def test_the_config_is_valid_for_nginx(tmp_path: Path):
    conf = local_conf(tmp_path, "127.0.0.1:9", free_port())
    result = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_a_stream_reaches_the_client_while_the_exporter_is_still_sending(gateway_url: str, exporter_url: str):
    """The first event is through the gateway while the request is still in flight
    (the demo upstream waits between chunks), and the whole stream arrives unchanged."""
    body = {"model": "demo-gpt-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", gateway_url + "/v1/chat/completions", json=body,
                           headers={HEADER_CHUNK_DELAY: "0.3", "x-request-id": "through-the-gateway"}) as response:
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "through-the-gateway"
            chunks = response.iter_raw()
            first = next(chunks)
            assert first.startswith(b"data: ")
            assert Scrape.of(exporter_url).value("llm_requests_in_flight") == 1
            rest = b"".join(chunks)
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert Scrape.of(exporter_url).value("llm_requests_total", code="200") == 1
        assert request_logged(client, gateway_url + "/api/requests/through-the-gateway")


def request_logged(client: httpx.Client, url: str) -> bool:
    """The request log's row, once the writer's next batch has landed (at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(url).status_code == 200:
            return True
        time.sleep(0.1)
    return False


def test_the_exporters_own_limit_answers_not_nginx(gateway_url: str):
    """A body above the exporter's limit gets the exporter's 413 (JSON in the API's format), not an
    nginx error page: the gateway sets no body limit of its own."""
    huge = b'{"model": "demo-gpt-mini", "prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    response = httpx.post(gateway_url + "/v1/completions", content=huge,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
