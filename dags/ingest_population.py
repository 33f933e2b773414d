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

from airflow.sdk import DAG

from lienthong.assets import RAW_POPULATION_CITIZENS
from lienthong.dagconfig import single_source_ingest_dag

DAG_ID = "ingest_population"
CONN_ID = "population_registry"  # resolved inside the task (lienthong.connections)
POOL = "population_registry"


def land_population(run_id: str) -> dict:
    """The task's work: lienthong.pipeline.ingest_population (imported when the task runs, not at parse time)."""
    from lienthong.pipeline import ingest_population

    return ingest_population(run_id)


dag: DAG = single_source_ingest_dag(
    dag_id=DAG_ID, doc_md=__doc__, asset=RAW_POPULATION_CITIZENS, pool=POOL, run=land_population, tags=["population"]
)
