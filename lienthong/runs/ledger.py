"""The ledger's writes and queries: every SQL statement on its tables is here.

Functions take a psycopg2 connection and run in the caller's transaction (they never commit), so state changes
that belong together are one transaction: the caller opens it (`Ledger.transaction()`, or a connection of its
own) and calls several of them. Each first makes sure the ledger is at the code's version (`ensure_ledger`: two
small reads when it is). `Ledger` is the same over a warehouse URL, one transaction per call, and is the
connectors' `IngestStore`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg2.extensions import connection
from psycopg2.extras import Json

from lienthong.runs.records import (
    AuditReport,
    IngestRun,
    LinkModelRecord,
    Publication,
    QualityRun,
    ReconcileRun,
    RuleResult,
    StageRun,
)
from lienthong.runs.schema import OPS_SCHEMA, ensure_ledger

if TYPE_CHECKING:  # the connectors' protocol, implemented structurally here; never imported at run time
    from connectors.base.state import IngestOutcome

log = logging.getLogger(__name__)

_S = OPS_SCHEMA


def _json(value: Mapping[str, Any] | None) -> Json | None:
    return None if value is None else Json(dict(value), dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _rows(cur, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# ------------------------------------------------------------------------------------------ watermarks

def watermark(conn: connection, source: str, scope: str = "") -> str | None:
    """The watermark of (source, scope), None before its first successful run."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT value FROM {_S}.watermark WHERE source = %s AND scope = %s", (source, scope))
        row = cur.fetchone()
    return row[0] if row else None


def advance_watermarks(conn: connection, source: str, marks: Mapping[str, str], run_id: str) -> None:
    """Set the watermarks of several scopes of `source` (scope -> value), recording the run that moved them."""
    ensure_ledger(conn)
    if not marks:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {_S}.watermark (source, scope, value, run_id, updated_at)
                VALUES (%s, %s, %s, %s, now())
                ON CONFLICT (source, scope) DO UPDATE
                SET value = EXCLUDED.value, run_id = EXCLUDED.run_id, updated_at = now()""",
            [(source, scope, value, run_id) for scope, value in marks.items()],
        )


def forget_watermarks(conn: connection, source: str | None = None) -> int:
    """Drop the watermarks of `source` (every source when None): the next runs are full extracts."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        if source is None:
            cur.execute(f"DELETE FROM {_S}.watermark")
        else:
            cur.execute(f"DELETE FROM {_S}.watermark WHERE source = %s", (source,))
        return cur.rowcount


# --------------------------------------------------------------------------------------- ingest runs

_INGEST_COLUMNS = ("run_id", "source", "scope", "started_at", "finished_at", "status", "rows_landed", "pages",
                   "requests", "watermark_from", "watermark_to", "landing_path", "error")


def record_ingest_run(conn: connection, run: IngestRun) -> None:
    """Insert or replace the record of (run, source, scope). A finished run without `finished_at` gets now()."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {_S}.ingest_run
                (run_id, source, scope, started_at, finished_at, status, rows_landed, pages, requests,
                 watermark_from, watermark_to, landing_path, error)
                VALUES (%(run_id)s, %(source)s, %(scope)s, %(started_at)s,
                        coalesce(%(finished_at)s, CASE WHEN %(status)s = 'running' THEN NULL ELSE now() END),
                        %(status)s, %(rows_landed)s, %(pages)s, %(requests)s, %(watermark_from)s, %(watermark_to)s,
                        %(landing_path)s, %(error)s)
                ON CONFLICT (run_id, source, scope) DO UPDATE SET
                  started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
                  rows_landed = EXCLUDED.rows_landed, pages = EXCLUDED.pages, requests = EXCLUDED.requests,
                  watermark_from = EXCLUDED.watermark_from, watermark_to = EXCLUDED.watermark_to,
                  landing_path = EXCLUDED.landing_path, error = EXCLUDED.error""",
            run.as_dict(),
        )


def ingest_runs(conn: connection, run_ids: Iterable[str], sources: Iterable[str] | None = None, *,
                status: str | None = None) -> list[IngestRun]:
    """The records of runs `run_ids` (of `sources`, with `status`), oldest first."""
    ensure_ledger(conn)
    where: list[str] = ["run_id = ANY(%s)"]
    params: list[Any] = [sorted(set(run_ids))]
    if sources is not None:
        where.append("source = ANY(%s)")
        params.append(sorted(set(sources)))
    if status is not None:
        where.append("status = %s")
        params.append(status)
    with conn.cursor() as cur:
        rows = _rows(cur, f"""SELECT {", ".join(_INGEST_COLUMNS)} FROM {_S}.ingest_run WHERE {" AND ".join(where)}
                              ORDER BY started_at, run_id, source, scope""", params)
    return [IngestRun(**r) for r in rows]


