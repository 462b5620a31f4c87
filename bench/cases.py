"""The benchmark cases. Each returns plain dicts; bench.report turns them into tables.

Targets are measured alternately (direct, llm-exporter, LiteLLM, then again) and the median of
the rounds is kept, so a burst of load from other jobs on the machine hits all of them alike.
While one proxy is measured the other is paused (SIGSTOP), so its background work cannot disturb.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import loadgen, procs
from bench.procs import Server

AUTH = "Bearer sk-bench-master-key-0123456789abcdef"  # LiteLLM's master key; passed on by the others
HEADERS = {"content-type": "application/json", "authorization": AUTH}
# What Prometheus (2.49 and later) sends when it scrapes: OpenMetrics preferred.
SCRAPE_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                 "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PROMPT = "Summarise the following text in one sentence. " + "The quick brown fox jumps over the lazy dog. " * 10
CHAT_BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT}]})
FAMILY_PATHS = (
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
    "/api/chat", "/api/generate", "/api/embed", "/completion", "/v1/other",
)


@dataclass
class Plan:
    rounds: int = 3
    seconds: float = 5.0  # per wrk run
    concurrency: tuple[int, ...] = (1, 10, 100)
    streams: int = 40  # sequential streams per target and round for the latency case
    stream_chunks: int = 20
    stream_gap_us: int = 5000
    big_bytes: int = 1 << 30
    big_chunk: int = 64 * 1024
    big_limit_seconds: float = 60.0
    big_rss_limit: int = 4 << 30  # stop a stream whose proxy grows past this
    slow_streams: int = 1000
    slow_chunks: int = 10
    slow_gap_seconds: float = 1.0
    scrape_models: int = 100
    scrapes: int = 20
    cpu_seconds: float = 5.0


QUICK = Plan(rounds=1, seconds=1.0, concurrency=(1, 10), streams=3, stream_chunks=5, stream_gap_us=2000,
             big_bytes=8 << 20, big_limit_seconds=20, slow_streams=20, slow_chunks=2, slow_gap_seconds=0.2,
             scrape_models=3, scrapes=2, cpu_seconds=1.0)


@dataclass
class Target:
    name: str
    url: str
    server: Server | None  # None: the upstream itself (the direct path)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _only(targets: list[Target], target: Target) -> None:
    """Resume `target`, pause every other proxy."""
    for other in targets:
        if other.server is not None and other is not target:
            other.server.pause()
    if target.server is not None:
        target.server.resume()


def _resume_all(targets: list[Target]) -> None:
    for target in targets:
        if target.server is not None:
            target.server.resume()


def _cpu(target: Target, upstream: Server) -> float:
    return procs.cpu_seconds((target.server or upstream).pid)


# --- non-streamed throughput and latency --------------------------------------------------------


def nonstream(plan: Plan, targets: list[Target], upstream: Server, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for connections in plan.concurrency:
        runs: dict[str, list[dict]] = {t.name: [] for t in targets}
        for round_ in range(plan.rounds):
            for target in targets:
                _only(targets, target)
                loadgen.run_wrk(target.url + "/v1/chat/completions", connections, min(1.0, plan.seconds),
                                CHAT_BODY, AUTH)  # warm-up: connections, caches
                cpu0, busy0 = _cpu(target, upstream), procs.machine_busy_seconds()
                result = loadgen.run_wrk(target.url + "/v1/chat/completions", connections, plan.seconds,
                                         CHAT_BODY, AUTH)
                cpu = _cpu(target, upstream) - cpu0
                busy = procs.machine_busy_seconds() - busy0
                runs[target.name].append({
                    "rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "errors": result.errors,
                    "cpu_us_per_request": cpu / result.requests * 1e6 if result.requests else None,
                    "machine_busy": busy / result.seconds,
                })
                log(f"non-stream c={connections} {target.name} round {round_ + 1}: {result.rps:,.0f} req/s "
                    f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms errors {result.errors}")
        for target in targets:
            r = runs[target.name]
            rows.append({
                "connections": connections, "target": target.name,
                "rps": _median([x["rps"] for x in r]),
                "p50_ms": _median([x["p50_ms"] for x in r]),
                "p99_ms": _median([x["p99_ms"] for x in r]),
                "errors": sum(x["errors"] for x in r),
                "cpu_us_per_request": _median([x["cpu_us_per_request"] for x in r if x["cpu_us_per_request"]]),
                "machine_busy": _median([x["machine_busy"] for x in r]),
                "rounds": r,
            })
    _resume_all(targets)
    return rows


# --- streaming: time to first byte, delay of every chunk ---------------------------------------


def _stream_body(model: str, **extra) -> bytes:
    return json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}], **extra}).encode()


def stream_latency(plan: Plan, targets: list[Target], upstream: Server, log: Callable[[str], None]) -> list[dict]:
    """Sequential streams; TTFB = request sent -> first body byte; chunk delay = arrival - upstream stamp."""
    body = _stream_body(f"bench_n{plan.stream_chunks}_g{plan.stream_gap_us}_s64")
    samples: dict[str, dict[str, list[float]]] = {t.name: {"ttfb": [], "delay": [], "errors": []} for t in targets}
    for round_ in range(plan.rounds):
        for target in targets:
            _only(targets, target)

            async def run() -> list[loadgen.StreamResult]:
                client = loadgen.Client(target.url)  # one keep-alive connection, as SDK clients keep
                await client.request("/v1/chat/completions", body, HEADERS, stamps=True)  # warm-up
                try:
                    return [await client.request("/v1/chat/completions", body, HEADERS, stamps=True)
                            for _ in range(plan.streams)]
                finally:
                    client.close()

            results = asyncio.run(run())
            s = samples[target.name]
            for result in results:
                if result.error or result.status != 200 or not result.first_body_ns:
                    s["errors"].append(1)
                    continue
                s["ttfb"].append((result.first_body_ns - result.sent_ns) / 1e6)
                s["delay"] += [d / 1e6 for d in result.chunk_delays_ns[1:]]  # the first chunk is in TTFB
            log(f"stream latency {target.name} round {round_ + 1}: TTFB p50 {_percentile(s['ttfb'], 50) or 0:.2f} ms, "
                f"chunk delay p50 {_percentile(s['delay'], 50) or 0:.3f} ms")
    _resume_all(targets)
    return [{
        "target": name,
        "ttfb_p50_ms": _percentile(s["ttfb"], 50), "ttfb_p99_ms": _percentile(s["ttfb"], 99),
        "chunk_delay_p50_ms": _percentile(s["delay"], 50), "chunk_delay_p99_ms": _percentile(s["delay"], 99),
        "streams": len(s["ttfb"]), "chunks": len(s["delay"]), "errors": len(s["errors"]),
    } for name, s in samples.items()]


# --- memory: one 1 GB stream, and 1,000 slow streams at once ------------------------------------


def _rss_fields(target: Target, base: int, peak: int) -> dict:
    """A memory row's RSS columns; the direct path's figures are the upstream's."""
    return {"rss_base_mb": base / 1e6, "rss_peak_mb": peak / 1e6, "rss_growth_mb": (peak - base) / 1e6,
            "measured_process": "upstream" if target.server is None else target.name}


