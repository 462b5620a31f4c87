"""Nothing a client or an upstream sends breaks the telemetry (issue 12, point 2 and parts of 7).

Strings of any kind (lone surrogates, control characters, invalid UTF-8, any length) reach the
labels, the request log and the access log only made safe; a row the database refuses costs that
row alone; token counts no real call reaches are no usage; the usage API's numbers are ASCII
digits and it never answers 500. Checked against the real app under uvicorn with generated input.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter import text
from exporter.catalog import DROP_REASONS
from exporter.config import Telemetry, parse_settings
from exporter.families import MAX_TOKENS
from exporter.observation import Observation, Usage
from exporter.requestlog import RequestLog
from tests.logdb import count, rows, wait_for_rows, wait_until
from tests.scrape import Scrape
from tests.servers import lifespan_of_a_plain_app, running_exporter, serve

END_TO_END = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
UNIT = settings(max_examples=500, deadline=None)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
UNSAFE = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"}

# Text as hostile as a str can be: surrogates, controls, separators, quotes, any plane, any length.
_nasty_char = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\n", "\r", "\t", '"', "\\",
                     "{", "}", "=", ",", "#", "\ufeff", "\U0010ffff"]),
)
short_hostile_text = st.lists(_nasty_char, max_size=40).map("".join)
hostile_text = st.one_of(
    short_hostile_text,
    st.builds(lambda c, n: c * n, _nasty_char, st.integers(min_value=200, max_value=3000)),
)


def _is_safe(value: str, limit: int) -> bool:
    value.encode("utf-8")  # raises on a lone surrogate
    return len(value) <= limit and not UNSAFE & set(value)


# --- exporter.text ------------------------------------------------------------------------------


@UNIT
@given(hostile_text, st.sampled_from([text.LABEL_CHARS, text.FIELD_CHARS, 1, 7]))
def test_any_str_becomes_bounded_valid_utf8_without_control_characters(value, limit):
    result = text.safe(value, limit)
    assert _is_safe(result, limit)
    assert text.safe(result, limit) == result  # made safe once is safe
    if value.isascii() and value.isprintable() and len(value) <= limit:
        assert result is value  # the common case is untouched


@UNIT
@given(st.binary(max_size=2000), st.sampled_from([text.LABEL_CHARS, text.FIELD_CHARS]))
def test_any_bytes_become_bounded_valid_utf8_without_control_characters(value, limit):
    assert _is_safe(text.safe(value, limit), limit)


def test_what_is_kept_and_what_is_replaced():
    assert text.safe("gpt-4o-mini") == "gpt-4o-mini"
    assert text.safe("llama3:8b-instruct-q4_K_M ü 模型") == "llama3:8b-instruct-q4_K_M ü 模型"
    assert text.safe("a\ud800b\nc\x00d\u2028e\x85") == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffd"
    assert text.safe(b"ok \xff\xfe") == "ok \ufffd\ufffd"
    assert text.safe("x" * 1000, text.LABEL_CHARS) == "x" * text.LABEL_CHARS
    assert text.safe_optional(None) is None


# --- end to end: generated strings through the running proxy ------------------------------------


class _Mirror:
    """An upstream that answers each request with its own model as the response model (as JSON,
    so a lone surrogate travels as a \\ud800 escape) and with the usage the request names in
    `x_usage`, raw JSON text, so numbers of any size and type reach the proxy as written."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_of_a_plain_app(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        model = json.dumps(request.get("model", "m")).encode()
        usage = str(request.get("x_usage", '{"prompt_tokens":3,"completion_tokens":5}')).encode()
        if request.get("stream"):
            content_type = b"text/event-stream"
            answer = (b'data: {"model":%s,"choices":[{"delta":{"content":"hi"}}]}\n\n'
                      b'data: {"model":%s,"choices":[],"usage":%s}\n\ndata: [DONE]\n\n') % (model, model, usage)
        else:
            content_type = b"application/json"
            answer = b'{"model":%s,"choices":[{"message":{"content":"hi"}}],"usage":%s}' % (model, usage)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": answer})


