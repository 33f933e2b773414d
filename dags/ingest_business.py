"""
### ingest_business

Pulls enterprises changed since the last watermark from the **business registry** (REST + XML, API key,
offset paging) and lands every record version unchanged in the raw zone (canonical JSON of the XML
record, the agency's own names), with ingest metadata.

- Connection: `business_registry` (http: host/port/schema; password = API key).
- Pool: `business_registry` caps how many requests this source gets at once.
- Schedule: `LIENTHONG_INGEST_SCHEDULE` (default `@daily`).
- The walk re-reads around records that move while it pages, so no record is skipped; each version is
  landed once per run. `tuNgay` is the watermark's local day (inclusive): that day's records come again
  and staging deduplicates them.
- The watermark (RFC 3339 UTC) advances only after the run's pages have landed; a failed run leaves it.
- Produces the Asset `raw_business_enterprises`, whose event extra carries row counts and the watermark.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from lienthong.assets import RAW_BUSINESS_ENTERPRISES
from lienthong.dagconfig import INGEST_DEFAULT_ARGS, START_DATE, ingest_event, ingest_schedule

DAG_ID = "ingest_business"
BUSINESS_CONN_ID = "business_registry"
POOL = "business_registry"


@dag(
    dag_id=DAG_ID,
    schedule=ingest_schedule(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "ingest", "business"],
    default_args=INGEST_DEFAULT_ARGS,
)
def ingest_business():
    @task(outlets=[RAW_BUSINESS_ENTERPRISES], pool=POOL)
    def extract_and_land(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import ingest_business as run

        summary = run(run_id)
        outlet_events[RAW_BUSINESS_ENTERPRISES].extra = ingest_event(summary, run_id)
        return summary

    extract_and_land()


ingest_business()
