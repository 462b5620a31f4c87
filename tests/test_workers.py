"""`llm-exporter serve --workers N`: several uvicorn workers, exact numbers across them.

Real subprocesses in front of the demo upstream: prometheus-client's multiprocess mode sums the
workers' counters and histograms, the in-flight gauge counts live workers only, and every worker's
request-log writer shares the one SQLite database.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from tests.exporter_process import CLI, children, serve_cli
from tests.logdb import query, wait_for_rows, wait_until
from tests.scrape import Scrape

CHAT = {"model": "demo-gpt-mini", "messages": [{"role": "user", "content": "one two three"}]}


def _run(*args: str, env: dict | None = None):
    import subprocess

    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "65"])
def test_a_bad_workers_value_is_one_line_and_exit_2(value):
    result = _run("serve", "--upstream", "http://127.0.0.1:9", "--workers", value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0], result.stderr


def test_a_bad_workers_setting_in_the_config_names_the_field(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("upstreams: [{name: a, url: 'http://h'}]\nserver: {workers: 0}\n")
    result = _run("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "llm-exporter: config error: server.workers: must be a whole number from 1 to 64, got 0"]


def _worker_totals(directory: Path, metric: str) -> dict[str, float]:
    """Per worker file (counter_<pid>.db), the sum of `metric`'s samples: who served what."""
    totals = {}
    for path in directory.glob("counter_*.db"):
        total = 0.0
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            total += sum(s.value for s in family.samples if s.name == metric)
        totals[path.name] = total
    return totals


def _plant_stale_count(directory: Path) -> None:
    """A file left by an earlier run, as a crashed exporter would leave it: 1000 requests."""
    stale = MmapedDict(str(directory / "counter_999999.db"))
    key = mmap_key("llm_requests", "llm_requests_total", ["upstream", "model", "api", "code"],
                   ["default", "demo-gpt-mini", "openai_chat", "200"], "stale")
    stale.write_value(key, 1000.0, 0.0)
    stale.close()


