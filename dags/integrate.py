"""
### integrate

Turns raw landings into the staged zone and validates them, whenever fresh raw data lands from any agency.

For each staged dataset (citizen; enterprise and legal_representative; parcel, land_holder, certificate):

1. **stage_<dataset>** — latest version per source key from every raw landing; fields, types and text
   normalisation from the dataset's contract; unusable records go to quarantine with a reason naming
   record and field; checks `rows_in == rows_staged + rows_quarantined`. Skipped when the source has not
   landed anything yet.
2. **validate_<dataset>** — the Great Expectations suite generated from the contract; results stored in the
   warehouse; the quality-gate verdict is recorded for the publish DAG; emits `staged_<dataset>`.

Then **reconcile** (once every dataset is validated): duplicates inside each source; legal
representatives and land holders linked to citizens (exact ID, legacy ID, then a Splink model; bands
accept / review / reject from `LIENTHONG_MATCH_ACCEPT` / `LIENTHONG_MATCH_REVIEW`); organisation holders
linked to enterprises; golden records with provenance; findings synced with their lifecycle. Emits the
`integrated_<dataset>` Assets (person_master, enterprise_master, parcel_master,
enterprise_representative_link, parcel_holder_link) with row counts and content hashes.

Scheduled on any of the Assets `raw_population_citizens`, `raw_business_enterprises`, `raw_land`.
"""

from __future__ import annotations

from airflow.sdk import dag, task, task_group

from lienthong.assets import (
    INTEGRATED_DATASETS,
    RAW_BUSINESS_ENTERPRISES,
    RAW_LAND,
    RAW_POPULATION_CITIZENS,
    STAGED_DATASETS,
    integrated,
    staged,
)
from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE

DAG_ID = "integrate"


@dag(
    dag_id=DAG_ID,
    schedule=(RAW_POPULATION_CITIZENS | RAW_BUSINESS_ENTERPRISES | RAW_LAND),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "integrate"],
    default_args=PIPELINE_DEFAULT_ARGS,
)
def integrate():
    validated = []
    for name in STAGED_DATASETS:

        @task_group(group_id=name)
        def stage_and_validate(dataset: str = name):
            @task(task_id=f"stage_{dataset}")
            def stage_one(*, run_id=None) -> dict:
                from airflow.sdk.exceptions import AirflowSkipException

                from lienthong.pipeline import NothingToStage, stage

                try:
                    return stage(dataset, run_id)
                except NothingToStage as exc:
                    raise AirflowSkipException(str(exc)) from exc

            @task(task_id=f"validate_{dataset}", outlets=[staged(dataset)])
            def validate_one(stage_summary: dict, *, run_id=None, outlet_events=None) -> dict:
                from lienthong.pipeline import validate

                verdict = validate(dataset, run_id, stage_summary)
                outlet_events[staged(dataset)].extra = {
                    "rows_in": stage_summary["rows_in"],
                    "rows_staged": stage_summary["rows_staged"],
                    "rows_quarantined": stage_summary["rows_quarantined"],
                    "gate_passed": verdict["gate_passed"],
                    "run_id": run_id,
                }
                return verdict

            validate_one(stage_one())

        validated.append(stage_and_validate())

    @task(outlets=[integrated(d) for d in INTEGRATED_DATASETS])
    def reconcile(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import reconcile as do_reconcile

        summary = do_reconcile(run_id)
        for dataset, out in summary["outputs"].items():
            outlet_events[integrated(dataset)].extra = {"rows": out["rows"], "content_hash": out["content_hash"],
                                                         "run_id": run_id}
        return {"findings": summary["findings"], "links": summary["links"], "seconds": summary["seconds"],
                "rows": {d: o["rows"] for d, o in summary["outputs"].items()}}

    validated >> reconcile()


integrate()
