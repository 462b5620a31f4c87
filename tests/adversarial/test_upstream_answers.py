"""Hostile upstream answers (issue 12, points 2, 3, 5 and 7), from the scripted raw upstream.

Heads without end or with 10,000 fields, malformed status lines and framings, trailers,
Transfer-Encoding where chunked is not the final coding, bad chunk sizes, Content-Length lies,
101, 1xx, 204/304/HEAD with a Content-Length, gzip bombs, absurd token counts, hostile model
names, SSE with CR-only line ends, and a connection closed after the POST was read. Each ends
with the invariants of tests/adversarial/harness.py (memory, descriptors, counters, log...).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.adversarial.harness import (
    CASES, Case, ProxyUnderTest, RawResponse, exchange, new_case_id, normal_request, request_bytes,
)
from tests.adversarial.peers import (
    ENDLESS_HEAD_CAP, NORMAL_ANSWER_BYTES, NORMAL_BODY, Answer, Received, endless_head, gzip_bomb, http_response,
)

CHAT = json.dumps({"model": "adv-upstream", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM_CHAT = json.dumps({"model": "adv-upstream", "stream": True, "stream_options": {"include_usage": True},
                          "messages": [{"role": "user", "content": "hi"}]}).encode()
TOKENS = {"input": 3, "output": 2}  # what NORMAL_BODY reports


def run(proxy: ProxyUnderTest, answer: Answer | Callable[[Received], Answer],
        check: Callable[[Case, RawResponse, list[Received]], None], method: str = "POST",
        path: str = "/v1/chat/completions", body: bytes = CHAT, headers: list = ()) -> None:
    """Script the upstream's answer, send one request through the proxy, check it and the invariants."""
    case_id = new_case_id("upstream")
    proxy.peers.upstream.script(case_id, answer)
    with proxy.case() as case:
        response = exchange(proxy.url, request_bytes(method, path, list(headers), body, case=case_id),
                            head_request=method == "HEAD")
        check(case, response, case.forwarded(case_id))


def refused_as_protocol_error(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
    """A malformed answer: 502 to the client, error_type protocol, the request sent once."""
    case.expect(1, code="502", error_types={"protocol": 1})
    case.require(response.status == 502, f"[3 protocol] the client got {response.status} "
                                          f"{response.raw[:200]!r}, expected 502")
    case.require(len(forwarded) == 1, f"[5 retry] the request reached the upstream {len(forwarded)} times")


def passed_exactly(body: bytes, tokens: dict | None = None, status: int = 200) -> Callable:
    """The client got the upstream's status and exactly `body`; the sizes and tokens counted match."""
    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect(1, code=str(status), tokens=tokens or {}, response_bytes=len(body), error_types={})
        case.require(response.complete and response.status == status and response.body == body,
                     f"[5 framing] the client got {response.status} (complete: {response.complete}) "
                     f"{response.body[:120]!r}..., expected {status} with the {len(body)} bytes sent")
        case.require(len(forwarded) == 1, f"[5 retry] the request reached the upstream {len(forwarded)} times")
    return check


def broken_off(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
    """A body that breaks its own framing: counted once, as a read or protocol error, never complete."""
    case.expect({None: 1})
    case.require(not (response.complete and response.status == 200),
                 f"[5 framing] a broken body reached the client as a complete 200: {response.raw[:200]!r}")
    case.require(len(forwarded) == 1, f"[5 retry] the request reached the upstream {len(forwarded)} times")


# --- heads ---------------------------------------------------------------------------------------


def test_an_endless_response_head_is_refused_within_bounded_memory(proxy):
    run(proxy, Answer(endless_head()), refused_as_protocol_error)


def test_an_endless_single_header_line_is_refused_within_bounded_memory(proxy):
    def endless_line() -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\nx-endless: "
        for _ in range(ENDLESS_HEAD_CAP // 65536):
            yield b"a" * 65536
    run(proxy, Answer(endless_line()), refused_as_protocol_error)


def test_ten_thousand_response_headers_are_refused(proxy):
    head = b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))
    run(proxy, Answer([b"HTTP/1.1 200 OK\r\n" + head + b"content-length: 2\r\n\r\n{}"]), refused_as_protocol_error)


MALFORMED_HEADS = [
    b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 2000 Big\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 99 Low\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/9.9 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"FOO BAR\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nbad header line\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a\x00b: c\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n content-length: 0\r\n\r\n",
]


@pytest.mark.parametrize("head", MALFORMED_HEADS, ids=range(len(MALFORMED_HEADS)))
def test_a_malformed_response_head_is_a_502_of_error_type_protocol(proxy, head):
    run(proxy, Answer([head]), refused_as_protocol_error)


def test_an_answer_that_ends_inside_the_head_is_not_a_connect_error(proxy):
    run(proxy, Answer([b"HTTP/1.1 200 OK\r\ncontent-type: appli"]), refused_as_protocol_error)


def test_101_switching_protocols_is_refused_cleanly(proxy):
    answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\x81\x05hello"
    run(proxy, Answer([answer]), refused_as_protocol_error)


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "separate-reads"])
def test_interim_1xx_answers_are_skipped(proxy, split):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n"
    pieces = [interim, 0.2, NORMAL_ANSWER_BYTES] if split else [interim + NORMAL_ANSWER_BYTES]
    run(proxy, Answer(pieces, keep_alive=True), passed_exactly(NORMAL_BODY, TOKENS))


