"""The run ledger's tables in schema `lienthong_ops`, their version and the numbered migrations between versions.

`schema_version` holds one row per migration applied (version, what it did, when). `ensure_ledger` brings a
warehouse to `LATEST_VERSION`: it reads the version (no lock when it is current, the common case), else takes
an advisory lock, reads it again and applies every pending migration in order, each recorded in
`schema_version`, all in the caller's transaction (like any DDL here: a failure leaves the old version).

Migration 1 is the bookkeeping DDL as it was before the ledger had a version (written with `IF NOT EXISTS`
throughout, `stage_run.started_at` added after the first release included), so it creates the tables in an
empty warehouse and adopts them in a warehouse made by earlier code: a warehouse with ledger tables but no
`schema_version` is at version 1 once its tables are checked to have every version-1 column. Later migrations
change the tables and carry their rows over (after dlt's versioned pipeline state: the stored version says
which steps are still to run; a version newer than the code knows is an error, not a guess).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

OPS_SCHEMA = "lienthong_ops"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


class LedgerVersionError(RuntimeError):
    """The warehouse's ledger cannot be brought to this code's version (newer, or not the tables expected)."""


_V1 = f"""
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
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.reconcile_run (
  run_id text PRIMARY KEY,
  started_at timestamptz NOT NULL,
  finished_at timestamptz,
  status text NOT NULL,
  counts jsonb,
  metrics jsonb,
  outputs jsonb
);
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

# The columns each table has at version 1: what a warehouse without `schema_version` is checked against.
V1_COLUMNS: dict[str, frozenset[str]] = {
    "watermark": frozenset({"source", "scope", "value", "run_id", "updated_at"}),
    "ingest_run": frozenset({"run_id", "source", "scope", "started_at", "finished_at", "status", "rows_landed", "pages",
                             "requests", "watermark_from", "watermark_to", "landing_path", "error"}),
    "stage_run": frozenset({"run_id", "dataset", "created_at", "raw_rows", "duplicates_removed", "rows_in", "rows_staged",
                            "rows_quarantined", "conservation_ok", "staged_path", "content_hash", "raw_runs",
                            "started_at"}),
    "quality_run": frozenset({"run_id", "dataset", "created_at", "suite", "success", "gate_passed", "evaluated",
                              "failed_critical", "failed_warning"}),
    "quality_result": frozenset({"run_id", "dataset", "rule", "expectation", "column_name", "severity", "success",
                                 "element_count", "unexpected_count", "unexpected_percent", "tolerance", "details"}),
    "publication": frozenset({"dataset", "version", "run_id", "content_hash", "row_count", "contract_version",
                              "table_name", "parquet_path", "status", "published_at"}),
    "reconcile_run": frozenset({"run_id", "started_at", "finished_at", "status", "counts", "metrics", "outputs"}),
    "audit_report": frozenset({"report_id", "run_id", "publish_run_id", "audit_run_id", "created_at", "folder",
                               "headline"}),
}

