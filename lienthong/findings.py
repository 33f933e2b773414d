"""Reconciliation findings kept in the warehouse, with a lifecycle across runs (schema `lienthong_ops`).

Owns the `Finding` value with its stable id (the taxonomy it is checked against, what can be wrong between
the population, business and land registries, how bad it is and which agency must fix it, lives in
`lienthong.finding_types` and is re-exported here), and the DDL and SQL of four tables:

* `finding`: one row per problem ever found, `open` or `resolved`, with when it was first and last seen, when
  it was resolved and how often it came back;
* `finding_sync`: one row, the last sync's run and basis;
* `finding_event`: the history, one row per transition: 'opened', 'resolved' and 'reopened'. A finding
  merely seen again by a later run writes no event ('seen' is allowed by the table but not written): a run
  over a large, mostly unchanged set would otherwise add one row per open finding per run. `last_seen_run`
  and `last_seen_at` in `finding` say when it was last seen;

`sync_findings` takes the complete set of findings a run found and moves every finding through its lifecycle
(new, still open, reopened, resolved) with set-based SQL over a temporary table loaded with COPY, so a run
with hundreds of thousands of findings costs a handful of statements. `sync_finding_changes` takes only what
differs from the set the last sync was given (the findings new or with other evidence, and the ids no longer
found), so a run's cost in the warehouse follows the change: an open finding found again unchanged is not
written, and its `last_seen_*` stay those of the last run that wrote it (the run ledger has the runs since).
A difference applies only on top of the set it was computed from: every sync records in `finding_sync` the
basis its caller names for its set (the reconciliation: the file it kept the set in, with a fingerprint of
the finding types), and `sync_finding_changes` refuses to apply a difference computed from another basis.
A writer that changes findings any other way must record no basis (`sync_findings` with `scope` does so).
The reconciliation run itself is recorded in the run ledger (`lienthong.runs`), in the same transaction as its
sync when the caller asks for it (`commit=False`). Every sync also moves the findings' discrepancy cases (the
work of the responsible agencies, `lienthong.cases`, which owns the case columns and `finding_case_event`) in
its transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from psycopg2.extensions import connection

from lienthong.finding_types import AGENCIES, SEVERITIES, TAXONOMY, checked_filters, finding_type
from lienthong.finding_types import FindingType as FindingType  # (re-exported: the taxonomy lives there)
from lienthong.runs.schema import OPS_SCHEMA, ensure_ledger

_SEVERITY_LIST = ", ".join(f"'{s}'" for s in SEVERITIES)  # as SQL literals
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL in JSON text (not an escaped backslash + "u0000")


@dataclass(frozen=True)
class Finding:
    """One problem on identified records, as found by a reconciliation run.

    `subject` holds the identifying keys of the records involved (strings only, e.g.
    `{"enterprise_code": "0101234567", "position": "0"}`); `evidence` holds what shows the problem (JSON-able,
    e.g. the values that differ). `agency` and `severity` override the type's defaults: after construction
    they always hold the effective values (so `dataclasses.replace` with another `type` keeps them; pass
    `agency=None, severity=None` to get the new type's defaults).

    `finding_id` depends on `type` and `subject` only: the same problem on the same records keeps its id
    from run to run while its evidence changes. `subject` and `evidence` are copied and the evidence JSON is
    taken at construction: do not mutate nested evidence afterwards. (Findings compare by value but, holding
    dicts, are not hashable: key them by `finding_id`.)
    """

    type: str
    subject: dict[str, str]
    evidence: dict[str, Any] = field(default_factory=dict)
    agency: str | None = None
    severity: str | None = None

    def __post_init__(self) -> None:
        kind = finding_type(self.type)
        if not isinstance(self.subject, Mapping) or not self.subject:
            raise ValueError(f"{self.type}: subject must be a non-empty mapping of identifying keys")
        for key, value in self.subject.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"{self.type}: subject keys and values must be strings, got {key!r}: {value!r}")
            if "\x00" in key or "\x00" in value:
                raise ValueError(f"{self.type}: subject must not contain NUL characters")
        if not isinstance(self.evidence, Mapping):
            raise ValueError(f"{self.type}: evidence must be a mapping")
        object.__setattr__(self, "subject", dict(self.subject))
        object.__setattr__(self, "evidence", dict(self.evidence))
        if self.agency is None:
            object.__setattr__(self, "agency", kind.agency)
        elif self.agency not in AGENCIES:
            raise ValueError(f"{self.type}: unknown agency {self.agency!r} (known: {', '.join(AGENCIES)})")
        if self.severity is None:
            object.__setattr__(self, "severity", kind.severity)
        elif self.severity not in SEVERITIES:
            raise ValueError(f"{self.type}: unknown severity {self.severity!r} (known: {', '.join(SEVERITIES)})")
        try:
            text = self.evidence_json
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.type}: evidence is not JSON-able: {exc}") from None
        if _JSON_NUL.search(text):  # PostgreSQL's jsonb cannot hold NUL
            raise ValueError(f"{self.type}: evidence must not contain NUL characters")

    @cached_property
    def finding_id(self) -> str:
        """`type` + ":" + the first 16 hex digits of sha256 over the canonical JSON of `[type, subject]`.

        Canonical JSON: keys sorted, no whitespace (separators "," and ":"), non-ASCII kept as UTF-8. Subject
        values are used as given (no normalisation), so producers must spell keys the same way every run.
        """
        canonical = json.dumps([self.type, self.subject], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return f"{self.type}:{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:16]}"

    @cached_property
    def evidence_json(self) -> str:
        """`evidence` as JSON text (keys sorted), as stored."""
        return json.dumps(self.evidence, sort_keys=True, ensure_ascii=False, allow_nan=False)

    @property
    def title(self) -> str:
        return TAXONOMY[self.type].title


FINDINGS_DDL = f"""
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.finding (
  finding_id text PRIMARY KEY,
  type text NOT NULL,
  severity text NOT NULL CHECK (severity IN ({_SEVERITY_LIST})),
  agency text NOT NULL,
  subject jsonb NOT NULL,
  evidence jsonb NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'resolved')),
  first_seen_run text NOT NULL,
  first_seen_at timestamptz NOT NULL,
  last_seen_run text NOT NULL,
  last_seen_at timestamptz NOT NULL,
  resolved_run text,
  resolved_at timestamptz,
  times_reopened integer NOT NULL DEFAULT 0,
  CHECK ((status = 'resolved') = (resolved_run IS NOT NULL AND resolved_at IS NOT NULL))
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS finding_status_type_idx ON {OPS_SCHEMA}.finding (status, type);
CREATE INDEX IF NOT EXISTS finding_agency_status_idx ON {OPS_SCHEMA}.finding (agency, status);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.finding_event (
  finding_id text NOT NULL,
  run_id text NOT NULL,
  at timestamptz NOT NULL,
  event text NOT NULL CHECK (event IN ('opened', 'seen', 'resolved', 'reopened')),
  PRIMARY KEY (finding_id, run_id, event)
);
CREATE INDEX IF NOT EXISTS finding_event_run_idx ON {OPS_SCHEMA}.finding_event (run_id);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.finding_sync (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  run_id text NOT NULL,
  basis text,
  at timestamptz NOT NULL
);
COMMENT ON TABLE {OPS_SCHEMA}.finding_sync IS
  'The last sync of the findings: its run and the basis its caller named for the set it synced (NULL: none); a sync of a difference applies only on top of the basis it was computed from';
