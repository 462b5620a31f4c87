"""A fast fake LLM backend made for benchmarking: raw asyncio + httptools on uvloop, no framework.

The demo upstream (exporter.demo.upstream) is a full Starlette app that hashes every request to
build deterministic answers; it would be the bottleneck here. This one answers from prebuilt
bytes, so its cost per request is a few tens of microseconds and the proxy in front of it is what
a benchmark measures (the direct rows of the table show how much it can do on its own).

What it answers is steered by the request's `model`, so it works the same behind any proxy
(LiteLLM rewrites headers and bodies, but passes the model name through):

    model "bench_n<N>_g<GAP_US>_s<SIZE>" with "stream": true
        an OpenAI chat SSE stream of N chunks, GAP_US microseconds apart, each carrying SIZE
        bytes of content. The content starts with "t<monotonic_ns>." (the upstream's send time)
        so a client on the same machine can tell how late each chunk reached it.
        With stream_options.include_usage every chunk carries "usage":null and a last chunk
        with "choices":[] carries the usage, as OpenAI does.
    any other model, or no stream
        one chat.completion JSON (or the family's JSON by path, see _FAMILY_BODIES) with usage.
    GET anything
        200 {"object":"list","data":[]} (probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time

import httptools

_STREAM_MODEL = re.compile(rb"bench_n(\d+)_g(\d+)_s(\d+)")
_MODEL = re.compile(rb'"model"\s*:\s*"([^"]{1,200})"')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')

_USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}


def _chat_body(model: str) -> dict:
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three four five six seven eight"},
                     "finish_reason": "stop"}],
        "usage": _USAGE,
    }


# Non-streamed answers per path, in each API family's wire format, so a request of every family
# yields its tokens (the /metrics case drives every family through the proxy).
_FAMILY_BODIES = {
    b"/v1/completions": lambda m: {"id": "cmpl-bench", "object": "text_completion", "model": m,
                                   "choices": [{"index": 0, "text": "one two", "finish_reason": "stop"}], "usage": _USAGE},
    b"/v1/embeddings": lambda m: {"object": "list", "model": m, "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}],
                                  "usage": {"prompt_tokens": 12, "total_tokens": 12}},
    b"/v1/responses": lambda m: {"id": "resp-bench", "object": "response", "model": m, "status": "completed",
                                 "output": [], "usage": {"input_tokens": 12, "output_tokens": 8, "total_tokens": 20}},
    b"/v1/messages": lambda m: {"id": "msg-bench", "type": "message", "role": "assistant", "model": m,
                                "content": [{"type": "text", "text": "one two"}], "stop_reason": "end_turn",
                                "usage": {"input_tokens": 12, "output_tokens": 8}},
    b"/api/chat": lambda m: {"model": m, "message": {"role": "assistant", "content": "one two"}, "done": True,
                             "prompt_eval_count": 12, "eval_count": 8, "eval_duration": 160000000},
    b"/api/generate": lambda m: {"model": m, "response": "one two", "done": True,
                                 "prompt_eval_count": 12, "eval_count": 8, "eval_duration": 160000000},
    b"/api/embed": lambda m: {"model": m, "embeddings": [[0.5, 0.5]], "prompt_eval_count": 12},
    b"/completion": lambda m: {"content": "one two", "model": m, "stop": True,
                               "timings": {"prompt_n": 12, "cache_n": 0, "predicted_n": 8, "predicted_per_second": 50.0}},
}
_FAMILY_BODIES[b"/infill"] = _FAMILY_BODIES[b"/completion"]

_PROBE = b'{"object":"list","data":[]}'


def _response_head(status: bytes, content_type: bytes, length: int | None) -> bytes:
    framing = b"content-length: %d\r\n" % length if length is not None else b"transfer-encoding: chunked\r\n"
    return b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\n" + framing + b"\r\n"


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked transfer-encoded body."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


class _Answers:
    """Prebuilt responses, cached per (path, model): the hot path only looks bytes up."""

    def __init__(self) -> None:
        self._json: dict[tuple[bytes, bytes], bytes] = {}

    def json_response(self, path: bytes, model: bytes) -> bytes:
        key = (path, model)
        cached = self._json.get(key)
        if cached is None:
            name = model.decode()
            build = _FAMILY_BODIES.get(path, _chat_body)
            body = json.dumps(build(name), separators=(",", ":")).encode()
            cached = _response_head(b"200 OK", b"application/json", len(body)) + body
            if len(self._json) < 100_000:
                self._json[key] = cached
        return cached


class _Connection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer one at a time."""

    def __init__(self, answers: _Answers) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.streaming: asyncio.Task | None = None
        self.queue: list[tuple[bytes, bytes, bytes]] = []  # requests behind a running stream

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        request = (method, self.url.split(b"?", 1)[0], b"".join(self.body))
        if self.streaming is not None:
            self.queue.append(request)
        else:
            self._answer(*request)

    def _answer(self, method: bytes, path: bytes, body: bytes) -> None:
        if method != b"POST":
            self.transport.write(_response_head(b"200 OK", b"application/json", len(_PROBE)) + _PROBE)
            return
        found = _MODEL.search(body)
        model = found.group(1) if found else b"bench"
        shape = _STREAM_MODEL.fullmatch(model)
        if shape and _STREAM_TRUE.search(body):
            count, gap_us, size = (int(g) for g in shape.groups())
            usage = _INCLUDE_USAGE.search(body) is not None
            self.streaming = asyncio.ensure_future(self._stream(model, count, gap_us / 1e6, size, usage))
        else:
            self.transport.write(self.answers.json_response(path, model))

    async def _stream(self, model: bytes, count: int, gap: float, size: int, usage: bool) -> None:
        transport = self.transport
        # The head goes out with the first chunk, in one write, as uvicorn-based backends (vLLM,
        # llama-cpp-python, ...) send it: uvicorn holds the head back until the first body part.
        head = _response_head(b"200 OK", b"text/event-stream", None)
        try:
            prefix = (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"'
                      + model + b'","choices":[{"index":0,"delta":{"content":"')
            suffix = b'"},"finish_reason":null}]' + (b',"usage":null' if usage else b"") + b"}\n\n"
            filler = b"x" * size
            for index in range(count):
                if index and gap:
                    await asyncio.sleep(gap)
                if not self.can_write.is_set():
                    await self.can_write.wait()
                    if transport.is_closing():
                        return
                stamp = b"t%d." % time.monotonic_ns()
                transport.write(head + _chunk(prefix + stamp + filler[len(stamp):] + suffix))
                head = b""
            end = (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"'
                   + model + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]'
                   + (b',"usage":null' if usage else b"") + b"}\n\n")
            if usage:
                end += (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"'
                        + model + b'","choices":[],"usage":' + json.dumps(_USAGE, separators=(",", ":")).encode()
                        + b"}\n\n")
            transport.write(head + _chunk(end + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        finally:
            self.streaming = None
        while self.queue and self.streaming is None and not transport.is_closing():
            self._answer(*self.queue.pop(0))


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    answers = _Answers()
    server = await loop.create_server(lambda: _Connection(answers), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench upstream listening on http://{host}:{port} (pid {os.getpid()})", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
