"""The command line as a user runs it: real subprocesses, exit codes, the demo's curl lines."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.scrape import Scrape
from tests.servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "exporter"]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("config, field", [
    ("upstreams:\n  - name: a\n    url: ftp://host\n", "upstreams[0].url"),
    ("upstreams:\n  - name: a\n", "upstreams[0].url"),
    ("upstreams:\n  - {name: a, url: 'http://h', colour: red}\n", "upstreams[0].colour"),
    ("upstreams:\n  - {name: a, url: 'http://h'}\n  - {name: a, url: 'http://i'}\n", "upstreams[1].name"),
    ("upstreams:\n  - {name: a, url: 'http://h'}\ndefault_upstream: b\n", "default_upstream"),
    ("upstreams:\n  - {name: a, url: 'http://h', timeouts: {idle: -1}}\n", "upstreams[0].timeouts.idle"),
    ("upstreams:\n  - {name: a, url: 'http://h', timeouts: {total: soon}}\n", "upstreams[0].timeouts.total"),
    ("upstreams:\n  - {name: a, url: 'http://h', kind: mainframe}\n", "upstreams[0].kind"),
    ("upstreams:\n  - {name: a, url: 'http://h', api_key_env: LLM_EXPORTER_TEST_UNSET}\n", "upstreams[0].api_key_env"),
    ("upstreams:\n  - {name: a, url: 'http://h', api_key_env: LLM_EXPORTER_TEST_TWO_LINES}\n",
     "upstreams[0].api_key_env: the key holds a line break"),
    ("upstreams:\n  - {name: a, url: 'http://h', models: [1]}\n", "upstreams[0].models[0]"),
    ("upstreams:\n  - {name: a, url: 'http://h'}\nmetrics: {max_models: 0}\n", "metrics.max_models"),
    ("upstreams:\n  - {name: a, url: 'http://h'}\nlimits: {max_request_bytes: big}\n", "limits.max_request_bytes"),
    ("upstreams: [\n", "not valid YAML at line"),
    ("- just a list\n", "mapping at the top level"),
])
def test_bad_config_stops_start_up_with_one_line_naming_the_field(tmp_path, config, field):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = _run("serve", "--config", str(path), env={"LLM_EXPORTER_TEST_TWO_LINES": "sk-one\nX-Injected: two"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert field in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, words", [
    (["serve"], "--upstream URL or --config FILE"),
    (["serve", "--upstream", "http://h", "--port", "99999"], "--port"),
    (["serve", "--config", "/nonexistent/config.yaml"], "cannot read /nonexistent/config.yaml"),
    (["serve", "--upstream", "localhost:11434"], "upstreams[0].url"),
    (["launch"], "invalid choice"),
])
def test_bad_flags_stop_start_up_with_one_line(args, words):
    result = _run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr




def test_serve_with_one_upstream_url_proxies_and_stops_on_sigterm(upstream_url, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--upstream", upstream_url, "--port", str(port), "--db", str(tmp_path / "log.db")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        response = httpx.post(url + "/v1/chat/completions",
                              json={"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "a b"}]})
        assert response.status_code == 200
        scrape = Scrape.of(url)
        assert scrape.value("llm_tokens_total", type="output", upstream="default", model="m") == 3
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status says SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo's lines are curl commands")
def test_demo_prints_curl_lines_that_work_and_move_the_token_counter(tmp_path):
    port = free_port()
    while port + 1 > 65535:
        port = free_port()
    # The demo writes its request log to the working directory, as a user's would.
    process = subprocess.Popen([*CLI, "demo", "--port", str(port)], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while len([line for line in lines if line.strip().startswith("curl")]) < 3:
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        chat, stream, metrics = [shlex.split(line.strip()) for line in lines if line.strip().startswith("curl")]
        before = subprocess.run(metrics[:3], capture_output=True, text=True, timeout=30).stdout
        assert "llm_tokens_total" not in before or Scrape(before).value("llm_tokens_total") == 0

        answer = subprocess.run(chat, capture_output=True, text=True, timeout=60)
        assert '"choices"' in answer.stdout
        streamed = subprocess.run(stream, capture_output=True, text=True, timeout=60)
        assert streamed.stdout.rstrip().endswith("data: [DONE]")

        scrape = Scrape(subprocess.run(metrics[:3], capture_output=True, text=True, timeout=30).stdout)
        assert scrape.value("llm_tokens_total", type="output") > 0
        assert scrape.value("llm_time_to_first_token_seconds_count") == 1
        # The third line greps /metrics; run it as printed, through a shell.
        grep = subprocess.run(["bash", "-c", lines[-1].strip()], capture_output=True, text=True, timeout=30)
        assert re.search(r'llm_tokens_total\{.*type="output".*\} \d', grep.stdout)
        # The demo's state, read as each kind of backend it answers for.
        assert set(scrape.label_values("llm_backend_up", "upstream")) == {
            "demo-ollama", "demo-vllm", "demo-llamacpp", "demo-llamaswap"}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