"""


def ensure_findings_schema(conn: connection) -> None:
    """Create the bookkeeping schema (with the run ledger) and the findings tables if missing (safe to call
    concurrently). Runs in the caller's transaction and does not commit."""
    ensure_ledger(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_findings_ddl'))")
        cur.execute(FINDINGS_DDL)
        from lienthong.cases import ensure_case_schema  # (cases builds on this module)

        ensure_case_schema(cur)


_LOAD_TABLE = "_lienthong_finding_load"
_SYNC_TABLE = "_lienthong_finding_sync"
_COPY_BATCH = 20_000


def sync_findings(
    conn: connection,
    run_id: str,
    findings: Iterable[Finding],
    *,
    scope: Iterable[str] | None = None,
    now: datetime | None = None,
    commit: bool = True,
    basis: str | None = None,
    inputs_read_at: datetime | None = None,
) -> dict[str, int]:
    """Record that run `run_id` found exactly `findings` among the finding types in `scope`, and commit.

    `findings` is the complete set the run found for the types in `scope` (default: every type); a finding
    of a type outside `scope` is a ValueError, raised as the findings stream (rolled back here, or by the
    caller with `commit=False`). `findings` may be a one-pass iterator: they stream to the warehouse in
    batches, never all held. Findings with the same id: the last one given wins. Then:

    * a finding never seen before is inserted `open` (event 'opened');
    * one still open gets `last_seen_*`, evidence, severity and agency updated (no event);
    * one resolved earlier is open again, its `resolved_*` cleared, `times_reopened` + 1 (event 'reopened');
    * an open finding of a type in `scope` that the run did not find is resolved (event 'resolved').
      Findings of other types are left untouched.

    Transactions: the schema is first ensured and committed on its own (so the DDL locks are not held for
    the whole sync), then everything else happens in one transaction that this function commits (rolled
    back on error). Work pending on `conn` is committed with it. Concurrent syncs are serialised.
    With `commit=False` the sync is part of the caller's transaction instead (e.g. the reconciliation's record
    in the run ledger goes with it): nothing is committed or rolled back here, the schema must have been
    ensured (and committed) before, and the sync's lock and `work_mem` hold until the caller commits.

    `basis` names the set for a later `sync_finding_changes` (the reconciliation: the file it kept the set in);
    it is recorded in `finding_sync` with the run, in the same transaction. A sync of only some types
    (`scope`) records no basis: the warehouse then holds no one set a difference could apply to.

    In the same transaction the findings' cases follow (`lienthong.cases.follow_run`): a claim of correction
    made before `inputs_read_at` (when the run's source data were read) is judged, verified or reopened;
    without `inputs_read_at` no claim is judged. Unclaimed cases follow their findings.

    A rerun of the same `run_id` with the same set changes nothing (no row, no event, no timestamp); a rerun
    with a different set records the differences as transitions of that run. The counts describe what the
    run did, so a rerun reports the same counts as the first attempt:
    `found` (distinct findings given), `new`, `reopened`, `still_open` (= found - new - reopened),
    `resolved` (in scope, resolved by this run) and `open_total` (open findings of all types afterwards).
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    if isinstance(scope, str):
        raise TypeError("scope must be a collection of finding type codes, not a string")
    types = list(TAXONOMY) if scope is None else sorted({finding_type(code).code for code in scope})
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    in_scope = set(types)

    def in_scope_only() -> Iterator[Finding]:
        # checked as they stream to the warehouse: a finding outside the scope fails the sync, rolled back
        for finding in findings:
            if finding.type not in in_scope:
                raise ValueError(f"finding {finding.finding_id} is of type {finding.type!r}, outside scope {types}")
            yield finding

    if not commit:
        if conn.autocommit:
            raise ValueError("commit=False needs a connection in a transaction, not in autocommit mode")
        counts = _sync(conn, run_id, now, types, in_scope_only(), basis=basis if scope is None else None,
                       inputs_read_at=inputs_read_at)
        return {k: counts[k] for k in ("found", "new", "reopened", "still_open", "resolved", "open_total")}
    autocommit = conn.autocommit
    if autocommit:  # (psycopg2 refuses to set it at all inside a transaction, even to its current value)
        conn.autocommit = False
    try:
        ensure_findings_schema(conn)
        conn.commit()
        counts = _sync(conn, run_id, now, types, in_scope_only(), basis=basis if scope is None else None,
                       inputs_read_at=inputs_read_at)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        if autocommit:
            conn.autocommit = True
    return {k: counts[k] for k in ("found", "new", "reopened", "still_open", "resolved", "open_total")}


class SyncBasisMismatch(RuntimeError):
    """The warehouse's findings are not the set a difference was computed from."""


def sync_finding_changes(conn: connection, run_id: str, changed: Iterable[Finding], gone: Iterable[str], *,
                         found: int, since: str, basis: str, now: datetime | None = None,
                         inputs_read_at: datetime | None = None) -> dict[str, int]:
    """Record run `run_id`'s findings as a difference from the set synced under basis `since`: `changed` are
    the findings that set did not hold as they are now (new, or with other evidence, severity or agency),
    `gone` the ids it held that this run did not find, `found` how many findings the run found in all;
    `basis` names this run's set for the next difference.

    The same transitions as `sync_findings` over every type, for those rows only: a changed finding is
    opened, reopened or refreshed; a gone one still open is resolved. An open finding the run found again
    unchanged is not written. Part of the caller's transaction (as `sync_findings` with `commit=False`);
    the schema must have been ensured. Raises `SyncBasisMismatch`, before writing anything, when the last
    sync recorded another basis than `since` (another run synced since, or a sync of some types only, or
    none): the difference would then apply to another set. The cases follow in the same transaction, over
    the stored state (`inputs_read_at` as for `sync_findings`). Returns the counts `sync_findings` returns."""
    if not run_id:
        raise ValueError("run_id must not be empty")
    if conn.autocommit:
        raise ValueError("sync_finding_changes needs a connection in a transaction, not in autocommit mode")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    latest = {f.finding_id: f for f in changed}
    gone_ids = sorted(set(gone) - set(latest))
    counts = _sync(conn, run_id, now, list(TAXONOMY), latest.values(), resolve=gone_ids, since=since, basis=basis,
                   inputs_read_at=inputs_read_at)
    counts["still_open"] = found - counts["new"] - counts["reopened"]
    counts["found"] = found
    return {k: counts[k] for k in ("found", "new", "reopened", "still_open", "resolved", "open_total")}


def synced_basis(conn: connection) -> str | None:
    """The basis the last sync recorded (None: none, or no sync yet)."""
    with conn.cursor() as cur:
        return _basis(cur)


def _basis(cur) -> str | None:
    cur.execute(f"SELECT basis FROM {OPS_SCHEMA}.finding_sync")
    row = cur.fetchone()
    return row[0] if row else None


def _sync(conn: connection, run_id: str, now: datetime, types: list[str], findings: Iterable[Finding],
          resolve: list[str] | None = None, since: str | None = None, basis: str | None = None,
          inputs_read_at: datetime | None = None) -> dict[str, int]:
    from lienthong.cases import follow_run

    if inputs_read_at is not None and inputs_read_at.tzinfo is None:
        raise ValueError("inputs_read_at must be timezone-aware")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_findings_sync'))")
        if resolve is not None:  # a difference: only on top of the set it was computed from
            held = _basis(cur)
            if held is None or held != since:
                raise SyncBasisMismatch(f"the findings were last synced under basis {held!r}, not {since!r}")
        cur.execute(f"""INSERT INTO {OPS_SCHEMA}.finding_sync (singleton, run_id, basis, at)
                        VALUES (true, %s, %s, %s)
                        ON CONFLICT (singleton) DO UPDATE SET run_id = EXCLUDED.run_id, basis = EXCLUDED.basis,
                                                              at = EXCLUDED.at""", (run_id, basis, now))
        # Current statistics (a large earlier sync may not be auto-analysed yet, and the planner would
        # then choose nested loops over hundreds of thousands of rows) and room for the hash joins.
        cur.execute(f"ANALYZE {OPS_SCHEMA}.finding, {OPS_SCHEMA}.finding_event")
        cur.execute("SET LOCAL work_mem = '64MB'")
        _load(cur, findings)
        counts = _apply(cur, run_id, now, types, resolve)
        follow_run(cur, run_id, now, types, inputs_read_at)
        cur.execute(f"DROP TABLE {_SYNC_TABLE}")  # (dropped at commit anyway; now, for a caller's next sync)
    return counts


def _load(cur, findings: Iterable[Finding]) -> None:
    """This run's findings into a temporary table (dropped at commit), each with its status before the run.

    COPY (CSV, in batches of `_COPY_BATCH`, as the findings come: Python holds one batch, so a country's
    findings can stream from a file) into a load table numbering them, then one statement keeps the last of
    each id and classifies every finding by a join with `finding` as new (`prev_status` NULL), still open or
    resolved before any row changes, so no later statement has to join the table it writes to.
    """
    cur.execute(
        f"""CREATE TEMP TABLE {_LOAD_TABLE} (
              seq bigint NOT NULL, finding_id text NOT NULL, type text NOT NULL, severity text NOT NULL,
              agency text NOT NULL, subject jsonb NOT NULL, evidence jsonb NOT NULL
            ) ON COMMIT DROP"""
    )
    copy = (f"COPY {_LOAD_TABLE} (seq, finding_id, type, severity, agency, subject, evidence) "
            "FROM STDIN WITH (FORMAT csv)")
    # agency and severity are typed optional for the constructor; __post_init__ fills in the type's defaults.
    batch: list[tuple[str | None, ...]] = []
    for seq, finding in enumerate(findings):
        subject = json.dumps(finding.subject, sort_keys=True, ensure_ascii=False)
        batch.append((str(seq), finding.finding_id, finding.type, finding.severity, finding.agency, subject,
                      finding.evidence_json))
        if len(batch) >= _COPY_BATCH:
            _copy(cur, copy, batch)
            batch = []
    if batch:
        _copy(cur, copy, batch)
    cur.execute(f"ANALYZE {_LOAD_TABLE}")  # temporary tables are never auto-analysed
    cur.execute(
        f"""CREATE TEMP TABLE {_SYNC_TABLE} ON COMMIT DROP AS
            SELECT DISTINCT ON (l.finding_id) l.finding_id, l.type, l.severity, l.agency, l.subject, l.evidence,
                   f.status AS prev_status
            FROM {_LOAD_TABLE} AS l LEFT JOIN {OPS_SCHEMA}.finding AS f USING (finding_id)
            ORDER BY l.finding_id, l.seq DESC  -- the same id twice: the last one given wins"""
    )
    cur.execute(f"DROP TABLE {_LOAD_TABLE}")
    cur.execute(f"ALTER TABLE {_SYNC_TABLE} ADD PRIMARY KEY (finding_id)")
    cur.execute(f"ANALYZE {_SYNC_TABLE}")


def _copy(cur, statement: str, rows: list[tuple[str | None, ...]]) -> None:
    # Every field quoted: in PostgreSQL's CSV an unquoted empty field would be NULL. Quotes are doubled by the
    # csv module; tabs, newlines and backslashes need no escaping inside a quoted CSV field.
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    cur.copy_expert(statement, buffer)


def _apply(cur, run_id: str, now: datetime, types: list[str], resolve: list[str] | None = None) -> dict[str, int]:
    """The transitions. `resolve` None: an open finding in scope the load does not hold is resolved (the
    load is the run's whole set); a list: those ids are resolved (the load is a difference)."""
    f, e, t = f"{OPS_SCHEMA}.finding", f"{OPS_SCHEMA}.finding_event", _SYNC_TABLE
    params = {"run": run_id, "now": now, "types": types, "resolve": resolve or []}
    gone = ("NOT EXISTS (SELECT 1 FROM {t} AS t WHERE t.finding_id = f.finding_id)" if resolve is None
            else "f.finding_id = ANY(%(resolve)s)").format(t=t)
    # resolved before this run, found again: reopen
    cur.execute(
        f"""WITH reopened AS (
              UPDATE {f} AS f SET status = 'open', resolved_run = NULL, resolved_at = NULL,
                times_reopened = f.times_reopened + 1, last_seen_run = %(run)s, last_seen_at = %(now)s,
                evidence = t.evidence, severity = t.severity, agency = t.agency
              FROM {t} AS t
              WHERE t.prev_status = 'resolved' AND f.finding_id = t.finding_id AND f.status = 'resolved'
              RETURNING f.finding_id)
            INSERT INTO {e} (finding_id, run_id, at, event)
            SELECT finding_id, %(run)s, %(now)s, 'reopened' FROM reopened
            ON CONFLICT DO NOTHING""",
        params,
    )
    # still open: refresh what was seen (untouched when nothing differs, so a rerun changes nothing)
    cur.execute(
        f"""UPDATE {f} AS f SET last_seen_run = %(run)s,
              last_seen_at = CASE WHEN f.last_seen_run = %(run)s THEN f.last_seen_at ELSE %(now)s END,
              evidence = t.evidence, severity = t.severity, agency = t.agency
            FROM {t} AS t
            WHERE t.prev_status = 'open' AND f.finding_id = t.finding_id AND f.status = 'open'
              AND (f.last_seen_run <> %(run)s OR f.evidence <> t.evidence OR f.severity <> t.severity
                   OR f.agency <> t.agency)""",
        params,
    )
    # never seen: open (ON CONFLICT only as a guard: syncs are serialised by the advisory lock)
    cur.execute(
        f"""WITH opened AS (
              INSERT INTO {f} (finding_id, type, severity, agency, subject, evidence, status,
                               first_seen_run, first_seen_at, last_seen_run, last_seen_at)
              SELECT finding_id, type, severity, agency, subject, evidence, 'open',
                     %(run)s, %(now)s, %(run)s, %(now)s
              FROM {t}
              WHERE prev_status IS NULL
              ON CONFLICT (finding_id) DO NOTHING
              RETURNING finding_id)
            INSERT INTO {e} (finding_id, run_id, at, event)
            SELECT finding_id, %(run)s, %(now)s, 'opened' FROM opened
            ON CONFLICT DO NOTHING""",
        params,
    )
    # open, in scope, not found by this run: resolved
    cur.execute(
        f"""WITH resolved AS (
              UPDATE {f} AS f SET status = 'resolved', resolved_run = %(run)s, resolved_at = %(now)s
              WHERE f.status = 'open' AND f.type = ANY(%(types)s) AND {gone}
              RETURNING f.finding_id)
            INSERT INTO {e} (finding_id, run_id, at, event)
            SELECT finding_id, %(run)s, %(now)s, 'resolved' FROM resolved
            ON CONFLICT DO NOTHING""",
        params,
    )
    # What this run did (not this call), so a rerun reports the same counts. After the statements above, the
    # open findings of the types in scope are exactly this run's set.
    cur.execute(
        f"""SELECT count(*) FILTER (WHERE status = 'open'),
                   count(*) FILTER (WHERE status = 'open' AND type = ANY(%(types)s) AND first_seen_run = %(run)s),
                   count(*) FILTER (WHERE status = 'resolved' AND type = ANY(%(types)s) AND resolved_run = %(run)s)
            FROM {f}""",
        params,
    )
    open_total, new, resolved = cur.fetchone()
    cur.execute(
        f"""SELECT count(*) FROM {e} AS e JOIN {f} AS f USING (finding_id)
            WHERE e.run_id = %(run)s AND e.event = 'reopened' AND f.status = 'open'
              AND f.type = ANY(%(types)s) AND f.first_seen_run <> %(run)s""",
        params,
    )
    (reopened,) = cur.fetchone()
    cur.execute(f"SELECT count(*) FROM {t}")
    (found,) = cur.fetchone()
    return {
        "found": found, "new": new, "reopened": reopened, "still_open": found - new - reopened, "resolved": resolved,
        "open_total": open_total,
    }


_SEVERITY_RANK = f"array_position(ARRAY[{_SEVERITY_LIST}], severity)"
_FINDING_COLUMNS = (
    "finding_id", "type", "severity", "agency", "subject", "evidence", "status", "first_seen_run",
    "first_seen_at", "last_seen_run", "last_seen_at", "resolved_run", "resolved_at", "times_reopened",
)


def _tables_exist(cur) -> bool:
    cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (f"{OPS_SCHEMA}.finding", f"{OPS_SCHEMA}.finding_event"))
    return all(cur.fetchone())


