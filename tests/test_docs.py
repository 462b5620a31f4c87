"""The docs stay true to the code: every metric documented, the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import catalog
from exporter.families import API_NAMES
from tests.sources import PACKAGES

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


def _layout_sections() -> dict[str, str]:
    """The README's Layout block by top-level entry ("exporter/" -> its text, continuation lines too)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n\n```\n(.*?)```", readme, re.S).group(1)
    sections: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        if line and not line[0].isspace():
            name, _, line = line.partition(" ")
        sections[name] = sections.get(name, "") + " " + line
    return sections


def test_readme_layout_names_every_module_and_package():
    sections = _layout_sections()
    for package in PACKAGES + ("tests",):
        text = sections[package + "/"]
        for path in sorted((ROOT / package).rglob("*.py")):
            inner = path.relative_to(ROOT / package)
            if path.name == "__init__.py" and len(inner.parts) == 1:
                continue  # the package itself
            if package == "tests" and (path.name.startswith("test_") or path.name == "conftest.py"):
                continue  # tests/ names its support modules
            if path.name.endswith(".dashboard.py"):
                assert "*.dashboard.py" in text
                continue
            shown = f"{inner.parts[-2]}/" if path.name == "__init__.py" else path.name
            assert re.search(rf"(?<![\w.]){re.escape(shown)}", text), f"README layout: {package}/{inner}"
