"""The run ledger: what every pipeline run did, in the warehouse schema `lienthong_ops`.

Owns the tables of watermarks and of ingestion, staging (with its inputs and rows per reason), quality,
reconciliation, publication and audit-report runs; their schema version and numbered migrations
(`lienthong.runs.schema`); one frozen record per kind of run (`lienthong.runs.records`); and every statement
that writes or reads them (`lienthong.runs.ledger`). No other module names these tables in SQL.

The findings tables stay with `lienthong.findings`, the single window's access log with
`lienthong.singlewindow.audit`, the agency access schema with `lienthong.access`.
"""

from __future__ import annotations

from lienthong.runs.ledger import (
    Ledger,
    active_link_model,
    advance_watermarks,
    audit_report,
    audit_reports,
    expire_publication,
    forget_watermarks,
    ingest_runs,
    ingest_totals,
    integrate_run_totals,
    last_publication,
    last_validated_staged_path,
    latest_quality_runs,
    latest_reconcile_run,
    latest_stage_run,
    latest_stage_runs,
    latest_staged_run_id,
    link_models,
    newest_publication_sql,
    publications,
    publications_after_staging,
    publications_since_sql,
    published_datasets,
    quality_run,
    quality_runs,
    reconcile_run,
    record_audit_report,
    record_ingest_run,
    record_link_model,
    record_publication,
    record_quality_run,
    record_quarantine_moved,
    record_reconcile_run,
    record_stage_run,
    record_staged_landings,
    rule_pass_counts,
    sources_read_at,
    stage_run,
    stage_run_ingests,
    stage_runs,
    staged_landings,
    unfinished_reconcile_runs,
    watermark,
)
from lienthong.runs.records import (
    AuditReport,
    IngestRun,
    LinkModelRecord,
    Publication,
    QualityRun,
    ReconcileRun,
    RuleResult,
    StageRun,
)
from lienthong.runs.schema import (
    LATEST_VERSION,
    LEDGER_TABLES,
    MIGRATIONS,
    OPS_SCHEMA,
    LedgerVersionError,
    ensure_ledger,
    ledger_version,
)

__all__ = [
    "LATEST_VERSION", "LEDGER_TABLES", "MIGRATIONS", "OPS_SCHEMA", "AuditReport", "IngestRun", "Ledger", "LinkModelRecord",
    "LedgerVersionError", "Publication", "QualityRun", "ReconcileRun", "RuleResult", "StageRun",
    "active_link_model", "advance_watermarks", "link_models", "record_link_model", "unfinished_reconcile_runs", "audit_report", "audit_reports", "ensure_ledger", "expire_publication",
    "forget_watermarks", "ingest_runs", "ingest_totals", "integrate_run_totals", "last_publication", "newest_publication_sql", "publications_since_sql", "last_validated_staged_path",
    "latest_quality_runs", "latest_reconcile_run", "latest_stage_run", "latest_stage_runs", "latest_staged_run_id",
    "ledger_version", "publications", "publications_after_staging", "published_datasets", "quality_run",
    "quality_runs", "reconcile_run", "record_audit_report", "record_ingest_run", "record_publication",
    "record_quality_run", "record_quarantine_moved", "record_reconcile_run", "record_stage_run", "record_staged_landings", "rule_pass_counts", "sources_read_at",
    "stage_run", "stage_run_ingests", "stage_runs", "staged_landings", "watermark",
]
