"""Every panel shows data, and the right numbers, from a live stack, since Grafana cannot run here.

The real exporter in front of the demo upstream (and of an upstream that is down), a real
Prometheus scraping it every second (exemplar storage on, as in compose), traffic for every API
family with streams and errors; then every target of every panel, its variables filled in the way
Grafana fills them, goes to Prometheus's query_range API and must come back without error and with
data, and the error-ratio panels must read exactly the share of failures that was sent.

Series start as a real scrape sees them: first contact (the first request of each upstream, model
and API family, streamed and not, successes; scraped), then the traffic, every call once, each
failure only there. A counter series the exporter creates only with its first increment is born at
1 in Prometheus, and rate() never sees that increment: the first failure of each kind is lost, and
the error ratio read falls short of the one sent. Series that exist at 0 from first contact on
(zero-started counters) make it exact.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from dashboards import queries as Q
from dashboards.common import MODEL_PERFORMANCE_UID
from exporter import catalog
from exporter.app import create_app
from exporter.config import parse_settings
from exporter.demo.upstream import ALL_DEMO_MODELS, LLAMACPP_PREFIX
from exporter.demo.upstream import create_app as create_demo_upstream
from exporter.families import API_NAMES, route
from tests import dashboard_queries as D
from tests.binaries import prometheus
from tests.servers import free_port, serve

SCRAPE_INTERVAL_SECONDS = 1
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval); with a 1 s
# scrape and the 1 s step used here that is 4 s.
RATE_INTERVAL = "4s"
STEP_SECONDS = 1
JOB = "llm-exporter"
DEMO_UPSTREAM, DOWN_UPSTREAM = "demo", "down"
UNREACHABLE_MODEL = "unreachable-model"  # routed to the upstream that is down: 502, error_type connect
# The demo upstream once more as each kind of self-hosted backend whose state the exporter reads
# (llm_backend_*, the Backends dashboard): name, kind, path of its server under the demo's URL.
# No model is routed to them; their state is what the demo serves through DEMO_UPSTREAM.
BACKEND_UPSTREAMS = (
    ("demo-ollama", "ollama", ""),
    ("demo-vllm", "vllm", ""),
    ("demo-llamacpp", "llamacpp", LLAMACPP_PREFIX),
    ("demo-llamaswap", "llamaswap", ""),
)

# Panels that are rightly empty on this stack, by "dashboard/panel title/refId", with the reason.
# A listed query must still come back without error, and must stay empty: once it has data, it
# does not belong here any more.
RIGHTLY_EMPTY: dict[str, str] = {}

# The demo models with prices, so every cost panel shows data: the demo's "demo-*" models at
# OpenAI-like prices, the local ones (Ollama, llama.cpp) at a token price of their own.
LOCAL_DEMO_MODELS = [model for model in ALL_DEMO_MODELS if not model.startswith("demo-")]
PRICING = [
    {"model": "demo-*", "input": 0.5, "cached_input": 0.05, "cache_write_input": 0.625, "output": 2.0},
    {"model": LOCAL_DEMO_MODELS, "input": 0.1, "output": 0.2},
]
# The rule file Prometheus loads in production: the SLO panels read its recording rules.
RECORDING_RULES = D.REPO / "alerts" / "generated" / "recording_rules.yml"

SYSTEM = "You answer in one short sentence."
TURNS = [
    {"role": "user", "content": "what does the proxy measure"},
    {"role": "assistant", "content": "every token as it streams through"},
    {"role": "user", "content": "and what does it cost"},
]


@dataclass(frozen=True)
class Call:
    path: str
    body: dict | None  # None: a GET
    headers: dict[str, str] | None = None

    @property
    def model(self) -> str:
        """The body's model, else the one the path names (Gemini), else unknown."""
        if self.body and "model" in self.body:
            return self.body["model"]
        return route("POST", self.path.partition("?")[0])[1] or catalog.MODEL_UNKNOWN

    @property
    def upstream(self) -> str:
        return DOWN_UPSTREAM if self.model == UNREACHABLE_MODEL else DEMO_UPSTREAM

    @property
    def expected_status(self) -> int:
        if self.model == UNREACHABLE_MODEL:
            return 502
        return int((self.headers or {}).get("x-demo-status", 200))

    @property
    def fails(self) -> bool:
        """A failure as every error ratio counts it (alerts/config.py failure_codes)."""
        return re.fullmatch(Q.ERROR_CODES, str(self.expected_status)) is not None


