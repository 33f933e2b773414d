"""Write an audit report: the self-contained HTML page, `figures.json` and one CSV per table, then record it.

Owns the report's layout (template `templates/report.html.j2`) and its files; the figures come from
`lienthong.audit.collect`, the plots from `lienthong.audit.plots`. A report is written into a temporary
folder and renamed into place, so a reader never sees half a report and a rerun replaces the old one.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from lienthong.audit import plots
from lienthong.audit.collect import collect, latest_run_id
from lienthong.audit.entity_runs import KINDS
from lienthong.audit.store import record_report, report_folder, report_id_for
from lienthong.cases import CASE_STATES
from lienthong.db import connect, warehouse_url
from lienthong.entities import EVENTS
from lienthong.private_files import writes_data_dir
from lienthong.settings import Settings, load_settings

log = logging.getLogger(__name__)

# The tables of figures.json exported as CSV (one file each), in the order the report shows them.
CSV_TABLES = ("quality_datasets", "quality", "conservation", "quarantine", "quarantine_examples", "findings",
              "findings_new", "findings_resolved", "cases", "case_ageing", "links", "accuracy", "publications", "grants", "reads", "trends", "entity_runs")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("lienthong.audit", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.2f} %"
    env.filters["num"] = lambda v: "–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.4g}")
    return env


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, list):
            out[k] = json.dumps(v, ensure_ascii=False)
        else:
            out[k] = v
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    flat = [_flat(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)


def render_html(figures: dict[str, Any], docs_prefix: str = "../../") -> str:
    """The report page; `docs_prefix` is the path from the report folder to the reports dir (Data Docs)."""
    t0 = time.monotonic()
    svgs = plots.all_plots(figures)
    html = _environment().get_template("report.html.j2").render(f=figures, plots=svgs, docs_prefix=docs_prefix,
                                                                  csv_tables=CSV_TABLES, entity_kinds=KINDS,
                                                                  entity_events=EVENTS, case_states=CASE_STATES)
    log.info("report page rendered: %d plots, %.1f kB, %.2f s", sum(1 for s in svgs.values() if s), len(html) / 1024,
             time.monotonic() - t0)
    return html


def write_report(figures: dict[str, Any], reports_dir: Path) -> Path:
    """Write the report's folder atomically; returns the folder."""
    folder = report_folder(reports_dir, report_id_for(figures["run_id"]))
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "csv").mkdir(parents=True)
    (tmp / "report.html").write_text(render_html(figures), encoding="utf-8")
    (tmp / "figures.json").write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    for name in CSV_TABLES:
        write_csv(figures.get(name) or [], tmp / "csv" / f"{name}.csv")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


@writes_data_dir
def build_report(run_id: str | None = None, *, publish_run_id: str | None = None, audit_run_id: str | None = None,
                 settings: Settings | None = None) -> dict[str, Any]:
    """Collect, write and record the report on integrate run `run_id` (default: the newest one)."""
    s = settings or load_settings()
    url = warehouse_url(s)
    run_id = run_id or latest_run_id(url)
    t0 = time.monotonic()
    figures = collect(run_id, s, publish_run_id=publish_run_id)
    folder = write_report(figures, s.reports_dir)
    with connect(url) as conn:
        record_report(conn, report_id=folder.name, run_id=run_id, publish_run_id=publish_run_id,
                      audit_run_id=audit_run_id, folder=folder, headline=figures["headline"])
    log.info("audit report for run %s written to %s in %.1f s", run_id, folder, time.monotonic() - t0)
    return {"report_id": folder.name, "run_id": run_id, "folder": str(folder), "html": str(folder / "report.html"),
            "headline": figures["headline"]}
