"""The run ledger (`lienthong.runs`) on a real PostgreSQL: a warehouse made by the platform before the ledger had
a version is upgraded with its history kept, every migration runs once, and the state changes that belong
together (watermarks + the ingest run's success; a findings sync + the reconcile run's record) are one
transaction each."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from connectors.base.state import IngestOutcome
from lienthong import runs
from lienthong.db import connect, ensure_database, warehouse_url
from lienthong.findings import Finding, ensure_findings_schema, sync_findings

pytestmark = pytest.mark.integration

BEFORE_LEDGER_DDL = Path(__file__).parent / "fixtures" / "ops_ddl_before_ledger.sql"
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A database of its own on the session's warehouse server."""
    return ensure_database(warehouse_url(), "ledger_test_" + tmp_path.name.replace("-", "_")[-20:].lower())


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def execute(url: str, sql: str, params: tuple = ()) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


STAGE_DETAILS = {
    "raw_runs": ["r1", "r2"],
    "quarantine_path": "/data/quarantine/citizen/run=i1/quarantine.parquet",
    "quarantine_by_rule": {"invalid:citizen_id:invalidValues:pattern": 7, "expectation:citizen_id_unique": 2},
    "repairs": {"residence_commune_code_2025:commune_code_outdated": 11},
    "findings": {"name_spacing": 3},
}


def build_warehouse_before_ledger(url: str) -> None:
    """The bookkeeping tables exactly as the platform made them before the ledger, with some history."""
    execute(url, BEFORE_LEDGER_DDL.read_text(encoding="utf-8"))
    execute(url, """
        INSERT INTO lienthong_ops.watermark (source, scope, value, run_id) VALUES
          ('population_registry', '', '2026-11-19T10:00:00Z', 'r2'),
          ('land_registry', '31/thua_dat', '{"ts":"2026-11-19T09:00:00.000000Z","id":42}', 'r2');
        INSERT INTO lienthong_ops.ingest_run (run_id, source, scope, started_at, finished_at, status, rows_landed,
                                              pages, watermark_from, watermark_to, landing_path) VALUES
          ('r1', 'population_registry', '', '2026-11-18T10:00:00Z', '2026-11-18T10:05:00Z', 'success', 300, 3,
           '1970-01-01T00:00:00Z', '2026-11-18T09:00:00Z', '/raw/population/r1'),
          ('r2', 'population_registry', '', '2026-11-19T10:00:00Z', '2026-11-19T10:04:00Z', 'success', 5, 1,
           '2026-11-18T09:00:00Z', '2026-11-19T10:00:00Z', '/raw/population/r2');
        INSERT INTO lienthong_ops.ingest_run (run_id, source, scope, started_at, status, error) VALUES
          ('r3', 'population_registry', '', '2026-11-20T10:00:00Z', 'failed', 'OSError: disk full');
        INSERT INTO lienthong_ops.quality_run (run_id, dataset, suite, success, gate_passed, evaluated,
                                               failed_critical, failed_warning) VALUES
          ('i1', 'citizen', 'citizen@1.0.0', false, true, 12, 0, 1);
        INSERT INTO lienthong_ops.quality_result (run_id, dataset, rule, expectation, column_name, severity,
                                                  success, element_count, unexpected_count, unexpected_percent,
                                                  tolerance, details) VALUES
          ('i1', 'citizen', 'citizen_id_unique', 'expect_column_values_to_be_unique', 'citizen_id', 'critical',
           true, 300, 0, 0.0, '0', '{"unexpected_staged": 0}');
        INSERT INTO lienthong_ops.publication (dataset, version, run_id, content_hash, row_count, contract_version,
                                               table_name, parquet_path, status) VALUES
          ('citizen_profile', 1, 'p1', 'abc', 300, '1.0.0', 'citizen_profile__v000001', '/published/v1', 'expired'),
          ('citizen_profile', 2, 'p2', 'def', 305, '1.0.0', 'citizen_profile__v000002', '/published/v2', 'published');
        INSERT INTO lienthong_ops.reconcile_run (run_id, started_at, finished_at, status, counts, metrics, outputs)
          VALUES ('i1', '2026-11-19T11:00:00Z', '2026-11-19T11:03:00Z', 'success', '{"person_master": 300}',
                  '{"links": {"holder_citizen": {"accepted": 10}}}', '{"person_master": {"rows": 300}}');
        INSERT INTO lienthong_ops.audit_report (report_id, run_id, publish_run_id, audit_run_id, folder, headline)
          VALUES ('i1', 'i1', 'p2', 'a1', '/reports/audit/i1', '{"gate_passed": true}');
        INSERT INTO lienthong_ops.finding (finding_id, type, severity, agency, subject, evidence, status,
                                           first_seen_run, first_seen_at, last_seen_run, last_seen_at) VALUES
          ('duplicate_records:0011', 'duplicate_records', 'medium', 'population_registry', '{"citizen_id": "1"}',
           '{}', 'open', 'i1', '2026-11-19T11:03:00Z', 'i1', '2026-11-19T11:03:00Z');
    """)
    execute(url, """INSERT INTO lienthong_ops.stage_run (run_id, dataset, raw_rows, duplicates_removed, rows_in,
                        rows_staged, rows_quarantined, conservation_ok, staged_path, content_hash, raw_runs, started_at)
                    VALUES ('i1', 'citizen', 320, 20, 300, 291, 9, true, '/staged/citizen/run=i1/citizen.parquet',
                            'h1', %s, '2026-11-19T10:30:00Z'),
                           ('i1', 'enterprise', 40, 0, 40, 40, 0, true, '/staged/enterprise/run=i1/e.parquet',
                            'h2', NULL, NULL)""",
            (json.dumps(STAGE_DETAILS),))