def family_calls(stream: bool) -> list[Call]:
    """One request per API family; conversations so that prompt-cache tokens show up too."""
    chat = {"messages": [{"role": "system", "content": SYSTEM}, *TURNS], "stream": stream, "max_tokens": 8}
    calls = [
        Call("/v1/chat/completions", {"model": "demo-gpt-mini", **chat}),
        Call("/v1/chat/completions", {"model": "demo-reasoner", **chat}),
        Call("/v1/completions", {"model": "demo-gpt-mini", "prompt": "the gateway", "stream": stream}),
        Call("/v1/responses", {"model": "demo-gpt-mini", "instructions": SYSTEM, "input": TURNS, "stream": stream}),
        Call("/v1/messages", {"model": "demo-claude", "system": SYSTEM, "messages": TURNS, "max_tokens": 8,
                              "stream": stream}),
        Call("/api/chat", {"model": "llama3.2:1b", "messages": TURNS, "stream": stream}),
        Call("/api/generate", {"model": "llama3.2:1b", "prompt": "the gateway", "stream": stream}),
        Call("/completion", {"model": "qwen2.5-coder-1.5b", "prompt": "def add(a, b):", "n_predict": 8,
                             "stream": stream}),
        # Gemini: the path names the model and whether it streams
        Call("/v1beta/models/gemini-2.5-flash:" + ("streamGenerateContent?alt=sse" if stream else "generateContent"),
             {"contents": [{"role": "user", "parts": [{"text": "what does the proxy measure"}]}]}),
    ]
    if not stream:
        calls += [
            Call("/v1/embeddings", {"model": "demo-embed-small", "input": ["a", "b c"]}),
            Call("/api/embed", {"model": "nomic-embed-text", "input": "the gateway"}),
            Call("/v1/models", None),  # api "other"
        ]
    return calls


def failing_calls() -> list[Call]:
    """Errors of every kind the error ratio and the upstream-error panel distinguish."""
    chat = {"model": "demo-gpt-mini", "messages": TURNS}
    return [
        Call("/v1/chat/completions", chat, {"x-demo-status": "500"}),
        Call("/v1/messages", {"model": "demo-claude", "messages": TURNS, "max_tokens": 8}, {"x-demo-status": "429"}),
        Call("/api/chat", {"model": "qwen2.5:7b", "messages": TURNS, "stream": False}, {"x-demo-status": "503"}),
        Call("/v1/chat/completions", {**chat, "model": UNREACHABLE_MODEL}),
        Call("/v1/chat/completions", {**chat, "stream": True}, {"x-demo-no-usage": "1"}),
    ]


def first_contact() -> list[Call]:
    """The first request of every upstream, model and API family of the traffic, streamed and not
    (streams fill histograms of their own): successes (the unreachable upstream can only fail),
    and a 400, whose series no error ratio reads as a failure."""
    ollama_chat = {"model": "qwen2.5:7b", "messages": TURNS, "stream": False}
    return [
        *family_calls(stream=False),
        *family_calls(stream=True),
        Call("/api/chat", ollama_chat),
        Call("/v1/chat/completions", {"model": UNREACHABLE_MODEL, "messages": TURNS}),
        Call("/v1/chat/completions", {"model": "demo-gpt-mini", "messages": TURNS}, {"x-demo-status": "400"}),
    ]


def traffic() -> list[Call]:
    """Every call once: each API family streamed and not, and every kind of failure."""
    return [*family_calls(stream=False), *family_calls(stream=True), *failing_calls()]


def send(exporter_url: str, calls: list[Call]) -> list[str]:
    """Every call once, each answered as expected; the request ids the exporter gave them."""
    ids = []
    with httpx.Client(base_url=exporter_url, timeout=30) as client:
        for call in calls:
            if call.body is None:
                response = client.get(call.path, headers=call.headers)
            else:
                response = client.post(call.path, json=call.body, headers=call.headers)
            assert response.status_code == call.expected_status, (call, response.text[:200])
            ids.append(response.headers["x-request-id"])
    return ids


