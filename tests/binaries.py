"""Find and start the real Prometheus and Alertmanager binaries for tests.

Locally a missing binary skips the test that needs it; in CI (CI=true) it fails the run, so an
end-to-end test can never pass by not running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.servers import free_port

# Debian's packages name the Alertmanager binary prometheus-alertmanager.
BINARY_NAMES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "amtool": ("amtool",),
}


def require_binary(tool: str) -> str:
    """The path of `tool`, or a skip (a failure in CI) naming the package to install."""
    for name in BINARY_NAMES[tool]:
        path = shutil.which(name)
        if path:
            return path
    unavailable(f"{tool} not found: apt-get install -y prometheus prometheus-alertmanager")


def unavailable(message: str) -> NoReturn:
    """Skip the test that needs something missing here; in CI (CI=true) fail it instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def run_tool(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run promtool or amtool; the completed process, output captured as text."""
    return subprocess.run(
        [require_binary(tool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(args: list[str], health_path: str, port: int, workdir: Path) -> Iterator[str]:
    log = workdir / "output.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url + health_path, process, log)
        yield base_url
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Terminate a server; kill it if it has not exited after `grace` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def prometheus(config_file: Path, workdir: Path, *flags: str) -> Iterator[str]:
    """A real Prometheus on a free port with `config_file` (and `flags`, e.g. a feature); yields
    its base URL."""
    binary = require_binary("prometheus")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}",  # the alerts' expression links (generatorURL)
        "--web.enable-lifecycle",
        *flags,
    ]
    with _process(args, "/-/ready", port, workdir) as url:
        yield url


@contextlib.contextmanager
def alertmanager(config_file: Path, workdir: Path) -> Iterator[str]:
    """A real Alertmanager (clustering off) on a free port with `config_file`; yields its base URL."""
    binary = require_binary("alertmanager")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}",  # the notifications' silence links
        "--cluster.listen-address=",
    ]
    with _process(args, "/-/ready", port, workdir) as url:
        yield url
