"""The HTTPS upstream clients against a cloud-like upstream: CPU per request and added latency.

A cloud LLM API answers over TLS after hundreds of milliseconds. This starts an HTTPS upstream
in its own process (a self-signed certificate made at run time, trusted through SSL_CERT_FILE)
that answers after FIRST_BYTE_SECONDS: a JSON body, or a stream of STREAM_CHUNKS chunks
CHUNK_GAP_SECONDS apart. In this process, on uvloop, each client sends the same requests at 1 and
10 concurrent requests: its CPU per request (the process's CPU time, TLS included) and its latency
beyond the upstream's scripted delay. "direct" is a bare asyncio + ssl + httptools client: the
floor, not a candidate.

    python -m bench.cloud [--quick]      (also `python -m bench --only cloud`)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.clients import RawConnection, post_through
from bench.procs import free_port
from bench.tls import self_signed, server_context

FIRST_BYTE_SECONDS = 0.25
STREAM_CHUNKS = 50
CHUNK_GAP_SECONDS = 0.005
_JSON = b'{"id":"x","object":"chat.completion","choices":[{"message":{"content":"hi"}}],"usage":{"total_tokens":3}}'
_EVENT = b'data: {"choices":[{"delta":{"content":"word "}}]}\n\n'
_SCRIPTED = {"/json": FIRST_BYTE_SECONDS, "/stream": FIRST_BYTE_SECONDS + (STREAM_CHUNKS - 1) * CHUNK_GAP_SECONDS}
_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


# --- the upstream (its own process) -------------------------------------------------------------

async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            await asyncio.sleep(FIRST_BYTE_SECONDS)
            if head.split(b" ", 2)[1] == b"/stream":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                for index in range(STREAM_CHUNKS):
                    if index:
                        await asyncio.sleep(CHUNK_GAP_SECONDS)
                    writer.write(b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(_JSON), _JSON))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        writer.close()


async def _upstream(port: int, cert: str, key: str) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, ssl=server_context(Path(cert), Path(key)))
    async with server:
        await server.serve_forever()


# --- the clients --------------------------------------------------------------------------------

One = Callable[[str], Awaitable[None]]  # one request to a path, its body read to the end


async def _httpx(url: str, run: Callable[[One], Awaitable[dict]]) -> dict:
    """exporter.upstream.httpx_client, as the proxy uses it for HTTPS upstreams."""
    from exporter.config import Timeouts
    from exporter.origin import parse_origin
    from exporter.upstream.httpx_client import HttpxClient

    client = HttpxClient(parse_origin(url), Timeouts(connect=10, idle=120))
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-bench")]

    try:
        return await run(lambda path: post_through(client, path, headers, _BODY))
    finally:
        await client.close()


async def _aiohttp(url: str, run: Callable[[One], Awaitable[dict]]) -> dict:
    """aiohttp as the proxy used it for HTTPS upstreams until httpx took over."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ssl=ssl.create_default_context())
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")) as session:
        async def one(path: str) -> None:
            response = await session.request("POST", url + path, data=_BODY, headers=headers, allow_redirects=False)
            try:
                while await response.content.readany():
                    pass
            finally:
                response.release()
        return await run(one)


async def _direct(url: str, run: Callable[[One], Awaitable[dict]]) -> dict:
    """bench.clients.RawConnection over TLS: the floor."""
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    loop = asyncio.get_running_loop()
    idle: list[RawConnection] = []

    def connect() -> Awaitable[tuple]:
        return loop.create_connection(RawConnection, "127.0.0.1", port, ssl=context)

    def one(path: str) -> Awaitable[None]:
        request = (b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                   b"content-length: %d\r\n\r\n%s" % (path.encode(), port, len(_BODY), _BODY))
        return RawConnection.exchange(idle, connect, request)
    return await run(one)


CLIENTS = {"httpx (exporter.upstream.httpx_client)": _httpx, "aiohttp (the previous HTTPS client)": _aiohttp,
           "direct (bare asyncio + ssl + httptools, the floor)": _direct}


# --- the measurement ----------------------------------------------------------------------------

def _runner(path: str, requests: int, concurrency: int) -> Callable[[One], Awaitable[dict]]:
    async def run(one: One) -> dict:
        latencies: list[float] = []

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                await one(path)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(2) for _ in range(concurrency)))  # warm-up: connections, TLS, caches
        latencies.clear()
        cpu = time.process_time()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        cpu = time.process_time() - cpu
        added = sorted(latency - _SCRIPTED[path] for latency in latencies)
        return {"cpu_us": cpu / len(latencies) * 1e6, "added_p50_ms": statistics.median(added) * 1e3,
                "added_p90_ms": added[int(len(added) * 0.9) - 1] * 1e3}
    return run


def compare(quick: bool, log: Callable[[str], None]) -> list[dict]:
    """Every client, shape and concurrency against one HTTPS upstream process; one row each."""
    import uvloop

    rows = []
    with tempfile.TemporaryDirectory(prefix="llm-exporter-cloud-") as tmp:
        cert, key = self_signed(Path(tmp))
        os.environ["SSL_CERT_FILE"] = str(cert)  # read by ssl.create_default_context() in every client
        port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.cloud", "--serve", str(port), str(cert), str(key)])
        try:
            _wait_listening(port)
            url = f"https://127.0.0.1:{port}"
            for concurrency, requests in ((1, 10 if quick else 40), (10, 20 if quick else 200)):
                for path in ("/json", "/stream"):
                    for name, client in CLIENTS.items():
                        try:
                            row = uvloop.run(client(url, _runner(path, requests, concurrency)))
                        except ImportError as exc:  # aiohttp is no dependency of the proxy any more
                            log(f"cloud {name}: skipped ({exc})")
                            continue
                        rows.append({"client": name, "shape": path[1:], "concurrency": concurrency, **row})
                        log(f"cloud {name} {path[1:]} c={concurrency}: {row['cpu_us']:.0f} us CPU/request, "
                            f"added p50 {row['added_p50_ms']:.1f} ms, p90 {row['added_p90_ms']:.1f} ms")
        finally:
            upstream.terminate()
            upstream.wait()
    return rows


def _wait_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the HTTPS upstream did not listen on {port}")


def table(rows: list[dict]) -> str:
    lines = ["| client | body | concurrent | CPU µs/request | added p50 ms | added p90 ms |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['client']} | {r['shape']} | {r['concurrency']} | {r['cpu_us']:,.0f} | {r['added_p50_ms']:.1f} "
              f"| {r['added_p90_ms']:.1f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, cert, key = args.serve
        asyncio.run(_upstream(int(port), cert, key))
        return
    print(table(compare(args.quick, lambda message: print(message, file=sys.stderr, flush=True))))


if __name__ == "__main__":
    main()
