"""Backend state (llm_backend_*): the collectors read the demo upstream's /api/ps, /api/tags,
vLLM- and llama.cpp-shaped /metrics, /slots and llama-swap's /running, and /metrics shows what
those endpoints report. Expected values are read from the demo's own answers with plain JSON and
prometheus-client's parser, not with the collectors' parsers. Hostile backends are bounded.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter.backends.collector import MAX_BODY_BYTES
from exporter.backends.reading import MAX_ENTRIES
from exporter.config import ConfigError, parse_settings
from exporter.demo.upstream import HEADER_DELAY, LLAMACPP_PREFIX
from exporter.demo.upstream import create_app as create_demo_upstream
from exporter.text import REPLACEMENT
from tests.exporter_process import serve_cli
from tests.scrape import Scrape
from tests.servers import running_exporter, serve

OLLAMA_MODEL, LLAMACPP_MODEL = "llama3.2:1b", "qwen2.5-coder-1.5b"
SERIES = ("llm_backend_up", "llm_backend_models_loaded", "llm_backend_models_available",
          "llm_backend_model_memory_bytes", "llm_backend_model_expiry_timestamp_seconds",
          "llm_backend_requests_running", "llm_backend_requests_waiting", "llm_backend_kv_cache_usage_ratio",
          "llm_backend_slots_busy", "llm_backend_slots", "llm_backend_context_size_tokens",
          "llm_backend_prefix_cache_queried_tokens_total", "llm_backend_prefix_cache_hit_tokens_total")
BOUND_SECONDS = 30  # how long a test waits for the next collection round (a bound, not a timing)


def settings_for(upstreams: list[dict], **extra):
    return parse_settings({"upstreams": upstreams, "probe": {"interval_seconds": 0.1}, **extra})


def wait_for(exporter_url: str, done: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until `done` holds (the collectors run on their own schedule), within a bound."""
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        scrape = Scrape.of(exporter_url)
        if done(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.05)


