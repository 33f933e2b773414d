"""
### publish

Publishes the shared datasets from the latest reconciliation, when the quality gates of the staged datasets
they come from passed and their content changed: an immutable Parquet version with a manifest, and a
PostgreSQL version table behind the stable view `published.<dataset>`, switched in one transaction. A
failed gate or load leaves the previous version served.

One task per dataset: `citizen_profile`, `enterprise_profile`, `parcel_register` (from the integrated zone,
nested lists as list<struct> / jsonb), `reconciliation_findings` and `quality_summary` (from the stores).
Scheduled on the integrated Assets (all five, from one reconciliation); each task emits
`published_<dataset>` with the version in the event extra. Then **grant_agency_access** rebuilds each
consuming agency's login role, schema and views from `schemas/agencies.yaml` (columns visible, masked,
pseudonymized with the key `LIENTHONG_PSEUDONYM_KEY`, or hidden) and emits `publication_round` (the
`audit_report` DAG runs on it, also after a refused gate).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import INTEGRATED_DATASETS, PUBLICATION_ROUND, PUBLISHED_DATASETS, integrated, published
from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE

DAG_ID = "publish"


@dag(
    dag_id=DAG_ID,
    schedule=[integrated(d) for d in INTEGRATED_DATASETS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "publish"],
    default_args=PIPELINE_DEFAULT_ARGS,
)
def publish():
    published_tasks = []
    for name in PUBLISHED_DATASETS:

        @task(task_id=f"publish_{name}", outlets=[published(name)])
        def publish_one(dataset: str = name, *, run_id=None, outlet_events=None) -> dict:
            from lienthong.pipeline import publish as run

            result = run(dataset, run_id)
            outlet_events[published(dataset)].extra = {
                "version": result["version"],
                "status": result["status"],
                "rows": result["rows"],
                "content_hash": result["content_hash"],
            }
            return result

        published_tasks.append(publish_one())

    @task(trigger_rule="all_done", outlets=[PUBLICATION_ROUND])
    def grant_agency_access(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import apply_agency_access

        report = apply_agency_access(run_id)
        outlet_events[PUBLICATION_ROUND].extra = {"publish_run_id": run_id}
        return report

    published_tasks >> grant_agency_access()


publish()
