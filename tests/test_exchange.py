"""One proxied request's Exchange: the status the client got, and when a hang-up is a 499."""

from __future__ import annotations

import asyncio
import json

from exporter.exchange import Exchange

CHAT_SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [(b"x-request-id", b"r-1")]}


class Client:
    """The server side of one ASGI connection: what the app sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gone = asyncio.Event()

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def _answer_then_hang_up(finish: bool) -> tuple[Exchange, Client, bool]:
    """An answer that is complete or not when the client hangs up; whether the request was cancelled."""
    client = Client()
    exchange = Exchange(CHAT_SCOPE, client.send, "u")
    exchange.task = asyncio.current_task()
    watcher = asyncio.ensure_future(exchange.cancel_on_disconnect(client.receive))
    await exchange.start(200, [])
    await exchange.send(b"data: one\n\n")
    if finish:
        await exchange.end(b"data: [DONE]\n\n")
    client.gone.set()
    try:
        await asyncio.wait({watcher})  # the watcher's cancel, if any, arrives here
        cancelled = False
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()
        cancelled = True
    return exchange, client, cancelled


def test_a_hang_up_mid_answer_is_a_499_and_stops_the_request():
    exchange, _, cancelled = asyncio.run(_answer_then_hang_up(finish=False))
    assert cancelled and exchange.client_gone
    assert exchange.obs.status_code == 499
    assert exchange.obs.response_bytes == len(b"data: one\n\n")


def test_a_hang_up_after_the_whole_answer_is_the_normal_end():
    exchange, client, cancelled = asyncio.run(_answer_then_hang_up(finish=True))
    assert not cancelled and not exchange.client_gone
    assert exchange.obs.status_code == 200
    assert exchange.obs.response_bytes == len(b"data: one\n\ndata: [DONE]\n\n")
    assert client.sent[-1]["more_body"] is False


def test_the_proxys_own_answer_is_the_status_observed_and_counts_no_relayed_bytes():
    client = Client()
    exchange = Exchange(CHAT_SCOPE, client.send, "u")
    asyncio.run(exchange.answer_error(413, "too large"))
    start, body = client.sent
    assert start["status"] == exchange.obs.status_code == 413
    assert (b"x-request-id", b"r-1") in start["headers"]
    assert json.loads(body["body"])["error"]["message"] == "too large"
    assert body["more_body"] is False and exchange.complete
    assert exchange.obs.response_bytes == 0
    assert not exchange.client_left() and exchange.obs.status_code == 413
