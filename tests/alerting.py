"""Harness for the alerting tests: the sinks that stand in for Slack and a mail server, and the
configs the generators make for a stack on 127.0.0.1 with 1-second intervals and short windows.

The sinks only collect what arrives; the tests then look at it. Waits poll with a generous deadline
and never assert on how long something took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import httpx
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from alerts import render, rules
from alerts.config import AlertsConfig, BurnRateWindow, Threshold
from alertmanager import routes
from alertmanager.config import AlertmanagerConfig
from tests.servers import free_port, serve

REPO = Path(__file__).resolve().parent.parent
SLACK_PATH = "/services/llm-exporter/webhook"
WATCHDOG_PATH = "/ping/watchdog"  # the dead man's switch stand-in, on the same local server
SMTP_USER = "alertmanager"
T = TypeVar("T")
# For the modules using smtp_sink: AUTH without TLS is the point (plain SMTP on 127.0.0.1, as
# mailpit in compose), so aiosmtpd's warning about it is noise.
IGNORE_PLAIN_AUTH_WARNING = "ignore:Requiring AUTH while not requiring TLS:UserWarning"


# --- Short windows ------------------------------------------------------------------------------

def short_windows(cfg: AlertsConfig) -> AlertsConfig:
    """The same rules on a seconds scale: every `for` 0s, rate windows of seconds, no traffic floor.

    With 1-second scrapes a 10s window holds ten samples, enough for rate() to be steady.
    """
    immediate = {
        f.name: dataclasses.replace(getattr(cfg, f.name), for_="0s")
        for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), Threshold)
    }
    return dataclasses.replace(
        cfg, **immediate,
        rate_window="10s", cost_window="10s", throughput_baseline_window="1m",
        exporter_down_for="0s", exporter_absent_for="0s", upstream_down_for="0s",
        telemetry_dropped_for="0s", min_request_rate=0, slo_min_requests=1,
        exporter_service_down_for="0s", no_traffic_for="10s", no_traffic_baseline_window="1m",
        backend_no_model_for="0s", backend_state_unreadable_for="0s", backend_queue_window="10s",
        slo_windows=(
            BurnRateWindow("critical", long="30s", short="10s", factor=14.4, for_="0s"),
            BurnRateWindow("critical", long="1m", short="15s", factor=6, for_="0s"),
            BurnRateWindow("warning", long="2m", short="20s", factor=3, for_="0s"),
            BurnRateWindow("warning", long="3m", short="30s", factor=1, for_="0s"),
        ),
    )


def write_rule_files(cfg: AlertsConfig, directory: Path) -> list[Path]:
    """The generator's rule files for `cfg`, written as `python -m alerts` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in rules.rule_files(cfg).items():
        path = directory / name
        path.write_text(render.dump(content, "tests"))
        paths.append(path)
    return paths


# --- Prometheus ---------------------------------------------------------------------------------

def prometheus_config(workdir: Path, cfg: AlertsConfig, exporter_url: str, alertmanager_url: str) -> Path:
    """The committed prometheus.yml, pointed at this machine, scraping and evaluating every second.

    The rule files go to rules/ next to it, the layout compose mounts, so the committed rule_files
    entry is what loads them. The exporter job keeps its name (the rules select it) but gets a
    static target: DNS discovery cannot find a port on 127.0.0.1.
    """
    committed = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    write_rule_files(cfg, workdir / "rules")
    job = next(j for j in committed["scrape_configs"] if f'job="{j["job_name"]}"' == cfg.selector)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": committed["rule_files"],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
        ]},
        "scrape_configs": [
            {"job_name": job["job_name"],
             "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}]},
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- Slack ----------------------------------------------------------------------------------------

@dataclass
class SlackReceiver:
    """What a Slack incoming webhook would have received: one JSON payload per post; and, beside
    it, what a dead man's switch received from the watchdog receiver's webhook."""

    url: str = ""
    posts: list[dict] = field(default_factory=list)
    watchdog_url: str = ""
    pings: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def slack_receiver() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()

    async def webhook(request: Request) -> PlainTextResponse:
        receiver.posts.append(await request.json())
        return PlainTextResponse("ok")  # what Slack answers

    async def ping(request: Request) -> PlainTextResponse:
        receiver.pings.append(await request.json())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(SLACK_PATH, webhook, methods=["POST"]),
                            Route(WATCHDOG_PATH, ping, methods=["POST"])])
    with serve(app) as base_url:
        receiver.url = base_url + SLACK_PATH
        receiver.watchdog_url = base_url + WATCHDOG_PATH
        yield receiver


