"""What the DAG files share: start date, the ingestion schedule and retry policy, the run-summary fields an
ingestion Asset event carries. Cheap at parse time (an environment read, no I/O, no heavy import)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from lienthong.settings import ingest_schedule

__all__ = ["INGEST_DEFAULT_ARGS", "PIPELINE_DEFAULT_ARGS", "START_DATE", "ingest_event", "ingest_schedule",
           "single_source_ingest_dag"]

START_DATE = datetime(2026, 1, 1)
INGEST_DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}
PIPELINE_DEFAULT_ARGS = {"retries": 1, "retry_delay": timedelta(minutes=1)}
EVENT_FIELDS = ("rows", "pages", "watermark_from", "watermark_to")


def ingest_event(summary: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """The extra of a raw Asset event: row counts and the watermark move of the run."""
    return {**{k: summary.get(k) for k in EVENT_FIELDS}, "run_id": run_id}


def single_source_ingest_dag(*, dag_id: str, doc_md: str | None, asset: Any, pool: str,
                             run: Callable[[str], dict[str, Any]], tags: list[str]) -> Any:
    """The DAG of an agency system read through one connection: one task that lands the source with `run`
    (a function of the run id defined in the DAG file, which imports the pipeline only when it is called) and
    emits `asset` with the run's counts and watermark."""
    from airflow.sdk import dag, task

    @dag(
        dag_id=dag_id,
        schedule=ingest_schedule(),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        doc_md=doc_md,
        tags=["lienthong", "ingest", *tags],
        default_args=INGEST_DEFAULT_ARGS,
    )
    def ingest():
        @task(outlets=[asset], pool=pool)
        def extract_and_land(*, run_id=None, outlet_events=None) -> dict:
            summary = run(run_id)
            outlet_events[asset].extra = ingest_event(summary, run_id)
            return summary

        extract_and_land()

    return ingest()