def stage_run_ingests(conn: connection, run_id: str, dataset: str, source: str | None) -> list[IngestRun]:
    """The successful ingest runs of `source` whose landings staging run (run_id, dataset) read, oldest first.
    (Ingestion DAGs share run ids: the source tells them apart.)"""
    ensure_ledger(conn)
    cols = ", ".join(f"i.{c}" for c in _INGEST_COLUMNS)
    with conn.cursor() as cur:
        rows = _rows(cur, f"""SELECT {cols} FROM {_S}.stage_run_input s
                              JOIN {_S}.ingest_run i ON i.run_id = s.ingest_run_id
                              WHERE s.run_id = %s AND s.dataset = %s AND i.source = %s
                                AND i.status = 'success'
                              ORDER BY i.started_at, i.run_id, i.scope""", (run_id, dataset, source))
    return [IngestRun(**r) for r in rows]


def ingest_totals(conn: connection) -> list[dict[str, Any]]:
    """Per source: successful runs, rows landed by them and the highest watermark reached (`watermark`)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        return _rows(cur, f"""SELECT source, count(*) AS runs, coalesce(sum(rows_landed), 0) AS rows_landed,
                                     max(watermark_to) AS watermark
                              FROM {_S}.ingest_run WHERE status = 'success' GROUP BY source ORDER BY source""")


# ---------------------------------------------------------------------------------------- stage runs

_STAGE_COLUMNS = ("run_id", "dataset", "raw_rows", "duplicates_removed", "rows_in", "rows_staged", "rows_quarantined",
                  "staged_path", "content_hash", "quarantine_path", "started_at", "created_at", "rows_unchanged", "mode")
_REASON_FIELDS = {"quarantine": "quarantine_by_rule", "repair": "repairs", "finding": "findings"}


def record_stage_run(conn: connection, run: StageRun) -> None:
    """Insert or replace staging run (run_id, dataset) with its inputs and rows per reason."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {_S}.stage_run WHERE run_id = %s AND dataset = %s", (run.run_id, run.dataset))
        cur.execute(
            f"""INSERT INTO {_S}.stage_run (run_id, dataset, raw_rows, duplicates_removed, rows_in, rows_staged,
                rows_quarantined, conservation_ok, staged_path, content_hash, quarantine_path, started_at,
                rows_unchanged, mode)
                VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)""",
            (run.run_id, run.dataset, run.raw_rows, run.duplicates_removed, run.rows_in, run.rows_staged,
             run.rows_quarantined, run.conservation_ok, run.staged_path, run.content_hash, run.quarantine_path,
             run.started_at, run.rows_unchanged, run.mode),
        )
        if run.mode == "rebuild":
            cur.execute(f"DELETE FROM {_S}.stage_landing WHERE dataset = %s", (run.dataset,))
        cur.executemany(f"""INSERT INTO {_S}.stage_landing (dataset, landing, run_id) VALUES (%s, %s, %s)
                            ON CONFLICT (dataset, landing) DO NOTHING""",
                        [(run.dataset, landing, run.run_id) for landing in sorted(set(run.landings))])
        cur.executemany(f"INSERT INTO {_S}.stage_run_input (run_id, dataset, ingest_run_id) VALUES (%s, %s, %s)",
                        [(run.run_id, run.dataset, i) for i in sorted(set(run.inputs))])
        cur.executemany(
            f"INSERT INTO {_S}.stage_run_reason (run_id, dataset, kind, reason, rows) VALUES (%s, %s, %s, %s, %s)",
            [(run.run_id, run.dataset, kind, reason, n)
             for kind, name in _REASON_FIELDS.items() for reason, n in getattr(run, name).items()],
        )


