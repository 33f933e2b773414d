"""One land registry ingestion run for one province: read the three watermarks, extract the three tables
from one snapshot, land each as raw Parquet, commit the landings, then — only then — advance the three
watermarks together with the run's success mark (the shared run protocol, `connectors.base.ingest.run_job`,
against the store the caller hands in).

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
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.base.ingest import run_job
from connectors.base.landing import RawLanding
from connectors.base.readahead import read_ahead
from connectors.base.state import IngestOutcome, IngestStore
from connectors.land.extract import (
    DEFAULT_BATCH_SIZE,
    SOURCE,
    TABLES,
    Batch,
    Keyset,
    LandRegistryExtractor,
    next_watermark,
)
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
    store: IngestStore,
    batch_size: int | None = None,
    overlap: timedelta | None = None,
) -> dict[str, Any]:
    """Extract `province`'s land registry incrementally into raw, with watermarks and run records in `store`;
    returns a JSON-able summary (rows, tombstones, pages, watermarks and landing path per table).
    `batch_size`/`overlap` override the connection's extras."""
    from lienthong.connections import get_connection

    conn_info = get_connection(settings.land_conn_id(province))
    batch_size = batch_size or int(conn_info.extra.get("batch_size", DEFAULT_BATCH_SIZE))
    if overlap is None:
        overlap = timedelta(seconds=float(conn_info.extra.get("overlap_seconds", DEFAULT_OVERLAP.total_seconds())))
    t0 = time.monotonic()
    job = _ProvinceJob(run_id, province, settings.raw_dir, conn_info.postgres_dsn(), batch_size, overlap)
    outcomes = {o.scope: o for o in run_job(job, store, run_id)}

    tables: dict[str, dict[str, Any]] = {}
    for t in TABLES:
        out = outcomes[scope_of(province, t)]
        start = job.starts[t]
        tables[t] = {
            "rows": out.rows,
            "tombstones": job.tombstones[t],
            "pages": out.pages,
            "read_from": None if start is None else start.encode(),
            "watermark_from": out.watermark_from,
            "watermark_to": out.watermark_to,
            "landing_path": out.landing_path,
            "extra_columns": job.extra_columns[t],
        }
    seconds = time.monotonic() - t0
    total = sum(v["rows"] for v in tables.values())
    log.info("land registry %s: %d rows (%s) from the snapshot at %s in %.1fs (%.0f rows/s)", province, total,
             ", ".join(f"{t}={tables[t]['rows']}" for t in TABLES), job.snapshot_at, seconds,
             total / max(seconds, 1e-9))
    return {
        "source": SOURCE,
        "province": province,
        "run_id": run_id,
        "snapshot_at": job.snapshot_at.astimezone(UTC).isoformat(),
        "overlap_seconds": overlap.total_seconds(),
        "batch_size": batch_size,
        "rows": total,
        "tables": tables,
        "seconds": round(seconds, 3),
    }


class _ProvinceJob:
    """A province's three tables, extracted from one snapshot: one scope (`<province>/<table>`) per table."""

    source = SOURCE
    initial_mark = None  # no watermark: the whole table

    def __init__(self, run_id: str, province: str, raw_dir: Path, dsn: str, batch_size: int, overlap: timedelta):
        self.run_id, self.province, self.raw_dir, self.dsn = run_id, province, raw_dir, dsn
        self.batch_size, self.overlap = batch_size, overlap
        self.scopes = tuple(scope_of(province, t) for t in TABLES)
        self.landings: dict[str, RawLanding] = {}
        self.tombstones = dict.fromkeys(TABLES, 0)
        self.starts: dict[str, Keyset | None] = {}
        self.extra_columns: dict[str, list[str]] = {}
        self.snapshot_at = datetime.now(UTC)

    def land(self, marks: Mapping[str, str | None]) -> list[IngestOutcome]:
        marks_from = {t: marks[scope_of(self.province, t)] for t in TABLES}
        last: dict[str, Keyset | None] = dict.fromkeys(TABLES)
        self.starts = {t: Keyset.decode(m).rewind(self.overlap) if m else None for t, m in marks_from.items()}
        with LandRegistryExtractor(self.dsn, batch_size=self.batch_size) as extractor:
            self.extra_columns = extractor.check_schema()
            self.snapshot_at = extractor.snapshot_at or datetime.now(UTC)  # set by __enter__
            for t in TABLES:
                landing = self.landings[t] = RawLanding(self.raw_dir, SOURCE, f"{self.province}/{t}", self.run_id)
                # the database answers the next FETCH (asked from another thread) while this answer becomes
                # tuples, columns and payloads and lands
                for fetched in read_ahead(extractor.row_batches(t, self.starts[t]), name=f"land-{self.province}-{t}"):
                    batch = Batch.from_rows(t, fetched.rows(), extractor.columns[t])
                    landing.write_columns(keys=batch.keys, updated=batch.updated, payloads=batch.payloads,
                                          hashes=batch.hashes)
                    self.tombstones[t] += batch.tombstones
                    last[t] = batch.last
        # The snapshot is released before the (slower) file moves; the watermarks wait for all three.
        paths: dict[str, Path] = {t: self.landings[t].commit() for t in TABLES}

        outcomes = []
        for t in TABLES:
            mark, seen = marks_from[t], last[t]
            old = Keyset.decode(mark) if mark else None
            new = next_watermark(old, seen, self.snapshot_at)
            if seen is not None and new is not None and new.ts < seen.ts:
                log.warning("land registry %s: rows dated up to %s are after the source's clock (%s); "
                            "watermark held at the source's clock", scope_of(self.province, t), seen.ts,
                            self.snapshot_at)
            lnd = self.landings[t]
            outcomes.append(IngestOutcome(scope_of(self.province, t), lnd.rows, lnd.pages, marks_from[t],
                                          None if new is None else new.encode(), str(paths[t])))
        return outcomes

    def abort(self) -> None:
        for landing in self.landings.values():
            landing.abort()
