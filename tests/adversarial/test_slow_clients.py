"""Slow and idle clients (issue 12, point 4): 408 after the configured time limits.

The proxy runs with limits.request_head_timeout_seconds and limits.request_body_timeout_seconds
set to 1 second. A client sending its head or its body a byte at a time gets 408; an idle
connection is answered with 408 or closed; many such clients at once neither stop a normal
request from being served nor keep their file descriptors once their time is up (the invariants
check the descriptors are back to baseline). A head that never completed is no request and is not
counted; a body that never completed belongs to a request the app saw, counted with code 408.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

from tests.adversarial.harness import (
    ProxyUnderTest, RawResponse, _ResponseReader, new_case_id, normal_request,
    request_bytes,
)
from tests.adversarial.peers import NORMAL_BODY

HEAD_SECONDS = 1
BODY_SECONDS = 1
PROXY_OPTIONS = {"limits": {"request_head_timeout_seconds": HEAD_SECONDS,
                            "request_body_timeout_seconds": BODY_SECONDS}}
TRICKLE_SECONDS = 0.5  # one byte this often: well inside any per-read timeout, past any total limit
GUARD_SECONDS = 20.0  # hang guard: a slow client must have its answer long before this
BODY = json.dumps({"model": "adv-slow", "messages": [{"role": "user", "content": "hi"}]}).encode()


class SlowClient:
    """A socket that sends `start` at once and then `trickle` one byte every TRICKLE_SECONDS."""

    def __init__(self, url: str, start: bytes, trickle: bytes) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=GUARD_SECONDS)
        self._stop = threading.Event()
        if start:
            self.sock.sendall(start)
        self._thread = threading.Thread(target=self._trickle, args=(trickle,), daemon=True)
        self._thread.start()

    def _trickle(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                if self._stop.wait(TRICKLE_SECONDS):
                    return
                self.sock.sendall(data[i:i + 1])

    def answer(self, deadline: float | None = None) -> RawResponse:
        """What the proxy answered before closing (or the guard fired: complete False, status None)."""
        reader = _ResponseReader()
        raw = bytearray()
        deadline = deadline or time.monotonic() + GUARD_SECONDS
        with contextlib.suppress(Exception):
            while not reader.complete and time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
                reader.parser.feed_data(chunk)
        status = None
        with contextlib.suppress(Exception):
            status = reader.parser.get_status_code() if raw else None
        closed_in_time = time.monotonic() < deadline
        self.close()
        return RawResponse(status, reader.headers, bytes(reader.body), reader.complete or closed_in_time, bytes(raw))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sock.close()


def _head_and_body(case_id: str) -> tuple[bytes, bytes]:
    full = request_bytes("POST", "/v1/chat/completions", [], BODY, case=case_id)
    head, _, body = full.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


def test_a_head_sent_a_byte_at_a_time_gets_408(proxy: ProxyUnderTest):
    head, _ = _head_and_body(new_case_id("slow-head"))
    with proxy.case() as case:
        answer = SlowClient(proxy.url, b"", head).answer()
        case.expect(0)
        case.require(answer.status == 408, f"[4 slow head] got {answer.status} {answer.raw[:200]!r}, expected 408 "
                                           f"within {GUARD_SECONDS}s (limit {HEAD_SECONDS}s)")


def test_a_body_sent_a_byte_at_a_time_gets_408_and_is_counted(proxy: ProxyUnderTest):
    case_id = new_case_id("slow-body")
    head, body = _head_and_body(case_id)
    with proxy.case() as case:
        answer = SlowClient(proxy.url, head, body).answer()
        case.expect(1, code="408")
        case.require(answer.status == 408, f"[4 slow body] got {answer.status} {answer.raw[:200]!r}, expected 408 "
                                           f"within {GUARD_SECONDS}s (limit {BODY_SECONDS}s)")
        case.require(not case.forwarded(case_id), "[4 slow body] an incomplete body was forwarded")


def test_an_idle_connection_is_answered_or_closed(proxy: ProxyUnderTest):
    with proxy.case() as case:
        answer = SlowClient(proxy.url, b"", b"").answer()
        case.expect(0)
        case.require(answer.complete and answer.status in (None, 408),
                     f"[4 idle] an idle connection was still open after {GUARD_SECONDS}s "
                     f"(got {answer.status} {answer.raw[:100]!r})")


def test_many_slow_clients_do_not_stop_a_normal_request(proxy: ProxyUnderTest):
    clients = []
    with proxy.case() as case:
        try:
            for i in range(64):
                head, body = _head_and_body(new_case_id("many-slow"))
                clients.append(SlowClient(proxy.url, head if i % 2 else b"", body if i % 2 else head))
            response, _ = normal_request(proxy, "among-slow-clients")
            case.require(response.status_code == 200 and response.content == NORMAL_BODY,
                         f"[4 slow clients] a normal request among 64 slow clients got {response.status_code}")
            deadline = time.monotonic() + GUARD_SECONDS  # one guard for all of them
            answers = [client.answer(deadline) for client in clients]
        finally:
            for client in clients:
                client.close()
        case.expect({"200": 1, "408": 32}, tokens={"input": 3, "output": 2})
        late = [a for a in answers if not a.complete or a.status != 408]
        case.require(not late, f"[4 slow clients] {len(late)} of 64 slow clients got no 408 within {GUARD_SECONDS}s: "
                               f"{sorted({str(a.status) for a in late})}")