# --- framing ---------------------------------------------------------------------------------------


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n"


JSON_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "separate-reads"])
def test_trailer_fields_never_become_response_headers(proxy, split):
    body = _chunked(NORMAL_BODY[:50], NORMAL_BODY[50:])
    trailers = b"x-evil-trailer: yes\r\ncontent-length: 3\r\nset-cookie: a=b\r\n\r\n"
    head = JSON_CHUNKED_HEAD + b"trailer: x-evil-trailer\r\n\r\n"
    pieces = [head + body, 0.2, trailers] if split else [head + body + trailers]
    exact = passed_exactly(NORMAL_BODY, TOKENS)

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        exact(case, response, forwarded)
        names = {name.lower() for name, _ in response.headers}
        case.require(not names & {b"x-evil-trailer", b"set-cookie"},
                     f"[5 trailers] trailer fields became response headers: {response.headers}")
    run(proxy, Answer(pieces, keep_alive=True), check)


def test_chunk_extensions_are_valid_framing(proxy):
    body = b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(NORMAL_BODY), NORMAL_BODY)
    run(proxy, Answer([JSON_CHUNKED_HEAD + b"\r\n" + body], keep_alive=True), passed_exactly(NORMAL_BODY, TOKENS))


def test_transfer_encoding_without_final_chunked_is_read_until_close(proxy):
    """RFC 9112 6.3: chunked not last means the body runs to the end of the connection, undecoded."""
    raw_body = b"5\r\nhello\r\n0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked, gzip\r\n\r\n"

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        if response.status == 502:
            refused_as_protocol_error(case, response, forwarded)
            return
        passed_exactly(raw_body)(case, response, forwarded)
    run(proxy, Answer([head + raw_body]), check)


def test_transfer_encoding_gzip_then_chunked_is_dechunked(proxy):
    payload = gzip.compress(NORMAL_BODY)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n"

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        if response.status == 502:
            refused_as_protocol_error(case, response, forwarded)
            return
        case.expect(1, code="200", tokens={"input": (0, 3), "output": (0, 2)}, response_bytes=len(payload))
        case.require(response.complete and response.body == payload,
                     f"[5 framing] 'gzip, chunked' was not de-chunked to the {len(payload)} bytes sent: "
                     f"{response.body[:80]!r}")
    run(proxy, Answer([head + _chunked(payload) + b"\r\n"]), check)


def test_transfer_encoding_chunked_wins_over_content_length(proxy):
    head = JSON_CHUNKED_HEAD + b"content-length: 10\r\n\r\n"
    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        if response.status == 502:
            refused_as_protocol_error(case, response, forwarded)
            return
        passed_exactly(NORMAL_BODY, TOKENS)(case, response, forwarded)
    run(proxy, Answer([head + _chunked(NORMAL_BODY) + b"\r\n"]), check)