LEDGER_V1_TABLES = ("watermark", "ingest_run", "stage_run", "quality_run", "quality_result", "publication",
                    "reconcile_run", "audit_report")


def snapshot(url: str, *, stage_columns: str) -> dict[str, list[tuple]]:
    """Every row of the ledger's version-1 tables and the findings (stage_run and reconcile_run: the columns every
    version has)."""
    out = {}
    for table in (*LEDGER_V1_TABLES, "finding"):
        columns = {"stage_run": stage_columns, "reconcile_run": RECONCILE_COMMON}.get(table, "*")
        out[table] = query(url, f"SELECT {columns} FROM lienthong_ops.{table} ORDER BY 1, 2")
    return out


RECONCILE_COMMON = "run_id, started_at, finished_at, status, counts, metrics, outputs"
STAGE_COMMON = ("run_id, dataset, created_at, raw_rows, duplicates_removed, rows_in, rows_staged, rows_quarantined, "
                "conservation_ok, staged_path, content_hash, started_at")


def test_a_warehouse_made_before_the_ledger_is_upgraded_with_its_history_kept(url):
    build_warehouse_before_ledger(url)
    before = snapshot(url, stage_columns=STAGE_COMMON)
    with connect(url) as conn:
        assert runs.ledger_version(conn) == 1, "tables without schema_version: version 1"
        assert runs.ensure_ledger(conn) == runs.LATEST_VERSION
    with connect(url) as conn:
        assert runs.ledger_version(conn) == runs.LATEST_VERSION
    assert [v for v, in query(url, "SELECT version FROM lienthong_ops.schema_version ORDER BY 1")] == \
        [m.version for m in runs.MIGRATIONS]
    assert "adopted" in query(url, "SELECT description FROM lienthong_ops.schema_version WHERE version = 1")[0][0]
    assert snapshot(url, stage_columns=STAGE_COMMON) == before, "every old row is still there, unchanged"
    # version 3: reconciliations before it trained models nobody recorded
    assert query(url, "SELECT count(*) FROM lienthong_ops.reconcile_run WHERE model_paths IS NOT NULL") == [(0,)]

    # what stage_run.raw_runs held is in real columns and tables now
    assert not query(url, """SELECT 1 FROM information_schema.columns WHERE table_schema = 'lienthong_ops'
                             AND table_name = 'stage_run' AND column_name = 'raw_runs'""")
    with connect(url) as conn:
        citizen = runs.stage_run(conn, "i1", "citizen")
        enterprise = runs.stage_run(conn, "i1", "enterprise")
        assert citizen is not None and enterprise is not None
        assert citizen.inputs == ("r1", "r2")
        assert citizen.quarantine_path == STAGE_DETAILS["quarantine_path"]
        assert dict(citizen.quarantine_by_rule) == STAGE_DETAILS["quarantine_by_rule"]
        assert dict(citizen.repairs) == STAGE_DETAILS["repairs"]
        assert dict(citizen.findings) == STAGE_DETAILS["findings"]
        assert (citizen.rows_in, citizen.rows_staged, citizen.rows_quarantined) == (300, 291, 9)
        assert enterprise.inputs == () and enterprise.quarantine_path is None and not enterprise.quarantine_by_rule
        # and the ingest runs a staging run read are found through them
        assert [r.run_id for r in runs.stage_run_ingests(conn, "i1", "citizen", "population_registry")] == ["r1", "r2"]
        assert runs.watermark(conn, "land_registry", "31/thua_dat") == '{"ts":"2026-11-19T09:00:00.000000Z","id":42}'
        assert runs.last_publication(conn, "citizen_profile").version == 2
        assert runs.reconcile_run(conn, "i1").metrics == {"links": {"holder_citizen": {"accepted": 10}}}
        assert runs.audit_report(conn, "i1").headline == {"gate_passed": True}


