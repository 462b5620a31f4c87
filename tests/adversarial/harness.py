"""The proxy under attack, and the invariants every adversarial case ends with.

ProxyUnderTest runs a real `llm-exporter serve` (tests/exporter_process.py) with a YAML config
pointing at the scripted RawUpstream. A test opens `with proxy.case() as case:`, attacks, states
what the counters must have moved by (`case.expect(...)`) and any property of its own
(`case.require(...)`); leaving the block checks every invariant (`Case._invariants`) and fails
with one line per broken property, each naming the point of issue 12 it belongs to. After a
failure the next case gets a fresh process, so one broken property is reported once, by the case
that broke it, not by every case after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
import yaml
from hypothesis import HealthCheck, Phase, settings
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from tests.adversarial.peers import CASE_HEADER, NORMAL_BODY, NORMAL_TOKENS, Peers
from tests.exporter_process import ServeProcess, serve_cli

# Reasons of llm_telemetry_dropped_total that stand for a lost request-log row (the others, a response's usage).
ROW_DROP_REASONS = (catalog.DROP_QUEUE_FULL, catalog.DROP_BAD_ROW, catalog.DROP_WRITE_ERROR)

# Hypothesis for every generated family of cases: few examples, reproducible, no shrinking (each
# example costs a round of invariants against a real process; the failing example is printed).
CASES = settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck),
)

KEY_ENV = "ADV_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-adv-upstream-" + secrets.token_hex(16)  # must only ever reach the raw upstream
KEY_HEADERS = (b"authorization", b"x-api-key", b"api-key", b"x-goog-api-key")
USER_HEADER = "x-adv-user"
SESSION_HEADER = "x-adv-session"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
UPSTREAM_IDLE_SECONDS = 5.0  # the upstream's idle timeout in the config: a stalled answer ends in 504
RSS_ALLOWANCE_KIB = 64 * 1024  # peak RSS during a case may exceed the RSS at its start by at most this
RSS_GROWTH_KIB = 128 * 1024  # and the RSS after any case the baseline of its process by at most this
WAIT_SECONDS = 10.0  # hang guard for anything asynchronous (rows, fds, in-flight): > the idle timeout
CLIENT_TIMEOUT_SECONDS = 30.0  # hang guard for one client exchange
POOL_IDLE_SECONDS = 4.0  # exporter.upstream.http1.IDLE_SECONDS: idle keep-alive connections close after it
MAX_POOLED = 16  # keep-alive connections to the upstream the proxy may hold between cases
# The bodies uvicorn sends itself when its parser refuses a request (it never reaches the app).
SERVER_REFUSALS = (b"Invalid HTTP request received.", b"Invalid HTTP method.",
                   b"request line and headers are larger than the server's limit")

NORMAL_REQUEST = {"model": "adv-normal", "messages": [{"role": "user", "content": "hi"}]}


# --- the process --------------------------------------------------------------------------------


class ProxyUnderTest:
    """One `llm-exporter serve` in front of the raw upstream; restarted after a broken case."""

    def __init__(self, peers: Peers, scratch: Path, api_key: bool = True, kind: str = "openai",
                 limits: dict | None = None, telemetry: dict | None = None, access: dict | None = None,
                 env: dict[str, str] | None = None, client_key: str | None = None) -> None:
        self.peers = peers
        self.scratch = scratch
        self.api_key = api_key
        self.kind = kind  # the upstream's kind: which header its key goes in
        self.limits = {"max_request_bytes": MAX_REQUEST_BYTES, **(limits or {})}
        self.telemetry = telemetry or {}
        self.access = access or {}
        self.env = env or {}
        self.client_key = client_key  # what the normal request sends when access.client_keys is set
        self._stack: contextlib.ExitStack | None = None
        self.served: ServeProcess | None = None
        self.db_path = scratch / "adv.db"
        self.baseline_fds = 0
        self.baseline_fd_targets: Counter = Counter()
        self.baseline_rss_kib = 0
        self.dirty = False
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    @property
    def pid(self) -> int:
        assert self.served is not None
        return self.served.pid

    def config(self) -> dict[str, Any]:
        upstream: dict[str, Any] = {
            "name": "main", "url": self.peers.upstream.url, "kind": self.kind,
            "timeouts": {"connect": 5, "idle": UPSTREAM_IDLE_SECONDS, "total": 120},
        }
        if self.api_key:
            upstream["api_key_env"] = KEY_ENV
        config = {
            "upstreams": [upstream],
            "limits": self.limits,
            "metrics": {"max_models": 50},
            "probe": {"interval_seconds": 3600},
            "db": {"path": str(self.db_path)},
            "telemetry": {"flush_interval_seconds": 0.1, "user_header": USER_HEADER,
                          "session_header": SESSION_HEADER, **self.telemetry},
        }
        if self.access:
            config["access"] = self.access
        return config

    def start(self) -> None:
        self.starts += 1
        self.db_path = self.scratch / f"adv-{self.starts}.db"
        config = self.scratch / f"config-{self.starts}.yaml"
        config.write_text(yaml.safe_dump(self.config()))
        env = {KEY_ENV: UPSTREAM_KEY, **self.env}
        self._stack = contextlib.ExitStack()
        self.served = self._stack.enter_context(serve_cli("--config", str(config), env=env))
        self.dirty = False
        normal_request(self, "warm-up")
        # SQLite keeps a closed reader's file open while the writer holds its locks (and reuses
        # it for the next reader): a baseline taken after a query of each endpoint includes it.
        for endpoint in ("/api/requests?limit=1", "/api/usage", "/metrics"):
            _get(self.url + endpoint)
        self.baseline_fds = _settled(lambda: counted_fds(self.pid, self.peers.upstream.port))
        self.baseline_fd_targets = Counter(_fd_targets(self.pid))
        self.baseline_rss_kib = _status_kib(self.pid, "VmRSS")

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def ensure(self) -> None:
        if self.served is None or self.dirty or self.served.process.poll() is not None:
            self.stop()
            self.start()

    def output(self) -> str:
        return self.served.output() if self.served is not None else ""

    @contextlib.contextmanager
    def case(self) -> Iterator[Case]:
        self.ensure()
        case = Case(self)
        failure: BaseException | None = None
        try:
            yield case
        except Exception as exc:  # the attack itself broke (a hang guard fired...): still check all
            failure = exc
        problems = list(case.problems)
        if failure is not None:
            problems.insert(0, f"[case] the attack did not complete: {failure!r}")
        problems += case._invariants()
        if problems:
            self.dirty = True
            raise AssertionError("\n".join(problems)) from failure

    def check_idle(self) -> None:
        """Once per process: after the pool's idle expiry, every file descriptor is back to baseline."""
        if self.served is None or self.served.process.poll() is not None:
            return
        upstream_port = self.peers.upstream.port
        _wait(lambda: not pooled_connections(self.pid, upstream_port), POOL_IDLE_SECONDS + WAIT_SECONDS)
        now = counted_fds(self.pid, upstream_port)
        assert now == self.baseline_fds and not pooled_connections(self.pid, upstream_port), (
            f"[4 fds] after the idle expiry the proxy holds {now} fds (baseline {self.baseline_fds}) and "
            f"{len(pooled_connections(self.pid, upstream_port))} upstream connections")


