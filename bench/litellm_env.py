"""LiteLLM's proxy for comparison, in a virtualenv of its own (its pins must not touch ours).

The virtualenv lives in a cache directory (BENCH_CACHE, default ~/.cache/llm-exporter-bench) and
is created on first use with `pip install 'litellm[proxy]' prometheus_client`. LiteLLM is set up
as people would run it in front of an OpenAI-compatible backend: one wildcard model routed to the
bench upstream, its Prometheus callback on (free in the open-source proxy), no database, no spend
logs, telemetry off, the model cost map read locally (there is no network here), one worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.cases import AUTH
from bench.procs import Server

CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "llm-exporter-bench"))
VENV = CACHE / "litellm-venv"
PACKAGES = ["litellm[proxy]", "prometheus_client"]

CONFIG = """\
model_list:
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_base: "{upstream}/v1"
      api_key: "sk-bench"
litellm_settings:
  callbacks: ["prometheus"]
  drop_params: true
  telemetry: false
general_settings:
  disable_spend_logs: true
"""


def ensure_venv(log) -> Path:
    """The virtualenv's `litellm` script; created and installed when missing."""
    script = VENV / "bin" / "litellm"
    if script.exists():
        return script
    log(f"LiteLLM: creating {VENV} and installing {' '.join(PACKAGES)} (once; a few minutes)")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    done = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PACKAGES], capture_output=True, text=True)
    if done.returncode != 0 or not script.exists():
        raise RuntimeError(f"pip install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-800:]}")
    return script


def version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def server(upstream_url: str, port: int, workdir: Path, log) -> Server:
    script = ensure_venv(log)
    config = workdir / "litellm.yaml"
    config.write_text(CONFIG.format(upstream=upstream_url))
    return Server(
        name="LiteLLM", port=port, cwd=str(workdir), log_path=str(workdir / "litellm.log"),
        command=[str(script), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env={
            "LITELLM_MASTER_KEY": AUTH.removeprefix("Bearer "),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        },
        ready_path="/health/liveliness",
    )