def record_quarantine_moved(conn: connection, run_id: str, dataset: str, rows: int, by_rule: Mapping[str, int],
                            staged_path: str | None = None, quarantine_path: str | None = None) -> None:
    """`rows` staged rows of run (run_id, dataset) moved to quarantine after validation; `by_rule` the rows per
    rule (a row failing two rules counts for both), set as those rules' quarantine counts; the table versions
    the move left (when given) become the run's staged and quarantine versions."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"""UPDATE {_S}.stage_run SET rows_staged = rows_staged - %s, rows_quarantined = rows_quarantined + %s,
                               staged_path = coalesce(%s, staged_path), quarantine_path = coalesce(%s, quarantine_path)
                        WHERE run_id = %s AND dataset = %s""", (rows, rows, staged_path, quarantine_path, run_id, dataset))
        cur.executemany(
            f"""INSERT INTO {_S}.stage_run_reason (run_id, dataset, kind, reason, rows)
                SELECT %s, %s, 'quarantine', %s, %s
                WHERE EXISTS (SELECT 1 FROM {_S}.stage_run WHERE run_id = %s AND dataset = %s)
                ON CONFLICT (run_id, dataset, kind, reason) DO UPDATE SET rows = EXCLUDED.rows""",
            [(run_id, dataset, rule, n, run_id, dataset) for rule, n in by_rule.items()],
        )


def _stage_runs(cur, where: str, params: Sequence[Any], order: str) -> list[StageRun]:
    cols = ", ".join(f"s.{c}" for c in _STAGE_COLUMNS)
    rows = _rows(cur, f"SELECT {cols} FROM {_S}.stage_run s WHERE {where} ORDER BY {order}", params)
    if not rows:
        return []
    keys = ([r["run_id"] for r in rows], [r["dataset"] for r in rows])
    inputs: dict[tuple[str, str], list[str]] = {}
    cur.execute(f"""SELECT i.run_id, i.dataset, i.ingest_run_id FROM {_S}.stage_run_input i
                    JOIN unnest(%s::text[], %s::text[]) AS k(run_id, dataset) USING (run_id, dataset)
                    ORDER BY 1, 2, 3""", keys)
    for run_id, dataset, ingest_run_id in cur.fetchall():
        inputs.setdefault((run_id, dataset), []).append(ingest_run_id)
    reasons: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    cur.execute(f"""SELECT r.run_id, r.dataset, r.kind, r.reason, r.rows FROM {_S}.stage_run_reason r
                    JOIN unnest(%s::text[], %s::text[]) AS k(run_id, dataset) USING (run_id, dataset)
                    ORDER BY 1, 2, 3, 4""", keys)
    for run_id, dataset, kind, reason, n in cur.fetchall():
        reasons.setdefault((run_id, dataset), {}).setdefault(kind, {})[reason] = int(n)
    out = []
    for r in rows:
        key = (r["run_id"], r["dataset"])
        by_kind = reasons.get(key, {})
        # {field: rows per reason} for the three Mapping fields _REASON_FIELDS names
        per_reason: dict[str, Any] = {name: by_kind.get(kind, {}) for kind, name in _REASON_FIELDS.items()}
        out.append(StageRun(**r, inputs=tuple(inputs.get(key, ())), **per_reason))
    return out


def record_staged_landings(conn: connection, dataset: str, landings: Sequence[str], run_id: str) -> None:
    """Move `dataset`'s staged position past `landings` without a stage run (their records changed nothing)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.executemany(f"""INSERT INTO {_S}.stage_landing (dataset, landing, run_id) VALUES (%s, %s, %s)
                            ON CONFLICT (dataset, landing) DO NOTHING""",
                        [(dataset, landing, run_id) for landing in sorted(set(landings))])


def last_validated_staged_path(conn: connection, dataset: str, *, before_run_id: str) -> str | None:
    """The staged version (`stage_run.staged_path`) the newest validated staging run of `dataset` other than
    `before_run_id` left, or None."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT s.staged_path FROM {_S}.stage_run s
                        JOIN {_S}.quality_run q ON q.run_id = s.run_id AND q.dataset = s.dataset
                        WHERE s.dataset = %s AND s.run_id <> %s ORDER BY s.created_at DESC LIMIT 1""",
                    (dataset, before_run_id))
        row = cur.fetchone()
    return row[0] if row else None


def staged_landings(conn: connection, dataset: str) -> set[str]:
    """The raw landings `dataset`'s staged table has merged (its staged position)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT landing FROM {_S}.stage_landing WHERE dataset = %s", (dataset,))
        return {r[0] for r in cur.fetchall()}