def instant(prometheus_url: str, query: str) -> list[dict]:
    response = httpx.post(prometheus_url + "/api/v1/query", data={"query": query}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for(prometheus_url: str, query: str, minimum: float, timeout: float = 60) -> None:
    """Until `query` is at least `minimum` in Prometheus (scrapes are asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = instant(prometheus_url, query)
        if result and float(result[0]["value"][1]) >= minimum:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{query} never reached {minimum}: {instant(prometheus_url, query)}")


def wait_until_scraped(prometheus_url: str, requests_sent: int) -> float:
    """Until Prometheus has a sample counting every request sent; that sample's time (unix s)."""
    total = f'sum({catalog.REQUESTS.series}{{job="{JOB}"}})'
    wait_for(prometheus_url, total, requests_sent)
    return float(instant(prometheus_url, f'max(timestamp({catalog.REQUESTS.series}{{job="{JOB}"}}))')[0]["value"][1])


def wait_for_next_scrape(prometheus_url: str, after: float) -> float:
    """Until the exporter has been scraped after `after`; that scrape's time (unix s)."""
    query = f'timestamp(up{{job="{JOB}"}})'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = instant(prometheus_url, query)
        if result and float(result[0]["value"][1]) > after:
            return float(result[0]["value"][1])
        time.sleep(0.1)
    raise TimeoutError(f"no scrape after {after}")


def recording_rules(path: Path) -> tuple[Path, list[str]]:
    """The committed recording rules, every group evaluated each second (rules and expressions
    unchanged); the file and the last rule of each group."""
    rules = yaml.safe_load(RECORDING_RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = f"{SCRAPE_INTERVAL_SECONDS}s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path, [group["rules"][-1]["record"] for group in rules["groups"]]


def prometheus_config(path: Path, exporter_url: str, rule_file: Path) -> Path:
    target = exporter_url.removeprefix("http://")
    path.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s\n  evaluation_interval: {SCRAPE_INTERVAL_SECONDS}s\n"
        f"rule_files:\n  - {rule_file}\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
    )
    return path


def wait_until_recorded(prometheus_url: str, records: list[str], since: float) -> None:
    """Until every rule group has been evaluated after `since` (each group's last rule has a
    sample that new), so the recorded series include the last scrape."""
    for record in records:
        wait_for(prometheus_url, f"min(timestamp({record}))", since)


@dataclass(frozen=True)
class LiveStack:
    prometheus_url: str
    exporter_url: str
    start: float
    end: float
    traffic: list[Call]  # sent after first contact, once each
    traffic_from: float  # the scrape that saw first contact and nothing of the traffic
    traffic_to: float  # a scrape that saw all of the traffic, and no later request
    request_ids: list[str]  # of every request sent


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory) -> Iterator[LiveStack]:
    workdir = tmp_path_factory.mktemp("dashboards-live")
    with serve(create_demo_upstream(pacing=False)) as demo_url:
        settings = parse_settings({
            "upstreams": [
                {"name": DEMO_UPSTREAM, "url": demo_url},
                {"name": DOWN_UPSTREAM, "url": f"http://127.0.0.1:{free_port()}", "models": [UNREACHABLE_MODEL]},
                *({"name": name, "url": demo_url + path, "kind": kind} for name, kind, path in BACKEND_UPSTREAMS),
            ],
            "default_upstream": DEMO_UPSTREAM,
            "probe": {"interval_seconds": SCRAPE_INTERVAL_SECONDS},
            "db": {"path": str(workdir / "telemetry.db")},
            "pricing": PRICING,
        })
        with serve(create_app(settings)) as exporter_url:
            rule_file, last_records = recording_rules(workdir / "recording_rules.yml")
            config = prometheus_config(workdir / "prometheus.yml", exporter_url, rule_file)
            with prometheus(config, workdir / "prometheus", "--enable-feature=exemplar-storage") as prometheus_url:
                # Prometheus starts scraping a few seconds after it is ready.
                wait_for(prometheus_url, f'up{{job="{JOB}"}}', 1)
                before = time.time()
                contact = first_contact()
                request_ids = send(exporter_url, contact)
                traffic_from = wait_until_scraped(prometheus_url, len(contact))
                calls = traffic()
                request_ids += send(exporter_url, calls)
                traffic_to = wait_until_scraped(prometheus_url, len(contact) + len(calls))
                wait_until_recorded(prometheus_url, last_records, time.time())
                # Two more scrapes: a series born in the last one has a second sample, so a rate
                # over it is a number (0 at worst), not nothing.
                wait_for_next_scrape(prometheus_url, wait_for_next_scrape(prometheus_url, traffic_to))
                # query_range evaluates at start + k * step: end on a step, after the last scrape.
                end = round(time.time(), 3)
                yield LiveStack(prometheus_url, exporter_url, end - math.ceil(end - before + 2), end,
                                calls, traffic_from, traffic_to, request_ids)


