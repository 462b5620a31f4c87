"""Sending a rendered response: fault controls, pacing, content encoding, aborts.

Kept apart from the wire formats so every family gets the same faults: a proxy under test sees a
slow or broken Anthropic stream exactly as it sees a slow or broken Ollama one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from exporter.demo.upstream.formats import Rendered

HEADER_STATUS = "x-demo-status"
HEADER_DELAY = "x-demo-delay"
HEADER_CHUNK_DELAY = "x-demo-chunk-delay"
HEADER_DIE_AFTER = "x-demo-die-after"
HEADER_ENCODING = "x-demo-encoding"
HEADER_NO_USAGE = "x-demo-no-usage"
HEADER_MALFORMED = "x-demo-malformed"
HEADER_CONTENT_TYPE = "x-demo-content-type"
HEADER_HUGE_CHUNK = "x-demo-huge-chunk"
MAX_HUGE_CHUNK = 64 * 1024 * 1024
ENCODINGS = {"gzip": 31, "deflate": 15}  # zlib wbits: gzip wrapper, zlib wrapper (HTTP "deflate")


class BadControl(ValueError):
    """A fault-control header with a value the demo cannot act on."""


class DemoAbort(Exception):
    """Raised on purpose (x-demo-die-after) so uvicorn drops the connection mid-body."""


@dataclass(frozen=True)
class Faults:
    status: int | None = None
    delay: float = 0.0
    chunk_delay: float | None = None
    die_after: int | None = None
    encoding: str | None = None
    no_usage: bool = False
    malformed: bool = False
    content_type: str | None = None
    huge_chunk: int | None = None


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise BadControl(f"{name} must be a number of seconds, got {value!r}") from None
    if not 0 <= seconds <= 3600:
        raise BadControl(f"{name} must be between 0 and 3600 seconds, got {value!r}")
    return seconds


def _count(name: str, value: str, low: int, high: int) -> int:
    if not value.strip().isdigit() or not low <= int(value) <= high:
        raise BadControl(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def parse_faults(headers: Mapping[str, str]) -> Faults:
    """Read the x-demo-* request headers; absent headers mean no fault."""
    get = headers.get
    encoding = get(HEADER_ENCODING)
    if encoding is not None and encoding not in ENCODINGS:
        raise BadControl(f"{HEADER_ENCODING} must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    return Faults(
        status=_count(HEADER_STATUS, get(HEADER_STATUS), 400, 599) if get(HEADER_STATUS) else None,
        delay=_seconds(HEADER_DELAY, get(HEADER_DELAY)) if get(HEADER_DELAY) else 0.0,
        chunk_delay=_seconds(HEADER_CHUNK_DELAY, get(HEADER_CHUNK_DELAY)) if get(HEADER_CHUNK_DELAY) else None,
        die_after=_count(HEADER_DIE_AFTER, get(HEADER_DIE_AFTER), 0, 1_000_000) if get(HEADER_DIE_AFTER) else None,
        encoding=encoding,
        no_usage=get(HEADER_NO_USAGE, "").lower() in ("1", "true", "yes"),
        malformed=get(HEADER_MALFORMED, "").lower() in ("1", "true", "yes"),
        content_type=_content_type(get(HEADER_CONTENT_TYPE)),
        huge_chunk=_count(HEADER_HUGE_CHUNK, get(HEADER_HUGE_CHUNK), 0, MAX_HUGE_CHUNK)
        if get(HEADER_HUGE_CHUNK) else None,
    )


def _content_type(value: str | None) -> str | None:
    if value is not None and (not value or len(value) > 200 or not value.isprintable()):
        raise BadControl(f"{HEADER_CONTENT_TYPE} must be a content type, got {value!r}")
    return value


def malform(data: bytes) -> bytes:
    """x-demo-malformed: every JSON object of a piece loses its closing brace."""
    return data[:-1] if data.endswith(b"}") else data.replace(b"}\n", b"\n")


def padding(content_type: str, size: int) -> bytes:
    """x-demo-huge-chunk: `size` bytes that every client of the format skips: an SSE comment line,
    a blank NDJSON line, or whitespace before a JSON body."""
    if "event-stream" in content_type:
        return b":" + b" " * max(size - 3, 0) + b"\n\n"
    if "ndjson" in content_type:
        return b" " * max(size - 1, 0) + b"\n"
    return b" " * size


# --- Pacing ------------------------------------------------------------------------------------

# (time to first token in seconds, gap between tokens in seconds) by model size.
SPEEDS = {"fast": (0.15, 0.012), "medium": (0.3, 0.025), "slow": (0.5, 0.05)}
FAST_WORDS = ("small", "mini", "tiny", "nano", "haiku")
SLOW_WORDS = ("large", "opus")
PROMPT_SECONDS_PER_TOKEN = 0.0002
REASONING_EXTRA_TTFT = 0.15
MAX_TTFT = 0.8


def speed_class(model: str) -> str:
    """Guess a model's size from its name: words like mini/large, or a parameter count like 70b."""
    name = model.lower()
    if any(word in name for word in FAST_WORDS):
        return "fast"
    if any(word in name for word in SLOW_WORDS):
        return "slow"
    size = re.search(r"(\d+(?:\.\d+)?)b\b", name)
    if size:
        billions = float(size.group(1))
        return "fast" if billions <= 3 else "slow" if billions >= 30 else "medium"
    return "medium"