def open_findings(conn: connection, *, type: str | None = None, agency: str | None = None) -> list[dict[str, Any]]:
    """The open findings (all columns of `finding`), optionally of one type and/or agency; most severe first."""
    where, params = ["status = 'open'"], []
    if type is not None:
        where.append("type = %s")
        params.append(finding_type(type).code)
    if agency is not None:
        if agency not in AGENCIES:
            raise ValueError(f"unknown agency {agency!r} (known: {', '.join(AGENCIES)})")
        where.append("agency = %s")
        params.append(agency)
    with conn.cursor() as cur:
        if not _tables_exist(cur):
            return []
        cur.execute(
            f"""SELECT {", ".join(_FINDING_COLUMNS)} FROM {OPS_SCHEMA}.finding WHERE {" AND ".join(where)}
                ORDER BY {_SEVERITY_RANK}, type, finding_id""",
            params,
        )
        return [dict(zip(_FINDING_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def findings_summary(conn: connection) -> list[dict[str, Any]]:
    """How many findings there are per type, severity, agency and status; most severe first."""
    columns = ("type", "severity", "agency", "status", "count")
    with conn.cursor() as cur:
        if not _tables_exist(cur):
            return []
        cur.execute(
            f"""SELECT type, severity, agency, status, count(*) FROM {OPS_SCHEMA}.finding
                GROUP BY type, severity, agency, status
                ORDER BY {_SEVERITY_RANK}, type, agency, status"""
        )
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def run_changes(conn: connection, run_id: str) -> dict[str, list[str]]:
    """The ids of the findings run `run_id` opened, reopened and resolved (from `finding_event`), sorted."""
    changes: dict[str, list[str]] = {"opened": [], "reopened": [], "resolved": []}
    with conn.cursor() as cur:
        if not _tables_exist(cur):
            return changes
        cur.execute(
            f"""SELECT event, finding_id FROM {OPS_SCHEMA}.finding_event
                WHERE run_id = %s AND event IN ('opened', 'reopened', 'resolved') ORDER BY event, finding_id""",
            (run_id,),
        )
        for event, finding_id in cur.fetchall():
            changes[event].append(finding_id)
    return changes


def query_findings(
    conn: connection,
    *,
    type: str | None = None,
    agency: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    case_state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """One page of findings for a browser: (how many match in total, the page's rows with every column of
    `finding`). Open before resolved, then most severe first, then by type and id (stable across pages).
    Each row also has its case (`lienthong.cases`): `case_state`, `case_changed_at` and the last case event's
    `last_action`, `last_reason`, `last_note`, `last_action_at`, `last_actor` (all None in a warehouse no sync
    has given the case columns yet; a `case_state` filter then matches nothing).

    Every filter is checked against the taxonomy (ValueError naming the unknown value) and passed to the SQL as a
    parameter. Values are returned as stored: mask `subject` and `evidence` before showing them to anyone.
    """
    from lienthong.cases import CASE_STATES

    where, params = checked_filters((("agency", agency, AGENCIES), ("status", status, ("open", "resolved")),
                                     ("severity", severity, SEVERITIES), ("case_state", case_state, CASE_STATES)),
                                    type=type, limit=limit, offset=offset)
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    from lienthong.cases import CASE_COLUMNS, has_cases, with_last_event

    extra = [c for c in CASE_COLUMNS if c not in _FINDING_COLUMNS]
    with conn.cursor() as cur:
        if not _tables_exist(cur):
            return 0, []
        if not has_cases(cur):
            if case_state is not None:
                return 0, []
            select = ", ".join([*_FINDING_COLUMNS, *(f"NULL AS {c}" for c in extra)])
            source = f"{OPS_SCHEMA}.finding"
        else:
            select = ", ".join([*(f"f.{c}" for c in _FINDING_COLUMNS), *(f"{'f' if c.startswith('case_') else 'last'}.{c}" for c in extra)])
            source = with_last_event(f"{OPS_SCHEMA}.finding")
        cur.execute(f"SELECT count(*) FROM {OPS_SCHEMA}.finding {condition}", params)
        (total,) = cur.fetchone()
        cur.execute(
            f"""SELECT {select} FROM {source} {condition}
                ORDER BY status = 'resolved', {_SEVERITY_RANK}, type, finding_id LIMIT %s OFFSET %s""",
            [*params, limit, offset],
        )
        columns = [*_FINDING_COLUMNS, *extra]
        return total, [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
