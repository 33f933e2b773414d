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

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from lienthong.assets import RAW_BUSINESS_ENTERPRISES

DAG_ID = "ingest_business"
BUSINESS_CONN_ID = "business_registry"
POOL = "business_registry"
SCHEDULE = os.environ.get("LIENTHONG_INGEST_SCHEDULE", "@daily")


@dag(
    dag_id=DAG_ID,
    schedule=None if SCHEDULE in ("", "none", "None", "manual") else SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lienthong", "ingest", "business"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
)
def ingest_business():
    @task(outlets=[RAW_BUSINESS_ENTERPRISES], pool=POOL)
    def extract_and_land(*, run_id=None, outlet_events=None) -> dict:
        from lienthong.pipeline import ingest_business as run

        summary = run(run_id)
        outlet_events[RAW_BUSINESS_ENTERPRISES].extra = {
            "rows": summary["rows"],
            "pages": summary["pages"],
            "watermark_from": summary["watermark_from"],
            "watermark_to": summary["watermark_to"],
            "run_id": run_id,
        }
        return summary

    extract_and_land()


ingest_business()