def variable_values(stack: LiveStack, dashboard: dict) -> dict[str, str]:
    """Fill the variables as Grafana does with "All" selected: each from its label_values query,
    chained on the ones before; "All" is the allValue if set, else every value as a regex."""
    values = {"__rate_interval": RATE_INTERVAL, "__range": f"{round(stack.end - stack.start)}s"}
    for variable in D.template_variables(dashboard):
        if variable["type"] != "query":
            continue
        options = label_values(stack, D.substitute(variable["query"], values))
        assert options, f"variable {variable['name']} has no values: {variable['query']}"
        values[variable["name"]] = variable["allValue"] or D.regex_value(options)
    return values


def label_values(stack: LiveStack, query: str) -> list[str]:
    selector, label = D.parse_label_values(query)
    response = httpx.get(
        f"{stack.prometheus_url}/api/v1/label/{label}/values",
        params={"match[]": selector, "start": stack.start, "end": stack.end}, timeout=10,
    )
    response.raise_for_status()
    return response.json()["data"]


def query_range(stack: LiveStack, expr: str) -> dict:
    response = httpx.post(
        stack.prometheus_url + "/api/v1/query_range",
        data={"query": expr, "start": stack.start, "end": stack.end, "step": STEP_SECONDS}, timeout=30,
    )
    return response.json()


def has_number(result: list[dict]) -> bool:
    """At least one finite sample: a series of NaN (0/0, quantile of nothing) shows nothing either."""
    return any(math.isfinite(float(value)) for series in result for _, value in series["values"])


def test_traffic_covered_every_api_family(live_stack: LiveStack):
    result = instant(live_stack.prometheus_url, f'count by ({catalog.API}) ({catalog.REQUESTS.series}{{job="{JOB}"}})')
    assert {series["metric"][catalog.API] for series in result} >= set(API_NAMES)


def test_every_variable_has_values(live_stack: LiveStack):
    for dashboard in D.load_dashboards().values():
        values = variable_values(live_stack, dashboard)
        assert set(values) >= set(Q.FILTER_LABELS)


def test_every_panel_query_returns_data(live_stack: LiveStack):
    dashboards = D.load_dashboards()
    values = {name: variable_values(live_stack, dashboard) for name, dashboard in dashboards.items()}
    errors, empty, no_longer_empty = [], [], []
    for query in D.panel_queries(dashboards):
        answer = query_range(live_stack, D.substitute(query.expr, values[query.dashboard]))
        if answer.get("status") != "success":
            errors.append((query.key, answer.get("error")))
            continue
        shows_data = has_number(answer["data"]["result"])
        if query.key in RIGHTLY_EMPTY:
            if shows_data:
                no_longer_empty.append(query.key)
        elif not shows_data:
            empty.append(query.key)
    assert errors == []
    assert empty == [], "panels without data (fix the query, or list them in RIGHTLY_EMPTY with a reason)"
    assert no_longer_empty == [], "these now show data: remove them from RIGHTLY_EMPTY"


def panel_target(dashboard: str, title: str) -> str:
    dashboards = D.load_dashboards()
    [expr] = [q.expr for q in D.panel_queries(dashboards) if q.dashboard == dashboard and q.panel == title]
    return expr


def read_over_traffic(stack: LiveStack, expr: str, values: dict[str, str]) -> dict[str, float]:
    """A panel's query at the first scrape that saw all of the traffic, its rate window reaching
    back exactly to the scrape before the traffic: no extrapolation, every sample of the traffic.
    Values by the series' one label."""
    window_ms = round((stack.traffic_to - stack.traffic_from) * 1000)
    expr = D.substitute(expr, {**values, "__rate_interval": f"{window_ms}ms"})
    response = httpx.post(stack.prometheus_url + "/api/v1/query", data={"query": expr, "time": stack.traffic_to},
                          timeout=10)
    response.raise_for_status()
    return {next(iter(series["metric"].values()), ""): float(series["value"][1])
            for series in response.json()["data"]["result"]}


