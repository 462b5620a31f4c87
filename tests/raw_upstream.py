"""A scripted raw upstream: a real TCP (or TLS) server that answers with exactly the bytes a test gives it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable


class LocalServer:
    """An asyncio server on 127.0.0.1 (TLS with `tls`) running `_serve` per connection;
    `async with` gives its URL."""

    tls: ssl.SSLContext | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RawUpstream(LocalServer):
    """Answers each request with `answer(n)` (n counts requests over all connections); a None
    answer closes the connection without a word. Counts connections and closes, keeps what it
    was sent; speaks TLS with `tls`. `pieces` writes each answer in slices of that many bytes,
    yielding between them, so the client reads it in as many pieces."""

    def __init__(self, answer: Callable[[int], bytes | None], close_after_answer: bool = False,
                 pieces: Callable[[bytes], list[bytes]] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.close_after_answer = close_after_answer
        self.pieces = pieces
        self.connections = 0
        self.closes = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        await super().__aexit__(*exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests))
                if answer is None:
                    break
                for index, piece in enumerate(self.pieces(answer) if self.pieces else [answer]):
                    if index:
                        await asyncio.sleep(0.0005)  # lets the client read the last piece alone
                    writer.write(piece)
                    await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        writer.close()
        self.closes += 1
