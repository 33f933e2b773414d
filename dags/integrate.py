"""
### integrate

Turns raw landings into the staged zone and validates them, whenever fresh raw data lands.

1. **stage_citizen** — latest version per personal ID from every raw landing; types and NFC text from the
   `citizen` contract; unusable records go to quarantine with a reason naming record and field; checks
   `rows_in == rows_staged + rows_quarantined`.
2. **validate_citizen** — Great Expectations suite generated from the contract; results stored in the
   warehouse; the quality gate verdict is recorded for the publish DAG.

Scheduled on the Asset `raw_population_citizens`; produces `staged_citizen`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from lienthong.assets import RAW_POPULATION_CITIZENS, STAGED_CITIZEN

DAG_ID = "integrate"


@dag(
    dag_id=DAG_ID,
    schedule=[RAW_POPULATION_CITIZENS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "integrate"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def integrate():
    @task
    def stage_citizen(*, run_id=None) -> dict:
        from lienthong.pipeline import stage

        return stage("citizen", run_id)

    @task(outlets=[STAGED_CITIZEN])
    def validate_citizen(stage_summary: dict, *, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import validate

        verdict = validate("citizen", run_id, stage_summary)
        outlet_events[STAGED_CITIZEN].extra = {
            "rows_in": stage_summary["rows_in"],
            "rows_staged": stage_summary["rows_staged"],
            "rows_quarantined": stage_summary["rows_quarantined"],
            "gate_passed": verdict["gate_passed"],
            "run_id": run_id,
        }
        return verdict

    validate_citizen(stage_citizen())


integrate()