@contextlib.contextmanager
def proxy_under_test(peers: Peers, scratch: Path, **options: Any) -> Iterator[ProxyUnderTest]:
    proxy = ProxyUnderTest(peers, scratch, **options)
    try:
        yield proxy
        if not proxy.dirty:
            proxy.check_idle()
    finally:
        proxy.stop()


# --- one case and its invariants ------------------------------------------------------------------


@dataclass
class Expect:
    """What a case must move the counters by (beyond the normal request the invariants add)."""

    requests: Counter = field(default_factory=Counter)  # llm_requests_total by code (None: any code)
    tokens: dict[str, int | tuple[int, ...]] = field(default_factory=dict)  # by type: a value or the allowed values
    response_bytes: int | None = None  # llm_response_size_bytes_sum, when the case knows it
    request_bytes: int | None = None  # llm_request_size_bytes_sum
    error_types: dict[str, int] | None = None  # llm_upstream_errors_total by error_type, when known


class Case:
    def __init__(self, proxy: ProxyUnderTest) -> None:
        self.proxy = proxy
        self.problems: list[str] = []
        self.secrets: list[bytes] = [UPSTREAM_KEY.encode()]
        if proxy.client_key:
            self.secrets.append(proxy.client_key.encode())
        self._expect = Expect()
        self._before = Metrics.of(proxy.url)
        self._rows_before = request_rows(proxy.db_path)
        self._output_at = len(proxy.output())
        self._visits_before = len(proxy.peers.visits())
        self._received_before = len(proxy.peers.upstream.all_received())
        self._rss_at_start = _status_kib(proxy.pid, "VmRSS")
        with contextlib.suppress(OSError):  # reset the peak RSS, so VmHWM is this case's peak
            Path(f"/proc/{proxy.pid}/clear_refs").write_text("5")

    def expect(self, requests: int | dict | None = None, *, code: str | None = None, **kwargs: Any) -> None:
        """`requests` proxied requests (all with `code`), or a {code: n} mapping; other Expect fields."""
        if isinstance(requests, int):
            self._expect.requests = Counter({code: requests}) if requests else Counter()
        elif requests is not None:
            self._expect.requests = Counter({k: v for k, v in requests.items() if v})
        for key, value in kwargs.items():
            setattr(self._expect, key, value)

    def require(self, condition: Any, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def keep_secret(self, *values: str | bytes) -> None:
        """Values (client keys) that must never reach the log output or the database."""
        self.secrets += [v.encode() if isinstance(v, str) else v for v in values if v]

    def forwarded(self, case: str) -> list:
        return self.proxy.peers.upstream.received(case)

    # --- the invariants ---

    def _invariants(self) -> list[str]:
        proxy = self.proxy
        problems: list[str] = []
        if proxy.served.process.poll() is not None:
            return [f"[alive] the proxy exited with {proxy.served.process.returncode}:\n{_tail(proxy.output())}"]
        problems += _probe("[alive] /healthz", lambda: _get(proxy.url + "/healthz").status_code == 200)
        if not _wait(lambda: _in_flight(proxy.url) == 0, WAIT_SECONDS):
            problems.append(f"[4 in-flight] llm_requests_in_flight is {_in_flight(proxy.url)}, not back to 0")
        after = Metrics.of(proxy.url)
        if after.error:
            problems.append(f"[2 /metrics] {after.error}")
        else:
            problems += self._counters(after)
        problems += self._normal_request()
        problems += self._request_log(after)
        problems += self._resources()
        new_output = proxy.output()[self._output_at:]
        if "Traceback" in new_output:
            problems.append(f"[log] a traceback reached the proxy's output:\n{_around(new_output, 'Traceback')}")
        visits = proxy.peers.visits()[self._visits_before:]
        if visits:
            problems.append(f"[1 SSRF] the canary was reached {len(visits)} time(s): "
                            f"{[(v.peer, v.data[:200]) for v in visits]}")
        problems += self._key_handling()
        problems += self._secrets_kept()
        return problems

    def _counters(self, after: Metrics) -> list[str]:
        problems = []
        before, expect = self._before, self._expect
        by_code = after.delta(before, "llm_requests_total", "code")
        wanted = expect.requests
        if None in wanted:
            total_ok = sum(by_code.values()) == sum(wanted.values())
            codes_ok = all(by_code.get(code, 0) == n for code, n in wanted.items() if code is not None)
            ok = total_ok and codes_ok
        else:
            ok = by_code == wanted
        if not ok:
            problems.append(f"[counters] llm_requests_total moved by {dict(by_code)} (by code), "
                            f"expected {dict(wanted)}")
        tokens = after.delta(before, "llm_tokens_total", "type")
        for kind in set(tokens) | set(expect.tokens):
            allowed = expect.tokens.get(kind, 0)
            allowed = tuple(sorted(set(allowed))) if isinstance(allowed, tuple) else (allowed,)
            if tokens.get(kind, 0) not in allowed:
                problems.append(f"[2 tokens] llm_tokens_total{{type={kind!r}}} moved by {tokens.get(kind, 0)}, "
                                f"expected {' or '.join(map(str, allowed))}")
        for name, wanted_sum in (("llm_response_size_bytes_sum", expect.response_bytes),
                                 ("llm_request_size_bytes_sum", expect.request_bytes)):
            moved = sum(after.delta(before, name, "api").values())
            if wanted_sum is not None and moved != wanted_sum:
                problems.append(f"[5 counters] {name} moved by {moved}, expected {wanted_sum} (the bytes sent)")
        if expect.error_types is not None:
            errors = after.delta(before, "llm_upstream_errors_total", "error_type")
            if errors != Counter({k: v for k, v in expect.error_types.items() if v}):
                problems.append(f"[3 error_type] llm_upstream_errors_total moved by {dict(errors)}, "
                                f"expected {expect.error_types}")
        return problems

    def _normal_request(self) -> list[str]:
        """A well-behaved request right after the case: served, answered exactly, counted exactly."""
        proxy = self.proxy
        before = Metrics.of(proxy.url)
        try:
            response, request_id = normal_request(proxy, "after-case")
        except Exception as exc:
            return [f"[alive] the normal request after the case failed: {exc!r}"]
        problems = []
        if response.status_code != 200 or response.content != NORMAL_BODY:
            problems.append(f"[alive] the normal request after the case got {response.status_code} "
                            f"{response.content[:300]!r}")
        after = Metrics.of(proxy.url)
        if not after.error:
            moved = after.delta(before, "llm_requests_total", "code")
            tokens = after.delta(before, "llm_tokens_total", "type")
            if moved != Counter({"200": 1}) or tokens != Counter(NORMAL_TOKENS):
                problems.append(f"[counters] the normal request moved llm_requests_total by {dict(moved)} and "
                                f"llm_tokens_total by {dict(tokens)}, expected {{'200': 1}} and {NORMAL_TOKENS}")
        self._normal_id = request_id
        return problems

    def _request_log(self, after: Metrics) -> list[str]:
        proxy = self.proxy
        problems = []
        expected = sum(self._expect.requests.values()) + 1  # the case's requests and the normal one

        def logged() -> int:
            now = Metrics.of(proxy.url)
            moved = now.delta(self._before, "llm_telemetry_dropped_total", "reason") if not now.error else Counter()
            dropped = sum(moved[reason] for reason in ROW_DROP_REASONS)
            return request_rows(proxy.db_path) - self._rows_before + int(dropped)

        _wait(lambda: logged() >= expected, WAIT_SECONDS)
        if (got := logged()) != expected:
            problems.append(f"[2 request log] {got} rows written or counted as dropped for {expected} requests")
        request_id = getattr(self, "_normal_id", None)
        try:
            listed = _get(proxy.url + "/api/requests?limit=5")
            if listed.status_code != 200:
                problems.append(f"[2 /api/requests] answered {listed.status_code}: {listed.text[:300]}")
            elif request_id and request_id not in {r.get("request_id") for r in listed.json()["requests"]}:
                problems.append("[2 /api/requests] the normal request after the case is not listed")
            usage = _get(proxy.url + "/api/usage?group_by=model")
            if usage.status_code != 200:
                problems.append(f"[7 /api/usage] answered {usage.status_code}: {usage.text[:300]}")
        except Exception as exc:
            problems.append(f"[2 /api/*] failed: {exc!r}")
        if request_id and not _wait(lambda: request_id in proxy.output(), WAIT_SECONDS):
            problems.append("[2 access log] no access-log line for the normal request after the case")
        return problems

    def _resources(self) -> list[str]:
        proxy = self.proxy
        problems = []
        port = proxy.peers.upstream.port
        if not _wait(lambda: counted_fds(proxy.pid, port) == proxy.baseline_fds, WAIT_SECONDS):
            extra = Counter(_fd_targets(proxy.pid))
            extra.subtract(proxy.baseline_fd_targets)
            table = _socket_table()
            described = [(t, table.get(t[8:-1])) for t, n in extra.items() if n > 0]
            problems.append(f"[4 fds] {counted_fds(proxy.pid, port)} open file descriptors besides pooled "
                            f"upstream connections, baseline {proxy.baseline_fds}; new: {described}")
        if len(pooled := pooled_connections(proxy.pid, port)) > MAX_POOLED:
            problems.append(f"[4 fds] {len(pooled)} keep-alive connections to the upstream after the case")
        peak = _status_kib(proxy.pid, "VmHWM")
        if peak - self._rss_at_start > RSS_ALLOWANCE_KIB:
            problems.append(f"[3-4 memory] peak RSS {peak // 1024} MiB during the case, "
                            f"{self._rss_at_start // 1024} MiB at its start (allowed +{RSS_ALLOWANCE_KIB // 1024} MiB)")
        now = _status_kib(proxy.pid, "VmRSS")
        if now - proxy.baseline_rss_kib > RSS_GROWTH_KIB:
            problems.append(f"[3-4 memory] RSS {now // 1024} MiB after the case, {proxy.baseline_rss_kib // 1024} MiB "
                            f"after start-up (allowed +{RSS_GROWTH_KIB // 1024} MiB)")
        return problems

    def _key_handling(self) -> list[str]:
        """The upstream key goes on only when the client sent no key of its own."""
        problems = []
        key = UPSTREAM_KEY.encode()
        for request in self.proxy.peers.upstream.all_received()[self._received_before:]:
            client_keys = [(n, v) for n, v in request.headers() if n in KEY_HEADERS and key not in v]
            carries_key = key in request.head
            if request.request_line.startswith(b"GET /v1/models"):
                continue  # the proxy's own probe
            if client_keys and carries_key:
                problems.append(f"[6 credentials] the upstream key was added to a request that carried the "
                                f"client's own key in {[n.decode() for n, _ in client_keys]}")
            if self.proxy.api_key and not client_keys and not carries_key:
                problems.append(f"[6 credentials] a request without a client key reached the upstream without "
                                f"the configured key: {request.request_line[:200]!r}")
        return problems

    def _secrets_kept(self) -> list[str]:
        proxy = self.proxy
        output = proxy.output().encode("utf-8", "surrogateescape")
        stored = b"".join(_read(path) for path in proxy.scratch.glob(proxy.db_path.name + "*"))
        problems = []
        for secret in self.secrets:
            if secret in output:
                problems.append(f"[6 secrets] a key ({secret[:12]!r}...) reached the proxy's log output")
            if secret in stored:
                problems.append(f"[6 secrets] a key ({secret[:12]!r}...) was stored in the request log")
        return problems


# --- metrics ---------------------------------------------------------------------------------------


class Metrics:
    """One scrape of /metrics, parsed as Prometheus parses it (or the reason it could not be)."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]], error: str | None = None) -> None:
        self.samples = samples
        self.error = error

    @classmethod
    def of(cls, url: str) -> Metrics:
        try:
            response = _get(url + "/metrics")
        except Exception as exc:
            return cls([], f"/metrics failed: {exc!r}")
        if response.status_code != 200:
            return cls([], f"/metrics answered {response.status_code}: {response.text[:300]}")
        try:
            samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
                       for s in family.samples]
        except Exception as exc:
            return cls([], f"/metrics does not parse: {exc!r}")
        return cls(samples)

    def by(self, name: str, label: str) -> Counter:
        found: Counter = Counter()
        for sample, labels, value in self.samples:
            if sample == name:
                found[labels.get(label)] += value
        return found

    def total(self, name: str) -> float:
        return sum(value for sample, _, value in self.samples if sample == name)

    def delta(self, before: Metrics, name: str, label: str) -> Counter:
        moved = self.by(name, label)
        moved.subtract(before.by(name, label))
        return Counter({k: int(v) if float(v).is_integer() else v for k, v in moved.items() if v})


def _in_flight(url: str) -> float:
    metrics = Metrics.of(url)
    return float("nan") if metrics.error else metrics.total("llm_requests_in_flight")


# --- clients -----------------------------------------------------------------------------------------


def normal_request(proxy: ProxyUnderTest, tag: str) -> tuple[httpx.Response, str]:
    request_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id, CASE_HEADER.decode(): f"normal-{tag}"}
    if proxy.client_key:
        headers["authorization"] = f"Bearer {proxy.client_key}"
    response = CLIENT.post(proxy.url + "/v1/chat/completions", json=NORMAL_REQUEST, headers=headers)
    return response, request_id


@dataclass
class RawResponse:
    status: int | None
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool  # the whole message arrived (else the connection ended or the guard fired)
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def server_refusal(self) -> bool:
        """uvicorn's own 4xx for a request its parser refused: the app never saw it."""
        return self.status in (400, 414, 431) and self.body in SERVER_REFUSALS


class _ResponseReader:
    def __init__(self, head_request: bool = False) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)
        self.head_request = head_request

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> bool | None:
        if self.head_request:
            self.complete = True
            return True  # no body follows a HEAD response
        return None

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def exchange(url: str, pieces: Sequence[bytes | float] | bytes, timeout: float = CLIENT_TIMEOUT_SECONDS,
             head_request: bool = False) -> RawResponse:
    """Send raw bytes (a float among the pieces is a pause) and read one response off a new socket."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader = _ResponseReader(head_request)
    raw = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before all is sent
            for piece in [pieces] if isinstance(pieces, bytes) else pieces:
                if isinstance(piece, float):
                    time.sleep(piece)
                else:
                    sock.sendall(piece)
        with contextlib.suppress(OSError, httptools.HttpParserError):
            while not reader.complete and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
                reader.parser.feed_data(chunk)
    status = None
    with contextlib.suppress(Exception):
        status = reader.parser.get_status_code()
    if not raw:
        status = None
    return RawResponse(status, reader.headers, bytes(reader.body), reader.complete, bytes(raw))


def request_bytes(method: str, target: bytes | str, headers: Sequence[tuple[bytes | str, bytes | str]] = (),
                  body: bytes = b"", case: str | None = None) -> bytes:
    """A request as raw bytes: Host, the case header, the given headers, Content-Length for a body."""
    def b(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1", b"host: adversarial.test"]
    if case:
        lines.append(CASE_HEADER + b": " + case.encode())
    lines += [b(name) + b": " + b(value) for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def new_case_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


# The error bodies of every API family have one of these key shapes (exporter.families error()).
def json_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    return type(value).__name__


def family_error_shapes() -> list[Any]:
    from exporter.families import FAMILIES, OTHER

    return [json_shape(family.error(400, "x")) for family in (*FAMILIES, OTHER)]


# --- the process's resources --------------------------------------------------------------------------


def _socket_table() -> dict[str, tuple[int, str]]:
    """socket inode -> (remote port, TCP state) for every TCP socket of the network namespace."""
    table = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                table[fields[9]] = (remote_port, fields[3])
    return table


def _fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def pooled_connections(pid: int, upstream_port: int) -> list[str]:
    """Established connections to the upstream (keep-alive pool or requests in flight)."""
    table = _socket_table()
    found = []
    for target in _fd_targets(pid):
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            if table.get(match.group(1)) == (upstream_port, "01"):
                found.append(target)
    return found


def counted_fds(pid: int, upstream_port: int) -> int:
    """Open file descriptors, not counting established connections to the upstream (the pool's)."""
    return len(_fd_targets(pid)) - len(pooled_connections(pid, upstream_port))


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


# --- small helpers ----------------------------------------------------------------------------------


# One client for the suite (making one costs more than a request); no keep-alive, so no connection
# of the suite's own stays open in the proxy between cases.
CLIENT = httpx.Client(timeout=CLIENT_TIMEOUT_SECONDS, limits=httpx.Limits(max_keepalive_connections=0))


def _get(url: str) -> httpx.Response:
    return CLIENT.get(url)


def _wait(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _settled(measure: Callable[[], int]) -> int:
    """A value once two reads a moment apart agree (connections of the last request closing)."""
    previous = measure()
    for _ in range(50):
        time.sleep(0.2)
        now = measure()
        if now == previous:
            return now
        previous = now
    return previous


def _probe(what: str, check: Callable[[], bool]) -> list[str]:
    try:
        return [] if check() else [f"{what} failed"]
    except Exception as exc:
        return [f"{what} failed: {exc!r}"]


def request_rows(db_path: Path) -> int:
    import sqlite3

    if not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _around(text: str, marker: str, lines: int = 25) -> str:
    at = text.find(marker)
    return "\n".join(text[at:].splitlines()[:lines])