def test_upgrading_again_is_a_no_op(url):
    build_warehouse_before_ledger(url)
    with connect(url) as conn:
        runs.ensure_ledger(conn)
    versions = query(url, "SELECT version, description, applied_at FROM lienthong_ops.schema_version ORDER BY 1")
    after = snapshot(url, stage_columns="*")
    children = query(url, "SELECT * FROM lienthong_ops.stage_run_input ORDER BY 1, 2, 3")
    reasons = query(url, "SELECT * FROM lienthong_ops.stage_run_reason ORDER BY 1, 2, 3, 4")
    with connect(url) as conn:
        assert runs.ensure_ledger(conn) == runs.LATEST_VERSION
    assert query(url, "SELECT version, description, applied_at FROM lienthong_ops.schema_version ORDER BY 1") == versions
    assert snapshot(url, stage_columns="*") == after
    assert query(url, "SELECT * FROM lienthong_ops.stage_run_input ORDER BY 1, 2, 3") == children
    assert query(url, "SELECT * FROM lienthong_ops.stage_run_reason ORDER BY 1, 2, 3, 4") == reasons


def test_a_first_release_warehouse_without_stage_run_started_at_gets_the_column(url):
    ddl = BEFORE_LEDGER_DDL.read_text(encoding="utf-8")
    alter = "ALTER TABLE lienthong_ops.stage_run ADD COLUMN IF NOT EXISTS started_at timestamptz;"
    assert alter in ddl
    execute(url, ddl.replace(alter, ""))
    with connect(url) as conn:
        runs.ensure_ledger(conn)
    assert query(url, """SELECT 1 FROM information_schema.columns WHERE table_schema = 'lienthong_ops'
                         AND table_name = 'stage_run' AND column_name = 'started_at'""")


