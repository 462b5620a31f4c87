"""Fixtures of the adversarial suite: the raw peers (one set per session) and the proxy under test
(one process per module, configured by the module's PROXY_OPTIONS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.harness import ProxyUnderTest, proxy_under_test
from tests.adversarial.peers import Peers, running_peers


@pytest.fixture(scope="session")
def peers() -> Iterator[Peers]:
    with running_peers() as found:
        yield found


@pytest.fixture(scope="module")
def proxy(peers: Peers, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyUnderTest]:
    options = getattr(request.module, "PROXY_OPTIONS", {})
    with proxy_under_test(peers, tmp_path_factory.mktemp("adversarial"), **options) as started:
        yield started
