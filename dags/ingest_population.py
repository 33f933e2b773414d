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

from airflow.sdk import dag, task

from lienthong.assets import RAW_POPULATION_CITIZENS
from lienthong.dagconfig import INGEST_DEFAULT_ARGS, START_DATE, ingest_event, ingest_schedule

DAG_ID = "ingest_population"
POPULATION_CONN_ID = "population_registry"
POOL = "population_registry"


@dag(
    dag_id=DAG_ID,
    schedule=ingest_schedule(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "ingest", "population"],
    default_args=INGEST_DEFAULT_ARGS,
)
def ingest_population():
    @task(outlets=[RAW_POPULATION_CITIZENS], pool=POOL)
    def extract_and_land(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import ingest_population as run

        summary = run(run_id)
        outlet_events[RAW_POPULATION_CITIZENS].extra = ingest_event(summary, run_id)
        return summary

    extract_and_land()


ingest_population()