def test_counts_are_exact_across_workers_and_every_row_is_written(upstream_url, tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    _plant_stale_count(directory)
    db = tmp_path / "log.db"
    with serve_cli("--upstream", upstream_url, "--workers", "3", "--db", str(db),
                   env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as served:
        assert not (directory / "counter_999999.db").exists(), "the directory is cleaned at start"
        sent = 0

        def one(i: int) -> int:
            # Every request on a connection of its own, so the kernel hands them to any worker.
            body = {**CHAT, "max_tokens": 1 + i % 5, "stream": i % 2 == 0}
            with httpx.Client(timeout=30) as client:
                response = client.post(served.url + "/v1/chat/completions", json=body)
            assert response.status_code == 200
            return 1 + i % 5

        output_tokens = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Batches until at least two workers have served requests (the kernel decides who
            # accepts a connection), within a bound.
            for _ in range(20):
                output_tokens += sum(pool.map(one, range(sent, sent + 40)))
                sent += 40
                served_by = _worker_totals(directory, "llm_requests_total")
                if len([total for total in served_by.values() if total]) >= 2:
                    break
        assert len([total for total in served_by.values() if total]) >= 2, served_by
        assert sum(served_by.values()) == sent

        scrape = Scrape.of(served.url)
        assert scrape.value("llm_requests_total") == sent
        assert scrape.value("llm_requests_total", code="200", model="demo-gpt-mini") == sent
        assert scrape.value("llm_request_duration_seconds_count") == sent
        assert scrape.value("llm_request_duration_seconds_bucket", le="+Inf") == sent
        assert scrape.value("llm_time_to_first_token_seconds_count") == sent // 2
        assert scrape.value("llm_tokens_total", type="input") == 3 * sent
        assert scrape.value("llm_tokens_total", type="output") == output_tokens
        assert scrape.value("llm_request_tokens_count", type="output") == sent
        assert scrape.value("llm_requests_in_flight") == 0
        assert scrape.value("llm_exporter_build_info") == 1
        assert scrape.label_values("llm_requests_total", "model") == {"demo-gpt-mini"}
        assert "probe" not in {name.split("_")[0] for name, _, _ in scrape.samples}

        wait_for_rows(db, sent)
        assert query(db, "SELECT SUM(output_tokens), COUNT(DISTINCT request_id) FROM requests") == [
            (output_tokens, sent)]
    assert served.returncode == 0, served.output()
    assert "Traceback" not in served.output()


def _slow_stream(url: str, opened: threading.Semaphore, result: list) -> None:
    body = {**CHAT, "stream": True, "max_tokens": 40}
    try:
        with httpx.Client(timeout=60) as client, client.stream(
                "POST", url + "/v1/chat/completions", json=body, headers={"x-demo-chunk-delay": "0.1"}) as response:
            chunks = response.iter_raw()
            next(chunks)
            opened.release()
            for _ in chunks:
                pass
        result.append("complete")
    except httpx.HTTPError:
        opened.release()
        result.append("broken")


def test_in_flight_is_summed_over_live_workers_only(upstream_url, tmp_path):
    with serve_cli("--upstream", upstream_url, "--workers", "2", "--db", str(tmp_path / "log.db"),
                   env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}) as served:
        streams = 6
        opened = threading.Semaphore(0)
        results: list[str] = []
        threads = [threading.Thread(target=_slow_stream, args=(served.url, opened, results)) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for _ in range(streams):
            assert opened.acquire(timeout=60)
        # Every stream is open: the gauge is the sum over both workers.
        assert Scrape.of(served.url).value("llm_requests_in_flight") == streams

        # A worker killed with its streams in flight cannot lower its gauge itself: the
        # supervisor marks it dead and the in-flight sum keeps to the live workers.
        workers = [pid for pid in children(served.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        files = {pid: (tmp_path / "metrics" / f"gauge_livesum_{pid}.db").exists() for pid in workers}
        victim = next(pid for pid, exists in files.items() if exists)  # a worker with streams
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: "broken" in results, "a stream of the killed worker to break")
        for thread in threads:
            thread.join(timeout=120)
        assert results.count("complete") + results.count("broken") == streams
        assert results.count("broken") >= 1
        wait_until(lambda: not (tmp_path / "metrics" / f"gauge_livesum_{victim}.db").exists(),
                   "the killed worker's gauge to be marked dead")
        scrape = Scrape.of(served.url)
        assert scrape.value("llm_requests_in_flight") == 0
        # The counters keep what the dead worker counted before it died (none of its streams
        # finished), plus every stream the live worker finished.
        assert scrape.value("llm_requests_total") == results.count("complete")
    assert served.returncode == 0, served.output()


def test_the_workers_get_the_settings_of_the_command_line(upstream_url, tmp_path):
    """--upstream, --db and the server's limits reach every worker; a relative --db is the parent's
    working directory."""
    with serve_cli("--upstream", upstream_url, "--workers", "2", "--db", "relative.db", cwd=tmp_path) as served:
        for _ in range(4):
            assert httpx.post(served.url + "/v1/embeddings", json={"model": "e", "input": "a b"}).status_code == 200
        wait_for_rows(tmp_path / "relative.db", 4)
        assert json.loads(httpx.get(served.url + "/api/usage?since=1h").text)["total"]["requests"] == 4
        # The bounded HTTP protocol reaches the workers too (exporter/httpserver.py).
        big = httpx.get(served.url + "/healthz", headers={"x-big": "a" * 100_000})
        assert big.status_code == 431


def test_several_writers_share_one_database_without_losing_a_row(tmp_path):
    """What each worker's request-log writer does, four at once with a reader beside them: every
    row arrives (the writers wait for each other's write lock instead of failing)."""
    from exporter.config import Telemetry
    from exporter.observation import Observation
    from exporter.requestlog import RequestLog

    db = tmp_path / "shared.db"
    telemetry = Telemetry(batch_size=7, flush_interval_seconds=0.01, queue_size=100_000)
    logs = [RequestLog(db, telemetry) for _ in range(4)]
    assert len({log.salt for log in logs}) == 1  # one key-id salt for the database, whoever made it
    for log in logs:
        log.start()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            query(db, "SELECT COUNT(*), SUM(request_bytes) FROM requests")

    reader = threading.Thread(target=read)
    reader.start()
    per_writer = 1500
    for n in range(per_writer):
        for i, log in enumerate(logs):
            log.observe(Observation(request_id=f"{i}-{n}", ts=time.time(), upstream="u", api="other",
                                    model="m", model_label="m", stream=False, request_bytes=1))
    for log in logs:
        log.close()
    stop.set()
    reader.join()
    assert [log.dropped for log in logs] == [0] * 4
    assert query(db, "SELECT COUNT(DISTINCT request_id) FROM requests") == [(4 * per_writer,)]


def test_each_live_worker_exports_its_process_metrics(upstream_url, tmp_path):
    """The dashboards' and alerts' process metrics, one series per worker (label pid)."""
    with serve_cli("--upstream", upstream_url, "--workers", "2", "--db", str(tmp_path / "log.db")) as served:
        workers = {str(pid) for pid in children(served.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
        wait_until(lambda: Scrape.of(served.url).label_values("process_resident_memory_bytes", "pid") == workers,
                   "both workers' process metrics")
        scrape = Scrape.of(served.url)
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                     "process_max_fds", "process_start_time_seconds"):
            for pid in workers:
                assert scrape.value(name, pid=pid) > 0, (name, pid)
