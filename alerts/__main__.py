"""`python -m alerts`: write the rule files and their promtool unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

from alerts import render, rules, unittests
from alerts.config import DEFAULT, AlertsConfig

ROOT = Path(__file__).resolve().parent
GENERATED = ROOT / "generated"
TESTS = ROOT / "tests"
SOURCE = "python -m alerts"


def generated_files(cfg: AlertsConfig = DEFAULT) -> dict[Path, str]:
    """Path -> text of every file the generator owns; the staleness test compares against this."""
    files = {GENERATED / name: render.dump(content, SOURCE)
             for name, content in rules.rule_files(cfg).items()}
    files.update({TESTS / name: render.dump(content, SOURCE)
                  for name, content in unittests.test_files(cfg).items()})
    return files


if __name__ == "__main__":
    sys.exit(render.write_and_list(generated_files(), ROOT.parent))
