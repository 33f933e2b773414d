"""Where audit reports are kept and how they are listed.

A report is one folder `<reports_dir>/audit/<report_id>/` holding `report.html` (self-contained, opens
offline), `figures.json` (every figure in the report) and `csv/<table>.csv` (the same figures, one file
per table), plus one row in `lienthong_ops.audit_report`. The report id is the id of the integrate run the
report is about (the run that staged, validated and reconciled), made safe for a folder name. The row is
the run ledger's (`lienthong.runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psycopg2.extensions import connection

from lienthong import runs
from lienthong.paths import safe_run_id


def report_id_for(run_id: str) -> str:
    """A folder- and URL-safe id for the run (`manual__2026-11-22T10:00:00+00:00` -> `manual__2026-11-22T10_00_00_00_00`)."""
    return safe_run_id(run_id)


def report_folder(reports_dir: Path, report_id: str) -> Path:
    if report_id != report_id_for(report_id) or report_id in ("", ".", ".."):
        raise ValueError(f"not a report id: {report_id!r}")
    return Path(reports_dir) / "audit" / report_id


def record_report(conn: connection, *, report_id: str, run_id: str, publish_run_id: str | None,
                  audit_run_id: str | None, folder: Path, headline: dict[str, Any]) -> None:
    """Insert or replace the row of a report (a rerun of the same run replaces its report), in the caller's
    transaction."""
    runs.record_audit_report(conn, runs.AuditReport(report_id, run_id, publish_run_id, audit_run_id, str(folder),
                                                    headline))


def list_reports(conn: connection, limit: int = 200) -> list[dict[str, Any]]:
    """Reports, newest first (every column of the report's row)."""
    return [r.as_dict() for r in runs.audit_reports(conn, limit)]


def get_report(conn: connection, report_id: str) -> dict[str, Any] | None:
    report = runs.audit_report(conn, report_id)
    return report.as_dict() if report else None
