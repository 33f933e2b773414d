"""Where audit reports are kept and how they are listed.

A report is one folder `<reports_dir>/audit/<report_id>/` holding `report.html` (self-contained, opens
offline), `figures.json` (every figure in the report) and `csv/<table>.csv` (the same figures, one file
per table), plus one row in `lienthong_ops.audit_report`. The report id is the id of the integrate run the
report is about (the run that staged, validated and reconciled), made safe for a folder name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psycopg2.extensions import connection
from psycopg2.extras import Json

from lienthong.ops import OPS_SCHEMA, ensure_ops_schema
from lienthong.paths import safe_run_id

AUDIT_DDL = f"""
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.audit_report (
  report_id text PRIMARY KEY,
  run_id text NOT NULL,
  publish_run_id text,
  audit_run_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  folder text NOT NULL,
  headline jsonb NOT NULL
);
"""
_COLUMNS = ("report_id", "run_id", "publish_run_id", "audit_run_id", "created_at", "folder", "headline")


def report_id_for(run_id: str) -> str:
    """A folder- and URL-safe id for the run (`manual__2026-11-22T10:00:00+00:00` -> `manual__2026-11-22T10_00_00_00_00`)."""
    return safe_run_id(run_id)


def report_folder(reports_dir: Path, report_id: str) -> Path:
    if report_id != report_id_for(report_id) or report_id in ("", ".", ".."):
        raise ValueError(f"not a report id: {report_id!r}")
    return Path(reports_dir) / "audit" / report_id


def ensure_audit_schema(conn: connection) -> None:
    """Create the report table if missing (in the caller's transaction)."""
    ensure_ops_schema(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_audit_ddl'))")
        cur.execute(AUDIT_DDL)


def record_report(conn: connection, *, report_id: str, run_id: str, publish_run_id: str | None,
                  audit_run_id: str | None, folder: Path, headline: dict[str, Any]) -> None:
    """Insert or replace the row of a report (a rerun of the same run replaces its report)."""
    ensure_audit_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {OPS_SCHEMA}.audit_report (report_id, run_id, publish_run_id, audit_run_id, folder, headline)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (report_id) DO UPDATE SET publish_run_id = EXCLUDED.publish_run_id,
                  audit_run_id = EXCLUDED.audit_run_id, created_at = now(), folder = EXCLUDED.folder,
                  headline = EXCLUDED.headline""",
            (report_id, run_id, publish_run_id, audit_run_id, str(folder), Json(headline)),
        )


def list_reports(conn: connection, limit: int = 200) -> list[dict[str, Any]]:
    """Reports, newest first."""
    ensure_audit_schema(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM {OPS_SCHEMA}.audit_report ORDER BY created_at DESC LIMIT %s",
                    (limit,))
        return [dict(zip(_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def get_report(conn: connection, report_id: str) -> dict[str, Any] | None:
    ensure_audit_schema(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM {OPS_SCHEMA}.audit_report WHERE report_id = %s", (report_id,))
        row = cur.fetchone()
    return dict(zip(_COLUMNS, row, strict=True)) if row else None