def slack_text(post: dict) -> str:
    """Everything a person would read in a Slack post: channel, and each attachment's fields."""
    parts = [post.get("channel", ""), post.get("text", "")]
    for attachment in post.get("attachments", []):
        parts += [str(attachment.get(k, "")) for k in ("title", "title_link", "text", "fallback", "color")]
    return "\n".join(parts)


# --- SMTP -----------------------------------------------------------------------------------------

@dataclass
class Mailbox:
    """Messages an SMTP server accepted; it requires AUTH with the password from the secret file."""

    password: str
    smarthost: str = ""
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
              and auth_data.password == self.password.encode())
        return AuthResult(success=ok)


@contextlib.contextmanager
def smtp_sink(password: str) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1, plain SMTP (as the compose stack's mailpit), AUTH required.

    Go's SMTP client sends PLAIN credentials without TLS only to localhost, which this is. LOGIN is
    not offered: aiosmtpd prompts "User Name" where Alertmanager expects "Username:", and
    Alertmanager tries only the first mechanism it knows.
    """
    mailbox = Mailbox(password)
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=mailbox.authenticate,
        auth_required=True, auth_require_tls=False, auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    mailbox.smarthost = f"127.0.0.1:{port}"
    try:
        yield mailbox
    finally:
        controller.stop()


def mail_text(message: EmailMessage) -> str:
    """Subject, recipients and every text part (HTML included), decoded."""
    parts = [f"Subject: {message['Subject']}", f"To: {message['To']}"]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


# --- Alertmanager ---------------------------------------------------------------------------------

def alertmanager_config(workdir: Path, mailbox: Mailbox, slack: SlackReceiver) -> Path:
    """The generated alertmanager.yml for local sinks: secrets in files, 1-second grouping."""
    secrets = workdir / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "slack_webhook_url").write_text(slack.url + "\n")
    (secrets / "smtp_password").write_text(mailbox.password)
    cfg = dataclasses.replace(
        AlertmanagerConfig(),
        group_wait="1s", group_interval="1s",
        smtp_smarthost=mailbox.smarthost,
        smtp_auth_password_file=str(secrets / "smtp_password"),
        slack_critical_url_file=str(secrets / "slack_webhook_url"),
        slack_warning_url_file=str(secrets / "slack_webhook_url"),
        watchdog_url=slack.watchdog_url, watchdog_repeat_interval="1s",
        templates=(str(REPO / "alertmanager" / "templates" / "*.tmpl"),),
    )
    path = workdir / "alertmanager.yml"
    path.write_text(render.dump(routes.alertmanager_config(cfg), "tests"))
    return path


def alertmanager_alerts(base_url: str) -> list[dict]:
    """Every alert Alertmanager holds, inhibited and silenced ones included."""
    response = httpx.get(f"{base_url}/api/v2/alerts", timeout=10)
    response.raise_for_status()
    return response.json()


# --- Waiting --------------------------------------------------------------------------------------

def wait_for(find: Callable[[], T | None], what: str, timeout: float = 90, poll: float = 0.2,
             between: Callable[[], None] | None = None) -> T:
    """Poll `find` until it returns something truthy, calling `between` each round (send traffic)."""
    deadline = time.monotonic() + timeout
    while True:
        if between is not None:
            between()
        found = find()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened: {what}")
        time.sleep(poll)