def _settings(upstream: str, tmp_path: Path, **telemetry):
    return parse_settings({
        "upstreams": [{"name": "main", "url": upstream}],
        "db": {"path": str(tmp_path / "log.db")},
        "pricing": [{"model": "*", "input": 1.0, "output": 2.0}],
        "telemetry": {"flush_interval_seconds": 0.05, "session_header": "x-session", **telemetry},
        "access_log": {"path": str(tmp_path / "access.log")},
    })


def _unique_id() -> str:
    """A request id of the test's own: hypothesis seeds `random` alike for every example, so the
    ids the proxy (in this process) draws from it repeat from one example to the next."""
    return uuid.uuid4().hex


def _row(exporter: str, request_id: str) -> dict:
    found: dict = {}

    def written() -> bool:
        response = httpx.get(f"{exporter}/api/requests/{request_id}", timeout=30)
        assert response.status_code in (200, 404)
        found.update(response.json() if response.status_code == 200 else {})
        return bool(found)

    wait_until(written, f"the row of {request_id}")
    return found["request"]


def _telemetry_works(exporter: str, usage_api: bool = True) -> Scrape:
    """/metrics parses in both formats, and the usage API answers."""
    scrape = Scrape.of(exporter)
    om = httpx.get(exporter + "/metrics", headers={"accept": OPENMETRICS}, timeout=30)
    assert om.status_code == 200 and om.headers["content-type"].startswith("application/openmetrics-text")
    assert list(openmetrics_families(om.text))
    for path in ("/api/usage?group_by=model", "/api/usage?group_by=user", "/api/requests?limit=5") * usage_api:
        assert httpx.get(exporter + path, timeout=30).status_code == 200, path
    return scrape


_session = st.binary(min_size=1, max_size=400).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c < 0x7F or c >= 0x80).strip()).filter(bool)


