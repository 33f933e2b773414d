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
