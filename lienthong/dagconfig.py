"""What the DAG files share: start date, the ingestion schedule and retry policy, the run-summary fields an
ingestion Asset event carries. Cheap at parse time (an environment read, no I/O, no heavy import)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

START_DATE = datetime(2026, 1, 1)
INGEST_DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}
PIPELINE_DEFAULT_ARGS = {"retries": 1, "retry_delay": timedelta(minutes=1)}
EVENT_FIELDS = ("rows", "pages", "watermark_from", "watermark_to")


def ingest_schedule() -> str | None:
    """`LIENTHONG_INGEST_SCHEDULE` (default `@daily`); `none`/`manual`/empty → triggered by hand only."""
    value = os.environ.get("LIENTHONG_INGEST_SCHEDULE", "@daily")
    return None if value in ("", "none", "None", "manual") else value


def ingest_event(summary: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """The extra of a raw Asset event: row counts and the watermark move of the run."""
    return {**{k: summary.get(k) for k in EVENT_FIELDS}, "run_id": run_id}


def single_source_ingest_dag(*, dag_id: str, doc_md: str | None, asset: Any, pool: str, pipeline_function: str,
                             tags: list[str]) -> Any:
    """The DAG of an agency system read through one connection: one task that lands the source and emits
    `asset` with the run's counts and watermark. The task imports the pipeline only when it runs."""
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
            import importlib

            run = getattr(importlib.import_module("lienthong.pipeline"), pipeline_function)
            summary = run(run_id)
            outlet_events[asset].extra = ingest_event(summary, run_id)
            return summary

        extract_and_land()

    return ingest()
