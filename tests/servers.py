"""Start real servers for tests: an ASGI app under uvicorn on 127.0.0.1, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from exporter.app import create_app
from exporter.config import Settings

DEFAULT_DB_PATH = Settings.__dataclass_fields__["db_path"].default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app, port: int | None = None, **options) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread; yield its base URL; stop it on exit."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def running_exporter(settings: Settings, observers=None) -> Iterator[str]:
    """The exporter under uvicorn as `llm-exporter serve` runs it; yields its base URL.

    Settings with the default database path get a request log of their own in a temporary
    directory, so tests neither share rows nor leave llm-exporter.db in the working directory.
    """
    with contextlib.ExitStack() as stack:
        if settings.db_path == DEFAULT_DB_PATH:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-exporter-test-"))
            settings = dataclasses.replace(settings, db_path=os.path.join(directory, "llm-exporter.db"))
        url = stack.enter_context(serve(create_app(settings, observers), server_header=False, date_header=False))
        yield url


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Poll a started `llm-exporter serve` until its /readyz answers 200 (a bound, not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


async def lifespan_of_a_plain_app(receive, send) -> None:
    """The ASGI lifespan protocol for test apps that have nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


class HeaderEcho:
    """An upstream that answers with the headers it received, every value and repeated names
    included, as a list of [name, value] (so a test sees which key went upstream), and a usage."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_of_a_plain_app(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        body = json.dumps({"headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
