"""`python -m alertmanager`: write alertmanager/alertmanager.yml from the routes as code."""

from __future__ import annotations

import sys
from pathlib import Path

from alerts import render

from alertmanager import routes
from alertmanager.config import DEFAULT, AlertmanagerConfig

ROOT = Path(__file__).resolve().parent
SOURCE = "python -m alertmanager"


def generated_files(cfg: AlertmanagerConfig = DEFAULT) -> dict[Path, str]:
    """Path -> text of every file the generator owns; the staleness test compares against this."""
    return {ROOT / "alertmanager.yml": render.dump(routes.alertmanager_config(cfg), SOURCE)}


if __name__ == "__main__":
    sys.exit(render.write_and_list(generated_files(), ROOT.parent))
