"""The table: which endpoints are read for each kind of upstream (exporter.config.BACKEND_KINDS).
Kinds not listed (hosted APIs, generic OpenAI-compatible servers) have no state to read."""

from __future__ import annotations

from exporter.backends import llamacpp, llamaswap, ollama, vllm
from exporter.backends.reading import Endpoint

COLLECTORS: dict[str, tuple[Endpoint, ...]] = {
    "ollama": ollama.ENDPOINTS,
    "llamacpp": llamacpp.ENDPOINTS,
    "vllm": vllm.ENDPOINTS,
    "llamaswap": llamaswap.ENDPOINTS,
}