# stage_run.raw_runs held {"raw_runs": [ingest run ids], "quarantine_path": ..., "quarantine_by_rule": {rule: rows},
# "repairs": {tag: rows}, "findings": {tag: rows}}: each part gets a real column or a child table, rows copied.
_V2 = f"""
ALTER TABLE {OPS_SCHEMA}.stage_run ADD COLUMN quarantine_path text;
CREATE TABLE {OPS_SCHEMA}.stage_run_input (
  run_id text NOT NULL,
  dataset text NOT NULL,
  ingest_run_id text NOT NULL,
  PRIMARY KEY (run_id, dataset, ingest_run_id),
  FOREIGN KEY (run_id, dataset) REFERENCES {OPS_SCHEMA}.stage_run ON DELETE CASCADE
);
COMMENT ON TABLE {OPS_SCHEMA}.stage_run_input IS
  'The ingest runs (ingest_run.run_id) whose raw landings a staging run read';
CREATE TABLE {OPS_SCHEMA}.stage_run_reason (
  run_id text NOT NULL,
  dataset text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('quarantine', 'repair', 'finding')),
  reason text NOT NULL,
  rows bigint NOT NULL,
  PRIMARY KEY (run_id, dataset, kind, reason),
  FOREIGN KEY (run_id, dataset) REFERENCES {OPS_SCHEMA}.stage_run ON DELETE CASCADE
);
COMMENT ON TABLE {OPS_SCHEMA}.stage_run_reason IS
  'Rows of a staging run per reason: quarantined by rule, repaired, flagged by a standardization finding';
UPDATE {OPS_SCHEMA}.stage_run SET quarantine_path = raw_runs->>'quarantine_path'
  WHERE jsonb_typeof(raw_runs) = 'object';
INSERT INTO {OPS_SCHEMA}.stage_run_input (run_id, dataset, ingest_run_id)
  SELECT DISTINCT s.run_id, s.dataset, i.value
  FROM {OPS_SCHEMA}.stage_run s,
       jsonb_array_elements_text(CASE WHEN jsonb_typeof(s.raw_runs->'raw_runs') = 'array'
                                      THEN s.raw_runs->'raw_runs' ELSE '[]'::jsonb END) AS i(value);
INSERT INTO {OPS_SCHEMA}.stage_run_reason (run_id, dataset, kind, reason, rows)
  SELECT s.run_id, s.dataset, k.kind, e.key, e.value::bigint
  FROM {OPS_SCHEMA}.stage_run s
  CROSS JOIN (VALUES ('quarantine_by_rule', 'quarantine'), ('repairs', 'repair'), ('findings', 'finding')) AS k(field, kind)
  CROSS JOIN LATERAL jsonb_each_text(CASE WHEN jsonb_typeof(s.raw_runs->k.field) = 'object'
                                          THEN s.raw_runs->k.field ELSE '{{}}'::jsonb END) AS e(key, value);
ALTER TABLE {OPS_SCHEMA}.stage_run DROP COLUMN raw_runs;
"""

# The trained link models of a reconciliation run (saved beside its outputs): name -> path of Splink's JSON.
_V3 = f"""
ALTER TABLE {OPS_SCHEMA}.reconcile_run ADD COLUMN model_paths jsonb;
COMMENT ON COLUMN {OPS_SCHEMA}.reconcile_run.model_paths IS
  'Each trained link model of the run (Splink JSON saved beside its outputs): model name -> file path';
"""

# Staging merges the change into Delta tables: the landings each dataset has merged (its staged position), the
# rows of a change that changed nothing, and what kind of run it was.
_V4 = f"""
CREATE TABLE {OPS_SCHEMA}.stage_landing (
  dataset text NOT NULL,
  landing text NOT NULL,
  run_id text NOT NULL,
  PRIMARY KEY (dataset, landing)
);
COMMENT ON TABLE {OPS_SCHEMA}.stage_landing IS
  'The raw landings (folder relative to the raw zone) each dataset''s staged table has merged, and the run that did';
ALTER TABLE {OPS_SCHEMA}.stage_run ADD COLUMN rows_unchanged bigint NOT NULL DEFAULT 0;
ALTER TABLE {OPS_SCHEMA}.stage_run ADD COLUMN mode text NOT NULL DEFAULT 'full';
"""

# Link models are persisted and reused by every reconciliation until a retraining activates another one.
_V5 = f"""
CREATE TABLE {OPS_SCHEMA}.link_model (
  link_type text NOT NULL,
  model_id text NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'retired', 'candidate')),
  trained_run_id text NOT NULL,
  trained_at timestamptz NOT NULL DEFAULT now(),
  activated_at timestamptz,
  path text NOT NULL,
  sha256 text NOT NULL,
  summary jsonb,
  PRIMARY KEY (link_type, model_id)
);
CREATE UNIQUE INDEX link_model_one_active ON {OPS_SCHEMA}.link_model (link_type) WHERE status = 'active';
COMMENT ON TABLE {OPS_SCHEMA}.link_model IS
  'Persisted person-link models (Splink parameters and frozen name frequencies, files under path); one active per link type';
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "bookkeeping tables as before the ledger was versioned", _V1),
    Migration(2, "stage_run.raw_runs (jsonb) split into stage_run.quarantine_path, stage_run_input and "
                 "stage_run_reason", _V2),
    Migration(3, "reconcile_run.model_paths: the link models each reconciliation trained and saved", _V3),
    Migration(4, "stage_landing (the landings each staged table merged), stage_run.rows_unchanged and mode", _V4),
    Migration(5, "link_model: persisted link models, one active per link type", _V5),
)
LATEST_VERSION = MIGRATIONS[-1].version

LEDGER_TABLES = ("watermark", "ingest_run", "stage_run", "stage_run_input", "stage_run_reason", "stage_landing", "quality_run",
                 "quality_result", "reconcile_run", "link_model", "publication", "audit_report", "schema_version")
"""Every table of the ledger, all in `OPS_SCHEMA`, all read and written by `lienthong.runs` only."""

_VERSION_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.schema_version (
  version integer PRIMARY KEY,
  description text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
"""
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_ddl'))"  # the key the unversioned DDL took too


