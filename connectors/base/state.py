"""What a connector needs to remember between runs, as an interface: the `IngestStore` the caller hands in.

Incremental state is declared by the connector (which field is the cursor, its initial value); the store keeps
the watermark per (source, scope) and the record of each ingestion run. A run is `started`, then either
`failed` (watermarks untouched) or `succeeded`: the landing is committed first, then ONE call moves every
scope's watermark and marks the run successful together, so neither can be seen without the other.

The warehouse's implementation is the run ledger (`lienthong.runs.Ledger`); `MemoryIngestStore` is the one
for unit tests. Connectors import neither the warehouse nor its connection code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    """What a successful run did for one scope: rows and pages landed, where, and the watermark it read from
    and ends at (None: the scope has no watermark yet and this run set none)."""

    scope: str
    rows: int
    pages: int
    watermark_from: str | None
    watermark_to: str | None
    landing_path: str

    @property
    def moves_watermark(self) -> bool:
        return self.watermark_to is not None and self.watermark_to != self.watermark_from


@runtime_checkable
class IngestStore(Protocol):
    """Watermarks and ingestion-run records of the sources a connector reads."""

    def watermark(self, source: str, scope: str = "") -> str | None:
        """The scope's watermark, None before its first successful run."""
        ...

    def ingest_started(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime) -> None:
        """Record the run as running for each scope in `marks` (scope -> the watermark it starts from)."""
        ...

    def ingest_failed(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime,
                      error: str) -> None:
        """Record the run as failed for each scope in `marks`; no watermark moves."""
        ...

    def ingest_succeeded(self, run_id: str, source: str, started_at: datetime,
                         outcomes: Sequence[IngestOutcome]) -> None:
        """In one transaction: move the watermark of every outcome that `moves_watermark` and record the run
        successful for every outcome's scope. All of it happens or none of it."""
        ...


@dataclass
class _Mark:
    value: str
    run_id: str


class MemoryIngestStore:
    """An `IngestStore` in memory (unit tests): the same rules, no database. `runs` holds every record as
    (run_id, source, scope) -> dict; `fail_on_success` makes the next `ingest_succeeded` raise after it moved
    the watermarks in its private copy, to show that nothing of it is kept."""

    def __init__(self, marks: Mapping[tuple[str, str], str] | None = None) -> None:
        self.marks: dict[tuple[str, str], _Mark] = {k: _Mark(v, "") for k, v in (marks or {}).items()}
        self.runs: dict[tuple[str, str, str], dict[str, object]] = {}
        self.fail_on_success: BaseException | None = None

    def watermark(self, source: str, scope: str = "") -> str | None:
        mark = self.marks.get((source, scope))
        return mark.value if mark else None

    def ingest_started(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime) -> None:
        for scope, mark in marks.items():
            self.runs[(run_id, source, scope)] = {"status": "running", "started_at": started_at,
                                                  "watermark_from": mark}

    def ingest_failed(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime,
                      error: str) -> None:
        for scope, mark in marks.items():
            self.runs[(run_id, source, scope)] = {"status": "failed", "started_at": started_at,
                                                  "finished_at": datetime.now(UTC), "watermark_from": mark,
                                                  "error": error}

    def ingest_succeeded(self, run_id: str, source: str, started_at: datetime,
                         outcomes: Sequence[IngestOutcome]) -> None:
        marks = dict(self.marks)
        runs = dict(self.runs)
        for o in outcomes:
            if o.moves_watermark:
                marks[(source, o.scope)] = _Mark(str(o.watermark_to), run_id)
            runs[(run_id, source, o.scope)] = {
                "status": "success", "started_at": started_at, "finished_at": datetime.now(UTC), "rows": o.rows,
                "pages": o.pages, "watermark_from": o.watermark_from, "watermark_to": o.watermark_to,
                "landing_path": o.landing_path,
            }
        if self.fail_on_success is not None:
            exc, self.fail_on_success = self.fail_on_success, None
            raise exc
        self.marks, self.runs = marks, runs  # the whole change at once, like the ledger's one transaction
        for o in outcomes:
            if o.moves_watermark:
                log.info("watermark %s/%s advanced to %s by run %s", source, o.scope or "-", o.watermark_to, run_id)
