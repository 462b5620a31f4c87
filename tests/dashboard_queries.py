"""Read the generated dashboards the way Grafana does: panels, their queries, their variables.

Shared by the lint tests and the live test, so both look at exactly what Grafana would run: the
committed JSON, with template variables filled in as Grafana fills them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "dashboards"
GENERATED = SOURCES / "generated"
SOURCE_SUFFIX = ".dashboard.py"

# $name, ${name}, ${name:format} and the deprecated [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    dashboard: str  # file stem, e.g. "overview"
    panel: str  # panel title
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    format: str

    @property
    def key(self) -> str:
        """How the live test names a query in its list of rightly empty panels."""
        return f"{self.dashboard}/{self.panel}/{self.ref_id}"


def source_paths() -> list[Path]:
    return sorted(SOURCES.glob("*" + SOURCE_SUFFIX))


def generated_path(source: Path) -> Path:
    return GENERATED / (source.name[: -len(SOURCE_SUFFIX)] + ".json")


def load_dashboards() -> dict[str, dict]:
    """Every committed dashboard JSON by file stem."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(GENERATED.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboards: Mapping[str, dict]) -> list[PanelQuery]:
    return [
        PanelQuery(
            dashboard=name, panel=panel["title"], panel_type=panel["type"], ref_id=target["refId"],
            expr=target["expr"], instant=bool(target.get("instant")), format=target.get("format", ""),
        )
        for name, dashboard in dashboards.items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if not target.get("hide")
    ]


def annotation_queries(dashboards: Mapping[str, dict]) -> list[PanelQuery]:
    """Every Prometheus annotation query, as a PanelQuery named "annotation/<name>"."""
    return [
        PanelQuery(dashboard=name, panel="annotation", panel_type="annotation", ref_id=annotation["name"],
                   expr=annotation["expr"], instant=False, format="")
        for name, dashboard in dashboards.items()
        for annotation in dashboard.get("annotations", {}).get("list", [])
        if "expr" in annotation
    ]


def template_variables(dashboard: dict) -> list[dict]:
    return dashboard.get("templating", {}).get("list", [])


def variables_in(text: str) -> set[str]:
    return {next(group for group in match.groups() if group) for match in VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with every variable replaced by its value; an unknown variable raises KeyError."""

    def replace(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return VARIABLE.sub(replace, text)


def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana formats it for a Prometheus regex matcher."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def parse_label_values(query: str) -> tuple[str | None, str]:
    """label_values(selector, label) -> (selector or None, label)."""
    match = LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"not a label_values() query: {query}")
    return match.group("selector"), match.group("label")


# --- a little PromQL scanning, enough for the lint rules --------------------------------------

IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
RANGE_CALL = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|\w+_over_time)\(([^()]*)\)")
WINDOW = re.compile(r"\[([^\]]*)\]")


def strip_strings(expr: str) -> str:
    """`expr` with the contents of string literals blanked, positions kept."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]], int]]:
    """(metric name, {label: (operator, value)}, position) of every `name{...}` in `expr`."""
    found = []
    for match in SELECTOR.finditer(expr):
        matchers = {m.group(1): (m.group(2), m.group(3)) for m in MATCHER.finditer(match.group(2))}
        found.append((match.group(1), matchers, match.start()))
    return found


def identifiers(expr: str) -> list[tuple[str, int]]:
    """Every identifier outside string literals and `by (...)` / `on (...)` label lists."""
    code = strip_strings(expr)
    code = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", lambda m: " " * len(m.group()), code)
    return [(m.group(), m.start()) for m in IDENTIFIER.finditer(code)]


def enclosing_calls(expr: str, position: int) -> list[str]:
    """Function names of the calls around `position`, innermost first ("" for plain parentheses)."""
    code = strip_strings(expr)
    stack: list[str] = []
    for i, char in enumerate(code[:position]):
        if char == "(":
            name = re.search(r"([a-zA-Z_]\w*)\s*$", code[:i])
            stack.append(name.group(1) if name else "")
        elif char == ")":
            stack.pop()
    return stack[::-1]


def range_calls(expr: str) -> list[tuple[str, str]]:
    """(function, window) of every range-vector call, e.g. ("rate", "$__rate_interval")."""
    calls = []
    code = strip_strings(expr)
    for match in RANGE_CALL.finditer(code):
        argument = match.group(2).rstrip()
        if not argument.endswith("]"):
            calls.append((match.group(1), ""))
            continue
        start = match.start(2) + argument.rindex("[") + 1
        calls.append((match.group(1), expr[start : match.start(2) + len(argument) - 1]))
    return calls


def windows(expr: str) -> list[str]:
    """Every range or subquery window in `expr`."""
    code = strip_strings(expr)
    return [expr[m.start(1) : m.end(1)] for m in WINDOW.finditer(code)]
