"""One ingestion run for one (source, scope): read the watermark, walk the source, land the pages,
commit the landing, then — and only then — advance the watermark and record the run.

The connector supplies the walk (`pages(since)` yielding lists of items) and declares which field is the
record key and which is the incremental cursor; everything else is shared here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base.landing import RawLanding
from connectors.base.readahead import read_ahead
from connectors.base.schema import SchemaWatch, SourceSchema
from connectors.base.state import WatermarkStore
from lienthong.db import connect
from lienthong.ops import OPS_SCHEMA, ensure_ops_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incremental:
    """Declared incremental state (after dlt's `incremental`): cursor field, how to read it, where to start."""

    cursor_field: str
    key_field: str
    initial_value: str
    parse: Callable[[str], datetime]
    render: Callable[[datetime], str]


@dataclass
class IngestResult:
    source: str
    scope: str
    entity: str
    run_id: str
    rows: int
    pages: int
    watermark_from: str
    watermark_to: str
    landing_path: str
    seconds: float
    flagged: int = 0
    new_fields: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_ingestion(
    *,
    source: str,
    entity: str,
    run_id: str,
    raw_dir: Path,
    incremental: Incremental,
    pages: Callable[[str], Iterator[list[dict[str, Any]]]],
    scope: str = "",
    warehouse_url: str | None = None,
    page_payloads: Callable[[list[dict[str, Any]]], list[str]] | None = None,
    schema: SourceSchema | None = None,
) -> IngestResult:
    """Land every page `pages(since)` yields; see the module docstring. With `schema`, records are checked
    (flags, drift, vanished required fields) as they land."""
    store = WatermarkStore(warehouse_url)
    since = store.get(source, scope) or incremental.initial_value
    started = datetime.now(UTC)
    t0 = time.monotonic()
    landing = RawLanding(raw_dir, source, entity, run_id)
    record_ingest_run(warehouse_url, run_id, source, scope, started, "running", watermark_from=since)
    max_seen: datetime = incremental.parse(since)
    watch = SchemaWatch(schema, source, incremental.key_field, incremental.cursor_field, incremental.parse)
    try:
        # the next page is fetched while this one lands (connectors.base.readahead)
        for items in read_ahead(pages(since), name=f"{source}-pages"):
            issues = watch.check_page(items, landing.pages + 1)
            landing.write_page(
                items,
                key_field=incremental.key_field,
                updated_field=incremental.cursor_field,
                payloads=page_payloads(items) if page_payloads else None,
                issues=issues,
            )
            for item in items:
                raw = item.get(incremental.cursor_field) if isinstance(item, dict) else None
                if raw is None:
                    continue
                try:
                    seen = incremental.parse(str(raw))
                except ValueError:
                    continue  # an unparseable cursor is landed as is and quarantined in staging
                if seen > max_seen:
                    max_seen = seen
        path = landing.commit()
    except BaseException as exc:
        landing.abort()
        record_ingest_run(warehouse_url, run_id, source, scope, started, "failed", watermark_from=since, error=str(exc)[:2000])
        raise
    new_mark = incremental.render(max_seen)
    # The watermark moves only now that the pages it covers are in place.
    store.advance(source, new_mark, run_id, scope)
    result = IngestResult(
        source, scope, entity, run_id, landing.rows, landing.pages, since, new_mark, str(path), time.monotonic() - t0,
        flagged=watch.flagged, new_fields=sorted(watch.new_fields),
    )
    record_ingest_run(
        warehouse_url, run_id, source, scope, started, "success",
        rows=landing.rows, pages=landing.pages, watermark_from=since, watermark_to=new_mark, landing_path=str(path),
    )
    log.info(
        "%s%s: %d rows in %d pages, watermark %s -> %s (%.1fs, %.0f rows/s)",
        source, f"/{scope}" if scope else "", result.rows, result.pages, since, new_mark, result.seconds,
        result.rows / max(result.seconds, 1e-9),
    )
    return result


def record_ingest_run(url, run_id, source, scope, started, status, *, rows=None, pages=None, watermark_from=None,
                watermark_to=None, landing_path=None, error=None) -> None:
    with connect(url) as conn:
        ensure_ops_schema(conn)
        with conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {OPS_SCHEMA}.ingest_run
                    (run_id, source, scope, started_at, finished_at, status, rows_landed, pages,
                     watermark_from, watermark_to, landing_path, error)
                    VALUES (%s,%s,%s,%s, CASE WHEN %s = 'running' THEN NULL ELSE now() END, %s,%s,%s,%s,%s,%s,%s)
                    ON CONFLICT (run_id, source, scope) DO UPDATE SET
                      started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
                      rows_landed = EXCLUDED.rows_landed, pages = EXCLUDED.pages,
                      watermark_from = EXCLUDED.watermark_from, watermark_to = EXCLUDED.watermark_to,
                      landing_path = EXCLUDED.landing_path, error = EXCLUDED.error""",
                (run_id, source, scope, started, status, status, rows, pages, watermark_from, watermark_to, landing_path, error),
            )
