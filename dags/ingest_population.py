"""
### ingest_population

Pulls citizens changed since the last watermark from the **population registry** (REST + JSON, OAuth2
client credentials, cursor paging) and lands them unchanged in the raw zone, with ingest metadata.

- Connection: `population_registry` (http: host/port/schema; login = client id, password = client secret).
- Schedule: `LIENTHONG_INGEST_SCHEDULE` (default `@daily`); pool `population_registry` caps concurrency.
- The watermark advances only after the run's pages have landed; a failed run leaves it where it was.
- Produces the Asset `raw_population_citizens`, whose event extra carries row counts and the watermark.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from lienthong.assets import RAW_POPULATION_CITIZENS

DAG_ID = "ingest_population"
POPULATION_CONN_ID = "population_registry"
POOL = "population_registry"
SCHEDULE = os.environ.get("LIENTHONG_INGEST_SCHEDULE", "@daily")


@dag(
    dag_id=DAG_ID,
    schedule=None if SCHEDULE in ("", "none", "None", "manual") else SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "ingest", "population"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
)
def ingest_population():
    @task(outlets=[RAW_POPULATION_CITIZENS], pool=POOL)
    def extract_and_land(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import ingest_population as run

        summary = run(run_id)
        outlet_events[RAW_POPULATION_CITIZENS].extra = {
            "rows": summary["rows"],
            "pages": summary["pages"],
            "watermark_from": summary["watermark_from"],
            "watermark_to": summary["watermark_to"],
            "run_id": run_id,
        }
        return summary

    extract_and_land()


ingest_population()