async def _watch_rss(pid: int, stop: asyncio.Event, peak: list[int], limit: int | None = None,
                     on_limit: Callable[[], None] | None = None) -> None:
    while not stop.is_set():
        rss = procs.rss_bytes(pid)
        peak[0] = max(peak[0], rss)
        if limit and rss > limit and on_limit:
            on_limit()
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass


def big_stream(plan: Plan, targets: list[Target], upstream: Server, log: Callable[[str], None]) -> list[dict]:
    chunks = max(1, plan.big_bytes // plan.big_chunk)
    body = _stream_body(f"bench_n{chunks}_g0_s{plan.big_chunk}")
    rows = []
    for target in targets:
        _only(targets, target)
        pid = (target.server or upstream).pid
        url = target.url + "/v1/chat/completions"

        async def run() -> tuple[loadgen.StreamResult, int, int, float, bool]:
            await loadgen.request(url, _stream_body("bench_n3_g0_s64"), HEADERS)  # warm-up
            base = procs.rss_bytes(pid)
            peak = [base]
            stop = asyncio.Event()
            task = asyncio.ensure_future(loadgen.request(url, body, HEADERS, timeout=plan.big_limit_seconds))
            watcher = asyncio.ensure_future(_watch_rss(pid, stop, peak, plan.big_rss_limit, task.cancel))
            started = time.perf_counter()
            cut = False
            try:
                result = await task
            except asyncio.CancelledError:
                result, cut = loadgen.StreamResult(error="stopped: memory limit"), True
            elapsed = time.perf_counter() - started
            stop.set()
            await watcher
            return result, base, peak[0], elapsed, cut

        result, base, peak, elapsed, cut = asyncio.run(run())
        row = {
            "target": target.name, "bytes": result.body_bytes, "seconds": elapsed,
            "mb_per_s": result.body_bytes / elapsed / 1e6 if elapsed else None,
            "complete": result.complete, "error": result.error, **_rss_fields(target, base, peak),
        }
        rows.append(row)
        log(f"1 GB stream {target.name}: {result.body_bytes / 1e6:,.0f} MB in {elapsed:.1f} s, "
            f"RSS +{row['rss_growth_mb']:.1f} MB, complete={result.complete} {result.error or ''}")
    _resume_all(targets)
    return rows


def slow_streams(plan: Plan, targets: list[Target], upstream: Server, log: Callable[[str], None]) -> list[dict]:
    gap_us = int(plan.slow_gap_seconds * 1e6)
    body = _stream_body(f"bench_n{plan.slow_chunks}_g{gap_us}_s64")
    limit = plan.slow_chunks * plan.slow_gap_seconds + 30
    rows = []
    for target in targets:
        _only(targets, target)
        pid = (target.server or upstream).pid
        url = target.url + "/v1/chat/completions"

        async def run() -> tuple[list[loadgen.StreamResult], int, int, float]:
            await loadgen.request(url, _stream_body("bench_n3_g0_s64"), HEADERS)  # warm-up
            base = procs.rss_bytes(pid)
            peak = [base]
            stop = asyncio.Event()
            watcher = asyncio.ensure_future(_watch_rss(pid, stop, peak))
            started = time.perf_counter()
            results = await asyncio.gather(*(loadgen.request(url, body, HEADERS, timeout=limit)
                                             for _ in range(plan.slow_streams)))
            elapsed = time.perf_counter() - started
            stop.set()
            await watcher
            return results, base, peak[0], elapsed

        results, base, peak, elapsed = asyncio.run(run())
        complete = sum(1 for r in results if r.complete and r.status == 200)
        row = {
            "target": target.name, "streams": plan.slow_streams, "complete": complete, "seconds": elapsed,
            **_rss_fields(target, base, peak),
        }
        rows.append(row)
        log(f"{plan.slow_streams} slow streams {target.name}: {complete} complete in {elapsed:.1f} s, "
            f"RSS +{row['rss_growth_mb']:.1f} MB")
    _resume_all(targets)
    return rows


# --- /metrics at 100 models x every API family --------------------------------------------------


def scrape(plan: Plan, targets: list[Target], log: Callable[[str], None]) -> list[dict]:
    """Drive every model through every family path, then time GET /metrics (client side)."""
    rows = []
    for target in targets:
        if target.server is None:
            continue
        _only(targets, target)

        async def run() -> tuple[int, int, list[float], int, int, str]:
            jobs = [(path, f"model-{m:03d}") for m in range(plan.scrape_models) for path in FAMILY_PATHS]
            ok = 0
            semaphore = asyncio.Semaphore(20)

            async def one(path: str, model: str) -> bool:
                body = json.dumps({"model": model, "stream": False, "prompt": "hi",
                                   "messages": [{"role": "user", "content": "hi"}], "input": "hi"}).encode()
                async with semaphore:
                    result = await loadgen.request(target.url + path, body, HEADERS, timeout=30)
                return result.status == 200

            ok = sum(await asyncio.gather(*(one(p, m) for p, m in jobs)))
            times, size, series = [], 0, 0
            content_type = "-"
            for _ in range(plan.scrapes):
                status, payload, elapsed = await loadgen.get(
                    target.url + "/metrics", {"authorization": AUTH, "accept": SCRAPE_ACCEPT})
                if status == 200:
                    times.append(elapsed * 1000)
                    size = len(payload)
                    series = sum(1 for line in payload.splitlines() if line and not line.startswith(b"#"))
                    content_type = "OpenMetrics" if payload.rstrip().endswith(b"# EOF") else "text 0.0.4"
            return len(jobs), ok, times, size, series, content_type

        requests, ok, times, size, series, content_type = asyncio.run(run())
        rows.append({
            "target": target.name, "requests": requests, "ok": ok, "series": series, "bytes": size,
            "format": content_type,
            "scrape_p50_ms": _percentile(times, 50), "scrape_max_ms": max(times) if times else None,
        })
        log(f"scrape {target.name}: {series:,} series, {size / 1e6:.1f} MB, p50 "
            f"{_percentile(times, 50) or 0:.1f} ms ({ok}/{requests} populating requests ok)")
    _resume_all(targets)
    return rows


# --- CPU per request: measuring against a plain relay -------------------------------------------


def cpu_per_request(plan: Plan, variants: list[Target], upstream: Server, log: Callable[[str], None]) -> list[dict]:
    stream_body = _stream_body("bench_n50_g0_s100")
    samples: dict[str, dict[str, list[float]]] = {v.name: {"json": [], "stream": [], "p50": [], "p99": []}
                                                  for v in variants}
    for round_ in range(plan.rounds):
        for variant in variants:
            _only(variants, variant)
            pid = variant.server.pid  # type: ignore[union-attr]
            loadgen.run_wrk(variant.url + "/v1/chat/completions", 10, min(1.0, plan.seconds), CHAT_BODY, AUTH)
            cpu0 = procs.cpu_seconds(pid)
            result = loadgen.run_wrk(variant.url + "/v1/chat/completions", 10, plan.cpu_seconds, CHAT_BODY, AUTH)
            samples[variant.name]["json"].append((procs.cpu_seconds(pid) - cpu0) / max(result.requests, 1) * 1e6)
            latency = loadgen.run_wrk(variant.url + "/v1/chat/completions", 1, plan.cpu_seconds, CHAT_BODY, AUTH)
            samples[variant.name]["p50"].append(latency.p50_ms)
            samples[variant.name]["p99"].append(latency.p99_ms)

            async def streams() -> int:
                deadline = time.monotonic() + plan.cpu_seconds
                done = 0

                async def worker() -> None:
                    nonlocal done
                    client = loadgen.Client(variant.url)
                    while time.monotonic() < deadline:
                        result = await client.request("/v1/chat/completions", stream_body, HEADERS)
                        done += result.complete
                    client.close()
                await asyncio.gather(*(worker() for _ in range(10)))
                return done

            cpu0 = procs.cpu_seconds(pid)
            done = asyncio.run(streams())
            samples[variant.name]["stream"].append((procs.cpu_seconds(pid) - cpu0) / max(done, 1) * 1e6)
            log(f"cpu {variant.name} round {round_ + 1}: {samples[variant.name]['json'][-1]:.0f} us/request, "
                f"{samples[variant.name]['stream'][-1]:.0f} us/stream of 50 chunks")
    _resume_all(variants)
    return [{"variant": name, "json_us": _median(s["json"]), "stream_us": _median(s["stream"]),
             "p50_ms": _median(s["p50"]), "p99_ms": _median(s["p99"])} for name, s in samples.items()]