def test_generated_models_users_and_sessions_leave_every_output_working(tmp_path):
    with serve(_Mirror()) as upstream, running_exporter(_settings(upstream, tmp_path)) as exporter:
        sent: list[str] = []

        @END_TO_END
        @given(model=hostile_text.filter(bool), user=hostile_text, session=_session, stream=st.booleans())
        def one_request(model, user, session, stream):
            body = {"model": model, "user": user, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(exporter + "/v1/chat/completions", content=json.dumps(body).encode(),
                                  headers={"content-type": "application/json", "x-session": session,
                                           "x-request-id": _unique_id()}, timeout=30)
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            sent.append(request_id)
            row = _row(exporter, request_id)
            # What the JSON body says: "\ud800\udc00" in JSON is one character, U+10000.
            model, user = json.loads(json.dumps([model, user]))
            assert row["model"] == row["response_model"] == text.safe(model)
            assert row["user"] == (text.safe(user) if user else None)
            assert row["session_id"] == text.safe(session)
            assert (row["input_tokens"], row["output_tokens"]) == (3, 5)
            scrape = _telemetry_works(exporter, usage_api=False)  # once at the end
            assert text.safe(model, text.LABEL_CHARS) in scrape.label_values("llm_requests_total", "model")

        one_request()
        scrape = _telemetry_works(exporter)
        assert scrape.value("llm_requests_total", code="200") == len(sent)
        assert scrape.value("llm_telemetry_dropped_total") == 0
    lines = (tmp_path / "access.log").read_bytes().decode("utf-8").splitlines()  # strict UTF-8
    logged = [json.loads(line) for line in lines]
    assert [line["request_id"] for line in logged] == sent
    assert all(_is_safe(line["model"], text.FIELD_CHARS) for line in logged)


# --- a writer thread never dies of one bad row ---------------------------------------------------


def _observation(request_id: str, **fields) -> Observation:
    defaults = {"upstream": "main", "api": "openai_chat", "model": "m", "model_label": "m", "stream": False,
                "request_bytes": 1, "status_code": 200}
    return Observation(request_id=request_id, ts=time.time(), **{**defaults, **fields})


# Values no path through the proxy can produce any more, as a future bug might.
BAD_ROWS = [
    {"model": "\ud800"},  # not encodable as UTF-8
    {"user": "x\udfff"},
    {"usage": Usage(input=2**70, output=1)},  # beyond SQLite's 64-bit integers
    {"response_model": {"not": "a string"}},  # a type the driver cannot bind
]


@pytest.mark.parametrize("bad", BAD_ROWS, ids=["model", "user", "tokens", "type"])
def test_a_row_the_database_refuses_is_dropped_alone_and_the_writer_goes_on(tmp_path, bad):
    drops: list[tuple[str, int]] = []
    log = RequestLog(tmp_path / "log.db", Telemetry(batch_size=5, flush_interval_seconds=0.05),
                     on_drop=lambda *drop: drops.append(drop))
    log.start()
    try:
        for i in range(5):  # one batch: the bad row in the middle of four good ones
            log.observe(_observation(f"bad-{i}", **bad) if i == 2 else _observation(f"first-{i}"))
        wait_until(lambda: log.written + log.dropped == 5, "the first batch")
        for i in range(3):
            log.observe(_observation(f"next-{i}"))
        wait_until(lambda: log.written == 7, "the rows after the bad one")
    finally:
        log.close()
    assert drops == [("bad_row", 1)] and log.dropped == 1
    assert [r["request_id"] for r in rows(tmp_path / "log.db")] == [
        "first-0", "first-1", "first-3", "first-4", "next-0", "next-1", "next-2"]


def test_a_bad_row_through_the_running_proxy_is_counted_and_the_next_rows_are_written(tmp_path):
    """The proxy makes every value safe before it is queued; a row spoilt later (here by an
    observer, standing in for a future bug) still costs only itself."""
    spoilt = threading.Event()

    def spoil_the_first(obs: Observation) -> None:
        if not spoilt.is_set():
            spoilt.set()
            obs.model = "\ud800"  # the row is built in the writer thread, after this

    with serve(_Mirror()) as upstream, running_exporter(_settings(upstream, tmp_path), [spoil_the_first]) as exporter:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(exporter + "/v1/chat/completions", json=body).status_code == 200
        wait_until(lambda: Scrape.of(exporter).value("llm_telemetry_dropped_total", reason="bad_row") == 1,
                   "the spoilt row counted")
        for _ in range(3):
            assert httpx.post(exporter + "/v1/chat/completions", json=body).status_code == 200
        wait_for_rows(tmp_path / "log.db", 3)
        scrape = _telemetry_works(exporter)
        assert {reason: scrape.value("llm_telemetry_dropped_total", reason=reason) for reason in DROP_REASONS} == {
            **{reason: 0 for reason in DROP_REASONS}, "bad_row": 1}


# --- token counts no real call reaches ---------------------------------------------------------


_implausible_number = st.one_of(
    st.integers(min_value=MAX_TOKENS + 1, max_value=10**40).map(str),
    st.integers(min_value=-(10**40), max_value=-1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # always with a "." or an exponent
    st.sampled_from(["true", "false", '"12"', "[1]", "{}", "1e400", "-0.0", "12.0",
                     "123456789012345678901234567890"]),
)
_FIELDS = ["prompt_tokens", "completion_tokens"]


def test_implausible_token_counts_are_no_usage_and_are_counted(tmp_path):
    with serve(_Mirror()) as upstream, running_exporter(_settings(upstream, tmp_path)) as exporter:
        sent = 0

        @END_TO_END
        @given(number=_implausible_number, field=st.sampled_from(_FIELDS), stream=st.booleans())
        def one_request(number, field, stream):
            nonlocal sent
            usage = {"prompt_tokens": "7", "completion_tokens": "9", field: number}
            usage_json = "{" + ",".join(f'"{k}":{v}' for k, v in usage.items()) + "}"
            body = {"model": "m", "stream": stream, "x_usage": usage_json,
                    "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "x"}]}
            response = httpx.post(exporter + "/v1/chat/completions", json=body, timeout=30,
                                  headers={"x-request-id": _unique_id()})
            sent += 1
            assert response.status_code == 200
            assert usage_json.encode() in response.content  # passed through unchanged
            row = _row(exporter, response.headers["x-request-id"])
            assert [row[f"{t}_tokens"] for t in ("input", "output", "cached_input", "reasoning")] == [None] * 4
            assert row["cost_usd"] == 0.0
            scrape = _telemetry_works(exporter, usage_api=False)
            assert scrape.value("llm_tokens_total") == 0
            assert scrape.value("llm_usage_missing_total") == sent
            assert scrape.value("llm_telemetry_dropped_total", reason="implausible_usage") == sent

        one_request()
        # The bound itself is plausible.
        body = {"model": "m", "x_usage": f'{{"prompt_tokens":{MAX_TOKENS},"completion_tokens":0}}',
                "messages": [{"role": "user", "content": "x"}]}
        response = httpx.post(exporter + "/v1/chat/completions", json=body, timeout=30)
        assert _row(exporter, response.headers["x-request-id"])["input_tokens"] == MAX_TOKENS
        assert Scrape.of(exporter).value("llm_tokens_total", type="input") == MAX_TOKENS


def test_an_implausible_count_in_any_event_of_a_stream_voids_its_usage():
    from exporter.families import family_for
    from exporter.tap import UsageTap

    tap = UsageTap(family_for("POST", "/v1/messages"), "text/event-stream", "")
    tap.feed(b'data: {"type":"message_start","message":{"model":"c","usage":{"input_tokens":5,"output_tokens":1}}}\n\n')
    tap.feed(b'data: {"type":"message_delta","usage":{"output_tokens":-3}}\n\n')
    tap.feed(b'data: {"type":"message_delta","usage":{"output_tokens":8}}\n\n')
    tap.close()
    assert tap.usage.implausible and not tap.usage.reported
    assert (tap.usage.input, tap.usage.output) == (None, None)


def test_usage_totals_of_rows_with_huge_counts_answer_200(tmp_path, upstream_url):
    """Rows from before the bound (counts up to 2**53) whose sum passes 2**63: no 500."""
    settings_ = _settings(upstream_url, tmp_path)
    with running_exporter(settings_):
        pass  # creates the schema
    conn = sqlite3.connect(tmp_path / "log.db")
    with conn:
        conn.executemany("INSERT INTO requests (ts, request_id, model, status_code, input_tokens, output_tokens, "
                         "duration_seconds) VALUES (?, ?, 'm', 200, ?, 1, 0.5)",
                         [(time.time(), f"old-{i}", 2**53) for i in range(2048)])
    conn.close()
    with running_exporter(settings_) as exporter:
        for path in ("/api/usage", "/api/usage?group_by=model", "/api/usage?group_by=day", "/api/requests"):
            response = httpx.get(exporter + path, timeout=60)
            assert response.status_code == 200, (path, response.text)
        assert httpx.get(exporter + "/api/usage").json()["total"]["tokens"]["input"] == 2048 * 2**53
    assert count(tmp_path / "log.db") == 2048


# --- numeric query parameters --------------------------------------------------------------------


@pytest.mark.parametrize("parameter, value", [
    (parameter, value)
    for parameter in ("limit", "status", "since", "until")
    for value in ("\u0661\u0662", "1_000", " 12 ", "12 ", "\u00b2", "\uff11\uff12", "0x10", "1e3", "+5", "-5",
                  "9" * 400 + "d", "9" * 400 + ".5")
])
def test_numbers_in_query_parameters_are_ascii_digits_or_a_400_naming_the_parameter(exporter_url, parameter, value):
    path = "/api/requests" if parameter in ("limit", "status") else "/api/usage"
    response = httpx.get(exporter_url + path, params={parameter: value})
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter


_PARAMETERS = ["since", "until", "limit", "status", "errors", "group_by", "model", "user", "key_id", "api",
               "upstream", "session_id", "nonsense"]
_values = st.one_of(
    short_hostile_text,  # a URL is at most 64 KiB for the client
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["0", "1", "599", "1000", "1001", "24h", "7d", "2026-01-01", "2026-01-01T00:00:00+05:00",
                     "true", "model", "day", "99999999999999999999w", "1.5", ".5", "5.", "nan", "inf"]),
)


def test_generated_query_strings_get_200_or_400_never_500(exporter_url):
    @END_TO_END
    @given(st.lists(st.tuples(st.sampled_from(_PARAMETERS), _values), max_size=4), st.sampled_from(
        ["/api/usage", "/api/requests"]))
    def one_query(params, path):
        query = urllib.parse.urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in params])
        response = httpx.get(f"{exporter_url}{path}?{query}", timeout=30)
        assert response.status_code in (200, 400), (params, response.text)
        if response.status_code == 400:
            assert response.json()["parameter"] in {name for name, _ in params}

    one_query()