BAD_CHUNKS = [b"zz\r\nhello\r\n0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\nhello\r\n",
              b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhel"]


@pytest.mark.parametrize("chunks", BAD_CHUNKS, ids=range(len(BAD_CHUNKS)))
def test_a_bad_chunk_breaks_the_response_off(proxy, chunks):
    run(proxy, Answer([JSON_CHUNKED_HEAD + b"\r\n" + chunks]), broken_off)


def test_a_body_shorter_than_its_content_length_breaks_the_response_off(proxy):
    run(proxy, Answer([b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": 1}"]),
        broken_off)


def test_bytes_past_the_content_length_are_not_the_next_response(proxy):
    """The extra bytes must not be read as the answer to the next request on that connection."""
    extra = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nsmuggled!"
    answer = http_response(headers=[("content-type", "application/json")], body=NORMAL_BODY) + extra

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        passed_exactly(NORMAL_BODY, TOKENS)(case, response, forwarded)
        # The invariants' normal request follows on the pooled connection, if it was kept.
    run(proxy, Answer([answer], keep_alive=True), check)


NO_BODY_ANSWERS = [
    ("POST", "204 No Content", b""),
    ("POST", "204 No Content", b"0123456789"),
    ("GET", "304 Not Modified", b""),
    ("HEAD", "200 OK", b""),
]


@pytest.mark.parametrize("method,status,trailing", NO_BODY_ANSWERS, ids=["204", "204-with-bytes", "304", "HEAD"])
def test_answers_without_a_body_never_wait_for_content_length_bytes(proxy, method, status, trailing):
    """204, 304 and HEAD answers have no body whatever Content-Length says (RFC 9112 6.3)."""
    answer = b"HTTP/1.1 " + status.encode() + b"\r\ncontent-length: 10\r\netag: \"x\"\r\n\r\n" + trailing
    code = status.split()[0]

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect(1, code=code, error_types={})
        case.require(response.complete and str(response.status) == code and response.body == b"",
                     f"[5 no body] the client got {response.status} (complete: {response.complete}) "
                     f"{response.raw[:200]!r}, expected {code} without a body")
    path = "/v1/chat/completions" if method == "POST" else "/v1/models"
    run(proxy, Answer([answer], keep_alive=True), check, method=method, path=path,
        body=CHAT if method == "POST" else b"", headers=[("if-none-match", '"x"')])


def test_a_post_is_sent_once_when_the_upstream_closes_after_reading_it(proxy):
    """Point 5: a request whose bytes may have reached the upstream is never sent again."""
    case_id = new_case_id("close-after-read")
    proxy.peers.upstream.script(case_id, Answer([]))  # read the request, close without a byte
    with proxy.case() as case:
        for _ in range(3):  # keep-alive connections in the pool, so the POST goes on a reused one
            normal_request(proxy, "fill-pool")
        response = exchange(proxy.url, request_bytes("POST", "/v1/chat/completions", [], CHAT, case=case_id))
        received = case.forwarded(case_id)
        case.expect({"200": 3, "502": 1}, tokens={k: 3 * v for k, v in TOKENS.items()})
        case.require(len(received) == 1, f"[5 retry] the POST reached the upstream {len(received)} times "
                                          "(an LLM call billed that often)")
        case.require(response.status == 502, f"[5 retry] the client got {response.status}, expected 502")


# --- bodies the tap reads ------------------------------------------------------------------------------


@pytest.mark.parametrize("path,content_type", [
    ("/v1/chat/completions", "application/json"),
    ("/v1/chat/completions", "text/event-stream"),
    ("/api/chat", "application/x-ndjson"),
], ids=["json", "sse", "ndjson"])
def test_a_gzip_bomb_passes_through_unchanged_within_bounded_memory(proxy, path, content_type):
    bomb = gzip_bomb()
    answer = http_response(headers=[("content-type", content_type), ("content-encoding", "gzip")], body=bomb)

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect(1, code="200", response_bytes=len(bomb))
        case.require(response.complete and hashlib.sha256(response.body).digest() == hashlib.sha256(bomb).digest(),
                     f"[3 decompression] the client did not get the {len(bomb)} bytes the upstream sent "
                     f"(got {len(response.body)}, complete: {response.complete})")
    run(proxy, Answer([answer], keep_alive=True), check, path=path,
        headers=[("accept-encoding", "gzip")])


def _count(value: Any) -> int | None:
    """The count a sane proxy takes from a reported value (None: not a count any call reaches)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**6:
        return value
    return None


TOKEN_VALUES = st.one_of(
    st.integers(0, 10**6),
    st.integers(10**12, 10**40),
    st.sampled_from([2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**400]),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", True, None, [], {}, "1e9"]),
)


@CASES
@given(prompt=TOKEN_VALUES, completion=TOKEN_VALUES)
def test_absurd_token_counts_are_never_counted(proxy, prompt, completion):
    """Point 2: counts no real call reaches are no usage; nothing downstream overflows."""
    body = json.dumps({"model": "adv-upstream", "choices": [],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}).encode()
    answer = http_response(headers=[("content-type", "application/json")], body=body)
    wanted_in, wanted_out = _count(prompt), _count(completion)
    both = wanted_in is not None and wanted_out is not None
    tokens = {
        "input": wanted_in if both else (0, wanted_in or 0),
        "output": wanted_out if both else (0, wanted_out or 0),
    }

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect(1, code="200", tokens=tokens, response_bytes=len(body))
        case.require(response.body == body, "[5 framing] the client did not get the upstream's body")
    run(proxy, Answer([answer], keep_alive=True), check)


HOSTILE_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10ffff, exclude_categories=()), max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\x1b[31mred", "line\nbreak", "\u202eevil", "x" * 1_000_000,
                     "\ud83d\ude00", "{label=\"x\"}", "model\" 1\n# HELP"]),
)


@CASES
@given(model=HOSTILE_TEXT)
def test_a_hostile_response_model_never_breaks_the_telemetry(proxy, model):
    """Point 2: the response's model reaches rows and cost lookups; it is made safe where it enters."""
    body = json.dumps({"id": "x", "model": model, "choices": [],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
    answer = http_response(headers=[("content-type", "application/json")], body=body)
    run(proxy, Answer([answer], keep_alive=True), passed_exactly(body, TOKENS))


@pytest.mark.parametrize("raw_model", [b"\xff\xfe", b"\xed\xa0\x80", b"a\x00b", b"\xc0\xaf"])
def test_invalid_utf8_in_a_response_never_breaks_the_telemetry(proxy, raw_model):
    body = b'{"model": "' + raw_model + b'", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    answer = http_response(headers=[("content-type", "application/json")], body=body)

    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect(1, code="200", tokens={"input": (0, 3), "output": (0, 2)}, response_bytes=len(body))
        case.require(response.body == body, "[5 framing] the client did not get the upstream's body")
    run(proxy, Answer([answer], keep_alive=True), check)


def _sse(events: list[dict | str], line_end: bytes) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += b"data: " + data.encode() + line_end + line_end
    return out


CHUNK = {"id": "c", "object": "chat.completion.chunk", "model": "adv-upstream",
         "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}
USAGE_CHUNK = {"id": "c", "object": "chat.completion.chunk", "model": "adv-upstream", "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


@pytest.mark.parametrize("line_end", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_sse_usage_is_read_whatever_the_line_ends(proxy, line_end):
    """Point 7: CR-only line ends are valid SSE; the usage in them is counted."""
    stream = _sse([CHUNK, USAGE_CHUNK, "[DONE]"], line_end)
    answer = http_response(headers=[("content-type", "text/event-stream")], body=stream)
    run(proxy, Answer([answer], keep_alive=True), passed_exactly(stream, TOKENS), body=STREAM_CHAT)


@CASES
@given(cuts=st.lists(st.integers(1, 400), max_size=8), line_end=st.sampled_from([b"\r", b"\n", b"\r\n"]))
def test_sse_usage_is_read_however_the_stream_is_cut(proxy, cuts, line_end):
    stream = _sse([CHUNK, CHUNK, USAGE_CHUNK, "[DONE]"], line_end)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    pieces, at = [], 0
    for cut in cuts:
        if at + cut < len(stream):
            pieces.append(stream[at:at + cut])
            at += cut
    pieces.append(stream[at:])
    wire = [head] + [p for piece in pieces for p in (_chunked(piece)[:-3], 0.01)] + [b"0\r\n\r\n"]
    run(proxy, Answer(wire, keep_alive=True), passed_exactly(stream, TOKENS), body=STREAM_CHAT)


GARBAGE = st.binary(max_size=300).map(lambda tail: b"HTTP/1.1 " + tail)


@CASES
@given(answer=st.one_of(GARBAGE, st.binary(max_size=300)))
def test_generated_garbage_answers_never_hurt_the_proxy(proxy, answer):
    def check(case: Case, response: RawResponse, forwarded: list[Received]) -> None:
        case.expect({None: 1})
        case.require(len(forwarded) == 1, f"[5 retry] the request reached the upstream {len(forwarded)} times")
    run(proxy, Answer([answer]), check)
