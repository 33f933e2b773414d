"""The ledger's records: one frozen value per kind of run, as written and as read back.

Times the warehouse sets (`created_at`, `published_at`, ...) are None on a record about to be written and
filled on one read back. Mappings inside records are copied at construction; records compare by value but,
holding dicts, are not hashable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

INGEST_STATUSES = ("running", "failed", "success")


def _frozen_dict(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None:
            object.__setattr__(obj, name, dict(value))


@dataclass(frozen=True)
class IngestRun:
    """One (run, source, scope) of an ingestion: `running` until it is `failed` or `success`."""

    run_id: str
    source: str
    scope: str
    started_at: datetime
    status: str
    finished_at: datetime | None = None
    rows_landed: int | None = None
    pages: int | None = None
    requests: int | None = None
    watermark_from: str | None = None
    watermark_to: str | None = None
    landing_path: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in INGEST_STATUSES:
            raise ValueError(f"ingest run {self.run_id}: unknown status {self.status!r} (known: {INGEST_STATUSES})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageRun:
    """One staging run of a dataset: the conservation counts (rows in = staged + quarantined), where the
    staged and quarantined files are, which ingest runs' landings it read, and rows per reason."""

    run_id: str
    dataset: str
    raw_rows: int
    duplicates_removed: int
    rows_in: int
    rows_staged: int
    rows_quarantined: int
    staged_path: str | None = None
    content_hash: str | None = None
    quarantine_path: str | None = None
    started_at: datetime | None = None
    created_at: datetime | None = None
    inputs: tuple[str, ...] = ()
    """The ingest run ids (`IngestRun.run_id`) whose raw landings were read."""
    quarantine_by_rule: Mapping[str, int] = field(default_factory=dict)
    repairs: Mapping[str, int] = field(default_factory=dict)
    findings: Mapping[str, int] = field(default_factory=dict)
    rows_unchanged: int = 0
    """Rows of the change whose version the tables already held (or a newer one)."""
    mode: str = "full"
    """`change` (merged the new landings), `rebuild` (replaced from every landing), `none` (no new landing),
    `full` (a per-run copy of everything, before staging merged changes)."""
    landings: tuple[str, ...] = ()
    """The raw landings (folders relative to the raw zone) this run merged: the dataset's staged position."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "landings", tuple(self.landings))
        _frozen_dict(self, "quarantine_by_rule", "repairs", "findings")

    @property
    def conservation_ok(self) -> bool:
        return self.rows_in == self.rows_staged + self.rows_quarantined + self.rows_unchanged

    @property
    def finished_at(self) -> datetime | None:
        """When the run was recorded (its end)."""
        return self.created_at


@dataclass(frozen=True)
class RuleResult:
    """One quality rule's outcome in a quality run."""

    rule: str
    expectation: str
    column_name: str | None
    severity: str
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    tolerance: str | None = None
    details: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _frozen_dict(self, "details")


@dataclass(frozen=True)
class QualityRun:
    """One validation of a staged dataset: the suite's verdict, the gate, and every rule's outcome."""

    run_id: str
    dataset: str
    suite: str
    success: bool
    gate_passed: bool
    evaluated: int
    failed_critical: int
    failed_warning: int
    created_at: datetime | None = None
    results: tuple[RuleResult, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.success)


@dataclass(frozen=True)
class ReconcileRun:
    """One reconciliation run: counts of what it wrote, its metrics (links, timings, inputs) and outputs."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    outputs: Mapping[str, Any] | None = None
    model_paths: Mapping[str, Any] | None = None  # link model name -> its saved Splink JSON

    def __post_init__(self) -> None:
        _frozen_dict(self, "counts", "metrics", "outputs", "model_paths")

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started_at": self.started_at, "finished_at": self.finished_at,
                "status": self.status, "counts": self.counts, "metrics": self.metrics, "outputs": self.outputs}


@dataclass(frozen=True)
class LinkModelRecord:
    """A persisted person-link model: where its files are, their hash, and whether it is the one in use."""

    link_type: str
    model_id: str
    status: str  # active | retired | candidate
    trained_run_id: str
    path: str
    sha256: str
    summary: Mapping[str, Any] | None = None
    trained_at: datetime | None = None
    activated_at: datetime | None = None

    def __post_init__(self) -> None:
        _frozen_dict(self, "summary")


PUBLICATION_STATUSES = ("published", "expired")


@dataclass(frozen=True)
class Publication:
    """One published version of a dataset: `published` while its table is kept, `expired` after retention."""

    dataset: str
    version: int
    run_id: str
    content_hash: str
    row_count: int
    contract_version: str
    table_name: str
    parquet_path: str
    status: str = "published"
    published_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in PUBLICATION_STATUSES:
            raise ValueError(f"{self.dataset} v{self.version}: unknown status {self.status!r}")


@dataclass(frozen=True)
class AuditReport:
    """One audit report: the integrate run it is about, where its files are, and its headline figures."""

    report_id: str
    run_id: str
    publish_run_id: str | None
    audit_run_id: str | None
    folder: str
    headline: Mapping[str, Any]
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        _frozen_dict(self, "headline")

    def as_dict(self) -> dict[str, Any]:
        return {"report_id": self.report_id, "run_id": self.run_id, "publish_run_id": self.publish_run_id,
                "audit_run_id": self.audit_run_id, "created_at": self.created_at, "folder": self.folder,
                "headline": self.headline}