def sent_error_ratio(calls: list[Call], label) -> dict[str, float]:
    groups: dict[str, list[Call]] = {}
    for call in calls:
        groups.setdefault(label(call), []).append(call)
    return {key: sum(call.fails for call in group) / len(group) for key, group in groups.items()}


@pytest.mark.parametrize("dashboard, title, label", [
    ("overview", "Error ratio by upstream", lambda call: call.upstream),
    ("model_performance", "Error ratio by model", lambda call: call.model),
])
def test_the_error_ratio_read_is_the_share_of_failures_sent(live_stack: LiveStack, dashboard, title, label):
    """Every failure counted, the first of each kind included: per upstream and per model, the
    panel reads exactly the share of the traffic that failed."""
    values = variable_values(live_stack, D.load_dashboards()[dashboard])
    read = read_over_traffic(live_stack, panel_target(dashboard, title), values)
    sent = sent_error_ratio(live_stack.traffic, label)
    assert any(0 < ratio < 1 for ratio in sent.values())
    assert read == pytest.approx(sent, abs=1e-9)


def test_exemplars_lead_to_the_request_log(live_stack: LiveStack):
    """Prometheus keeps the request ids the exporter attaches to the latency histograms (as Grafana
    shows them on the graphs), and each names a row of the exporter's request log."""
    found: set[str] = set()
    for spec in catalog.EXEMPLAR_HISTOGRAMS:
        response = httpx.get(
            live_stack.prometheus_url + "/api/v1/query_exemplars",
            params={"query": f'{spec.name}_bucket{{job="{JOB}"}}', "start": live_stack.start, "end": live_stack.end},
            timeout=10,
        )
        response.raise_for_status()
        ids = {e["labels"][catalog.EXEMPLAR_REQUEST_ID] for s in response.json()["data"] for e in s["exemplars"]}
        assert ids, spec.name
        found |= ids
    assert found <= set(live_stack.request_ids)
    with httpx.Client(base_url=live_stack.exporter_url, timeout=10) as client:
        for request_id in sorted(found)[:5]:
            deadline = time.monotonic() + 10
            while (row := client.get(f"/api/requests/{request_id}")).status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert row.status_code == 200 and request_id in row.text


def test_model_links_name_a_model_the_target_dashboard_knows(live_stack: LiveStack):
    """What a model link sets (var-model) is a value of Model Performance's model variable."""
    dashboards = D.load_dashboards()
    target = next(d for d in dashboards.values() if d["uid"] == MODEL_PERFORMANCE_UID)
    models = label_values(live_stack, D.substitute(
        next(v for v in D.template_variables(target) if v["name"] == catalog.MODEL)["query"],
        {name: ".*" for name in Q.FILTER_LABELS},
    ))
    assert {call.model for call in live_stack.traffic} <= set(models)


def test_the_backends_dashboard_shows_every_kind_of_backend(live_stack: LiveStack):
    """Every backend upstream's state endpoints read (UP), and a model loaded on each: the demo has
    served models by now, and every kind reports them."""
    values = variable_values(live_stack, D.load_dashboards()["backends"])

    def read(title: str) -> list[tuple[str, float]]:
        expr = D.substitute(panel_target("backends", title), values)
        return [(s["metric"][catalog.UPSTREAM], float(s["value"][1])) for s in instant(live_stack.prometheus_url, expr)]

    backends = {name for name, _, _ in BACKEND_UPSTREAMS}
    readable = read("Backend state readable")
    assert {upstream for upstream, _ in readable} == backends
    assert all(value == 1 for _, value in readable), readable
    loaded = dict(read("Models loaded"))
    assert set(loaded) == backends and min(loaded.values()) >= 1, loaded


def test_rightly_empty_lists_only_existing_queries():
    keys = {query.key for query in D.panel_queries(D.load_dashboards())}
    assert set(RIGHTLY_EMPTY) <= keys
