"""Where the platform's files go: run ids made safe for folder names, and the per-run folder of a dataset in a
zone (`<zone>/<dataset>/run=<run>/`). The zones themselves are settings (`Settings.raw_dir`, `staged_dir`,
`quarantine_dir`, `integrated_dir`, `published_dir`, `reports_dir`). Core and connectors alike name their
folders through here, so a layout change is one edit. Also the atomic write of a small JSON file (a plan, a
report) that a reader must never see half written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


def safe_run_id(run_id: str) -> str:
    """A run id usable as a folder name (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def run_folder(zone_dir: str | Path, dataset: str, run_id: str) -> Path:
    """The folder of one run's output of `dataset` in a zone: `<zone>/<dataset>/run=<safe run id>`."""
    return Path(zone_dir) / dataset / f"run={safe_run_id(run_id)}"


def write_json(path: str | Path, value: Any, *, indent: int | None = None, sort_keys: bool = True) -> Path:
    """Write `value` as JSON (UTF-8) under a temporary name beside `path` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=indent, sort_keys=sort_keys, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path