def ledger_version(conn) -> int:
    """The warehouse's ledger version: 0 without any ledger table, 1 for tables made before the ledger had a
    version (no `schema_version`), else the newest migration recorded. Reads only; creates nothing."""
    with conn.cursor() as cur:
        return _version(cur)[0]


def _version(cur) -> tuple[int, bool]:
    """(version, whether `schema_version` exists). Looked up with plain queries on the catalog, not
    `to_regclass`: its cached lookups can miss a table another session created while this one waited for the
    lock."""
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
                (OPS_SCHEMA, [*V1_COLUMNS, "schema_version"]))
    found = {r[0] for r in cur.fetchall()}
    if "schema_version" in found:
        cur.execute(f"SELECT coalesce(max(version), 0) FROM {OPS_SCHEMA}.schema_version")
        return int(cur.fetchone()[0]), True
    return (1 if found else 0), False


def ensure_ledger(conn) -> int:
    """Bring the ledger to `LATEST_VERSION` (safe to call concurrently; cheap when it is there already) and
    return the version. Runs in the caller's transaction and does not commit; on a connection in autocommit
    mode it runs in a transaction of its own. `LedgerVersionError` when the warehouse is newer than this code
    or its unversioned tables lack a version-1 column."""
    with conn.cursor() as cur:
        if _version(cur) == (LATEST_VERSION, True):
            return LATEST_VERSION
    autocommit = conn.autocommit
    if autocommit:
        conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(_LOCK)  # held to the end of the transaction: one migrator at a time
            _migrate(cur)
        if autocommit:
            conn.commit()
    except BaseException:
        if autocommit:
            conn.rollback()
        raise
    finally:
        if autocommit:
            conn.autocommit = True
    return LATEST_VERSION


def _migrate(cur) -> None:
    current, versioned = _version(cur)
    if current > LATEST_VERSION:
        raise LedgerVersionError(f"{OPS_SCHEMA} is at ledger version {current}, newer than this code's "
                                 f"{LATEST_VERSION}: run the newer platform release against this warehouse")
    if current == LATEST_VERSION and versioned:
        return  # migrated by another process while this one waited for the lock
    cur.execute(_VERSION_DDL)
    if not versioned:
        # version 0 (empty) or 1 (tables made by earlier code): migration 1 creates what is missing and keeps
        # what is there, which must then have every version-1 column.
        cur.execute(MIGRATIONS[0].sql)
        _check_v1_columns(cur)
        how = "adopted" if current == 1 else "created"
        cur.execute(f"INSERT INTO {OPS_SCHEMA}.schema_version (version, description) VALUES (1, %s)",
                    (f"{MIGRATIONS[0].description} ({how})",))
        current = 1
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        cur.execute(migration.sql)
        cur.execute(f"INSERT INTO {OPS_SCHEMA}.schema_version (version, description) VALUES (%s, %s)",
                    (migration.version, migration.description))
        log.info("ledger: %s migrated to version %d (%s)", OPS_SCHEMA, migration.version, migration.description)
        current = migration.version


def _check_v1_columns(cur) -> None:
    cur.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = ANY(%s)", (OPS_SCHEMA, list(V1_COLUMNS)))
    found: dict[str, set[str]] = {}
    for table, column in cur.fetchall():
        found.setdefault(table, set()).add(column)
    for table, expected in V1_COLUMNS.items():
        missing = sorted(expected - found.get(table, set()))
        if missing:
            raise LedgerVersionError(f"{OPS_SCHEMA}.{table} has no column(s) {missing}: not a bookkeeping table "
                                     "this platform made; move it aside or repair it before upgrading")
