"""The usage tap and its framing, fed directly: chunk boundaries, encodings, bounded memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest

from exporter import framing
from exporter.families import FAMILIES, family_for
from exporter.framing import Decoder, NdjsonFramer, SseFramer, StreamUsageHider
from exporter.observation import Usage
from exporter.tap import UsageTap

SSE = (
    b": a comment\r\n"
    b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n"
    b"data: first line\ndata: second line\n\n"
    b"id: 7\nretry: 100\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [b'{"a":1}', b"first line\nsecond line", b"no-space", b"[DONE]"]
NDJSON = b'{"a":1}\n\n{"b":2}\r\n{"c":3}'


def _split_everywhere(data: bytes):
    """Every way of cutting `data` in two, plus one byte at a time."""
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    yield [data[i:i + 1] for i in range(len(data))]


def _frame(framer, chunks):
    events = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events + framer.close()


@pytest.mark.parametrize("chunks", list(_split_everywhere(SSE)))
def test_sse_events_do_not_depend_on_chunk_boundaries(chunks):
    assert _frame(SseFramer(), chunks) == SSE_EVENTS


@pytest.mark.parametrize("chunks", list(_split_everywhere(NDJSON)))
def test_ndjson_lines_do_not_depend_on_chunk_boundaries(chunks):
    assert _frame(NdjsonFramer(), chunks) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_sse_stream_ending_without_blank_line_keeps_its_last_event():
    assert _frame(SseFramer(), [b"data: 1\n\ndata: 2"]) == [b"1", b"2"]


def test_oversized_events_are_skipped_not_buffered():
    framer = SseFramer(limit=100)
    events = _frame(framer, [b"data: " + b"x" * 150, b"y" * 150 + b"\n\n", b"data: small\n\n"])
    assert events == [b"small"]
    ndjson = NdjsonFramer(limit=100)
    assert _frame(ndjson, [b"{" + b"x" * 300, b"}\n{\"ok\":1}\n"]) == [b'{"ok":1}']


@pytest.mark.parametrize("compress", [
    gzip.compress,
    zlib.compress,  # HTTP "deflate" as it should be: zlib-wrapped
    lambda data: zlib.compress(data)[2:-4],  # and as some servers send it: raw deflate
])
def test_decoder_reads_gzip_and_both_deflates_in_any_chunking(compress):
    data = SSE * 50
    encoded = compress(data)
    for chunks in ([encoded], [encoded[i:i + 7] for i in range(0, len(encoded), 7)]):
        decoder = Decoder("gzip" if compress is gzip.compress else "deflate")
        assert b"".join(decoder.decode(chunk) for chunk in chunks) == data


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError):
        Decoder("br")


# --- hiding the usage the proxy asked for ----------------------------------------------------------

ASKED = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
    b"data: [DONE]\n\n"
)
NOT_ASKED = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("chunks", list(_split_everywhere(ASKED))[::5])
def test_usage_hider_gives_the_stream_the_client_would_have_had(chunks):
    hider = StreamUsageHider()
    assert b"".join(hider.feed(chunk) for chunk in chunks) + hider.close() == NOT_ASKED


def test_usage_hider_passes_complete_events_on_at_once():
    hider = StreamUsageHider()
    assert hider.feed(ASKED[:120]) == NOT_ASKED[: NOT_ASKED.index(b"\n\n") + 2]


def test_usage_hider_keeps_content_that_merely_mentions_usage():
    event = b'data: {"choices":[{"delta":{"content":"\\"usage\\":null, \\"choices\\":[]"}}]}\n\n'
    hider = StreamUsageHider()
    assert hider.feed(event) + hider.close() == event


# --- usage extraction, per family -------------------------------------------------------------------

def _family(name: str):
    return next(f for f in FAMILIES if f.name == name)


@pytest.mark.parametrize("api, bodies, expected", [
    ("openai_chat", [{"usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                "prompt_tokens_details": {"cached_tokens": 4},
                                "completion_tokens_details": {"reasoning_tokens": 2}}}],
     Usage(input=10, cached_input=4, output=5, reasoning=2)),
    # llama.cpp's OpenAI-compatible server adds its own timings.
    ("openai_chat", [{"usage": {"prompt_tokens": 3, "completion_tokens": 8}, "timings": {"predicted_per_second": 41.5}}],
     Usage(input=3, output=8, output_tokens_per_second=41.5)),
    ("openai_chat", [{"usage": None}], Usage()),
    ("openai_embeddings", [{"usage": {"prompt_tokens": 7, "total_tokens": 7}}], Usage(input=7)),
    ("openai_responses", [{"type": "response.completed", "response": {"usage": {
        "input_tokens": 20, "input_tokens_details": {"cached_tokens": 16},
        "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3}}}}],
     Usage(input=20, cached_input=16, output=9, reasoning=3)),
    # Anthropic: input_tokens excludes cache reads and writes; message_delta has the final output.
    ("anthropic_messages", [
        {"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5,
                                                        "cache_creation_input_tokens": 2, "output_tokens": 1}}},
        {"type": "message_delta", "usage": {"output_tokens": 30}}],
     Usage(input=17, cached_input=5, cache_write_input=2, output=30)),
    ("ollama_chat", [{"done": True, "prompt_eval_count": 26, "eval_count": 100, "eval_duration": 2_000_000_000}],
     Usage(input=26, output=100, output_tokens_per_second=50.0)),
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
    ("ollama_generate", [{"done": True, "eval_count": 4, "eval_duration": 100_000_000}],
     Usage(output=4, output_tokens_per_second=40.0)),
    ("ollama_embed", [{"embeddings": [[0.1]], "prompt_eval_count": 6}], Usage(input=6)),
    # load_duration (ns): the time Ollama spent loading the model for this request.
    ("ollama_chat", [{"done": True, "prompt_eval_count": 2, "eval_count": 4, "eval_duration": 100_000_000,
                      "load_duration": 250_000_000}], Usage(input=2, output=4, output_tokens_per_second=40.0,
                                                            load_seconds=0.25)),
    # llama.cpp: prompt_n excludes the cache_n tokens reused from the prompt cache.
    ("llamacpp_completion", [{"stop": True, "timings": {"prompt_n": 3, "cache_n": 7, "predicted_n": 12,
                                                        "predicted_per_second": 33.0}}],
     Usage(input=10, cached_input=7, output=12, output_tokens_per_second=33.0)),
    ("llamacpp_completion", [{"stop": True, "tokens_evaluated": 9, "tokens_predicted": 2}], Usage(input=9, output=2)),
    # Servers of early 2025 report no cache_n: tokens_evaluated holds the whole prompt.
    ("llamacpp_completion", [{"stop": True, "tokens_evaluated": 301, "timings": {"prompt_n": 1, "predicted_n": 4}}],
     Usage(input=301, output=4)),
    # llama.cpp's OpenAI stream, not asked for usage, ends with timings only.
    ("openai_chat", [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                      "timings": {"cache_n": 5, "prompt_n": 2, "predicted_n": 7, "predicted_per_second": 9.5}}],
     Usage(input=7, cached_input=5, output=7, output_tokens_per_second=9.5)),
    ("gemini_stream_generate", [{"usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4,
                                                   "candidatesTokenCount": 6, "thoughtsTokenCount": 3}}],
     Usage(input=10, cached_input=4, output=9, reasoning=3)),
    ("gemini_generate", [{"usageMetadata": {"promptTokenCount": 5}}], Usage(input=5)),
    ("gemini_generate", [{"usageMetadata": {"promptTokenCount": 5, "toolUsePromptTokenCount": 7,
                                            "candidatesTokenCount": 2}}], Usage(input=12, output=2)),
])
def test_usage_per_family(api, bodies, expected):
    usage = Usage()
    for body in bodies:
        found = _family(api).usage(body)
        if found is not None:
            usage.merge(found)
    assert usage == expected


def test_every_family_path_routes_to_its_family():
    for family in FAMILIES:
        for path in family.paths:
            assert family_for("POST", path) is family
    assert family_for("GET", "/v1/chat/completions").name == "other"
    assert family_for("POST", "/v1/unknown").name == "other"


# --- the tap ------------------------------------------------------------------------------------------

def _anthropic_stream(words: int) -> bytes:
    events = [
        {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 4, "output_tokens": 1}}},
        *({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "w "}} for _ in range(words)),
        {"type": "message_delta", "usage": {"output_tokens": words}},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_tap_reads_a_stream_in_any_chunking():
    stream = _anthropic_stream(5)
    for size in (1, 3, 64, len(stream)):
        tap = UsageTap(_family("anthropic_messages"), "text/event-stream", "")
        for i in range(0, len(stream), size):
            tap.feed(stream[i:i + size])
        tap.close()
        assert tap.usage == Usage(input=4, output=5)
        assert tap.response_model == "claude-x"
        assert tap.first_content_at is not None


def test_tap_reads_usage_from_the_tail_of_a_body_too_big_to_keep():
    vectors = [[0.123456789] * 1536 for _ in range(500)]  # about 9 MB of JSON
    body = json.dumps({"object": "list", "data": vectors, "model": "e", "usage": {"prompt_tokens": 42, "total_tokens": 42}}).encode()
    tap = UsageTap(_family("openai_embeddings"), "application/json", "")
    for i in range(0, len(body), 65536):
        tap.feed(body[i:i + 65536])
    tap.close()
    assert tap.usage.input == 42


def test_tap_memory_does_not_grow_with_the_stream():
    """20 MB of stream through the tap: the tap holds at most one event, whatever the length."""
    chunk = b"".join(
        b'data: {"choices":[{"delta":{"content":"' + b"x" * 80 + b'"}}]}\n\n' for _ in range(600)
    )
    tap = UsageTap(_family("openai_chat"), "text/event-stream", "")
    tap.feed(chunk)
    tracemalloc.start()
    try:
        for _ in range(20 * 1024 * 1024 // len(chunk)):
            tap.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(chunk)  # the pending buffer and one chunk's events, not the stream


def _tap(api: str, content_type: str, body: bytes, copies: int = 1) -> UsageTap:
    tap = UsageTap(_family(api), content_type, "", copies)
    tap.feed(body)
    tap.close()
    return tap


def test_a_json_array_of_results_adds_up():
    body = json.dumps([{"index": i, "tokens_evaluated": 3 + i, "timings": {"predicted_n": 2}} for i in range(3)])
    assert _tap("llamacpp_completion", "application/json", body.encode()).usage == Usage(input=12, output=6)


def test_reports_of_one_result_supersede_and_of_several_results_add_up():
    events = [{"index": i % 2, "tokens_evaluated": 4, "tokens_predicted": n} for n in (1, 2) for i in (0, 1)]
    events += [{"index": 2, "tokens_evaluated": 9, "tokens_predicted": 1}]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    assert _tap("llamacpp_completion", "text/event-stream", body).usage == Usage(input=17, output=5)


def test_n_copies_report_their_shared_prompt_once():
    chunk = {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 4,
                                      "prompt_tokens_details": {"cached_tokens": 20}}}
    body = (b"data: " + json.dumps(chunk).encode() + b"\n\n") * 2
    assert _tap("openai_chat", "text/event-stream", body, copies=2).usage == Usage(input=30, cached_input=20, output=8)
    # one report for all copies (OpenAI's own way): nothing to divide
    one = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    assert _tap("openai_chat", "text/event-stream", one, copies=2).usage.input == 30


def test_a_gemini_stream_without_alt_sse_is_a_json_array():
    chunks = [{"candidates": [{"content": {"parts": [{"text": "w"}]}}],
               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": n}} for n in (1, 2, 3)]
    body = ("[" + ",\r\n".join(json.dumps(c) for c in chunks) + "]").encode()
    tap = _tap("gemini_stream_generate", "application/json; charset=UTF-8", body)
    assert tap.usage == Usage(input=4, output=3)
    assert tap.first_content_at is not None


def test_tap_survives_corrupt_compression():
    tap = UsageTap(_family("openai_chat"), "application/json", "gzip")
    tap.feed(b"this is not gzip")
    tap.feed(b"still not")
    tap.close()
    assert not tap.usage.reported


@pytest.mark.parametrize("api, content_type, body", [
    ("openai_chat", "text/event-stream", b'data: {"choices": 5}\n\ndata: {"choices":[{"delta":[1]}],"usage":{"prompt_tokens":"x"}}\n\n'),
    ("anthropic_messages", "text/event-stream", b'data: {"usage": {"input_tokens": [], "cache_read_input_tokens": {}}}\n\n'),
    ("ollama_chat", "application/x-ndjson", b'{"message": "hi", "eval_count": "many", "eval_duration": 0}\n[1,2]\n"x"\n'),
    ("llamacpp_completion", "application/json", b'{"timings": {"prompt_n": null, "predicted_per_second": "fast"}}'),
])
def test_tap_never_raises_on_odd_shapes(api, content_type, body):
    tap = UsageTap(_family(api), content_type, "")
    tap.feed(body)
    tap.close()


def test_tap_reads_usage_from_sse_with_cr_only_line_ends():
    """CR alone ends a line in SSE, as LF and CRLF do; a CRLF cut between two chunks is one end."""
    stream = _anthropic_stream(3).replace(b"\n", b"\r")
    crlf = _anthropic_stream(3).replace(b"\n", b"\r\n")
    for body in (stream, crlf):
        for size in (1, 2, 7, len(body)):
            tap = UsageTap(_family("anthropic_messages"), "text/event-stream", "")
            for i in range(0, len(body), size):
                tap.feed(body[i:i + size])
            tap.close()
            assert tap.usage == Usage(input=4, output=3), (body[:40], size)


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()


@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream", "application/x-ndjson"])
def test_a_compression_bomb_stops_the_tap_not_the_proxy(content_type):
    """1 GiB of zeros in 1 MB of gzip: the tap inflates at most one bounded slice, keeps no more
    memory than that, and gives up on usage (the proxy passes the bytes on regardless)."""
    bomb = _gzip_of_zeros(1024 * 1024 * 1024)
    tap = UsageTap(_family("openai_chat"), content_type, "gzip")
    tracemalloc.start()
    try:
        for i in range(0, len(bomb), 65536):
            tap.feed(bomb[i:i + 65536])
        tap.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tap.inflate_limited and not tap.usage.reported
    assert peak < 3 * framing.MAX_CHUNK_INFLATED  # one slice and zlib's buffer for it


def test_inflation_is_bounded_in_total_too(monkeypatch):
    """Chunks that each inflate within the per-chunk bound still stop at the total bound."""
    monkeypatch.setattr(framing, "MAX_INFLATED", 8 * 1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    event = b'data: {"choices":[{"delta":{"content":"' + b"ab" * 400 + b'"}}]}\n\n'
    decoder = framing.Decoder("gzip")
    inflated = 0
    with pytest.raises(framing.InflateLimit):
        for _ in range(100_000):
            inflated += len(decoder.decode(compressor.compress(event * 100) + compressor.flush(zlib.Z_SYNC_FLUSH)))
    assert 7 * 1024 * 1024 < inflated <= 8 * 1024 * 1024


def test_a_legitimate_compressed_body_is_read_whole():
    body = json.dumps({"model": "m", "choices": [{"message": {"content": "word " * 200_000}}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 200_000}}).encode()
    compressed = gzip.compress(body)
    tap = UsageTap(_family("openai_chat"), "application/json", "gzip")
    for i in range(0, len(compressed), 256 * 1024):
        tap.feed(compressed[i:i + 256 * 1024])
    tap.close()
    assert not tap.inflate_limited and tap.usage == Usage(input=3, output=200_000)


def test_a_deeply_nested_event_is_skipped_and_the_rest_still_read():
    deep = b"data: {\"choices\": " + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n"
    tap = UsageTap(_family("anthropic_messages"), "text/event-stream", "")
    tap.feed(deep + _anthropic_stream(2))
    tap.close()
    assert tap.usage == Usage(input=4, output=2)