def prometheus(text: str) -> dict[tuple[str, str], float]:
    """(sample name, model_name) -> value of a backend's own exposition."""
    return {(s.name, s.labels.get("model_name", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def rfc3339(stamp: str) -> float:
    """Unix seconds of the demo's expires_at (UTC, nanoseconds), read independently of the collector."""
    whole, fraction = stamp.removesuffix("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + fraction)


def expected_from_the_demo(demo: str) -> dict[tuple, float]:
    """Every llm_backend_* sample the demo's endpoints call for, keyed (name, upstream, labels...)."""
    ps = httpx.get(demo + "/api/ps").json()["models"]
    tags = httpx.get(demo + "/api/tags").json()["models"]
    vllm = prometheus(httpx.get(demo + "/metrics").text)
    slots = httpx.get(demo + LLAMACPP_PREFIX + "/slots").json()
    llama = prometheus(httpx.get(demo + LLAMACPP_PREFIX + "/metrics").text)
    served = httpx.get(demo + LLAMACPP_PREFIX + "/v1/models").json()["data"]
    running = httpx.get(demo + "/running").json()["running"]
    available = httpx.get(demo + "/v1/models").json()["data"]
    expected: dict[tuple, float] = {
        ("llm_backend_models_loaded", "ollama"): len(ps),
        ("llm_backend_models_available", "ollama"): len(tags),
        ("llm_backend_models_loaded", "llamaswap"): len([r for r in running if r["state"] == "ready"]),
        ("llm_backend_models_available", "llamaswap"): len(available),
        ("llm_backend_models_loaded", "llamacpp"): len(served),
        ("llm_backend_models_loaded", "vllm"): len({m for _, m in vllm}),
        ("llm_backend_slots", "llamacpp", LLAMACPP_MODEL): len(slots),
        ("llm_backend_slots_busy", "llamacpp", LLAMACPP_MODEL): sum(s["is_processing"] for s in slots),
        ("llm_backend_context_size_tokens", "llamacpp", LLAMACPP_MODEL): slots[0]["n_ctx"],
        ("llm_backend_requests_running", "llamacpp", LLAMACPP_MODEL): llama["llamacpp:requests_processing", ""],
        ("llm_backend_requests_waiting", "llamacpp", LLAMACPP_MODEL): llama["llamacpp:requests_deferred", ""],
    }
    for model in ps:
        name = model["name"]
        expected["llm_backend_model_memory_bytes", "ollama", name, "total"] = model["size"]
        expected["llm_backend_model_memory_bytes", "ollama", name, "vram"] = model["size_vram"]
        expected["llm_backend_model_expiry_timestamp_seconds", "ollama", name] = rfc3339(model["expires_at"])
    for (sample, model), value in vllm.items():
        ours = {"vllm:num_requests_running": "llm_backend_requests_running",
                "vllm:num_requests_waiting": "llm_backend_requests_waiting",
                "vllm:kv_cache_usage_perc": "llm_backend_kv_cache_usage_ratio",
                "vllm:prefix_cache_queries_total": "llm_backend_prefix_cache_queried_tokens_total",
                "vllm:prefix_cache_hits_total": "llm_backend_prefix_cache_hit_tokens_total"}[sample]
        expected[ours, "vllm", model] = value
    return expected


_LABELS = {"llm_backend_model_memory_bytes": ("model", "memory")}


def observed(scrape: Scrape) -> dict[tuple, float]:
    found = {}
    for name, labels, value in scrape.samples:
        if name.startswith("llm_backend_") and name not in ("llm_backend_up", "llm_backend_scrape_errors_total") \
                and "model_load" not in name:
            keys = _LABELS.get(name, ("model",) if "model" in labels else ())
            found[(name, labels["upstream"], *(labels[k] for k in keys))] = value
    return found


@pytest.fixture
def demo() -> Iterator[str]:
    """A demo upstream of its own: its state (models loaded, requests running) starts empty."""
    with serve(create_demo_upstream(pacing=False)) as url:
        yield url


def every_kind(demo: str) -> list[dict]:
    return [
        {"name": "ollama", "url": demo, "kind": "ollama", "models": ["llama*"]},
        {"name": "vllm", "url": demo, "kind": "vllm", "models": ["demo-*"]},
        {"name": "llamacpp", "url": demo + LLAMACPP_PREFIX, "kind": "llamacpp", "models": ["qwen*"]},
        {"name": "llamaswap", "url": demo, "kind": "llamaswap"},
    ]


@contextlib.contextmanager
def held_request(base_url: str, path: str, body: dict) -> Iterator[None]:
    """A request the demo holds before answering (x-demo-delay), so it is running meanwhile;
    the client hangs up on leaving, which ends it."""
    payload = json.dumps(body).encode()
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                     f"{HEADER_DELAY}: 60\r\ncontent-length: {len(payload)}\r\n\r\n".encode() + payload)
        yield


def test_every_series_equals_what_the_demo_endpoints_report(demo):
    with running_exporter(settings_for(every_kind(demo))) as url:
        chat = {"model": OLLAMA_MODEL, "stream": False,
                "messages": [{"role": "user", "content": "one two"}, {"role": "user", "content": "three"}]}
        assert httpx.post(url + "/api/chat", json=chat).status_code == 200
        assert httpx.post(url + "/v1/chat/completions", json={**chat, "model": "demo-gpt-mini"}).status_code == 200
        with held_request(demo, LLAMACPP_PREFIX + "/completion", {"model": LLAMACPP_MODEL, "prompt": "a b c"}):
            # The held request is running: the demo says so at every endpoint, and so does /metrics.
            while not httpx.get(demo + "/running").json()["running"][2:]:
                time.sleep(0.01)
            expected = expected_from_the_demo(demo)
            assert expected["llm_backend_slots_busy", "llamacpp", LLAMACPP_MODEL] == 1
            assert expected["llm_backend_requests_running", "vllm", LLAMACPP_MODEL] == 1
            scrape = wait_for(url, lambda s: observed(s) == expected)
            assert observed(scrape) == expected
        for kind in ("ollama", "vllm", "llamacpp", "llamaswap"):
            assert scrape.label_values("llm_backend_up", "upstream") >= {kind}
        assert all(value == 1 for name, _, value in scrape.samples if name == "llm_backend_up")
        assert all(value == 0 for name, _, value in scrape.samples if name == "llm_backend_scrape_errors_total")
        assert {name for name, _, _ in scrape.samples} >= set(SERIES) - {"llm_backend_up"}
        # Ollama's load_duration (the demo: 10 ms) is observed once per answer that reports it.
        assert scrape.value("llm_backend_model_load_duration_seconds_count", upstream="ollama") == 1
        assert scrape.value("llm_backend_model_load_duration_seconds_sum", model=OLLAMA_MODEL) == pytest.approx(0.01)
        assert scrape.value("llm_backend_model_load_duration_seconds_count", upstream="vllm") == 0


class Backend:
    """An upstream whose answers the test changes: a path -> (status, body) table, or silence."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.app = Starlette(routes=[Route("/{path:path}", self.answer)])

    async def answer(self, request: Request) -> Response:
        status, body = self.answers.get(request.url.path, (404, b"not found"))
        return Response(body, status_code=status)


@pytest.fixture
def backend() -> Iterator[tuple[Backend, str]]:
    fake = Backend()
    with serve(fake.app) as url:
        yield fake, url


PS = json.dumps({"models": [{"name": "m1", "size": 10, "size_vram": 5, "expires_at": "2030-01-01T00:00:00Z"}]}).encode()
TAGS = json.dumps({"models": [{"name": "m1"}, {"name": "m2"}]}).encode()


def errors(scrape: Scrape, endpoint: str) -> float:
    return scrape.value("llm_backend_scrape_errors_total", upstream="b", endpoint=endpoint)


def test_a_backend_that_stops_answering_loses_its_series_and_counts_errors(backend):
    fake, backend_url = backend
    fake.answers = {"/api/ps": (200, PS), "/api/tags": (200, TAGS)}
    with running_exporter(settings_for([{"name": "b", "url": backend_url, "kind": "ollama"}])) as url:
        scrape = wait_for(url, lambda s: s.value("llm_backend_models_available", upstream="b") == 2)
        assert scrape.value("llm_backend_model_memory_bytes", upstream="b", model="m1", memory="vram") == 5
        assert errors(scrape, "/api/ps") == 0 and errors(scrape, "/api/tags") == 0
        fake.answers = {"/api/tags": (200, TAGS), "/api/ps": (500, b"{}")}
        scrape = wait_for(url, lambda s: errors(s, "/api/ps") >= 2)
        assert errors(scrape, "/api/ps") >= 2 and errors(scrape, "/api/tags") == 0
        assert scrape.value("llm_backend_up", upstream="b", endpoint="/api/ps") == 0
        assert scrape.value("llm_backend_up", upstream="b", endpoint="/api/tags") == 1
        names = {name for name, labels, _ in scrape.samples if labels.get("upstream") == "b"}
        assert not names & {"llm_backend_models_loaded", "llm_backend_model_memory_bytes",
                            "llm_backend_model_expiry_timestamp_seconds"}
        fake.answers = {"/api/ps": (200, PS), "/api/tags": (200, TAGS)}
        scrape = wait_for(url, lambda s: s.value("llm_backend_up", upstream="b", endpoint="/api/ps") == 1)
        assert scrape.value("llm_backend_models_loaded", upstream="b") == 1


def _nested(depth: int) -> bytes:
    return b'{"models":' + b"[" * depth + b"]" * depth + b"}"


HOSTILE: dict[str, bytes] = {
    "huge body": b'{"models": [], "pad": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}',
    "garbage": b"\x00\xff{not json",
    "a list": b"[1, 2, 3]",
    "models not a list": b'{"models": {"name": "m"}}',
    "too many models": json.dumps({"models": [{"name": f"m{i}", "size": 1} for i in range(MAX_ENTRIES + 1)]}).encode(),
    "deeply nested": _nested(100_000),
}


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answers_are_counted_and_leave_the_exporter_unharmed(backend, answer):
    fake, backend_url = backend
    fake.answers = {"/api/ps": (200, answer), "/api/tags": (200, TAGS)}
    with running_exporter(settings_for([{"name": "b", "url": backend_url, "kind": "ollama"}])) as url:
        scrape = wait_for(url, lambda s: errors(s, "/api/ps") >= 2)
        assert errors(scrape, "/api/ps") >= 2
        assert scrape.value("llm_backend_up", upstream="b", endpoint="/api/ps") == 0
        assert scrape.value("llm_backend_models_available", upstream="b") == 2  # the other endpoint is fine
        assert not scrape.label_values("llm_backend_model_memory_bytes", "model")
        assert httpx.get(url + "/healthz").status_code == 200


def test_odd_names_and_values_are_made_safe_and_bounded(backend):
    names = ["bad\nname\u2028", "\ud800lone", "x" * 10_000, *[f"n{i}" for i in range(20)]]
    models = [{"name": name, "size": size, "size_vram": "12", "expires_at": "yesterday"}
              for name, size in zip(names, [1, 2, 3, *range(20)])]
    models += [{"name": "neg", "size": -5}, {"name": "inf", "size": 1e400}, {"name": True, "size": True}, "str"]
    fake, backend_url = backend
    body = json.dumps({"models": models}).encode()
    fake.answers = {"/api/ps": (200, body), "/api/tags": (200, TAGS)}
    settings = settings_for([{"name": "b", "url": backend_url, "kind": "ollama"}], metrics={"max_models": 5})
    with running_exporter(settings) as url:
        scrape = wait_for(url, lambda s: s.value("llm_backend_models_loaded", upstream="b") > 0)
        assert scrape.value("llm_backend_models_loaded", upstream="b") == len(models)
        labels = scrape.label_values("llm_backend_model_memory_bytes", "model")
        assert len(labels) <= 6 and "other" in labels  # max_models names, then "other"
        assert all(len(label) <= 128 and "\n" not in label for label in labels)
        assert any(REPLACEMENT in label for label in labels)
        # Only numbers reach a series: strings, bools, negatives and infinities are left out.
        assert scrape.value("llm_backend_model_memory_bytes", upstream="b", memory="vram") == 0
        assert scrape.value("llm_backend_model_memory_bytes", upstream="b", memory="total") == 1 + 2 + 3 + sum(range(20))
        assert "llm_backend_model_expiry_timestamp_seconds" not in {name for name, _, _ in scrape.samples}


def test_an_endpoint_the_backend_does_not_offer_has_no_series_and_no_errors(backend):
    """llama.cpp without --metrics answers 501: nothing to report, nothing wrong."""
    fake, backend_url = backend
    fake.answers = {"/v1/models": (200, b'{"data": [{"id": "tiny"}]}'), "/slots": (200, b'[{"id": 0, "n_ctx": 64}]'),
                    "/metrics": (501, b'{"error": {"code": 501}}')}
    with running_exporter(settings_for([{"name": "b", "url": backend_url, "kind": "llamacpp"}])) as url:
        scrape = wait_for(url, lambda s: s.value("llm_backend_slots", upstream="b", model="tiny") == 1)
        assert scrape.value("llm_backend_context_size_tokens", upstream="b", model="tiny") == 64
        assert scrape.label_values("llm_backend_up", "endpoint") == {"/v1/models", "/slots"}
        assert errors(scrape, "/metrics") == 0


def test_an_unreachable_backend_counts_errors_from_zero():
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    settings = settings_for([{"name": "b", "url": dead, "kind": "vllm"}, {"name": "off", "url": dead, "kind": "ollama",
                                                                          "backend_state": False}])
    with running_exporter(settings) as url:
        scrape = wait_for(url, lambda s: errors(s, "/metrics") >= 2)
        assert errors(scrape, "/metrics") >= 2
        assert scrape.value("llm_backend_up", upstream="b", endpoint="/metrics") == 0
        assert "off" not in scrape.label_values("llm_backend_scrape_errors_total", "upstream")


@pytest.mark.parametrize(("upstream", "message"), [
    ({"kind": "openai", "backend_state": True}, "upstreams[0].backend_state: kind 'openai' has no state to read"),
    ({"kind": "ollama", "backend_state": "yes"}, "upstreams[0].backend_state: must be true or false"),
])
def test_backend_state_setting_is_validated_naming_the_field(upstream, message):
    with pytest.raises(ConfigError) as error:
        parse_settings({"upstreams": [{"name": "a", "url": "http://h", **upstream}]})
    assert str(error.value).startswith(message)


def test_backend_state_is_on_for_the_kinds_that_have_state():
    kinds = ["openai", "ollama", "llamacpp", "vllm", "llamaswap", "generic"]
    settings = parse_settings({"upstreams": [{"name": k, "url": "http://h", "kind": k} for k in kinds]})
    assert {u.name for u in settings.upstreams if u.backend_state} == {"ollama", "llamacpp", "vllm", "llamaswap"}
    assert next(u for u in settings.upstreams if u.kind == "llamaswap").probe_path == "/health"


def test_with_several_workers_the_scraped_worker_renders_its_own_reads(demo, tmp_path):
    """Multiprocess mode: every worker reads the backends; any one of them answers the scrape."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"upstreams": every_kind(demo), "probe": {"interval_seconds": 0.1}}))
    httpx.post(demo + "/api/chat", json={"model": OLLAMA_MODEL, "stream": False, "messages": [{"role": "user",
                                                                                                "content": "hi"}]})
    with serve_cli("--config", str(config), "--workers", "2", "--db", str(tmp_path / "log.db"),
                   env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}) as served:
        for _ in range(4):  # scrapes reach either worker: each shows the same reads
            scrape = wait_for(served.url, lambda s: s.value("llm_backend_models_loaded", upstream="ollama") == 1
                              and len(s.label_values("llm_backend_up", "upstream")) == 4)
            assert scrape.value("llm_backend_model_memory_bytes", upstream="ollama", model=OLLAMA_MODEL,
                                memory="total") == httpx.get(demo + "/api/ps").json()["models"][0]["size"]
            assert scrape.value("llm_backend_up", upstream="vllm", endpoint="/metrics") == 1


def test_with_several_workers_the_scrape_errors_of_all_workers_add_up(tmp_path):
    """Each worker counts its own failed reads; a scrape reaching either worker shows their sum,
    so the counter never goes down (one worker's own count would, whenever the other answers)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"upstreams": [{"name": "gone", "url": gone, "kind": "ollama"}],
                                      "probe": {"interval_seconds": 0.05}}))
        with serve_cli("--config", str(config), "--workers", "2", "--db", str(tmp_path / "log.db"),
                       env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}) as served:
            counts = []
            for _ in range(12):
                scrape = wait_for(served.url, lambda s: s.value("llm_backend_scrape_errors_total",
                                                                 endpoint="/api/ps") > 0)
                counts.append(scrape.value("llm_backend_scrape_errors_total", upstream="gone", endpoint="/api/ps"))
                time.sleep(0.05)
    assert counts == sorted(counts) and counts[-1] > counts[0], counts


def test_a_streamed_ollama_answer_reports_its_load_duration_on_the_last_line(demo):
    with running_exporter(settings_for([{"name": "ollama", "url": demo, "kind": "ollama",
                                         "backend_state": False}])) as url:
        body = {"model": OLLAMA_MODEL, "prompt": "one two", "stream": True}
        lines = httpx.post(url + "/api/generate", json=body).text.splitlines()
        scrape = Scrape.of(url)
    assert json.loads(lines[-1])["load_duration"] == 10_000_000 and "load_duration" not in json.loads(lines[0])
    assert scrape.value("llm_backend_model_load_duration_seconds_count", model=OLLAMA_MODEL) == 1
    assert scrape.value("llm_backend_model_load_duration_seconds_bucket", model=OLLAMA_MODEL, le="0.01") == 1
    assert not scrape.label_values("llm_backend_up", "upstream")  # backend_state: false reads nothing


@pytest.mark.parametrize("text", [
    b'vllm:num_requests_running{model_name="m" 1\n',  # an unclosed label set
    b"vllm:num_requests_running one\n",  # not a number
    b"\xff\xfe binary",
], ids=["unclosed", "not a number", "not utf-8"])
def test_a_broken_prometheus_exposition_is_a_scrape_error(backend, text):
    fake, backend_url = backend
    fake.answers = {"/metrics": (200, text)}
    with running_exporter(settings_for([{"name": "b", "url": backend_url, "kind": "vllm"}])) as url:
        scrape = wait_for(url, lambda s: errors(s, "/metrics") >= 2)
        assert errors(scrape, "/metrics") >= 2
        assert not scrape.label_values("llm_backend_requests_running", "upstream")
