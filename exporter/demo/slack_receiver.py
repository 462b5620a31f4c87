"""A local stand-in for a Slack incoming webhook: shows what Alertmanager would have posted.

The compose stack points Alertmanager's Slack receivers here until a real webhook URL is put in
secrets/slack_webhook_url. POST any path with a Slack message; GET / lists the latest ones,
GET /messages returns them as JSON.
"""

from __future__ import annotations

import html
import json
import logging
from collections import deque

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

KEPT_MESSAGES = 200
logger = logging.getLogger("uvicorn.error")


def create_app() -> Starlette:
    messages: deque[dict] = deque(maxlen=KEPT_MESSAGES)

    async def receive(request: Request) -> PlainTextResponse:
        try:
            message = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)  # as Slack answers
        if not isinstance(message, dict):
            return PlainTextResponse("invalid_payload", status_code=400)
        messages.appendleft({"path": request.url.path, "message": message})
        for attachment in message.get("attachments") or [message]:
            logger.info("slack message to %s: %s", message.get("channel", "(webhook default)"),
                        attachment.get("title") or attachment.get("text") or "")
        return PlainTextResponse("ok")  # Slack's own answer to a good post

    async def listing(request: Request) -> HTMLResponse:
        items = "".join(
            f"<li><pre>{html.escape(json.dumps(item['message'], indent=2))}</pre></li>" for item in messages
        )
        return HTMLResponse(
            "<!doctype html><title>Slack messages</title><h1>Messages Alertmanager posted</h1>"
            f"<p>The latest {KEPT_MESSAGES}, newest first.</p><ol>{items}</ol>"
        )

    async def as_json(request: Request) -> JSONResponse:
        return JSONResponse(list(messages))

    return Starlette(routes=[
        Route("/", listing, methods=["GET"]),
        Route("/messages", as_json, methods=["GET"]),
        Route("/{path:path}", receive, methods=["POST"]),
    ])
