"""Settings: the YAML config file and command-line flags, validated once at start-up.

A bad value raises ConfigError with one line naming the field (`upstreams[0].url: ...`), which
the command line prints before exiting with status 2. Nothing is validated later.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from exporter.backends.kinds import COLLECTORS
from exporter.origin import Origin, parse_origin
from exporter.credentials import SECRET_HEADER_NAMES
from exporter.fields import ConfigError, Fields
from exporter.pricing import Pricing, build_pricing, default_pricing


# Per kind of backend: the path probed for llm_upstream_up, and the header an API key goes in.
BACKEND_KINDS: dict[str, tuple[str, str]] = {
    "openai": ("/v1/models", "authorization"),
    "anthropic": ("/v1/models", "x-api-key"),
    "ollama": ("/api/version", "authorization"),
    "llamacpp": ("/health", "authorization"),
    "vllm": ("/health", "authorization"),
    "llamaswap": ("/health", "authorization"),  # llama-swap: /health answers "OK"
    "azure": ("/openai/models?api-version=2024-10-21", "api-key"),
    "gemini": ("/v1beta/models", "x-goog-api-key"),
    "generic": ("/", "authorization"),
}
# Kinds whose OpenAI-compatible streams end with usage unasked: llama.cpp's last chunk carries
# `timings`. The proxy asks these for no usage, which would change the stream the client gets.
USAGE_UNASKED_KINDS = frozenset({"llamacpp"})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0  # seconds to open a connection to the upstream
    idle: float = 120.0  # longest gap between two chunks (or before the response headers)
    total: float = 900.0  # longest whole request, stream included


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str  # base URL; the client's path and query are added to its path
    kind: str = "openai"
    models: tuple[str, ...] = ()  # glob patterns of the models this upstream serves
    api_key: str | None = field(default=None, repr=False)  # sent when the client sends none
    probe_path: str = "/v1/models"
    timeouts: Timeouts = Timeouts()
    backend_state: bool = True  # read the backend's own state endpoints (kinds in exporter.backends.kinds)
    # Where requests go: parsed from `url` once, here; never from anything a client sends.
    origin: Origin = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", parse_origin(self.url))

    @property
    def api_key_header(self) -> str:
        return BACKEND_KINDS[self.kind][1]

    @property
    def reports_stream_usage(self) -> bool:
        return self.kind in USAGE_UNASKED_KINDS


@dataclass(frozen=True)
class Telemetry:
    """The request log (exporter.requestlog): its writer, retention, body capture, identities."""

    retention_days: float = 30.0  # rows older than this are deleted
    retention_interval_seconds: float = 3600.0  # how often retention runs (also once at start)
    queue_size: int = 10_000  # observations waiting for the writer; beyond this rows are dropped
    batch_size: int = 500  # rows per transaction, at most
    flush_interval_seconds: float = 1.0  # rows short of a full batch are written this often
    capture_bodies: bool = False  # keep request and response bodies (redacted, compressed)
    capture_max_bytes: int = 64 * 1024  # per body; the rest is cut off
    capture_retention_days: float = 7.0
    user_header: str | None = None  # a request header naming the end user (beats the body's user)
    session_header: str | None = None  # a request header naming the session
    key_salt: str | None = field(default=None, repr=False)  # from key_salt_env; else one per database


@dataclass(frozen=True)
class AccessLog:
    """The structured JSON access log: one line per proxied request (exporter.accesslog)."""

    enabled: bool = True
    path: str | None = None  # a file to append to; None: standard output


@dataclass(frozen=True)
class Access:
    """Who may use the exporter. Secrets are kept only as SHA-256 digests, never as given."""

    # Bearer tokens for /metrics and /api/*; empty: those endpoints are open.
    admin_tokens: frozenset[bytes] = field(default=frozenset(), repr=False)
    # Client keys allowed to use the proxy (digest -> key id, None: the salted hash id); empty: any.
    client_keys: Mapping[bytes, str | None] = field(default_factory=dict, repr=False)
    # Request headers that carry secrets besides the usual credential headers.
    secret_headers: tuple[str, ...] = ()


def secret_digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


@dataclass(frozen=True)
class Settings:
    upstreams: tuple[Upstream, ...]
    default_upstream: str
    max_request_bytes: int = 32 * 1024 * 1024  # a body beyond this gets 413
    max_header_bytes: int = 64 * 1024  # request line and headers beyond this get 431
    # A client slower than these gets 408: slow or idle clients cannot hold connections for long.
    request_head_timeout: float = 10.0  # seconds from a request's first byte to the end of its head
    request_body_timeout: float = 60.0  # seconds to read the whole request body
    max_models: int = 100  # distinct model label values before names become "other"
    model_patterns: tuple[str, ...] = ()  # names matching these are always kept as labels
    probe_interval: float = 15.0  # seconds between upstream probes
    db_path: str = "llm-exporter.db"
    telemetry: Telemetry = Telemetry()
    pricing: Pricing = field(default_factory=default_pricing)
    workers: int = 1  # uvicorn worker processes (prometheus-client multiprocess mode when > 1)
    shutdown_grace_seconds: float = 30.0  # on SIGTERM, in-flight requests get this long to finish
    access_log: AccessLog = AccessLog()
    access: Access = Access()

    def upstream_for(self, model: str) -> Upstream:
        """The first upstream with a pattern matching the model, else the default upstream."""
        for upstream in self.upstreams:
            if any(fnmatchcase(model, pattern) for pattern in upstream.models):
                return upstream
        return next(u for u in self.upstreams if u.name == self.default_upstream)


def load_settings(
    config_file: str | None = None, upstream_url: str | None = None, db_path: str | None = None
) -> Settings:
    """Settings from an optional YAML file, an optional --upstream URL and --db path.

    --upstream alone is a complete setup (one upstream named `default` for every model); with a
    config file it replaces the upstream named `default`, or adds it, and becomes the default.
    """
    raw: dict[str, Any] = {}
    if config_file:
        raw = _read_yaml(config_file)
    if upstream_url:
        others = [u for u in raw.get("upstreams") or [] if not (isinstance(u, dict) and u.get("name") == "default")]
        raw["upstreams"] = [*others, {"name": "default", "url": upstream_url}]
        raw["default_upstream"] = "default"
    if not raw.get("upstreams"):
        raise ConfigError("upstreams: no upstream configured; give --upstream URL or --config FILE")
    settings = parse_settings(raw)
    return replace(settings, db_path=db_path) if db_path else settings


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: {path} is not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level")
    return raw


def parse_settings(raw: dict[str, Any]) -> Settings:
    top = Fields(raw, "", {
        "upstreams", "default_upstream", "limits", "metrics", "probe", "db", "telemetry", "pricing",
        "pricing_defaults", "server", "access_log", "access",
    })
    upstreams = _parse_upstreams(top.get("upstreams", list))
    default = _default_upstream(top, upstreams)
    limits = Fields(top.get("limits", dict, {}), "limits.", {
        "max_request_bytes", "max_header_bytes", "request_head_timeout_seconds", "request_body_timeout_seconds",
    })
    metrics = Fields(top.get("metrics", dict, {}), "metrics.", {"max_models", "models"})
    probe = Fields(top.get("probe", dict, {}), "probe.", {"interval_seconds"})
    db = Fields(top.get("db", dict, {}), "db.", {"path"})
    server = Fields(top.get("server", dict, {}), "server.", {"workers", "shutdown_grace_seconds"})
    access_log = Fields(top.get("access_log", dict, {}), "access_log.", {"enabled", "path"})
    defaults = Settings(upstreams=upstreams, default_upstream=default)
    max_header_bytes = limits.positive("max_header_bytes", int, defaults.max_header_bytes)
    if max_header_bytes < 1024:
        raise ConfigError(f"limits.max_header_bytes: must be at least 1024, got {max_header_bytes!r}")
    grace = server.get("shutdown_grace_seconds", float, defaults.shutdown_grace_seconds)
    if grace < 0:
        raise ConfigError(f"server.shutdown_grace_seconds: must be 0 or more, got {grace!r}")
    access_log_path = access_log.get("path", str, None)
    if access_log_path == "":
        raise ConfigError("access_log.path: must be a file path (leave it out for standard output)")
    access = _parse_access(top.get("access", dict, {}))
    telemetry = _parse_telemetry(top.get("telemetry", dict, {}))
    for key in ("user_header", "session_header"):
        if getattr(telemetry, key) in access.secret_headers:
            raise ConfigError(f"telemetry.{key}: {getattr(telemetry, key)!r} is one of access.secret_headers "
                              "and is never stored")
    return replace(
        defaults,
        max_request_bytes=limits.positive("max_request_bytes", int, defaults.max_request_bytes),
        max_header_bytes=max_header_bytes,
        request_head_timeout=limits.positive("request_head_timeout_seconds", float, defaults.request_head_timeout),
        request_body_timeout=limits.positive("request_body_timeout_seconds", float, defaults.request_body_timeout),
        workers=check_workers(server.get("workers", int, defaults.workers), "server.workers"),
        shutdown_grace_seconds=grace,
        access_log=AccessLog(enabled=access_log.get("enabled", bool, True), path=access_log_path),
        access=access,
        max_models=metrics.positive("max_models", int, defaults.max_models),
        model_patterns=tuple(metrics.strings("models")),
        probe_interval=probe.positive("interval_seconds", float, defaults.probe_interval),
        db_path=db.get("path", str, defaults.db_path),
        telemetry=telemetry,
        pricing=build_pricing(top.get("pricing", list, []), top.get("pricing_defaults", bool, True)),
    )


def _parse_upstreams(entries: list[Any] | None) -> tuple[Upstream, ...]:
    if not entries:
        raise ConfigError("upstreams: must list at least one upstream")
    upstreams = tuple(_parse_upstream(entry, f"upstreams[{i}]") for i, entry in enumerate(entries))
    names = [u.name for u in upstreams]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"upstreams[{i}].name: duplicate upstream name {name!r}")
    return upstreams


def _default_upstream(top: Fields, upstreams: tuple[Upstream, ...]) -> str:
    """`default_upstream`, the first upstream when not given."""
    names = [u.name for u in upstreams]
    default = top.get("default_upstream", str, names[0])
    if default not in names:
        raise ConfigError(f"default_upstream: {default!r} is not the name of an upstream ({', '.join(names)})")
    return default


def _parse_telemetry(raw: dict[str, Any]) -> Telemetry:
    fields = Fields(raw, "telemetry.", {
        "retention_days", "retention_interval_seconds", "queue_size", "batch_size", "flush_interval_seconds",
        "capture_bodies", "capture_max_bytes", "capture_retention_days", "user_header", "session_header",
        "key_salt_env",
    })
    d = Telemetry()
    salt = None
    if salt_env := fields.get("key_salt_env", str, None):
        salt = os.environ.get(salt_env, "")
        if len(salt) < 16:
            raise ConfigError(
                f"telemetry.key_salt_env: environment variable {salt_env} must hold at least 16 characters"
            )
    return Telemetry(
        retention_days=fields.positive("retention_days", float, d.retention_days),
        retention_interval_seconds=fields.positive("retention_interval_seconds", float, d.retention_interval_seconds),
        queue_size=fields.positive("queue_size", int, d.queue_size),
        batch_size=fields.positive("batch_size", int, d.batch_size),
        flush_interval_seconds=fields.positive("flush_interval_seconds", float, d.flush_interval_seconds),
        capture_bodies=fields.get("capture_bodies", bool, d.capture_bodies),
        capture_max_bytes=fields.positive("capture_max_bytes", int, d.capture_max_bytes),
        capture_retention_days=fields.positive("capture_retention_days", float, d.capture_retention_days),
        user_header=_header_name(fields, "user_header"),
        session_header=_header_name(fields, "session_header"),
        key_salt=salt,
    )


MAX_WORKERS = 64
MIN_TOKEN_CHARS = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def check_workers(value: int, name: str) -> int:
    """A worker count: a whole number from 1 to MAX_WORKERS (ConfigError naming `name`)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{name}: must be a whole number from 1 to {MAX_WORKERS}, got {value!r}")
    return value


