"""Property-based tests (hypothesis) of SSE / NDJSON / JSON-array framing and usage extraction.

Whatever the bytes and wherever the chunks are cut: nothing raises, memory stays bounded by the
event limit, and the result is the same as for the whole body fed at once.
"""

from __future__ import annotations

import gzip
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.families import FAMILIES, MAX_TOKENS, OTHER, family_for
from exporter.framing import JsonArrayFramer, NdjsonFramer, SseFramer, StreamUsageHider
from exporter.observation import Usage
from exporter.tap import UsageTap

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 64  # a small event limit, so oversized lines and events are common


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    return pieces + [data[start:]]


# Lines of SSE-ish text: real fields, comments, blank lines, LF, CRLF and CR line ends, long lines,
# and raw noise.
_sse_line = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))),
    st.builds(lambda v: b"data:" + v.encode(), st.text(max_size=20).map(lambda t: t.replace("\n", ""))),
    st.sampled_from([b"", b"", b"event: message_start", b": keep-alive", b"id: 7", b"retry: 10", b"data: [DONE]"]),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
)
_sse_body = st.builds(
    lambda lines, ends, tail: b"".join(line + end for line, end in zip(lines, ends)) + tail,
    st.lists(_sse_line, max_size=30), st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=30, max_size=30),
    st.binary(max_size=100),
)
_cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


def _frame(framer_type, pieces: list[bytes]) -> tuple[list[bytes], int]:
    framer = framer_type(limit=LIMIT)
    events, most_pending = [], 0
    for piece in pieces:
        events += framer.feed(piece)
        most_pending = max(most_pending, len(framer._lines._pending))
        if isinstance(framer, SseFramer):
            assert sum(len(d) for d in framer._data) <= LIMIT
    return events + framer.close(), most_pending


@PROPERTIES
@given(_sse_body, _cuts)
def test_sse_framing_does_not_depend_on_chunk_boundaries(body, cuts):
    whole, _ = _frame(SseFramer, [body])
    split, most_pending = _frame(SseFramer, _split(body, cuts))
    assert split == whole
    assert most_pending <= LIMIT  # the incomplete line held back never passes the limit
    assert all(len(event) - event.count(b"\n") <= LIMIT for event in whole)  # data lines joined by LF


@PROPERTIES
@given(_sse_body, _cuts)
def test_sse_framing_matches_the_spec_for_events_within_the_limit(body, cuts):
    """Reference: split into lines at CRLF, LF or CR, blank lines end events, the data lines of
    an event joined with LF; events with a line over the limit are skipped."""
    expected, data, oversized = [], [], False
    for line in body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if len(line) > LIMIT:
            oversized = True
            continue
        if not line:
            if data and not oversized and sum(len(d) for d in data) <= LIMIT:
                expected.append(b"\n".join(data))
            data, oversized = [], False
        elif line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    if data and not oversized and sum(len(d) for d in data) <= LIMIT:
        expected.append(b"\n".join(data))
    assert _frame(SseFramer, _split(body, cuts))[0] == expected


_ndjson_body = st.builds(
    lambda lines, tail: b"\n".join(lines) + tail,
    st.lists(st.one_of(
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=4).map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b"", b"   ", b"\r"]),
    ), max_size=30),
    st.sampled_from([b"", b"\n", b"\r\n"]),
)


@PROPERTIES
@given(_ndjson_body, _cuts)
def test_ndjson_framing_does_not_depend_on_chunk_boundaries(body, cuts):
    whole, _ = _frame(NdjsonFramer, [body])
    split, most_pending = _frame(NdjsonFramer, _split(body, cuts))
    assert split == whole
    assert most_pending <= LIMIT
    expected = [line.strip() for line in body.split(b"\n") if len(line) <= LIMIT and line.strip()]
    assert whole == expected


# A streamed JSON array (Gemini without alt=sse): objects whose strings hold brackets, braces,
# quotes and backslashes, with any whitespace between elements.
_array_element = st.dictionaries(
    st.text(alphabet='ab{}[]"\\,: ', max_size=4),
    st.one_of(st.text(alphabet='xy{}[]"\\ ', max_size=12), st.integers(), st.lists(st.integers(), max_size=3),
              st.dictionaries(st.text(max_size=3), st.text(alphabet='{}[]"\\z', max_size=6), max_size=2)),
    max_size=4,
)


@st.composite
def _array_body(draw) -> tuple[bytes, list[bytes]]:
    """A body and the elements' own bytes: an array with any whitespace, or one bare object."""
    elements = [json.dumps(e, ensure_ascii=draw(st.booleans())).encode()
                for e in draw(st.lists(_array_element, max_size=12))]
    if elements and draw(st.booleans()):
        return elements[0], elements[:1]
    gaps = [draw(st.sampled_from([b"", b"\n", b"\r\n", b" "])) for _ in elements]
    return b"[" + b",".join(gap + e for gap, e in zip(gaps, elements)) + b"]", elements


def _array_frame(body_pieces: list[bytes]) -> list[bytes]:
    framer = JsonArrayFramer(limit=LIMIT)
    elements = []
    for piece in body_pieces:
        elements += framer.feed(piece)
        assert len(framer._element) <= LIMIT  # never buffered past the limit
    return elements + framer.close()


@PROPERTIES
@given(_array_body(), _cuts)
def test_json_array_framing_does_not_depend_on_chunk_boundaries(body_and_elements, cuts):
    body, elements = body_and_elements
    # every element within the limit comes out byte for byte, in order; the ones past it are skipped
    assert _array_frame(_split(body, cuts)) == [e for e in elements if len(e) <= LIMIT]


