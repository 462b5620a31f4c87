"""The benchmark harness runs end to end on a tiny plan (no timing is asserted: numbers vary)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
