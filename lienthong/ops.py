"""The platform's own bookkeeping tables in the warehouse (schema `lienthong_ops`).

Owns their DDL: watermarks, ingestion runs, staging runs (with the conservation check), quality runs and
results, and publications. Created idempotently on first use.
"""

from __future__ import annotations

from psycopg2.extensions import connection

OPS_SCHEMA = "lienthong_ops"

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.watermark (
  source text NOT NULL,
  scope text NOT NULL DEFAULT '',
  value text NOT NULL,
  run_id text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source, scope)
);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.ingest_run (
  run_id text NOT NULL,
  source text NOT NULL,
  scope text NOT NULL DEFAULT '',
  started_at timestamptz NOT NULL,
  finished_at timestamptz,
  status text NOT NULL,
  rows_landed bigint,
  pages bigint,
  requests bigint,
  watermark_from text,
  watermark_to text,
  landing_path text,
  error text,
  PRIMARY KEY (run_id, source, scope)
);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.stage_run (
  run_id text NOT NULL,
  dataset text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  raw_rows bigint NOT NULL,
  duplicates_removed bigint NOT NULL,
  rows_in bigint NOT NULL,
  rows_staged bigint NOT NULL,
  rows_quarantined bigint NOT NULL,
  conservation_ok boolean NOT NULL,
  staged_path text,
  content_hash text,
  raw_runs jsonb,
  PRIMARY KEY (run_id, dataset)
);
-- added after the first release: when staging started (run durations in the audit report)
ALTER TABLE {OPS_SCHEMA}.stage_run ADD COLUMN IF NOT EXISTS started_at timestamptz;
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.quality_run (
  run_id text NOT NULL,
  dataset text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  suite text NOT NULL,
  success boolean NOT NULL,
  gate_passed boolean NOT NULL,
  evaluated bigint NOT NULL,
  failed_critical bigint NOT NULL,
  failed_warning bigint NOT NULL,
  PRIMARY KEY (run_id, dataset)
);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.quality_result (
  run_id text NOT NULL,
  dataset text NOT NULL,
  rule text NOT NULL,
  expectation text NOT NULL,
  column_name text,
  severity text NOT NULL,
  success boolean NOT NULL,
  element_count bigint,
  unexpected_count bigint,
  unexpected_percent double precision,
  tolerance text,
  details jsonb,
  PRIMARY KEY (run_id, dataset, rule)
);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.publication (
  dataset text NOT NULL,
  version integer NOT NULL,
  run_id text NOT NULL,
  content_hash text NOT NULL,
  row_count bigint NOT NULL,
  contract_version text NOT NULL,
  table_name text NOT NULL,
  parquet_path text NOT NULL,
  status text NOT NULL,
  published_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (dataset, version)
);
"""


def ensure_ops_schema(conn: connection) -> None:
    """Create the bookkeeping schema and tables if they are missing (safe to call concurrently)."""
    with conn.cursor() as cur:
        # An advisory lock serialises concurrent first runs (CREATE ... IF NOT EXISTS can still race).
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_ddl'))")
        cur.execute(DDL)
