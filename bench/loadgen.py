"""Load generation: wrk (C, from Debian) for request rates, and a small asyncio client of ours.

wrk drives the non-streamed cases: it needs far less CPU per request than any Python client, and
its direct rows in the table (tens of thousands of requests/s against the bench upstream) show it
is not what limits the proxied rows. Streams need timing per chunk, which wrk cannot give, so a
raw asyncio + httptools client measures them; it costs a few microseconds per chunk, the same on
the direct path as through a proxy, and the table reports the proxies' values minus the direct
ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httptools

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
_STAMP = re.compile(rb't(\d{6,})\.')


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing and we are root."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: wrk is missing; installing it with apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        path = shutil.which("wrk")
        if not path:
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
            path = shutil.which("wrk")
    if not path:
        raise SystemExit("bench: wrk is needed (Debian: apt-get install -y wrk)")
    return path


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, connections: int, seconds: float, body: str, auth: str) -> WrkResult:
    """One wrk run: POST `body` over `connections` keep-alive connections for `seconds`."""
    command = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(WRK_SCRIPT), url]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_AUTH": auth}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    data = json.loads(line[len("WRKJSON "):])
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return WrkResult(data["requests"], data["duration_us"] / 1e6, data["p50_us"] / 1000, data["p99_us"] / 1000, errors)


# --- the asyncio client ----------------------------------------------------------------------------


@dataclass
class StreamResult:
    status: int = 0
    sent_ns: int = 0
    headers_ns: int = 0  # response headers complete
    first_body_ns: int = 0  # first body byte
    body_bytes: int = 0
    chunk_delays_ns: list[int] = field(default_factory=list)  # arrival - upstream stamp, per chunk
    complete: bool = False
    error: str | None = None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; exchanges run one after another, timed as bytes arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.result = StreamResult()
        self.stamps = False
        self.done: asyncio.Future | None = None
        self.now = 0
        self.tail = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(f"parse: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish("connection lost")

    def on_headers_complete(self) -> None:
        self.result.status = self.parser.get_status_code()
        self.result.headers_ns = self.now

    def on_body(self, body: bytes) -> None:
        result = self.result
        if not result.first_body_ns:
            result.first_body_ns = self.now
        result.body_bytes += len(body)
        if self.stamps:
            data = self.tail + body
            for found in _STAMP.finditer(data):
                result.chunk_delays_ns.append(self.now - int(found.group(1)))
            self.tail = data[-24:] if len(data) > 24 else data
            if self.tail and _STAMP.search(self.tail):
                self.tail = b""

    def on_message_complete(self) -> None:
        self.result.complete = True
        self._finish(None)

    def _finish(self, error: str | None) -> None:
        if self.done is not None and not self.done.done():
            if error and not self.result.complete:
                self.result.error = error
            self.done.set_result(None)


class Client:
    """Sequential requests to one server over one keep-alive connection (reopened when closed)."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.connection: _Connection | None = None

    async def request(self, path: str, body: bytes, headers: dict[str, str], stamps: bool = False,
                      timeout: float = 60.0, keep_alive: bool = True) -> StreamResult:
        """POST `body`, read the whole answer, time it; never raises."""
        loop = asyncio.get_running_loop()
        connection = self.connection
        result = StreamResult()
        try:
            if connection is None or connection.closed:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(_Connection, self.parts.hostname, self.parts.port), timeout)
                self.connection = connection
            connection.result, connection.stamps, connection.tail = result, stamps, b""
            connection.done = loop.create_future()
            head = (f"POST {path} HTTP/1.1\r\nhost: {self.parts.netloc}\r\ncontent-length: {len(body)}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    + ("" if keep_alive else "connection: close\r\n") + "\r\n")
            result.sent_ns = time.monotonic_ns()
            connection.transport.write(head.encode() + body)
            await asyncio.wait_for(connection.done, timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            result.error = type(exc).__name__
        if not result.complete or not keep_alive:
            self.close()
        return result

    def close(self) -> None:
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.close()
        self.connection = None


async def request(url: str, body: bytes, headers: dict[str, str], stamps: bool = False,
                  timeout: float = 60.0) -> StreamResult:
    """One POST on a connection of its own (closed after)."""
    parts = urlsplit(url)
    client = Client(f"{parts.scheme}://{parts.netloc}")
    return await client.request(parts.path or "/", body, headers, stamps, timeout, keep_alive=False)


async def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0,
              redirects: int = 1) -> tuple[int, bytes, float]:
    """GET a URL on a new connection: status, body, seconds to the complete answer.

    A redirect is followed once (LiteLLM answers /metrics with a 307 to /metrics/).
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
    started = time.perf_counter()
    head = f"GET {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "connection: close\r\n\r\n"
    writer.write(head.encode())
    raw = await asyncio.wait_for(reader.read(), timeout)
    elapsed = time.perf_counter() - started
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    head_bytes, _, payload = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    if status in (301, 302, 307, 308) and redirects > 0:
        location = next((line.split(b":", 1)[1].strip().decode() for line in head_bytes.split(b"\r\n")
                         if line.lower().startswith(b"location:")), None)
        if location:
            target = urlsplit(location)
            return await get(f"{parts.scheme}://{parts.netloc}{target.path or '/'}", headers, timeout, redirects - 1)
    if b"transfer-encoding: chunked" in head_bytes.lower():
        payload = _dechunk(payload)
    return status, payload, elapsed


def _dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        at = end + 2 + size + 2
