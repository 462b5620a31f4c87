"""Shared fixtures: the demo upstream and the exporter, both real apps under uvicorn."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator

import pytest

from exporter.app import create_app
from exporter.config import Settings, load_settings
from exporter.demo.upstream import create_app as create_demo_upstream
from tests.servers import serve

DEFAULT_DB_PATH = Settings.__dataclass_fields__["db_path"].default


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    """The demo upstream with pacing off: instant, deterministic answers in every wire format."""
    with serve(create_demo_upstream(pacing=False)) as url:
        yield url


@contextlib.contextmanager
def running_exporter(settings: Settings, observers=None) -> Iterator[str]:
    """The exporter under uvicorn as `llm-exporter serve` runs it; yields its base URL.

    Settings with the default database path get a request log of their own in a temporary
    directory, so tests neither share rows nor leave llm-exporter.db in the working directory.
    """
    with contextlib.ExitStack() as stack:
        if settings.db_path == DEFAULT_DB_PATH:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-exporter-test-"))
            settings = dataclasses.replace(settings, db_path=os.path.join(directory, "llm-exporter.db"))
        url = stack.enter_context(serve(create_app(settings, observers), server_header=False, date_header=False))
        yield url


@pytest.fixture
def exporter_url(upstream_url: str) -> Iterator[str]:
    """A fresh exporter (fresh metrics) in front of the demo upstream, as `--upstream URL` sets up."""
    with running_exporter(load_settings(upstream_url=upstream_url)) as url:
        yield url