def _parse_access(raw: dict[str, Any]) -> Access:
    fields = Fields(raw, "access.", {
        "admin_tokens_file", "admin_tokens_env", "client_keys_file", "client_keys_env", "secret_headers",
    })
    tokens: set[bytes] = set()
    for where, entries in _secret_entries(fields, "admin_tokens"):
        for i, entry in enumerate(entries):
            if len(entry) < MIN_TOKEN_CHARS or any(c.isspace() for c in entry):
                raise ConfigError(f"{where}: token {i + 1} must be at least {MIN_TOKEN_CHARS} characters "
                                  "without spaces")
            tokens.add(secret_digest(entry))
    keys: dict[bytes, str | None] = {}
    for where, entries in _secret_entries(fields, "client_keys"):
        for i, entry in enumerate(entries):
            parts = entry.split()
            if len(parts) > 2 or (len(parts) == 2 and not _KEY_ID.fullmatch(parts[0])):
                raise ConfigError(f"{where}: entry {i + 1} must be 'KEY' or 'KEY_ID KEY' (a key id is letters, "
                                  "digits and _.:@-, at most 64)")
            key_id, key = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
            if len(key) < 8:
                raise ConfigError(f"{where}: entry {i + 1}: a client key must be at least 8 characters")
            keys[secret_digest(key)] = key_id
    secret_headers = []
    for i, name in enumerate(fields.strings("secret_headers")):
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise ConfigError(f"access.secret_headers[{i}]: {name!r} is not an HTTP header name")
        secret_headers.append(name.lower())
    return Access(admin_tokens=frozenset(tokens), client_keys=keys, secret_headers=tuple(secret_headers))


