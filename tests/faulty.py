"""Upstreams that misbehave below HTTP: a raw TCP server per behaviour, for the fault suite.

The demo upstream (exporter/demo/upstream) covers faults an ASGI app can make; these need the
socket itself: accepting a connection and closing it without an answer, or resetting it (RST)
in the middle of a streamed body.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"cache-control: no-cache\r\n\r\n")


def read_request(conn: socket.socket) -> bytes:
    """The request head and body (by content-length), or what arrived before the peer stopped."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def reset(conn: socket.socket) -> None:
    """Close with RST instead of FIN: SO_LINGER on, with a zero timeout."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_without_answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.close()


def reset_mid_stream(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(SSE_HEAD)
    for word in (b"one", b"two"):
        conn.sendall(chunked(b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % word))
    reset(conn)


@contextlib.contextmanager
def raw_upstream(behaviour: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 running `behaviour` for each connection; yields its base URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stopping = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            behaviour(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def accept_loop() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stopping.set()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        server.close()
        thread.join(timeout=10)