def test_an_empty_warehouse_gets_every_table_and_concurrent_first_runs_agree(url):
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            with connect(url) as conn:
                runs.ensure_ledger(conn)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tables = {t for t, in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'lienthong_ops'")}
    assert set(runs.LEDGER_TABLES) <= tables
    assert query(url, "SELECT version FROM lienthong_ops.schema_version ORDER BY 1") == \
        [(m.version,) for m in runs.MIGRATIONS]
    assert "created" in query(url, "SELECT description FROM lienthong_ops.schema_version WHERE version = 1")[0][0]


def test_a_warehouse_newer_than_the_code_is_refused_not_guessed(url):
    with connect(url) as conn:
        runs.ensure_ledger(conn)
    execute(url, "INSERT INTO lienthong_ops.schema_version (version, description) VALUES (%s, 'from the future')",
            (runs.LATEST_VERSION + 1,))
    with pytest.raises(runs.LedgerVersionError, match=rf"ledger version {runs.LATEST_VERSION + 1}, newer than"), \
            connect(url) as conn:
        runs.ensure_ledger(conn)


def test_an_unversioned_table_lacking_a_version_1_column_is_refused_by_name(url):
    execute(url, "CREATE SCHEMA lienthong_ops; CREATE TABLE lienthong_ops.watermark (source text, value text)")
    with pytest.raises(runs.LedgerVersionError, match=r"lienthong_ops\.watermark has no column\(s\) \['run_id', 'scope'"), \
            connect(url) as conn:
        runs.ensure_ledger(conn)
    assert not query(url, "SELECT to_regclass('lienthong_ops.schema_version')")[0][0], "nothing was half-migrated"


# --- one transaction for what belongs together ------------------------------------------------------------

def refuse(url: str, table: str, condition: str) -> None:
    """A trigger that fails any write to `table` whose new row matches `condition` (a fault between two writes
    of one transaction)."""
    execute(url, f"""
        CREATE FUNCTION lienthong_ops.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON lienthong_ops.{table}
          FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION lienthong_ops.refuse();""")


def test_a_failure_after_the_watermark_moved_leaves_watermark_and_run_as_they_were(url):
    ledger = runs.Ledger(url)
    ledger.ingest_succeeded("r1", "land_registry", T0, [IngestOutcome("31/thua_dat", 10, 1, None, "m1", "/raw/1")])
    marks = {"31/thua_dat": "m1", "31/chu_su_dung": None}
    ledger.ingest_started("r2", "land_registry", marks, T0 + timedelta(hours=1))
    refuse(url, "ingest_run", "NEW.status = 'success'")  # the success mark is written after the watermarks
    outcomes = [IngestOutcome("31/thua_dat", 5, 1, "m1", "m2", "/raw/2a"),
                IngestOutcome("31/chu_su_dung", 3, 1, None, "n2", "/raw/2b")]
    with pytest.raises(psycopg2.errors.RaiseException, match="refused by the test"):
        ledger.ingest_succeeded("r2", "land_registry", T0 + timedelta(hours=1), outcomes)
    assert ledger.watermark("land_registry", "31/thua_dat") == "m1", "the watermark did not move"
    assert ledger.watermark("land_registry", "31/chu_su_dung") is None
    assert query(url, "SELECT scope, status FROM lienthong_ops.ingest_run WHERE run_id = 'r2' ORDER BY 1") == \
        [("31/chu_su_dung", "running"), ("31/thua_dat", "running")]


def test_watermarks_and_the_success_mark_move_together(url):
    ledger = runs.Ledger(url)
    marks = {"31/thua_dat": None, "31/chu_su_dung": None, "31/giay_chung_nhan": None}
    ledger.ingest_started("r1", "land_registry", marks, T0)
    ledger.ingest_succeeded("r1", "land_registry", T0, [
        IngestOutcome("31/thua_dat", 5, 1, None, "a", "/raw/a"),
        IngestOutcome("31/chu_su_dung", 0, 0, None, None, "/raw/b"),  # nothing ever landed: no watermark
        IngestOutcome("31/giay_chung_nhan", 2, 1, None, "c", "/raw/c"),
    ])
    assert {s: ledger.watermark("land_registry", s) for s in marks} == \
        {"31/thua_dat": "a", "31/chu_su_dung": None, "31/giay_chung_nhan": "c"}
    with connect(url) as conn:
        recorded = runs.ingest_runs(conn, ["r1"])
    assert {(r.scope, r.status, r.rows_landed, r.watermark_to) for r in recorded} == {
        ("31/thua_dat", "success", 5, "a"), ("31/chu_su_dung", "success", 0, None),
        ("31/giay_chung_nhan", "success", 2, "c")}
    assert all(r.finished_at is not None for r in recorded)


def test_a_failed_reconcile_record_takes_its_findings_sync_back_with_it(url):
    found = [Finding("duplicate_records", {"citizen_id": "031203000009"}, {"count": 2})]
    with connect(url) as conn:
        ensure_findings_schema(conn)
    refuse(url, "reconcile_run", "true")
    with pytest.raises(psycopg2.errors.RaiseException, match="refused by the test"), connect(url) as conn:
        sync_findings(conn, "i1", found, now=T0, commit=False)
        runs.record_reconcile_run(conn, runs.ReconcileRun("i1", T0, T0, "success", counts={"findings": 1}))
    assert query(url, "SELECT count(*) FROM lienthong_ops.finding") == [(0,)], "the sync went back with the record"
    execute(url, "DROP TRIGGER refuse ON lienthong_ops.reconcile_run")
    with connect(url) as conn:
        changes = sync_findings(conn, "i1", found, now=T0, commit=False)
        runs.record_reconcile_run(conn, runs.ReconcileRun("i1", T0, T0, "success", counts={"findings": changes}))
    assert query(url, "SELECT count(*) FROM lienthong_ops.finding") == [(1,)]
    assert query(url, "SELECT status FROM lienthong_ops.reconcile_run") == [("success",)]


# --- records round trip -----------------------------------------------------------------------------------

def test_a_stage_run_reads_back_as_written_and_a_rerun_replaces_it(url):
    run = runs.StageRun("i1", "citizen", 320, 20, 300, 291, 9, staged_path="/s", content_hash="h",
                        quarantine_path="/q", started_at=T0, inputs=("r2", "r1"),
                        quarantine_by_rule={"rule_a": 9}, repairs={"fix": 4}, findings={"tag": 1})
    with connect(url) as conn:
        runs.record_stage_run(conn, run)
        runs.record_stage_run(conn, run)  # a rerun of the same run and dataset
        runs.record_quarantine_moved(conn, "i1", "citizen", 2, {"expectation:unique": 2})
    with connect(url) as conn:
        back = runs.stage_run(conn, "i1", "citizen")
        assert runs.latest_stage_run(conn, "citizen") == back
        assert runs.latest_staged_run_id(conn) == "i1"
    assert back.inputs == ("r1", "r2")
    assert (back.rows_staged, back.rows_quarantined, back.conservation_ok) == (289, 11, True)
    assert dict(back.quarantine_by_rule) == {"rule_a": 9, "expectation:unique": 2}
    assert (dict(back.repairs), dict(back.findings)) == ({"fix": 4}, {"tag": 1})
    assert (back.staged_path, back.quarantine_path, back.started_at) == ("/s", "/q", T0)
    assert back.created_at is not None


def test_a_quality_run_reads_back_with_its_rule_results(url):
    results = [runs.RuleResult("b_rule", "expect_b", None, "warning", False, 10, 1, 10.0, "0", {"unexpected_staged": 1}),
               runs.RuleResult("a_rule", "expect_a", "citizen_id", "critical", True, 10, 0, 0.0, "0", None)]
    run = runs.QualityRun("i1", "citizen", "citizen@1.0.0", False, True, 2, 0, 1, results=results)
    with connect(url) as conn:
        runs.record_quality_run(conn, run)
        runs.record_quality_run(conn, run)
    with connect(url) as conn:
        back = runs.quality_run(conn, "i1", "citizen", results=True)
        assert runs.quality_runs(conn) == [back]
        assert runs.rule_pass_counts(conn, ["i1"]) == {"i1": (1, 2)}
    assert [r.rule for r in back.results] == ["a_rule", "b_rule"]
    assert back.results[1].details == {"unexpected_staged": 1} and back.passed == 1
