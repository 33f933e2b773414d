"""Where the platform's files go: run ids made safe for folder names, and the per-run folder of a dataset in a
zone (`<zone>/<dataset>/run=<run>/`). The zones themselves are settings (`Settings.raw_dir`, `staged_dir`,
`quarantine_dir`, `integrated_dir`, `published_dir`, `reports_dir`). Core and connectors alike name their
folders through here, so a layout change is one edit."""

from __future__ import annotations

import re
from pathlib import Path


def safe_run_id(run_id: str) -> str:
    """A run id usable as a folder name (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def run_folder(zone_dir: str | Path, dataset: str, run_id: str) -> Path:
    """The folder of one run's output of `dataset` in a zone: `<zone>/<dataset>/run=<safe run id>`."""
    return Path(zone_dir) / dataset / f"run={safe_run_id(run_id)}"
