"""The command line: `llm-exporter serve`, `usage`, `demo`, and the compose helpers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from exporter import __version__
from exporter.config import MAX_WORKERS, ConfigError, Settings, Upstream, load_settings
from exporter.metrics import mark_worker_dead
from exporter.pricing import build_pricing

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Parser(argparse.ArgumentParser):
    """Errors in one line and exit code 2, as for a bad config."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-exporter", description="A streaming proxy that measures every LLM call.")
    parser.add_argument("--version", action="version", version=f"llm-exporter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="proxy LLM API traffic and export its metrics")
    serve.add_argument("--config", default=os.environ.get("LLM_EXPORTER_CONFIG"),
                       help="YAML config file (env LLM_EXPORTER_CONFIG)")
    serve.add_argument("--upstream", default=os.environ.get("LLM_EXPORTER_UPSTREAM"),
                       help="one upstream base URL for every model (env LLM_EXPORTER_UPSTREAM)")
    _listen_arguments(serve)
    serve.add_argument("--db", help="telemetry database (default llm-exporter.db, or the config's db.path)")
    serve.add_argument("--workers", type=_workers, default=os.environ.get("LLM_EXPORTER_WORKERS"),
                       help="worker processes (default 1, or the config's server.workers; env LLM_EXPORTER_WORKERS)")

    usage = commands.add_parser("usage", help="print a usage and cost report from the request log")
    usage.add_argument("--db", default=os.environ.get("LLM_EXPORTER_DB", "llm-exporter.db"),
                       help="request log database (default llm-exporter.db, env LLM_EXPORTER_DB)")
    usage.add_argument("--since", default="24h",
                       help="start: a duration ago (30m, 24h, 7d), an ISO 8601 date or time, or unix seconds "
                            "(default 24h)")
    usage.add_argument("--until", help="end, in the same forms (default now)")
    usage.add_argument("--by", default="model", choices=[*usage_groups(), "none"],
                       help="one line per model (default), upstream, api, day, key_id or user; none: totals only")
    usage.add_argument("--upstream", action="append", help="only this upstream (repeatable)")
    usage.add_argument("--model", action="append", help="only this requested model (repeatable)")
    usage.add_argument("--json", action="store_true", help="print the /api/usage JSON instead of a table")

    demo = commands.add_parser("demo", help="the proxy in front of a built-in demo upstream, to try it out")
    _listen_arguments(demo)

    upstream = commands.add_parser("demo-upstream", help="only the built-in demo upstream (for compose)")
    _listen_arguments(upstream, default_port=9000)

    loadgen = commands.add_parser("loadgen", help="steady mixed demo traffic through a proxy (for compose)")
    loadgen.add_argument("--target", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
                         help="the proxy's base URL, in front of a demo upstream")
    loadgen.add_argument("--rate", type=_positive, default=4.0, help="requests per second (default 4)")
    loadgen.add_argument("--concurrency", type=_positive_int, default=32, help="most requests at once (default 32)")
    loadgen.add_argument("--duration", type=float, default=0.0, help="seconds to run (default 0: until stopped)")
    loadgen.add_argument("--error-share", type=float, default=0.001,
                         help="share of requests the demo upstream is asked to fail (default 0.001, "
                              "well inside the 99.5%% availability SLO)")

    receiver = commands.add_parser("slack-receiver", help="a local stand-in for a Slack webhook (for compose)")
    _listen_arguments(receiver, default_port=8086)
    return parser


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number greater than 0")
    return number


def _workers(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (1-{MAX_WORKERS})")
    return int(value)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number greater than 0")
    return int(value)


def _listen_arguments(parser: argparse.ArgumentParser, default_port: int = DEFAULT_PORT) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=default_port, help=f"port (default {default_port})")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(args.config, args.upstream, args.db)
            if args.workers:
                settings = dataclasses.replace(settings, workers=args.workers)
            _check_outputs(settings)
            if settings.workers > 1:
                _serve_workers(settings, args)
            else:
                _run(_serve_proxy(settings, args.host, args.port))
        elif args.command == "usage":
            _usage(args)
        elif args.command == "demo":
            _run(_demo(args.host, args.port))
        elif args.command == "demo-upstream":
            _run(_serve(_server(_demo_app(), args.host, args.port)))
        elif args.command == "loadgen":
            _run(_loadgen(args))
        elif args.command == "slack-receiver":
            from exporter.demo.slack_receiver import create_app

            _run(_serve(_server(create_app(), args.host, args.port)))
    except ConfigError as exc:
        print(f"llm-exporter: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


def usage_groups() -> list[str]:
    from exporter.usage_report import GROUPS

    return list(GROUPS)


def _usage(args: argparse.Namespace) -> None:
    """The same numbers as GET /api/usage, as a table."""
    import json
    import sqlite3
    from datetime import datetime, timezone

    from exporter import usage_report
    from exporter.requestlog import connect, migrate

    if not os.path.isfile(args.db):
        print(f"llm-exporter: no request log at {args.db} (give --db PATH)", file=sys.stderr)
        sys.exit(2)
    items = [("since", args.since)] + ([("until", args.until)] if args.until else [])
    items += [("upstream", name) for name in args.upstream or []] + [("model", name) for name in args.model or []]
    if args.by != "none":
        items.append(("group_by", args.by))
    try:
        filters, group_by = usage_report.usage_query(items)
    except usage_report.BadParameter as exc:
        print(f"llm-exporter: error: --{exc}", file=sys.stderr)
        sys.exit(2)
    try:  # a log from an older version gains its new columns first
        db = connect(args.db)
        try:
            migrate(db)
        finally:
            db.close()
    except sqlite3.Error:
        pass  # a database this user may only read: report from what is there
    try:
        conn = usage_report.open_read_only(args.db)
        try:
            report = usage_report.usage(conn, filters, group_by)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"llm-exporter: cannot read the request log {args.db}: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(report, indent=2))
        return

    def when(ts: float | None) -> str:
        return "now" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    since = "the start of the log" if filters.since is None else when(filters.since)
    print(usage_report.render_table(report, f"Usage from {since} to {when(filters.until)} ({args.db})"), end="")


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop (installed with uvicorn[standard]) where it is available, else on asyncio's loop.

    uvicorn picks uvloop only when it creates the loop itself (`uvicorn.run`); these servers run
    inside a loop of our own, so the choice is made here (see docs/benchmarks.md for the effect).
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _config(app, host: str, port: int, settings: Settings | None = None, **options: Any) -> uvicorn.Config:
    # The upstream's own Server and Date headers pass through; uvicorn must not add a second pair.
    # Nothing reads the client's address, so X-Forwarded-For is not parsed (proxy_headers=False
    # takes a middleware off every request). The HTTP protocol is uvicorn[standard]'s httptools
    # with a bound on the request head (exporter.httpserver); the event loop is chosen in _run.
    # On SIGTERM uvicorn stops accepting, lets requests in flight finish for the grace period,
    # then runs the app's shutdown, which writes the queued request-log rows.
    from exporter.httpserver import configure, http_protocol

    if settings is not None:
        options.update(http=http_protocol(), timeout_graceful_shutdown=settings.shutdown_grace_seconds)
    config = uvicorn.Config(app, host=host, port=port, server_header=False, date_header=False,
                            access_log=False, log_level="info", proxy_headers=False, **options)
    if settings is not None:
        configure(config, settings.max_header_bytes, settings.request_head_timeout)
    return config


def _server(app, host: str, port: int, settings: Settings | None = None) -> uvicorn.Server:
    return uvicorn.Server(_config(app, host, port, settings))


def _check_outputs(settings: Settings) -> None:
    """Files the workers will write, checked once up front so a mistake is one line, exit 2."""
    if settings.access_log.enabled and settings.access_log.path:
        try:
            with open(settings.access_log.path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(f"access_log.path: cannot open {settings.access_log.path}: {exc.strerror}") from None


def _serve_workers(settings: Settings, args: argparse.Namespace) -> None:
    """N uvicorn worker processes on one socket, their metrics shared through prometheus-client's
    multiprocess mode (PROMETHEUS_MULTIPROC_DIR), their request-log writers through SQLite (WAL)."""
    from exporter.app import WORKER_ARGS_ENV
    from exporter.requestlog import RequestLog

    # Create or migrate the database once, here, before the workers open it all at once.
    RequestLog(settings.db_path, settings.telemetry)
    directory, owned = _fresh_multiprocess_dir()
    os.environ[WORKER_ARGS_ENV] = json.dumps({"config": args.config, "upstream": args.upstream, "db": args.db})
    config = _config("exporter.app:create_app_from_env", args.host, args.port, settings,
                     factory=True, workers=settings.workers)
    sock = config.bind_socket()
    try:
        _Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


def _fresh_multiprocess_dir() -> tuple[str, bool]:
    """PROMETHEUS_MULTIPROC_DIR emptied of an earlier run's files, or a new temporary directory;
    True when it is ours to remove at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        try:
            os.makedirs(given, exist_ok=True)
            for path in glob.glob(os.path.join(given, "*.db")):  # only prometheus-client's files
                os.remove(path)
        except OSError as exc:
            raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR: cannot use {given}: {exc.strerror}") from None
        return given, False
    directory = tempfile.mkdtemp(prefix="llm-exporter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory, True


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor; a worker that died (and so could not say so itself) is marked
    dead in the metrics files, so the in-flight gauge stops counting its requests."""

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()
        for pid in before - self._pids():
            mark_worker_dead(pid)

    def run(self) -> None:
        try:
            super().run()
        finally:
            for pid in self._pids():
                mark_worker_dead(pid)

    def _pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}


async def _serve(server: uvicorn.Server) -> None:
    await server.serve()


async def _serve_proxy(settings: Settings, host: str, port: int) -> None:
    from exporter.app import create_app

    await _serve(_server(create_app(settings), host, port, settings))


async def _loadgen(args: argparse.Namespace) -> None:
    from exporter.demo import loadgen

    if reason := loadgen.off_reason(os.environ):
        print(reason)
        return
    statuses = await loadgen.run(args.target, args.rate, args.concurrency, args.duration, args.error_share)
    print("loadgen: responses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))


def _demo_app():
    from exporter.demo.upstream import create_app

    return create_app(pacing=True)


async def _demo(host: str, port: int) -> None:
    """The demo upstream on the next port, the proxy in front of it, and what to try."""
    from exporter.app import create_app
    from exporter.demo.upstream import STATE_KINDS

    upstream_port = port + 1
    demo_url = f"http://127.0.0.1:{upstream_port}"
    settings = Settings(
        # "demo" takes the traffic; the others read the demo's state as each kind of backend.
        upstreams=(Upstream(name="demo", url=demo_url),
                   *(Upstream(name=f"demo-{kind}", url=demo_url + path, kind=kind) for kind, path in STATE_KINDS)),
        default_upstream="demo",
        # The demo's made-up models get a made-up price, so the cost numbers have something to show.
        pricing=build_pricing([{"model": "demo-*", "input": 0.5, "cached_input": 0.05, "output": 2.0}]),
    )
    upstream = _BackgroundServer(_server(_demo_app(), "127.0.0.1", upstream_port).config)
    proxy = _server(create_app(settings), host, port, settings)
    upstream_task = asyncio.create_task(upstream.serve())
    announce = asyncio.create_task(_announce(proxy, host, port))
    try:
        await proxy.serve()
    finally:
        announce.cancel()
        upstream.should_exit = True
        await upstream_task


async def _announce(proxy: uvicorn.Server, host: str, port: int) -> None:
    while not proxy.started:
        await asyncio.sleep(0.05)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    chat = '{"model":"demo-gpt-mini","messages":[{"role":"user","content":"Say hello to the demo"}]}'
    stream = '{"model":"demo-gpt-mini","stream":true,"messages":[{"role":"user","content":"Count to ten"}]}'
    print(
        "\nllm-exporter demo: the proxy is at " + base + ", a demo upstream behind it. Try:\n\n"
        f"  curl -s {base}/v1/chat/completions -H 'content-type: application/json' -d '{chat}'\n"
        f"  curl -sN {base}/v1/chat/completions -H 'content-type: application/json' -d '{stream}'\n"
        f"  curl -s {base}/metrics | grep llm_tokens_total\n"
        f"\nThe request log: {base}/api/usage?group_by=model, or `llm-exporter usage --since 1h`.\n"
        "The demo's state as Ollama, vLLM, llama.cpp and llama-swap: llm_backend_* on /metrics.\n",
        flush=True,
    )


class _BackgroundServer(uvicorn.Server):
    """A second server in the same process; the proxy's server owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
