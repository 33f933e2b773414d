"""One land registry ingestion run for one province: read the three watermarks, extract the three tables
from one snapshot, land each as raw Parquet, commit the landings, then — only then — advance the three
watermarks together and record the run.

Owns: the land connector's run (what `lienthong.pipeline.ingest_land` calls), its raw layout and its
watermark policy.

Raw layout: one RawLanding per table, source `land_registry`, entity `<province>/<table>`, so the files are
at `raw/land_registry/<province>/<table>/ingest_date=.../run=.../` and `_entity` names the province. Ids
are unique only within a province's database: downstream keys are (province from `_entity`, `_key`).
The payload is the whole row as JSON (spec column names, numerics with their exact digits, dates ISO,
`cap_nhat_luc` RFC 3339 UTC); `_key` = id, `_updated_at` = cap_nhat_luc. Tombstones (`da_xoa = true`)
are landed like any row: they are the delete markers downstream.

Watermark: per (source `land_registry`, scope `<province>/<table>`), the JSON text of the last landed
(cap_nhat_luc, id) keyset (`connectors.land.extract.Keyset`). The next run reads strictly after it, so
rows sharing a timestamp are never skipped across batches or runs.

Overlap (safety lag): a keyset watermark misses a row committed *after* a run with a cap_nhat_luc *older*
than the watermark — a long transaction in the cadastral system stamps its rows at its start (`now()` is
the transaction's start time) but they become visible only at its commit; an application server with a
slow clock does the same. So each run re-reads the last `overlap` before the watermark (inclusive). Any
transaction shorter than the overlap is caught; the price is that the rows updated in that window are
landed again each run (exact repeats, removed by staging's latest-version-per-key and equal record
hashes). 0 turns it off (exact keyset, the pitfall documented above). Set it per province with the
connection extra `overlap_seconds` (default 15 minutes); `batch_size` likewise (default 5000).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.base.ingest import record_ingest_run
from connectors.base.landing import RawLanding
from connectors.base.readahead import read_ahead
from connectors.base.state import WatermarkStore
from connectors.land.extract import (
    DEFAULT_BATCH_SIZE,
    SOURCE,
    TABLES,
    Batch,
    Keyset,
    LandRegistryExtractor,
    next_watermark,
)
from lienthong.db import warehouse_url
from lienthong.private_files import writes_data_dir
from lienthong.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = timedelta(minutes=15)


def scope_of(province: str, table: str) -> str:
    return f"{province}/{table}"


@writes_data_dir
def ingest(
    run_id: str,
    province: str,
    settings: Settings,
    *,
    batch_size: int | None = None,
    overlap: timedelta | None = None,
) -> dict[str, Any]:
    """Extract `province`'s land registry incrementally into raw; returns a JSON-able summary (rows,
    tombstones, pages, watermarks and landing path per table). `batch_size`/`overlap` override the
    connection's extras."""
    from lienthong.connections import get_connection

    conn_info = get_connection(settings.land_conn_id(province))
    batch_size = batch_size or int(conn_info.extra.get("batch_size", DEFAULT_BATCH_SIZE))
    if overlap is None:
        overlap = timedelta(seconds=float(conn_info.extra.get("overlap_seconds", DEFAULT_OVERLAP.total_seconds())))
    url = warehouse_url(settings)
    store = WatermarkStore(url)
    scopes = {t: scope_of(province, t) for t in TABLES}
    marks_from = {t: store.get(SOURCE, scopes[t]) for t in TABLES}
    started = datetime.now(UTC)
    t0 = time.monotonic()
    for t in TABLES:
        record_ingest_run(url, run_id, SOURCE, scopes[t], started, "running", watermark_from=marks_from[t])

    landings: dict[str, RawLanding] = {}
    last: dict[str, Keyset | None] = dict.fromkeys(TABLES)
    tombstones = dict.fromkeys(TABLES, 0)
    starts: dict[str, Keyset | None] = {}
    try:
        starts = {t: Keyset.decode(m).rewind(overlap) if m else None for t, m in marks_from.items()}
        with LandRegistryExtractor(conn_info.postgres_dsn(), batch_size=batch_size) as extractor:
            extra_columns = extractor.check_schema()
            snapshot_at: datetime = extractor.snapshot_at or datetime.now(UTC)  # set by __enter__
            for t in TABLES:
                landing = landings[t] = RawLanding(settings.raw_dir, SOURCE, f"{province}/{t}", run_id)
                # the database answers the next FETCH (asked from another thread) while this answer becomes
                # tuples, columns and payloads and lands
                for fetched in read_ahead(extractor.row_batches(t, starts[t]), name=f"land-{province}-{t}"):
                    batch = Batch.from_rows(t, fetched.rows(), extractor.columns[t])
                    landing.write_columns(keys=batch.keys, updated=batch.updated, payloads=batch.payloads,
                                          hashes=batch.hashes)
                    tombstones[t] += batch.tombstones
                    last[t] = batch.last
        # The snapshot is released before the (slower) file moves; the watermarks wait for all three.
        paths: dict[str, Path] = {t: landings[t].commit() for t in TABLES}
    except BaseException as exc:
        # A landing committed before a later one failed stays (a rerun of this run replaces it); without
        # the watermark move its rows are fetched again next run and deduplicated in staging.
        for landing in landings.values():
            landing.abort()
        for t in TABLES:
            record_ingest_run(url, run_id, SOURCE, scopes[t], started, "failed", watermark_from=marks_from[t],
                              error=f"{type(exc).__name__}: {exc}"[:2000])
        raise

    old = {t: Keyset.decode(m) if m else None for t, m in marks_from.items()}
    new = {t: next_watermark(old[t], last[t], snapshot_at) for t in TABLES}
    marks_to = {t: None if new[t] is None else new[t].encode() for t in TABLES}
    for t in TABLES:
        if last[t] is not None and new[t] is not None and new[t].ts < last[t].ts:
            log.warning("land registry %s: rows dated up to %s are after the source's clock (%s); "
                        "watermark held at the source's clock", scopes[t], last[t].ts, snapshot_at)
    advance_together(url, {scopes[t]: marks_to[t] for t in TABLES if marks_to[t] and marks_to[t] != marks_from[t]},
                     run_id)

    tables: dict[str, dict[str, Any]] = {}
    for t in TABLES:
        lnd = landings[t]
        record_ingest_run(url, run_id, SOURCE, scopes[t], started, "success", rows=lnd.rows, pages=lnd.pages,
                          watermark_from=marks_from[t], watermark_to=marks_to[t], landing_path=str(paths[t]))
        tables[t] = {
            "rows": lnd.rows,
            "tombstones": tombstones[t],
            "pages": lnd.pages,
            "read_from": None if starts[t] is None else starts[t].encode(),
            "watermark_from": marks_from[t],
            "watermark_to": marks_to[t],
            "landing_path": str(paths[t]),
            "extra_columns": extra_columns[t],
        }
    seconds = time.monotonic() - t0
    total = sum(v["rows"] for v in tables.values())
    log.info("land registry %s: %d rows (%s) from the snapshot at %s in %.1fs (%.0f rows/s)", province, total,
             ", ".join(f"{t}={tables[t]['rows']}" for t in TABLES), snapshot_at, seconds, total / max(seconds, 1e-9))
    return {
        "source": SOURCE,
        "province": province,
        "run_id": run_id,
        "snapshot_at": snapshot_at.astimezone(UTC).isoformat(),
        "overlap_seconds": overlap.total_seconds(),
        "batch_size": batch_size,
        "rows": total,
        "tables": tables,
        "seconds": round(seconds, 3),
    }


def advance_together(url: str, marks: dict[str, str], run_id: str) -> None:
    """Advance a province's table watermarks in ONE warehouse transaction: they move together or not at all."""
    WatermarkStore(url).advance_many(SOURCE, marks, run_id)
