"""The project's own Python modules, by dotted name, for tests that read the code itself."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The product and the generators of its dashboards, alerts and Alertmanager config.
PACKAGES = ("exporter", "alerts", "dashboards", "alertmanager")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file of every module; grafanalib's *.dashboard.py sources are scripts, not modules."""
    return {
        module_name(path): path
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        if not path.name.endswith(".dashboard.py")
    }