def _secret_entries(fields: Fields, stem: str) -> list[tuple[str, list[str]]]:
    """Entries of `<stem>_file` (one a line, # comments) and `<stem>_env` (split by commas or lines).

    Either may be given, or both (their entries are joined); the values never come from the config.
    """
    found = []
    if file_name := fields.get(f"{stem}_file", str, None):
        where = f"{fields.prefix}{stem}_file"
        try:
            text = Path(file_name).read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {file_name}: {exc.strerror}") from None
        entries = [line.strip() for line in text.splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
        if not entries:
            raise ConfigError(f"{where}: {file_name} holds no entries")
        found.append((where, entries))
    if env_name := fields.get(f"{stem}_env", str, None):
        where = f"{fields.prefix}{stem}_env"
        value = os.environ.get(env_name, "")
        entries = [e.strip() for e in re.split(r"[,\n]", value) if e.strip()]
        if not entries:
            raise ConfigError(f"{where}: environment variable {env_name} is not set or holds no entries")
        found.append((where, entries))
    return found


def _header_name(fields: Fields, key: str) -> str | None:
    name = fields.get(key, str, None)
    if name is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
        raise ConfigError(f"{fields.prefix}{key}: {name!r} is not an HTTP header name")
    if name.lower().encode("latin-1") in SECRET_HEADER_NAMES:
        raise ConfigError(f"{fields.prefix}{key}: {name!r} carries credentials and is never stored")
    return name.lower()


def _parse_upstream(entry: Any, path: str) -> Upstream:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: must be a mapping with at least name and url")
    fields = Fields(
        entry, path + ".",
        {"name", "url", "kind", "models", "api_key_env", "api_key_file", "probe_path", "timeouts", "backend_state"},
    )
    name = fields.required("name", str)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{path}.name: {name!r} must be letters, digits, '_', '.' or '-'")
    url = fields.required("url", str).rstrip("/")
    try:
        parse_origin(url)
    except ValueError as exc:
        raise ConfigError(f"{path}.url: {exc}") from None
    kind = fields.get("kind", str, "openai")
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"{path}.kind: {kind!r} is not one of {', '.join(BACKEND_KINDS)}")
    probe_path = fields.get("probe_path", str, BACKEND_KINDS[kind][0])
    if not probe_path.startswith("/"):
        raise ConfigError(f"{path}.probe_path: {probe_path!r} must start with '/'")
    timeouts = Fields(fields.get("timeouts", dict, {}), path + ".timeouts.", {"connect", "idle", "total"})
    backend_state = fields.get("backend_state", bool, kind in COLLECTORS)
    if backend_state and kind not in COLLECTORS:
        raise ConfigError(f"{path}.backend_state: kind {kind!r} has no state to read (only {', '.join(COLLECTORS)})")
    return Upstream(
        name=name,
        url=url,
        kind=kind,
        models=tuple(fields.strings("models")),
        api_key=_api_key(fields, path),
        probe_path=probe_path,
        backend_state=backend_state,
        timeouts=Timeouts(
            connect=timeouts.positive("connect", float, Timeouts.connect),
            idle=timeouts.positive("idle", float, Timeouts.idle),
            total=timeouts.positive("total", float, Timeouts.total),
        ),
    )


def _api_key(fields: Fields, path: str) -> str | None:
    """The key from an environment variable or a file (a secret), never from the config itself."""
    env_name = fields.get("api_key_env", str, None)
    file_name = fields.get("api_key_file", str, None)
    if env_name and file_name:
        raise ConfigError(f"{path}.api_key_env: give api_key_env or api_key_file, not both")
    if env_name:
        field_name, key = "api_key_env", os.environ.get(env_name, "").strip()
        if not key:
            raise ConfigError(f"{path}.api_key_env: environment variable {env_name} is not set")
    elif file_name:
        try:
            field_name, key = "api_key_file", Path(file_name).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{path}.api_key_file: cannot read {file_name}: {exc.strerror}") from None
        if not key:
            raise ConfigError(f"{path}.api_key_file: {file_name} is empty")
    else:
        return None
    if not key.isprintable():  # it goes into a header line: a line break would split the request
        raise ConfigError(f"{path}.{field_name}: the key holds a line break or another control character")
    return key
