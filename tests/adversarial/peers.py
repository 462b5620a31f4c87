"""The proxy's two kinds of peer in the adversarial suite: a scripted raw upstream and a canary.

RawUpstream is a TCP server on 127.0.0.1 that reads each HTTP request (head and Content-Length
body, no further parsing) and answers with exactly the bytes a case scripted: in pieces, with
pauses, endlessly, or not at all. A request names its case in the `x-adv-case` header, which the
proxy forwards like any other; requests without a known case get NORMAL_ANSWER. Every request it
received is recorded raw, so a test can check what the proxy forwarded and how many times.

Canary listens where no request may ever go (127.0.0.2, and another port on 127.0.0.1): any
connection it sees means a client steered the proxy somewhere the configuration did not name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

CASE_HEADER = b"x-adv-case"
MAX_HEAD_BYTES = 1024 * 1024  # a request head the raw upstream accepts (the proxy's are far smaller)
MAX_BODY_BYTES = 64 * 1024 * 1024
READ_TIMEOUT_SECONDS = 60.0  # a peer that sends nothing for this long is dropped (hang guard)

# What the upstream answers a request of no scripted case: a chat completion with usage 3 + 2.
NORMAL_BODY = json.dumps({
    "id": "chatcmpl-adv", "object": "chat.completion", "model": "adv-normal",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}).encode()
NORMAL_TOKENS = {"input": 3, "output": 2}


def http_response(status: str = "200 OK", headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                  content_length: bool = True) -> bytes:
    """A response as bytes: the status line, the headers, Content-Length unless told otherwise."""
    lines = [b"HTTP/1.1 " + status.encode("latin-1")]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    if content_length:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


NORMAL_ANSWER_BYTES = http_response(headers=[("content-type", "application/json")], body=NORMAL_BODY)


@dataclass
class Answer:
    """A scripted answer: bytes to send (a float is a pause in seconds), then close or keep alive.

    `pieces` may be a generator (an endless head); sending stops when the proxy closes its end.
    """

    pieces: Iterable[bytes | float] = ()
    keep_alive: bool = False


NORMAL = Answer([NORMAL_ANSWER_BYTES], keep_alive=True)
Script = Answer | Callable[["Received"], Answer]

ENDLESS_HEAD_CAP = 128 * 1024 * 1024  # the raw upstream gives up after this much head
BOMB_BYTES = 1024 * 1024 * 1024  # a gzip bomb inflates to 1 GiB of zeros


def endless_head() -> Iterator[bytes]:
    """A response head that never ends: header lines until ENDLESS_HEAD_CAP (pieces of an Answer)."""
    yield b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    line = b"x-endless: " + b"a" * 8180 + b"\r\n"
    for _ in range(ENDLESS_HEAD_CAP // len(line)):
        yield line * 8


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of a few MiB that inflates to BOMB_BYTES of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(BOMB_BYTES // len(block))]
    return b"".join(parts) + compressor.flush()


@dataclass
class Received:
    """One request as the upstream received it."""

    head: bytes
    body: bytes
    connection: int  # which connection carried it (a serial number)

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def target(self) -> bytes:
        parts = self.request_line.split(b" ")
        return parts[1] if len(parts) == 3 else b""

    def headers(self) -> list[tuple[bytes, bytes]]:
        found = []
        for line in self.head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                found.append((name.strip().lower(), value.strip()))
        return found

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers() if key == name), None)

    @property
    def case(self) -> str | None:
        value = self.header(CASE_HEADER)
        return value.decode("latin-1") if value is not None else None

    @property
    def raw(self) -> bytes:
        return self.head + self.body


class _Listener:
    """A listening socket served by one thread per connection."""

    def __init__(self, host: str) -> None:
        self._sock = socket.create_server((host, 0), backlog=128)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self._stopping = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._serial += 1
                serial = self._serial
                self._open.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()]
                thread = threading.Thread(target=self._serve_and_close, args=(conn, serial), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve_and_close(self, conn: socket.socket, serial: int) -> None:
        try:
            conn.settimeout(READ_TIMEOUT_SECONDS)
            self.serve(conn, serial)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def serve(self, conn: socket.socket, serial: int) -> None:
        raise NotImplementedError

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            conns = list(self._open)
            threads = list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [self._acceptor, *threads]:
            thread.join(timeout=10)


class RawUpstream(_Listener):
    """The scripted upstream (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.url = f"http://{self.authority}"
        self._scripts: dict[str, Script] = {}
        self._received: list[Received] = []

    def script(self, case: str, answer: Script) -> None:
        with self._lock:
            self._scripts[case] = answer

    def received(self, case: str | None = None) -> list[Received]:
        """Requests received so far (of one case, when given)."""
        with self._lock:
            return [r for r in self._received if case is None or r.case == case]

    def all_received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def serve(self, conn: socket.socket, serial: int) -> None:
        buffer = b""
        while True:
            request, buffer = _read_request(conn, buffer, serial)
            if request is None:
                return
            with self._lock:
                self._received.append(request)
                script = self._scripts.get(request.case or "", NORMAL)
            answer = script(request) if callable(script) else script
            for piece in answer.pieces:
                if isinstance(piece, float):
                    time.sleep(piece)
                else:
                    conn.sendall(piece)
            if not answer.keep_alive:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
                _drain(conn)  # let the proxy close first: no RST racing the bytes just sent
                return


def _read_request(conn: socket.socket, buffer: bytes, serial: int) -> tuple[Received | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            return None, b""
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length" and value.strip().isdigit():
            length = min(int(value.strip()), MAX_BODY_BYTES)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:  # not what the proxy sends; read until the last chunk, keep the coded bytes
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Received(head + b"\r\n\r\n", rest, serial), b""
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Received(head + b"\r\n\r\n", rest[:length], serial), rest[length:]


def _drain(conn: socket.socket) -> None:
    """Read until the peer closes (bounded by the socket timeout), discarding what comes."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@dataclass
class Visit:
    """One connection the canary saw, with what arrived on it in the first moment."""

    peer: tuple
    data: bytes = b""


class Canary(_Listener):
    """A listener nothing may reach: it records every connection and the bytes it brought."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self._visits: list[Visit] = []

    def serve(self, conn: socket.socket, serial: int) -> None:
        visit = Visit(conn.getpeername())
        with self._lock:
            self._visits.append(visit)
        conn.settimeout(2.0)
        with contextlib.suppress(OSError):
            while len(visit.data) < 65536 and (chunk := conn.recv(65536)):
                visit.data += chunk

    def visits(self) -> list[Visit]:
        with self._lock:
            return list(self._visits)


@dataclass
class Peers:
    upstream: RawUpstream
    canaries: list[Canary] = field(default_factory=list)

    def visits(self) -> list[Visit]:
        return [visit for canary in self.canaries for visit in canary.visits()]


@contextlib.contextmanager
def running_peers() -> Iterator[Peers]:
    upstream = RawUpstream()
    canaries = [Canary("127.0.0.2"), Canary("127.0.0.1")]
    try:
        yield Peers(upstream, canaries)
    finally:
        for listener in [upstream, *canaries]:
            listener.close()