@PROPERTIES
@given(st.binary(max_size=600), _cuts)
def test_json_array_framing_never_raises_and_stays_bounded(body, cuts):
    assert _array_frame(_split(body, cuts)) == _array_frame([body])


# --- usage extraction ---------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
_json = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from([
            "usage", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "choices", "delta",
            "content", "message", "response", "timings", "prompt_n", "cache_n", "predicted_n",
            "predicted_per_second", "eval_count", "prompt_eval_count", "eval_duration", "type", "text",
            "cache_read_input_tokens", "cache_creation_input_tokens", "prompt_tokens_details", "cached_tokens",
            "tokens_evaluated", "tokens_predicted", "model", "done",
        ]) | st.text(max_size=5), children, max_size=6),
    ),
    max_leaves=30,
)


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["usage", "message", "response", "timings", "choices", "type",
                                        "eval_count", "prompt_eval_count", "eval_duration", "prompt_n"]),
                       _json, max_size=6))
def test_usage_extraction_never_raises_and_keeps_counts_sane(body):
    for family in (*FAMILIES, OTHER):
        usage = family.usage(body)
        family.has_content(body)
        if usage is None:
            continue
        for name in ("input", "cached_input", "cache_write_input", "output", "reasoning"):
            value = getattr(usage, name)
            # A sum of up to three counts for Anthropic's input; never negative, never a float.
            assert value is None or (isinstance(value, int) and 0 <= value <= 3 * MAX_TOKENS)
        speed = usage.output_tokens_per_second
        assert speed is None or (speed > 0 and math.isfinite(speed))


def _openai_stream(words: int, prompt: int, completion: int, noise: list[bytes]) -> bytes:
    events = [b'data: {"model":"m","choices":[{"delta":{"role":"assistant"}}]}\n\n']
    events += [b'data: {"choices":[{"delta":{"content":"w%d"}}],"usage":null}\n\n' % i for i in range(words)]
    events += [b": " + n.replace(b"\n", b"") + b"\n\n" for n in noise]  # comments: ignored
    events.append(b'data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}\n\n' % (prompt, completion))
    return b"".join(events) + b"data: [DONE]\n\n"


def _ollama_stream(words: int, prompt: int, completion: int, noise: list[bytes]) -> bytes:
    lines = [b'{"model":"m","message":{"content":"w%d"},"done":false}' % i for i in range(words)]
    lines += [n.replace(b"\n", b"") for n in noise]  # not JSON objects: skipped
    lines.append(b'{"model":"m","done":true,"prompt_eval_count":%d,"eval_count":%d}' % (prompt, completion))
    return b"\n".join(lines) + b"\n"


_counts = st.integers(min_value=0, max_value=10**9)


@PROPERTIES
@given(st.integers(min_value=0, max_value=30), _counts, _counts,
       st.lists(st.binary(max_size=50), max_size=5), _cuts, st.booleans(),
       st.sampled_from(["openai", "ollama", "json"]))
def test_the_tap_finds_the_same_usage_whatever_the_chunks(words, prompt, completion, noise, cuts, gzipped, kind):
    if kind == "openai":
        family, content_type = family_for("POST", "/v1/chat/completions"), "text/event-stream"
        body = _openai_stream(words, prompt, completion, noise)
    elif kind == "ollama":
        family, content_type = family_for("POST", "/api/chat"), "application/x-ndjson"
        body = _ollama_stream(words, prompt, completion, noise)
    else:
        family, content_type = family_for("POST", "/v1/chat/completions"), "application/json"
        body = b'{"model":"m","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}' % (prompt, completion)
    encoding = ""
    if gzipped:
        body, encoding = gzip.compress(body), "gzip"

    def tap_of(pieces: list[bytes]) -> UsageTap:
        tap = UsageTap(family, content_type, encoding)
        for piece in pieces:
            tap.feed(piece)
        tap.close()
        return tap

    whole, split = tap_of([body]), tap_of(_split(body, cuts))
    assert whole.usage == split.usage == Usage(input=prompt, output=completion)
    assert whole.response_model == split.response_model == "m"
    assert (whole.first_content_at is None) == (split.first_content_at is None) == (kind == "json" or words == 0)


@PROPERTIES
@given(st.binary(max_size=2000), _cuts, st.sampled_from(["text/event-stream", "application/x-ndjson",
                                                           "application/json", "text/plain", ""]),
       st.sampled_from(["", "gzip", "deflate", "br"]), st.sampled_from(["/v1/chat/completions", "/api/chat",
                                                                        "/v1/messages", "/completion", "/x"]))
def test_the_tap_never_raises_on_any_bytes(body, cuts, content_type, encoding, path):
    tap = UsageTap(family_for("POST", path), content_type, encoding)
    for piece in _split(body, cuts):
        tap.feed(piece)
    tap.close()
    assert tap.usage.input is None or tap.usage.input >= 0


@PROPERTIES
@given(st.integers(min_value=0, max_value=20), _counts, _counts, _cuts)
def test_the_usage_hider_gives_the_same_bytes_whatever_the_chunks(words, prompt, completion, cuts):
    body = _openai_stream(words, prompt, completion, [])

    def hidden(pieces: list[bytes]) -> bytes:
        hider = StreamUsageHider()
        return b"".join(hider.feed(piece) for piece in pieces) + hider.close()

    whole = hidden([body])
    assert hidden(_split(body, cuts)) == whole
    assert b'"usage"' not in whole and b"_tokens" not in whole
    assert whole.count(b"data: ") == words + 2  # the role chunk, the words, [DONE]
