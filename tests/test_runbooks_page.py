"""GET /runbooks: the exporter serves docs/runbooks.md, so every alert's runbook link resolves in a
local stack, anchors included."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from hypothesis import given
from hypothesis import strategies as st

from alerts import rules
from alerts.config import DEFAULT
from alerts.runbooks import runbook_url
from exporter import runbooks

REPO = Path(__file__).resolve().parent.parent


def alert_names() -> set[str]:
    return {rule["alert"] for group in rules.alert_groups(DEFAULT) for rule in group["rules"]}


def test_the_package_ships_docs_runbooks_md_itself():
    """One source: the package's copy is a link to the docs, resolved into the wheel."""
    shipped = REPO / "exporter" / "data" / "runbooks.md"
    assert shipped.is_symlink() and shipped.resolve() == (REPO / "docs" / "runbooks.md").resolve()


def test_every_runbook_link_resolves_on_the_running_exporter(exporter_url: str):
    response = httpx.get(f"{exporter_url}/runbooks", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    ids = set(re.findall(r'<h2 id="([^"]+)">', response.text))
    for name in alert_names():
        url = runbook_url(DEFAULT, name)
        assert url.startswith(DEFAULT.runbook_base_url + "#")
        assert url.partition("#")[2] in ids, name
    assert DEFAULT.runbook_base_url == "http://127.0.0.1:8080/runbooks"  # the exporter's default address


def test_the_page_renders_the_markdown_the_runbooks_use():
    page = runbooks.to_html(
        "# Runbooks\n\nText with `code <b>` and **bold**.\n\n## LLMUpstreamDown\n\n"
        "**What to do.**\n1. First step\n   continues here.\n2. Second\n- item\n\nAfter <script>.\n")
    assert '<h1 id="runbooks">Runbooks</h1>' in page
    assert '<h2 id="llmupstreamdown">LLMUpstreamDown</h2>' in page
    assert "<code>code &lt;b&gt;</code>" in page and "<strong>bold</strong>" in page
    assert "<ol>\n<li>First step continues here.</li>\n<li>Second</li>\n</ol>\n<ul>\n<li>item</li>\n</ul>" in page
    assert "<p>After &lt;script&gt;.</p>" in page


@given(st.text(alphabet=st.sampled_from(list("<>&\"'`*#- 1.\nab")), max_size=200))
def test_no_markup_gets_through_from_the_markdown(text: str):
    """Whatever the file holds, the page's only tags are the renderer's own."""
    page = runbooks.to_html(text)
    body = page.split("<body>\n", 1)[1]
    tags = set(re.findall(r"</?([a-z0-9]+)", body))
    assert tags <= {"h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "li", "code", "strong", "body", "html"}
    assert "<script" not in body and "<b>" not in body
