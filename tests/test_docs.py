"""The docs stay true to the code: every metric documented, the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import catalog
from exporter.families import API_NAMES

ROOT = Path(__file__).resolve().parent.parent


def test_every_catalog_metric_and_api_is_documented():
    text = (ROOT / "docs" / "metrics.md").read_text()
    for spec in catalog.CATALOG:
        assert f"`{spec.series}`" in text, spec.series
    for api in API_NAMES:
        assert f"`{api}`" in text, api


def test_readme_first_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    targets = re.findall(r"^make (\w+)", first_block, re.M)
    assert targets == ["run", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target
