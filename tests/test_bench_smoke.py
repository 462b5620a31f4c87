"""The benchmark harness runs end to end on a tiny plan (no timing is asserted: numbers vary)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent


def test_bench_harness_runs_the_streaming_memory_and_scrape_cases():
    # The cases that need wrk (non-streamed rates, CPU per request) are left out: wrk is a Debian
    # package the benchmark installs itself, not a test dependency.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", "--only", "stream,big,slow,scrape"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"^\| llm-exporter \|[^\n]*\| 3 \(0\) \|$", out, re.M), out  # 3 streams, no errors
    assert re.search(r"^\| one 1 GB stream \| llm-exporter \| 0\.01 GB in [^|]*MB/s\) \|", out, re.M), out
    assert re.search(r"^\| 20 concurrent slow streams \| llm-exporter \| 20/20 complete", out, re.M), out
    assert re.search(r"^\| llm-exporter \| OpenMetrics \| [\d,]+ \| [^|]+ \| [\d.]+ \| [\d.]+ \| 30/30 \|$", out, re.M), out


def test_the_plain_relay_variants_still_serve(upstream_url, tmp_path):
    """bench.plain switches the measuring off by replacing parts of the proxy; when those parts
    change shape, its requests must still succeed, or the CPU table prices an error path."""
    for mode in ("plain", "nolog"):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.plain", mode, "serve", "--upstream", upstream_url, "--port", str(port),
             "--db", str(tmp_path / f"{mode}.db")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process)
            chat = {"model": "demo-gpt-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "a b"}]}
            assert httpx.post(url + "/v1/chat/completions", json=chat).status_code == 200
            streamed = httpx.post(url + "/v1/chat/completions", json={**chat, "stream": True})
            assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
        finally:
            process.terminate()
            output = process.communicate(timeout=30)[0].decode(errors="replace")
        assert "Traceback" not in output, output[-3000:]
