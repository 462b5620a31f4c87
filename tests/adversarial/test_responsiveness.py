"""Responsiveness under hostile work (issue 12, point 4).

While the proxy inflates a gzip bomb, reads an endless response head, or parses and rewrites a
large request body, normal requests sent at the same time are still served. No duration is
asserted (the machine is shared): each exchange has only a generous hang guard, and the proof of
"no step runs long on the event loop" is that the concurrent requests complete at all, plus the
invariants after the case.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from tests.adversarial.harness import (
    MAX_REQUEST_BYTES, ProxyUnderTest, RawResponse, _wait, exchange, new_case_id, normal_request, request_bytes,
)
from tests.adversarial.peers import NORMAL_BODY, Answer, endless_head, gzip_bomb, http_response

CONCURRENT = 3  # normal requests sent while the hostile one runs
CHAT = json.dumps({"model": "adv-busy", "messages": [{"role": "user", "content": "hi"}]}).encode()


def served_while(proxy: ProxyUnderTest, hostile: Callable[[], RawResponse], started: Callable[[], bool],
                 case) -> RawResponse | None:
    """Run `hostile` in a thread; once `started`, send normal requests; all must be served."""
    result: list[RawResponse] = []
    thread = threading.Thread(target=lambda: result.append(hostile()), daemon=True)
    thread.start()
    _wait(started, 30)
    for i in range(CONCURRENT):
        response, _ = normal_request(proxy, f"concurrent-{i}")
        case.require(response.status_code == 200 and response.content == NORMAL_BODY,
                     f"[4 responsiveness] normal request {i} during the hostile one got {response.status_code}")
    thread.join(timeout=120)
    case.require(not thread.is_alive(), "[4 responsiveness] the hostile request never finished (hang guard)")
    return result[0] if result else None


def test_normal_requests_are_served_while_a_gzip_bomb_is_inflated(proxy):
    case_id = new_case_id("busy-bomb")
    bomb = gzip_bomb()
    proxy.peers.upstream.script(case_id, Answer([http_response(
        headers=[("content-type", "text/event-stream"), ("content-encoding", "gzip")], body=bomb)], keep_alive=True))
    with proxy.case() as case:
        answer = served_while(
            proxy, lambda: exchange(proxy.url, request_bytes("POST", "/v1/chat/completions", [], CHAT, case=case_id)),
            lambda: bool(case.forwarded(case_id)), case)
        case.expect({"200": CONCURRENT + 1}, tokens={"input": 3 * CONCURRENT, "output": 2 * CONCURRENT})
        case.require(answer is not None and answer.body == bomb, "[3 decompression] the bomb did not pass unchanged")


def test_normal_requests_are_served_while_an_endless_head_is_read(proxy):
    case_id = new_case_id("busy-head")
    proxy.peers.upstream.script(case_id, Answer(endless_head()))
    with proxy.case() as case:
        served_while(
            proxy, lambda: exchange(proxy.url, request_bytes("POST", "/v1/chat/completions", [], CHAT, case=case_id)),
            lambda: bool(case.forwarded(case_id)), case)
        case.expect({"200": CONCURRENT, None: 1}, tokens={"input": 3 * CONCURRENT, "output": 2 * CONCURRENT})


def _large_body() -> bytes:
    """Just under the limit, costly to parse: many small strings, and a stream the proxy rewrites."""
    item = '"ab",'
    count = (MAX_REQUEST_BYTES - 1024) // len(item)
    return ('{"model": "adv-busy", "stream": true, "messages": [' + item * count + '"z"]}').encode()


def test_normal_requests_are_served_while_a_large_body_is_parsed(proxy):
    body = _large_body()
    case_id = new_case_id("busy-body")
    with proxy.case() as case:
        requests = [request_bytes("POST", "/v1/chat/completions", [], body, case=f"{case_id}-{i}") for i in range(3)]
        done = threading.Event()

        def hostile() -> RawResponse:
            answers = [exchange(proxy.url, request) for request in requests]
            done.set()
            return answers[-1]
        served_while(proxy, hostile, lambda: True, case)
        case.expect({"200": CONCURRENT + 3}, tokens={"input": 3 * (CONCURRENT + 3), "output": 2 * (CONCURRENT + 3)})
        case.require(done.is_set(), "[4 responsiveness] the large bodies were not all answered")