def stage_run(conn: connection, run_id: str, dataset: str) -> StageRun | None:
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _stage_runs(cur, "s.run_id = %s AND s.dataset = %s", (run_id, dataset), "s.dataset")
    return found[0] if found else None


def stage_runs(conn: connection, run_id: str) -> list[StageRun]:
    """Every dataset staged by run `run_id`, by dataset."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        return _stage_runs(cur, "s.run_id = %s", (run_id,), "s.dataset")


def latest_stage_run(conn: connection, dataset: str) -> StageRun | None:
    """The newest staging run of `dataset`."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _stage_runs(cur, f"""(s.run_id, s.dataset) = (SELECT run_id, dataset FROM {_S}.stage_run
                                     WHERE dataset = %s ORDER BY created_at DESC LIMIT 1)""", (dataset,), "s.dataset")
    return found[0] if found else None


def latest_stage_runs(conn: connection) -> list[StageRun]:
    """The newest staging run of each dataset, by dataset."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        return _stage_runs(cur, f"""(s.run_id, s.dataset) IN (SELECT DISTINCT ON (dataset) run_id, dataset
                                    FROM {_S}.stage_run ORDER BY dataset, created_at DESC)""", (), "s.dataset")


def latest_staged_run_id(conn: connection) -> str | None:
    """The run that staged something last (the integrate run a report is about by default)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT run_id FROM {_S}.stage_run ORDER BY created_at DESC LIMIT 1")
        row = cur.fetchone()
    return row[0] if row else None


def integrate_run_totals(conn: connection, up_to_run_id: str, limit: int) -> list[dict[str, Any]]:
    """One row per integrate run (runs that staged) up to and including `up_to_run_id`, the newest `limit`,
    newest first: `run_id`, `started_at` (first staging start), `staged_at` (last staging end), `rows_raw`,
    `rows_in`, `rows_staged`, `rows_quarantined` (sums over its datasets), and `reconciled_at` and `counts` of
    its successful reconciliation (None without one)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        return _rows(cur, f"""
            WITH s AS (
              SELECT run_id, min(coalesce(started_at, created_at)) AS started_at, max(created_at) AS staged_at,
                     sum(raw_rows) AS rows_raw, sum(rows_in) AS rows_in, sum(rows_staged) AS rows_staged,
                     sum(rows_quarantined) AS rows_quarantined
              FROM {_S}.stage_run GROUP BY run_id)
            SELECT s.*, r.finished_at AS reconciled_at, r.counts
            FROM s LEFT JOIN {_S}.reconcile_run r ON r.run_id = s.run_id AND r.status = 'success'
            WHERE s.staged_at <= (SELECT max(created_at) FROM {_S}.stage_run WHERE run_id = %s)
            ORDER BY s.staged_at DESC LIMIT %s""", (up_to_run_id, limit))


# -------------------------------------------------------------------------------------- quality runs

_QUALITY_COLUMNS = ("run_id", "dataset", "suite", "success", "gate_passed", "evaluated", "failed_critical",
                    "failed_warning", "created_at")
_RESULT_COLUMNS = ("rule", "expectation", "column_name", "severity", "success", "element_count", "unexpected_count",
                   "unexpected_percent", "tolerance", "details")


def record_quality_run(conn: connection, run: QualityRun) -> None:
    """Insert or replace quality run (run_id, dataset) and its rule results."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {_S}.quality_result WHERE run_id = %s AND dataset = %s", (run.run_id, run.dataset))
        cur.execute(f"DELETE FROM {_S}.quality_run WHERE run_id = %s AND dataset = %s", (run.run_id, run.dataset))
        cur.execute(
            f"""INSERT INTO {_S}.quality_run (run_id, dataset, suite, success, gate_passed, evaluated, failed_critical,
                failed_warning) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)""",
            (run.run_id, run.dataset, run.suite, run.success, run.gate_passed, run.evaluated, run.failed_critical,
             run.failed_warning),
        )
        cur.executemany(
            f"""INSERT INTO {_S}.quality_result (run_id, dataset, {", ".join(_RESULT_COLUMNS)})
                VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)""",
            [(run.run_id, run.dataset, r.rule, r.expectation, r.column_name, r.severity, r.success, r.element_count,
              r.unexpected_count, r.unexpected_percent, r.tolerance, _json(r.details)) for r in run.results],
        )


