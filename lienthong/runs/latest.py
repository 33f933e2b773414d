"""What the next step works from, read from the ledger: the newest staged run of a dataset with its quality
verdict and the ingest runs it read (publication and reconciliation start here), and the newest reconciliation
with the integrated files it wrote. Plain dicts, as the steps pass them on in their lineage."""

from __future__ import annotations

from typing import Any

from lienthong import runs
from lienthong.db import connect


def latest_integration(dataset: str, url: str) -> dict[str, Any]:
    """The newest staged run of a dataset with its quality verdict (what publication works from) and the
    successful ingest runs of its source whose landings it read."""
    from lienthong.contracts import contract

    with connect(url) as conn:
        stage = runs.latest_stage_run(conn, dataset)
        if stage is None:
            raise LookupError(f"no staged run of {dataset} yet: run the integrate DAG first")
        quality = runs.quality_run(conn, stage.run_id, dataset)
        # Run ids are shared across the ingestion DAGs (same schedule): only this dataset's source counts.
        ingested = runs.stage_run_ingests(conn, stage.run_id, dataset, contract(dataset).custom.get("sourceSystem"))
    return {
        "run_id": stage.run_id, "staged_path": stage.staged_path, "content_hash": stage.content_hash,
        "rows_in": stage.rows_in, "rows_staged": stage.rows_staged, "rows_quarantined": stage.rows_quarantined,
        "gate_passed": quality.gate_passed if quality else None,
        "failed_critical": quality.failed_critical if quality else None,
        "ingest_runs": [{"run_id": r.run_id, "source": r.source, "scope": r.scope, "watermark_from": r.watermark_from,
                         "watermark_to": r.watermark_to, "rows_landed": r.rows_landed} for r in ingested],
    }


def latest_reconciliation(url: str) -> dict[str, Any]:
    """The newest successful reconciliation run: its id and the integrated files it wrote."""
    with connect(url) as conn:
        rec = runs.latest_reconcile_run(conn)
    if rec is None:
        raise LookupError("no reconciliation yet: the integrate DAG reconciles once every source is staged")
    return {"run_id": rec.run_id, "outputs": rec.outputs, "inputs": (rec.metrics or {}).get("inputs", {})}
