"""Servers in processes of their own for the soak test; never part of the product.

    python -m tests.harness_server exporter --config FILE --port P
        the exporter exactly as `llm-exporter serve` runs it (same uvicorn config, uvloop), plus a
        test-only debug hook: GET /__test__/tasks answers the number of asyncio tasks in its loop
    python -m tests.harness_server upstream --port P
        the demo upstream with pacing off; idle keep-alive connections are closed after 1 s, so
        the proxy's pool of upstream connections drains quickly once traffic stops
"""

from __future__ import annotations

import argparse
import asyncio
import json

DEBUG_TASKS_PATH = "/__test__/tasks"


class TaskCountHook:
    """ASGI wrapper: the debug path answers the loop's task count, everything else goes on."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == DEBUG_TASKS_PATH:
            body = json.dumps({"tasks": len(asyncio.all_tasks())}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def main() -> None:
    from exporter import cli

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["exporter", "upstream"])
    parser.add_argument("--config")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.role == "exporter":
        from exporter.app import create_app
        from exporter.config import load_settings

        settings = load_settings(args.config)
        server = cli._server(TaskCountHook(create_app(settings)), "127.0.0.1", args.port, settings)
    else:
        import uvicorn

        from exporter.demo.upstream import create_app as create_demo

        server = uvicorn.Server(uvicorn.Config(create_demo(pacing=False), host="127.0.0.1", port=args.port,
                                               log_level="warning", access_log=False, timeout_keep_alive=1))
    cli._run(server.serve())


if __name__ == "__main__":
    main()