def _quality_runs(cur, where: str, params: Sequence[Any], *, results: bool) -> list[QualityRun]:
    cols = ", ".join(f"q.{c}" for c in _QUALITY_COLUMNS)
    runs = _rows(cur, f"SELECT {cols} FROM {_S}.quality_run q WHERE {where} ORDER BY q.run_id, q.dataset", params)
    by_key: dict[tuple[str, str], list[RuleResult]] = {}
    if results and runs:
        keys = ([r["run_id"] for r in runs], [r["dataset"] for r in runs])
        rcols = ", ".join(f"r.{c}" for c in _RESULT_COLUMNS)
        for r in _rows(cur, f"""SELECT r.run_id, r.dataset, {rcols} FROM {_S}.quality_result r
                                JOIN unnest(%s::text[], %s::text[]) AS k(run_id, dataset) USING (run_id, dataset)
                                ORDER BY r.run_id, r.dataset, r.rule""", keys):
            key = (r.pop("run_id"), r.pop("dataset"))
            by_key.setdefault(key, []).append(RuleResult(**r))
    return [QualityRun(**r, results=tuple(by_key.get((r["run_id"], r["dataset"]), ()))) for r in runs]


def quality_run(conn: connection, run_id: str, dataset: str, *, results: bool = False) -> QualityRun | None:
    """Quality run (run_id, dataset), with its rule results when `results`."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _quality_runs(cur, "q.run_id = %s AND q.dataset = %s", (run_id, dataset), results=results)
    return found[0] if found else None


def quality_runs(conn: connection, run_id: str | None = None) -> list[QualityRun]:
    """The quality runs of integrate run `run_id` (every one when None) with their rule results, by run and
    dataset; results by rule."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        if run_id is None:
            return _quality_runs(cur, "true", (), results=True)
        return _quality_runs(cur, "q.run_id = %s", (run_id,), results=True)


