"""Shared fixtures: the demo upstream and the exporter, both real apps under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.config import load_settings
from exporter.demo.upstream import create_app as create_demo_upstream
from tests.servers import running_exporter, serve


@pytest.fixture(scope="session")
def upstream_url() -> Iterator[str]:
    """The demo upstream with pacing off: instant, deterministic answers in every wire format."""
    with serve(create_demo_upstream(pacing=False)) as url:
        yield url


@pytest.fixture
def exporter_url(upstream_url: str) -> Iterator[str]:
    """A fresh exporter (fresh metrics) in front of the demo upstream, as `--upstream URL` sets up."""
    with running_exporter(load_settings(upstream_url=upstream_url)) as url:
        yield url
