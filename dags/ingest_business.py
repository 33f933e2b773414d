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

from airflow.sdk import DAG

from lienthong.assets import RAW_BUSINESS_ENTERPRISES
from lienthong.dagconfig import single_source_ingest_dag

DAG_ID = "ingest_business"
CONN_ID = "business_registry"  # resolved inside the task (lienthong.connections)
POOL = "business_registry"


def land_business(run_id: str) -> dict:
    """The task's work: lienthong.pipeline.ingest_business (imported when the task runs, not at parse time)."""
    from lienthong.pipeline import ingest_business

    return ingest_business(run_id)


dag: DAG = single_source_ingest_dag(
    dag_id=DAG_ID, doc_md=__doc__, asset=RAW_BUSINESS_ENTERPRISES, pool=POOL, run=land_business, tags=["business"]
)