def latest_quality_runs(conn: connection) -> list[QualityRun]:
    """The newest quality run of each dataset (without rule results), by dataset."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        return _quality_runs(cur, f"""(q.run_id, q.dataset) IN (SELECT DISTINCT ON (dataset) run_id, dataset
                                      FROM {_S}.quality_run ORDER BY dataset, created_at DESC)""", (),
                             results=False)


def rule_pass_counts(conn: connection, run_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Per run: (rules passed, rules evaluated) over all its datasets."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"""SELECT run_id, count(*) FILTER (WHERE success), count(*) FROM {_S}.quality_result
                        WHERE run_id = ANY(%s) GROUP BY run_id""", (list(run_ids),))
        return {run_id: (int(passed), int(total)) for run_id, passed, total in cur.fetchall()}


# ------------------------------------------------------------------------------------ reconcile runs

_RECONCILE_COLUMNS = ("run_id", "started_at", "finished_at", "status", "counts", "metrics", "outputs", "model_paths")


def record_reconcile_run(conn: connection, run: ReconcileRun) -> None:
    """Insert or replace reconciliation run `run.run_id`."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {_S}.reconcile_run (run_id, started_at, finished_at, status, counts, metrics, outputs,
                                                  model_paths)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (run_id) DO UPDATE SET
                  started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
                  counts = EXCLUDED.counts, metrics = EXCLUDED.metrics, outputs = EXCLUDED.outputs,
                  model_paths = EXCLUDED.model_paths""",
            (run.run_id, run.started_at, run.finished_at, run.status, _json(run.counts), _json(run.metrics),
             _json(run.outputs), _json(run.model_paths)),
        )


def reconcile_run(conn: connection, run_id: str) -> ReconcileRun | None:
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _rows(cur, f"SELECT {', '.join(_RECONCILE_COLUMNS)} FROM {_S}.reconcile_run WHERE run_id = %s",
                      (run_id,))
    return ReconcileRun(**found[0]) if found else None


def latest_reconcile_run(conn: connection, status: str = "success") -> ReconcileRun | None:
    """The reconciliation run with `status` that finished last."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _rows(cur, f"""SELECT {', '.join(_RECONCILE_COLUMNS)} FROM {_S}.reconcile_run WHERE status = %s
                               ORDER BY finished_at DESC LIMIT 1""", (status,))
    return ReconcileRun(**found[0]) if found else None


def unfinished_reconcile_runs(conn: connection, since: datetime | None) -> list[ReconcileRun]:
    """Reconciliation runs started after `since` (all, when None) that did not succeed: running, failed, or
    killed. They may have written part of the link state, so the next run compares against their inputs too."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _rows(cur, f"""SELECT {', '.join(_RECONCILE_COLUMNS)} FROM {_S}.reconcile_run
                               WHERE status <> 'success' AND (%s::timestamptz IS NULL OR started_at > %s)
                               ORDER BY started_at""", (since, since))
    return [ReconcileRun(**r) for r in found]


def sources_read_at(conn: connection, sources: Iterable[str], datasets: Iterable[str]) -> datetime | None:
    """The latest time the staged `datasets` certainly reflect every one of `sources`: over each (source,
    scope) ingested, the start of its newest successful ingest run whose data the staged tables hold (its
    landing merged into one of `datasets`, per `stage_landing`, or nothing landed) with no earlier landing of
    that scope left unstaged; then the earliest of these. An extract started at T reads the source as of T or
    later, so staged data hold no state older than the result. None when some source or scope has no such
    run (a landing not staged yet, a source never ingested): nothing is known to be that fresh.

    Asked before a run picks its staged inputs, it is a lower bound for the data the run then reads (staged
    tables only grow by merging). A scope no longer ingested holds the time back: conservative."""
    ensure_ledger(conn)
    sources = sorted(set(sources))
    with conn.cursor() as cur:
        cur.execute(
            f"""WITH staged AS (SELECT DISTINCT landing FROM {_S}.stage_landing WHERE dataset = ANY(%(datasets)s)),
                ran AS (
                  SELECT i.source, i.scope, i.started_at, coalesce(i.rows_landed, 0) > 0 AS landed,
                         EXISTS (SELECT 1 FROM staged AS s WHERE i.landing_path = s.landing
                                   OR right(i.landing_path, length(s.landing) + 1) = '/' || s.landing) AS merged
                  FROM {_S}.ingest_run AS i WHERE i.status = 'success' AND i.source = ANY(%(sources)s)),
                usable AS (
                  SELECT r.source, r.scope, max(r.started_at) AS read_at FROM ran AS r
                  WHERE (r.merged OR NOT r.landed)
                    AND NOT EXISTS (SELECT 1 FROM ran AS p WHERE p.source = r.source AND p.scope = r.scope
                                      AND p.started_at <= r.started_at AND p.landed AND NOT p.merged)
                  GROUP BY 1, 2),
                scopes AS (SELECT DISTINCT source, scope FROM ran)
            SELECT min(u.read_at), bool_and(u.read_at IS NOT NULL), count(DISTINCT sc.source)
            FROM scopes AS sc LEFT JOIN usable AS u USING (source, scope)""",
            {"datasets": sorted(set(datasets)), "sources": sources},
        )
        read_at, every_scope, n_sources = cur.fetchone()
    if not every_scope or n_sources != len(sources):
        return None
    return read_at


# -------------------------------------------------------------------------------------- link models

_LINK_MODEL_COLUMNS = ("link_type", "model_id", "status", "trained_run_id", "path", "sha256", "summary", "trained_at",
                       "activated_at")


def record_link_model(conn: connection, model: LinkModelRecord) -> None:
    """Insert (or, for the same model id, keep) a model; `active` retires the type's other active model in
    the same transaction (the caller commits)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        if model.status == "active":
            cur.execute(f"""UPDATE {_S}.link_model SET status = 'retired'
                            WHERE link_type = %s AND status = 'active' AND model_id <> %s""",
                        (model.link_type, model.model_id))
        cur.execute(
            f"""INSERT INTO {_S}.link_model (link_type, model_id, status, trained_run_id, path, sha256, summary,
                    activated_at)
                VALUES (%s,%s,%s,%s,%s,%s,%s, CASE WHEN %s = 'active' THEN now() END)
                ON CONFLICT (link_type, model_id) DO UPDATE SET status = EXCLUDED.status,
                    activated_at = CASE WHEN EXCLUDED.status = 'active' AND {_S}.link_model.status <> 'active'
                                        THEN now() ELSE {_S}.link_model.activated_at END""",
            (model.link_type, model.model_id, model.status, model.trained_run_id, model.path, model.sha256,
             _json(model.summary), model.status),
        )


