"""Hostile client input (issue 12, points 2, 4, 6 and 7) through raw client sockets.

Generated header sets (every key header, duplicates, odd bytes, huge values, user and session
headers), bodies over the limit, deeply nested JSON, lone surrogates, invalid UTF-8, control
characters and 1 MB strings in model, user and metadata.user_id, and numeric query parameters
of the exporter's own API. A request the HTTP parser refuses never reaches the app and is not
counted; every other one is proxied once (or refused with 413) and counted once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.adversarial.harness import (
    CASES, CLIENT, KEY_HEADERS, MAX_REQUEST_BYTES, SESSION_HEADER, USER_HEADER, ProxyUnderTest, exchange,
    family_error_shapes, json_shape, new_case_id, request_bytes,
)
from tests.adversarial.peers import NORMAL_BODY

TOKENS = {"input": 3, "output": 2}
CHAT_PATHS = ["/v1/chat/completions", "/v1/messages", "/api/chat", "/v1/responses", "/completion"]
# The upstream answers every path with NORMAL_BODY, OpenAI chat's shape: only that family reads its usage.
READS_NORMAL_USAGE = {"/v1/chat/completions"}


def proxied_once(proxy: ProxyUnderTest, path: str, body: bytes, headers: list = (), exact: bool = True,
                 secrets: list[str] = ()) -> None:
    """Send a request that must be proxied: counted once, the upstream got it once (as sent)."""
    case_id = new_case_id("client")
    with proxy.case() as case:
        case.keep_secret(*secrets)
        response = exchange(proxy.url, request_bytes("POST", path, list(headers), body, case=case_id))
        forwarded = case.forwarded(case_id)
        if response.server_refusal:
            case.expect(0)
            case.require(not forwarded, "[4 parser] a request the HTTP parser refused was forwarded")
            return
        case.expect(1, code="200", tokens=TOKENS if path in READS_NORMAL_USAGE else {},
                    request_bytes=len(body) if exact else None)
        case.require(response.status == 200 and response.body == NORMAL_BODY,
                     f"[2 passthrough] the client got {response.status} {response.body[:200]!r}, "
                     "not the upstream's answer")
        case.require(len(forwarded) == 1, f"[1 origin] the request reached the upstream {len(forwarded)} times")
        if exact and forwarded:
            case.require(forwarded[0].body == body, "[2 passthrough] the body reached the upstream changed")


# --- headers ---------------------------------------------------------------------------------------

KEY_VALUE = st.builds(lambda prefix, key, suffix: (prefix + key + suffix),
                      st.sampled_from(["", "Bearer ", "bearer  ", "Basic ", " "]),
                      st.text("0123456789abcdef", min_size=24, max_size=24).map(lambda h: "sk-gen-" + h),
                      st.sampled_from(["", " ", "\t", ",x"]))
ODD_VALUE = st.one_of(
    st.binary(max_size=60),
    st.binary(min_size=1, max_size=60).map(lambda b: bytes(c | 0x80 for c in b)),
    st.integers(1000, 70_000).map(lambda n: b"v" * n),
)
HEADER_NAME = st.one_of(
    st.sampled_from([n.decode() for n in KEY_HEADERS] + ["Authorization", "X-API-KEY", "Api-Key", USER_HEADER,
                                                          SESSION_HEADER, "connection", "host", "content-length",
                                                          "transfer-encoding", "x-request-id", "accept-encoding"]),
    st.text("abcdefghijklmnopqrstuvwxyz-0123456789!#$%&'*+.^_`|~", min_size=1, max_size=20),
)
HEADER_SETS = st.lists(st.one_of(
    st.tuples(st.sampled_from([n.decode() for n in KEY_HEADERS] + ["Authorization", "X-Goog-Api-Key"]), KEY_VALUE),
    st.tuples(HEADER_NAME, ODD_VALUE),
    st.tuples(st.sampled_from([USER_HEADER, SESSION_HEADER]),
              st.text(st.characters(exclude_categories=()), max_size=50).map(
                  lambda t: t.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b""))),
), max_size=8)


@CASES
@given(headers=HEADER_SETS)
@example(headers=[("api-key", "sk-gen-" + "a" * 24)])
@example(headers=[("X-Goog-Api-Key", "sk-gen-" + "b" * 24), (USER_HEADER, b"\xff\x00user")])
def test_generated_header_sets(proxy, headers):
    """Points 2 and 6: any header set is proxied once or refused by the parser; keys handled as one."""
    framing = {"content-length", "transfer-encoding", "host"}
    # The framing is the suite's; a line break would end the header early (smuggling is not the point here).
    headers = [(n, v.replace(b"\r", b"").replace(b"\n", b"") if isinstance(v, bytes) else v)
               for n, v in headers if n.lower() not in framing]
    secrets = [v.split("sk-gen-", 1)[1][:24] for _, v in headers if isinstance(v, str) and "sk-gen-" in v]
    body = json.dumps({"model": "adv-headers", "messages": []}).encode()
    proxied_once(proxy, "/v1/chat/completions", body, headers, secrets=["sk-gen-" + s for s in secrets])


# --- bodies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_413_in_the_family_shape(proxy, chunked):
    body = b'{"model": "big", "pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}'
    case_id = new_case_id("big")
    with proxy.case() as case:
        if chunked:
            head = request_bytes("POST", "/v1/messages", [("transfer-encoding", "chunked")], case=case_id)
            head = head.replace(b"content-length: 0\r\n", b"")
            step = 256 * 1024
            pieces = [head] + [b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                               for i in range(0, len(body), step)] + [b"0\r\n\r\n"]
        else:
            pieces = [request_bytes("POST", "/v1/messages", [], body, case=case_id)]
        response = exchange(proxy.url, pieces)
        case.expect(1, code="413")
        case.require(response.status == 413, f"[4 limits] a body over the limit got {response.status}")
        try:
            shape = json_shape(response.json())
        except ValueError:
            shape = None
        case.require(shape in family_error_shapes(), f"[4 limits] the 413 is not a family error: {response.body[:200]!r}")
        case.require(not case.forwarded(case_id), "[4 limits] a body over the limit was forwarded")


NESTED = [
    b"[" * 100_000,
    b"{\"model\": " + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000,
    b"{\"model\": \"m\", \"x\": " + b"[" * 100_000 + b"}",
    b"{\"model\": \"m\", \"stream\": true, \"x\": " + b"[" * 5_000 + b"]" * 5_000 + b"}",
]


@pytest.mark.parametrize("path", CHAT_PATHS[:3])
@pytest.mark.parametrize("body", NESTED, ids=range(len(NESTED)))
def test_deeply_nested_json_is_passed_through_as_not_json(proxy, path, body):
    """Point 4: never an unhandled exception; the upstream gets the bytes as sent."""
    exact = b"stream" not in body  # a stream request may have its stream_options rewritten
    proxied_once(proxy, path, body, exact=exact)


def _surrogate_json(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate travels as \udXXX


HOSTILE = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\x1b[2J", "a\nb\r\nc", "\u202e", "x" * 1_000_000,
                     "\\", "\"", "{}", "# HELP x", "other", "unknown"]),
)


@CASES
@given(model=HOSTILE, user=HOSTILE, metadata_user=HOSTILE, stream=st.booleans(),
       path=st.sampled_from(CHAT_PATHS))
def test_hostile_strings_in_the_body_never_break_the_telemetry(proxy, model, user, metadata_user, stream, path):
    """Point 2: model, user and metadata.user_id reach labels, rows and log lines made safe."""
    body = _surrogate_json({"model": model, "user": user, "metadata": {"user_id": metadata_user},
                            "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    proxied_once(proxy, path, body, exact=not stream)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b"\x7f\x1b", b"\xf4\x90\x80\x80"])
@pytest.mark.parametrize("field", ["model", "user"])
def test_invalid_utf8_in_the_body_never_breaks_the_telemetry(proxy, raw, field):
    body = b'{"' + field.encode() + b'": "a' + raw + b'b", "messages": []}'
    proxied_once(proxy, "/v1/chat/completions", body)


@pytest.mark.parametrize("header", [USER_HEADER, SESSION_HEADER])
@pytest.mark.parametrize("value", [b"\xff\xfe\xfd", b"\xed\xa0\x80", b"a\x01b\x7f", b"u" * 60_000],
                         ids=["latin1", "surrogate-utf8", "control", "huge"])
def test_hostile_user_and_session_headers_never_break_the_telemetry(proxy, header, value):
    body = json.dumps({"model": "adv-user", "messages": []}).encode()
    proxied_once(proxy, "/v1/chat/completions", body, [(header, value)])


# --- numeric query parameters of /api/* ----------------------------------------------------------------

NUMBERS = st.one_of(
    st.sampled_from(["\u0661\u0662", "\u00b2", "\uff11", "1_0", " 1", "+1", "-1", "1e3", "0x10", "9" * 5000,
                     "\u0969", "1.5", "", "١٠٠"]),
    st.text(st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=6),
)


@settings(CASES, max_examples=15)
@given(value=NUMBERS, where=st.sampled_from([("/api/requests", "limit"), ("/api/requests", "status")]))
def test_numeric_query_parameters_take_ascii_digits_only(proxy, value, where):
    """Point 7: anything but ASCII digits is a 400 naming the parameter, never a 500."""
    endpoint, name = where
    with proxy.case() as case:
        response = CLIENT.get(proxy.url + endpoint, params={name: value})
        case.expect(0)
        case.require(response.status_code in (200, 400), f"[7 query] {name}={value[:40]!r} got "
                                                          f"{response.status_code}: {response.text[:200]}")
        if response.status_code == 400:
            case.require(response.json().get("parameter") == name,
                         f"[7 query] the 400 for {name}={value[:40]!r} does not name it: {response.text[:200]}")
        if response.status_code == 200:
            case.require(value.isascii() and value.strip().isdigit(),
                         f"[7 query] {name}={value[:40]!r} was accepted as a number")
