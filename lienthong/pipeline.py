"""What each pipeline task does, as plain functions: DAG tasks call these and nothing else.

Every function reads the settings at call time (never at DAG parse time), takes the Airflow run id for
lineage and idempotency, and returns a small JSON-able summary (it becomes the task's XCom and the Asset
event's extra).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from lienthong import runs
from lienthong.db import connect, warehouse_url
from lienthong.openlineage import reports_lineage
from lienthong.private_files import writes_data_dir
from lienthong.runs.latest import latest_integration, latest_reconciliation
from lienthong.settings import Settings, load_settings

log = logging.getLogger(__name__)


@reports_lineage
@writes_data_dir
def ingest_population(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Walk the population registry (JSON, cursor paging) from the watermark and land every page in raw."""
    from connectors.population.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, s, store=runs.Ledger(warehouse_url(s)))


@reports_lineage
@writes_data_dir
def ingest_business(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Walk the business registry (XML, offset paging) from the watermark and land every record in raw."""
    from connectors.business.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, s, store=runs.Ledger(warehouse_url(s)))


@reports_lineage
@writes_data_dir
def ingest_land(run_id: str, province: str, settings: Settings | None = None) -> dict[str, Any]:
    """Extract one province's land registry (three tables, one snapshot) incrementally into raw."""
    from connectors.land.ingest import ingest

    s = settings or load_settings()
    return ingest(run_id, province, s, store=runs.Ledger(warehouse_url(s)))


class NothingToStage(LookupError):
    """A dataset's source has not landed anything yet (its ingestion DAG has not run)."""


@reports_lineage
@writes_data_dir
def stage(dataset: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Stage a dataset from all its raw landings; record the run and its conservation check."""
    from lienthong.contracts import contract
    from lienthong.staging import StagePlan, stage_json_source

    s = settings or load_settings()
    c = contract(dataset)
    started_at = datetime.now(UTC)
    files = StagePlan.from_contract(c).raw_files(s.raw_dir)
    if not files:
        raise NothingToStage(f"{dataset}: no raw landing yet from {c.custom.get('sourceSystem')}")
    result = stage_json_source(
        c,
        files,
        run_id=run_id,
        staged_dir=s.staged_dir,
        quarantine_dir=s.quarantine_dir,
    )
    with connect(warehouse_url(s)) as conn:
        runs.record_stage_run(conn, runs.StageRun(
            run_id, dataset, result.raw_rows, result.duplicates_removed, result.rows_in, result.rows_staged,
            result.rows_quarantined, staged_path=result.staged_path, content_hash=result.content_hash,
            quarantine_path=result.quarantine_path, started_at=started_at, inputs=tuple(result.raw_runs),
            quarantine_by_rule=result.quarantine_by_rule, repairs=result.repairs, findings=result.findings))
    return result.as_dict()


@reports_lineage
@writes_data_dir
def validate(dataset: str, run_id: str, stage_summary: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Run the dataset's Great Expectations suite and the quality gate on a staged run.

    The verdict (the task's XCom) holds plain types only: the gate, per-rule outcomes, the failing rows of
    critical rules as positions in the staged file, and the Data Docs index path (see `quality.verdict`)."""
    from lienthong.contracts import contract
    from lienthong.quality import validate as run_validation
    from lienthong.quality import verdict

    s = settings or load_settings()
    c = contract(dataset)
    result = run_validation(
        c,
        stage_summary["staged_path"],
        run_id=run_id,
        rows_in=stage_summary["rows_in"],
        quarantine_by_rule=stage_summary.get("quarantine_by_rule") or {},
        reports_dir=s.reports_dir,
        warehouse_url=warehouse_url(s),
    )
    out = verdict(result, c)
    critical = {o.rule: o.expectation for o in result.outcomes if o.severity == "critical"}
    failing = {rule: rows for rule, rows in result.failed_rows.items() if rule in critical and rows}
    out["moved_to_quarantine"] = {}
    if failing:
        from lienthong.staging import StagePlan, quarantine_failed_rows

        moved = quarantine_failed_rows(
            dataset, run_id, stage_summary["staged_path"], stage_summary["quarantine_path"],
            StagePlan.from_contract(c).raw_files(s.raw_dir), failing, critical,
        )
        n = len({p for rows in failing.values() for p in rows})
        with connect(warehouse_url(s)) as conn:
            runs.record_quarantine_moved(conn, run_id, dataset, n, moved)
        out["moved_to_quarantine"] = moved
    return out


@reports_lineage
@writes_data_dir
def reconcile(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Link the staged sources across agencies; write golden records and links; sync the findings."""
    from lienthong.reconcile.run import reconcile as do_reconcile

    return do_reconcile(run_id, settings or load_settings())


@reports_lineage
@writes_data_dir
def publish(dataset: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Publish a dataset from the latest reconciliation (or store), if its quality gate passed and its
    content changed."""
    from lienthong import profiles
    from lienthong.contracts import contract
    from lienthong.datasets import from_integrated, staged_inputs
    from lienthong.publish import publish as do_publish

    s = settings or load_settings()
    url = warehouse_url(s)
    c = contract(dataset)
    # The quality gates of every staged dataset it derives from (the store-backed datasets publish whatever the
    # stores hold: they are the record of quality and reconciliation themselves).
    sources = {name: latest_integration(name, url) for name in staged_inputs(dataset)}
    gate = all(info["gate_passed"] for info in sources.values())
    failed = [f"{name}: quality not run" for name, info in sources.items() if info["gate_passed"] is None]
    failed += [f"{name}: {info['failed_critical']} critical rule(s) failed" for name, info in sources.items() if info["failed_critical"]]
    lineage: dict[str, Any] = {
        name: {"integrate_run_id": info["run_id"], "staged_path": info["staged_path"], "ingest_runs": info["ingest_runs"]}
        for name, info in sources.items()
    }
    if from_integrated(dataset):
        rec = latest_reconciliation(url)
        paths = {name: out["path"] for name, out in rec["outputs"].items()}
        paths.update({name: sources[name]["staged_path"] for name in ("citizen", "legal_representative", "land_holder")
                      if name in sources})
        rows = profiles.FROM_INTEGRATED[dataset](c, paths)
        lineage["reconcile"] = {"run_id": rec["run_id"], "outputs": rec["outputs"]}
    else:
        rows = profiles.FROM_STORES[dataset](c, url)
    result = do_publish(
        c,
        {},
        run_id=run_id,
        gate_passed=bool(gate),
        published_dir=s.published_dir,
        lineage=lineage,
        quality={"gate_passed": bool(gate), "failed_critical": failed},
        retention=s.published_retention,
        url=url,
        rows=rows,
    )
    return result.as_dict()


def apply_agency_access(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Rebuild every agency's role, schema and views over the published datasets from schemas/agencies.yaml."""
    from lienthong.access import apply_access

    s = settings or load_settings()
    report = apply_access(warehouse_url(s)).as_dict()
    report["run_id"] = run_id
    return report
