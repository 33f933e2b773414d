"""
### publish

Publishes shared datasets from the latest integration, when its quality gate passed and its content
changed: an immutable Parquet version with a manifest, and a PostgreSQL version table behind the stable
view `published.<dataset>`, switched in one transaction. A failed gate or load leaves the previous version
served.

Scheduled on the Asset `staged_citizen`; produces `published_citizen_profile` (event extra: version).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import PUBLISHED_CITIZEN_PROFILE, STAGED_CITIZEN
from lienthong.dagconfig import PIPELINE_DEFAULT_ARGS, START_DATE

DAG_ID = "publish"


@dag(
    dag_id=DAG_ID,
    schedule=[STAGED_CITIZEN],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "publish"],
    default_args=PIPELINE_DEFAULT_ARGS,
)
def publish():
    @task(outlets=[PUBLISHED_CITIZEN_PROFILE])
    def publish_citizen_profile(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import publish as run

        result = run("citizen_profile", run_id)
        outlet_events[PUBLISHED_CITIZEN_PROFILE].extra = {
            "version": result["version"],
            "status": result["status"],
            "rows": result["rows"],
            "content_hash": result["content_hash"],
        }
        return result

    publish_citizen_profile()


publish()
