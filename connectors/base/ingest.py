"""The ingestion-run protocol, once for every connector: read the watermarks, walk the source and land what it
yields, commit the landings, then — and only then — move the watermarks and mark the run successful, together.

`run_job` drives it for an `IngestJob` (the connector's walk and landing over one or more scopes) against the
`IngestStore` the caller hands in (`connectors.base.state`); a failure anywhere before the commit aborts the
job's landings and records the run as failed, watermarks untouched.

`run_ingestion` is the job of a paged HTTP source with one scope: the connector supplies the walk
(`pages(since)` yielding lists of items) and declares which field is the record key and which is the
incremental cursor; everything else is shared here. The land connector's job covers a province's three tables
(`connectors.land.ingest`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from connectors.base.landing import RawLanding
from connectors.base.readahead import read_ahead
from connectors.base.schema import SchemaWatch, SourceSchema
from connectors.base.state import IngestOutcome, IngestStore

log = logging.getLogger(__name__)


class IngestJob(Protocol):
    """One connector's part of an ingestion run. Its attributes are read-only here (properties), so a job may
    hold narrower types: a tuple of scopes, None as the only initial mark."""

    @property
    def source(self) -> str: ...

    @property
    def scopes(self) -> Sequence[str]: ...

    @property
    def initial_mark(self) -> str | None:
        """Where a scope without a watermark starts (recorded as the run's `watermark_from`)."""
        ...

    def land(self, marks: Mapping[str, str | None]) -> list[IngestOutcome]:
        """Walk every scope from its mark, land what comes and commit the landings; one outcome per scope."""
        ...

    def abort(self) -> None:
        """Remove whatever `land` left uncommitted (called when it raised)."""
        ...


def run_job(job: IngestJob, store: IngestStore, run_id: str) -> list[IngestOutcome]:
    """Run `job` as ingestion run `run_id` (see the module docstring); returns its outcomes."""
    marks = {scope: store.watermark(job.source, scope) or job.initial_mark for scope in job.scopes}
    started = datetime.now(UTC)
    store.ingest_started(run_id, job.source, marks, started)
    try:
        outcomes = job.land(marks)
    except BaseException as exc:
        # A landing committed before a later one failed stays (a rerun of this run replaces it); without the
        # watermark move its rows are fetched again next run and deduplicated in staging.
        job.abort()
        store.ingest_failed(run_id, job.source, marks, started, f"{type(exc).__name__}: {exc}"[:2000])
        raise
    # The watermarks move only now that the landings they cover are in place, with the run's success mark.
    store.ingest_succeeded(run_id, job.source, started, outcomes)
    return outcomes


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


class _PagedJob:
    """A paged source with one scope: every page lands as it comes; the new watermark is the newest cursor
    value seen (never before the old one)."""

    initial_mark: str | None

    def __init__(self, source: str, entity: str, scope: str, run_id: str, raw_dir: Path, incremental: Incremental,
                 pages: Callable[[str], Iterator[list[dict[str, Any]]]],
                 page_payloads: Callable[[list[dict[str, Any]]], list[str]] | None, schema: SourceSchema | None):
        self.source, self.entity, self.scope, self.run_id, self.raw_dir = source, entity, scope, run_id, raw_dir
        self.scopes = (scope,)
        self.initial_mark = incremental.initial_value
        self.incremental, self.pages, self.page_payloads = incremental, pages, page_payloads
        self.watch = SchemaWatch(schema, source, incremental.key_field, incremental.cursor_field, incremental.parse)
        self.landing: RawLanding | None = None

    def land(self, marks: Mapping[str, str | None]) -> list[IngestOutcome]:
        inc = self.incremental
        since = marks[self.scope] or inc.initial_value
        landing = self.landing = RawLanding(self.raw_dir, self.source, self.entity, self.run_id)
        max_seen: datetime = inc.parse(since)
        # the next page is fetched while this one lands (connectors.base.readahead)
        for items in read_ahead(self.pages(since), name=f"{self.source}-pages"):
            issues = self.watch.check_page(items, landing.pages + 1)
            landing.write_page(
                items,
                key_field=inc.key_field,
                updated_field=inc.cursor_field,
                payloads=self.page_payloads(items) if self.page_payloads else None,
                issues=issues,
            )
            for item in items:
                raw = item.get(inc.cursor_field) if isinstance(item, dict) else None
                if raw is None:
                    continue
                try:
                    seen = inc.parse(str(raw))
                except ValueError:
                    continue  # an unparseable cursor is landed as is and quarantined in staging
                if seen > max_seen:
                    max_seen = seen
        path = landing.commit()
        return [IngestOutcome(self.scope, landing.rows, landing.pages, since, inc.render(max_seen), str(path))]

    def abort(self) -> None:
        if self.landing is not None:
            self.landing.abort()


def run_ingestion(
    *,
    store: IngestStore,
    source: str,
    entity: str,
    run_id: str,
    raw_dir: Path,
    incremental: Incremental,
    pages: Callable[[str], Iterator[list[dict[str, Any]]]],
    scope: str = "",
    page_payloads: Callable[[list[dict[str, Any]]], list[str]] | None = None,
    schema: SourceSchema | None = None,
) -> IngestResult:
    """Land every page `pages(since)` yields as run `run_id` of (source, scope), with watermark and run record
    in `store`; see the module docstring. With `schema`, records are checked (flags, drift, vanished required
    fields) as they land."""
    t0 = time.monotonic()
    job = _PagedJob(source, entity, scope, run_id, raw_dir, incremental, pages, page_payloads, schema)
    (out,) = run_job(job, store, run_id)
    result = IngestResult(
        source, scope, entity, run_id, out.rows, out.pages, str(out.watermark_from), str(out.watermark_to),
        out.landing_path, time.monotonic() - t0, flagged=job.watch.flagged, new_fields=sorted(job.watch.new_fields),
    )
    log.info(
        "%s%s: %d rows in %d pages, watermark %s -> %s (%.1fs, %.0f rows/s)",
        source, f"/{scope}" if scope else "", result.rows, result.pages, result.watermark_from, result.watermark_to,
        result.seconds, result.rows / max(result.seconds, 1e-9),
    )
    return result