def active_link_model(conn: connection, link_type: str) -> LinkModelRecord | None:
    """The model every reconciliation of `link_type` uses, if one was persisted."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _rows(cur, f"""SELECT {', '.join(_LINK_MODEL_COLUMNS)} FROM {_S}.link_model
                               WHERE link_type = %s AND status = 'active'""", (link_type,))
    return LinkModelRecord(**found[0]) if found else None


def link_models(conn: connection, link_type: str | None = None) -> list[LinkModelRecord]:
    """Every persisted model (of one link type), newest first."""
    ensure_ledger(conn)
    where, params = ("WHERE link_type = %s", (link_type,)) if link_type else ("", ())
    with conn.cursor() as cur:
        found = _rows(cur, f"""SELECT {', '.join(_LINK_MODEL_COLUMNS)} FROM {_S}.link_model {where}
                               ORDER BY trained_at DESC, model_id""", params)
    return [LinkModelRecord(**r) for r in found]


# -------------------------------------------------------------------------------------- publications

_PUBLICATION_COLUMNS = ("dataset", "version", "run_id", "content_hash", "row_count", "contract_version", "table_name",
                        "parquet_path", "status", "published_at")


def record_publication(conn: connection, pub: Publication) -> None:
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {_S}.publication (dataset, version, run_id, content_hash, row_count, contract_version,
                table_name, parquet_path, status) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)""",
            (pub.dataset, pub.version, pub.run_id, pub.content_hash, pub.row_count, pub.contract_version,
             pub.table_name, pub.parquet_path, pub.status),
        )


def expire_publication(conn: connection, dataset: str, version: int) -> None:
    """Version `version` of `dataset` is no longer kept (retention)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {_S}.publication SET status = 'expired' WHERE dataset = %s AND version = %s",
                    (dataset, version))


def _publications(cur, where: list[str], params: list[Any], order: str = "dataset, version") -> list[Publication]:
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    rows = _rows(cur, f"SELECT {', '.join(_PUBLICATION_COLUMNS)} FROM {_S}.publication {condition} ORDER BY {order}",
                 params)
    return [Publication(**r) for r in rows]


def publications(conn: connection, dataset: str | None = None, *, status: str | None = None,
                 up_to_version: int | None = None, run_id: str | None = None) -> list[Publication]:
    """Publications (of `dataset`, with `status`, up to `up_to_version`, written by publish run `run_id`), by
    dataset and version."""
    ensure_ledger(conn)
    where, params = [], []
    for column, op, value in (("dataset", "=", dataset), ("status", "=", status), ("version", "<=", up_to_version),
                              ("run_id", "=", run_id)):
        if value is not None:
            where.append(f"{column} {op} %s")
            params.append(value)
    with conn.cursor() as cur:
        return _publications(cur, where, params)


def last_publication(conn: connection, dataset: str) -> Publication | None:
    """The newest version of `dataset` still published."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _publications(cur, ["dataset = %s", "status = 'published'"], [dataset], "version DESC LIMIT 1")
    return found[0] if found else None


def newest_publication_sql(dataset: str) -> str:
    """The SQL text of a query for the newest publication row (dataset, version, table_name) of the dataset the
    SQL expression `dataset` names: for SQL that runs where Python cannot, such as the session log's login
    trigger (lienthong.sessions), so that the ledger stays the only code that knows its tables."""
    return (f"SELECT pb.dataset, pb.version, pb.table_name FROM {_S}.publication pb "
            f"WHERE pb.dataset = {dataset} ORDER BY pb.version DESC LIMIT 1")


def publications_since_sql(dataset: str, since: str) -> str:
    """The SQL text of a query for the kept publication rows (dataset, version, table_name) of the dataset the
    SQL expression `dataset` names, from the version the expression `since` gives on: for the session log's
    record of a change-feed read (lienthong.sessions), as `newest_publication_sql`."""
    return (f"SELECT pb.dataset, pb.version, pb.table_name FROM {_S}.publication pb "
            f"WHERE pb.dataset = {dataset} AND pb.version >= {since} AND pb.status = 'published'")


