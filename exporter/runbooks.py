"""GET /runbooks: docs/runbooks.md as a web page, so the alerts' runbook links resolve in a local
stack (alerts/config.py `runbook_base_url` points here by default).

docs/runbooks.md is the one source; the package ships it as exporter/data/runbooks.md, a symlink
that setuptools resolves into the wheel. The page needs only the Markdown the runbooks use:
headings (with the anchors GitHub gives them, which the alerts link to), paragraphs, lists with
indented continuation lines, **bold** and `code`. Everything else is shown as text.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")
_ITEM = re.compile(r"^(?:- |\d+\. )")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _inline(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, bold = match.groups()
        out.append(f"<code>{html.escape(code)}</code>" if code is not None else f"<strong>{_inline(bold)}</strong>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def to_html(markdown: str) -> str:
    """The runbooks' Markdown subset as an HTML page."""
    body: list[str] = []
    block: list[str] = []  # lines of the current paragraph or list item
    list_tag: str | None = None

    def flush_block() -> None:
        if block:
            text = _inline(" ".join(line.strip() for line in block))
            body.append(f"<li>{text}</li>" if list_tag else f"<p>{text}</p>")
            block.clear()

    def close_list() -> None:
        nonlocal list_tag
        flush_block()
        if list_tag:
            body.append(f"</{list_tag}>")
            list_tag = None

    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        if heading:
            close_list()
            level, title = len(heading[1]), heading[2]
            body.append(f'<h{level} id="{github_anchor(title)}">{_inline(title)}</h{level}>')
        elif not line.strip():
            close_list()
        elif _ITEM.match(line):
            tag = "ul" if line.startswith("- ") else "ol"
            if list_tag != tag:
                close_list()
                body.append(f"<{tag}>")
                list_tag = tag
            flush_block()
            block.append(_ITEM.sub("", line))
        elif list_tag and not line.startswith(" "):
            close_list()
            block.append(line)
        else:
            block.append(line)
    close_list()
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>llm-exporter runbooks</title>"
            "<style>body{font-family:sans-serif;max-width:50em;margin:auto;line-height:1.4}"
            "code{background:#eee;padding:0 .2em}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


@cache
def page() -> str | None:
    """The rendered page, or None when the installation lacks the file."""
    try:
        text = resources.files("exporter").joinpath("data/runbooks.md").read_text(encoding="utf-8")
    except OSError:
        return None
    return to_html(text)


async def runbooks(request: Request) -> Response:
    rendered = page()
    if rendered is None:
        return PlainTextResponse("runbooks.md is not part of this installation", status_code=404)
    return HTMLResponse(rendered)