@dataclass(frozen=True)
class Pace:
    """Realistic timing for the demo: a time to first token, then a gap per token, with jitter."""

    ttft: float
    gap: float

    def first(self) -> float:
        return self.ttft * random.uniform(0.85, 1.15)

    def next(self) -> float:
        return self.gap * random.uniform(0.8, 1.2)

    def whole(self, tokens: int) -> float:
        """A non-streamed answer arrives when the last token would have."""
        return self.first() + sum(self.next() for _ in range(max(tokens - 1, 0)))


def pace_for(model: str, input_tokens: int, reasoning: bool) -> Pace:
    """Bigger prompts and bigger models take longer to start; reasoning models think first."""
    ttft, gap = SPEEDS[speed_class(model)]
    ttft += input_tokens * PROMPT_SECONDS_PER_TOKEN + (REASONING_EXTRA_TTFT if reasoning else 0.0)
    return Pace(min(ttft, MAX_TTFT), gap)


# --- Sending -----------------------------------------------------------------------------------


class Encoder:
    """Content-Encoding applied piece by piece; a sync flush makes each piece decodable on arrival."""

    def __init__(self, encoding: str | None) -> None:
        self._zlib = zlib.compressobj(6, zlib.DEFLATED, ENCODINGS[encoding]) if encoding else None

    def encode(self, data: bytes, last: bool) -> bytes:
        if self._zlib is None:
            return data
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class Delivery:
    """An ASGI response that sends a `Rendered` body with the request's faults and pacing."""

    def __init__(self, rendered: Rendered, faults: Faults, pace: Pace | None = None, tokens: int = 0,
                 finished: Callable[[], None] | None = None) -> None:
        self.rendered, self.faults, self.pace, self.tokens = rendered, faults, pace, tokens
        self.finished = finished  # called once the answer is over, however it ended

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [("content-type", self.faults.content_type or self.rendered.content_type), *self.rendered.headers]
        if self.faults.encoding:
            headers.append(("content-encoding", self.faults.encoding))
        if self.rendered.stream:
            headers.append(("cache-control", "no-cache"))
        return [(k.encode(), v.encode()) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            await self._send(send, gone)
        finally:
            watcher.cancel()
            if self.finished is not None:
                self.finished()

    async def _send(self, send: Send, gone: asyncio.Event) -> None:
        rendered, faults = self.rendered, self.faults
        wait = faults.delay
        if self.pace and not rendered.stream:
            wait += self.pace.whole(self.tokens)
        if not await _pause(wait, gone):
            return
        encoder = Encoder(faults.encoding)
        pieces = [malform(piece.data) if faults.malformed else piece.data for piece in rendered.pieces]
        if faults.huge_chunk is not None:  # the whole body, padded, in one message
            body = encoder.encode(padding(rendered.content_type, faults.huge_chunk) + b"".join(pieces), last=True)
            headers = self.headers() + [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": rendered.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if not rendered.stream:
            body = encoder.encode(pieces[0], last=True)
            headers = self.headers()
            if faults.die_after is None:
                headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": rendered.status, "headers": headers})
            if faults.die_after is not None:
                if faults.die_after > 0:
                    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise DemoAbort(f"{HEADER_DIE_AFTER}: connection dropped mid-body on purpose")
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": rendered.status, "headers": self.headers()})
        first_token = True
        for index, piece in enumerate(rendered.pieces):
            if not await _pause(self._gap(index, piece.token, first_token), gone):
                return
            first_token = first_token and not piece.token
            last = index == len(rendered.pieces) - 1
            await send({"type": "http.response.body", "body": encoder.encode(pieces[index], last), "more_body": True})
            if faults.die_after is not None and index + 1 >= faults.die_after:
                raise DemoAbort(f"{HEADER_DIE_AFTER}: connection dropped after {index + 1} chunks on purpose")
        if faults.die_after is not None:  # fewer chunks than asked for: still never finish the body
            raise DemoAbort(f"{HEADER_DIE_AFTER}: connection dropped before the end of the body on purpose")
        if faults.chunk_delay and not await _pause(faults.chunk_delay, gone):  # the end is one more gap
            return
        await send({"type": "http.response.body", "body": b""})

    def _gap(self, index: int, token: bool, first_token: bool) -> float:
        """x-demo-chunk-delay spaces every chunk evenly; pacing spaces only the token chunks."""
        if self.faults.chunk_delay is not None:
            return self.faults.chunk_delay if index else 0.0
        if self.pace is None or not token:
            return 0.0
        return self.pace.first() if first_token else self.pace.next()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Stop generating when the client goes away, as a real backend frees the slot."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _pause(seconds: float, gone: asyncio.Event) -> bool:
    """Sleep unless the client left; True when sending should go on."""
    if seconds > 0:
        try:
            await asyncio.wait_for(gone.wait(), seconds)
        except TimeoutError:
            pass
    return not gone.is_set()


class _QuietAborts(logging.Filter):
    """Keep deliberate aborts out of uvicorn's error log; every other error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DemoAbort))


def quiet_deliberate_aborts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAborts) for f in logger.filters):
        logger.addFilter(_QuietAborts())