def published_datasets(conn: connection) -> list[str]:
    """Every dataset with a publication record, sorted."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT DISTINCT dataset FROM {_S}.publication ORDER BY 1")
        return [r[0] for r in cur.fetchall()]


def publications_after_staging(conn: connection, integrate_run_id: str) -> list[Publication]:
    """The versions written after integrate run `integrate_run_id` last staged and before another run staged
    next (what its publish round wrote, when the publish run is not known), by dataset and version."""
    ensure_ledger(conn)
    where = [f"""published_at >= (SELECT max(created_at) FROM {_S}.stage_run WHERE run_id = %s)
                 AND published_at < coalesce((SELECT min(created_at) FROM {_S}.stage_run
                   WHERE created_at > (SELECT max(created_at) FROM {_S}.stage_run WHERE run_id = %s)
                     AND run_id <> %s), 'infinity')"""]
    with conn.cursor() as cur:
        return _publications(cur, where, [integrate_run_id] * 3)


# ------------------------------------------------------------------------------------- audit reports

_REPORT_COLUMNS = ("report_id", "run_id", "publish_run_id", "audit_run_id", "created_at", "folder", "headline")


def record_audit_report(conn: connection, report: AuditReport) -> None:
    """Insert or replace the row of a report (a rerun of the same run replaces its report)."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {_S}.audit_report (report_id, run_id, publish_run_id, audit_run_id, folder, headline)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (report_id) DO UPDATE SET publish_run_id = EXCLUDED.publish_run_id,
                  audit_run_id = EXCLUDED.audit_run_id, created_at = now(), folder = EXCLUDED.folder,
                  headline = EXCLUDED.headline""",
            (report.report_id, report.run_id, report.publish_run_id, report.audit_run_id, report.folder,
             Json(dict(report.headline))),
        )


def audit_reports(conn: connection, limit: int = 200) -> list[AuditReport]:
    """Reports, newest first."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        rows = _rows(cur, f"SELECT {', '.join(_REPORT_COLUMNS)} FROM {_S}.audit_report ORDER BY created_at DESC LIMIT %s",
                     (limit,))
    return [AuditReport(**r) for r in rows]


def audit_report(conn: connection, report_id: str) -> AuditReport | None:
    ensure_ledger(conn)
    with conn.cursor() as cur:
        found = _rows(cur, f"SELECT {', '.join(_REPORT_COLUMNS)} FROM {_S}.audit_report WHERE report_id = %s",
                      (report_id,))
    return AuditReport(**found[0]) if found else None


# ----------------------------------------------------------------------------------- over a URL

class Ledger:
    """The ledger of the warehouse at `url` (None: the configured one). Each method is one transaction;
    `transaction()` opens one for several of the functions above. Implements `connectors.base.state.IngestStore`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def __repr__(self) -> str:
        return "Ledger(<configured warehouse>)" if self.url is None else "Ledger(<warehouse url>)"  # no password

    @contextmanager
    def transaction(self) -> Iterator[connection]:
        """A connection to the warehouse with the ledger at this code's version, committed on success and
        rolled back on error."""
        from lienthong.db import connect

        with connect(self.url) as conn:
            ensure_ledger(conn)
            yield conn

    # IngestStore
    def watermark(self, source: str, scope: str = "") -> str | None:
        with self.transaction() as conn:
            return watermark(conn, source, scope)

    def ingest_started(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime) -> None:
        with self.transaction() as conn:
            for scope, mark in marks.items():
                record_ingest_run(conn, IngestRun(run_id, source, scope, started_at, "running", watermark_from=mark))

    def ingest_failed(self, run_id: str, source: str, marks: Mapping[str, str | None], started_at: datetime,
                      error: str) -> None:
        with self.transaction() as conn:
            for scope, mark in marks.items():
                record_ingest_run(conn, IngestRun(run_id, source, scope, started_at, "failed", watermark_from=mark,
                                                  error=error))

    def ingest_succeeded(self, run_id: str, source: str, started_at: datetime,
                         outcomes: Sequence[IngestOutcome]) -> None:
        moved = {o.scope: str(o.watermark_to) for o in outcomes if o.moves_watermark}
        with self.transaction() as conn:
            advance_watermarks(conn, source, moved, run_id)
            for o in outcomes:
                record_ingest_run(conn, IngestRun(
                    run_id, source, o.scope, started_at, "success", rows_landed=o.rows, pages=o.pages,
                    watermark_from=o.watermark_from, watermark_to=o.watermark_to, landing_path=o.landing_path))
        for scope, value in moved.items():
            log.info("watermark %s/%s advanced to %s by run %s", source, scope or "-", value, run_id)

    def forget_watermarks(self, source: str | None = None) -> int:
        with self.transaction() as conn:
            return forget_watermarks(conn, source)
