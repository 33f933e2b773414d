"""Discrepancy cases: the work a responsible agency does on its findings, and how the next runs judge it.

Owns the case workflow on top of `lienthong.findings` (which owns the findings' own lifecycle, open/resolved):
the columns `case_state` and `case_changed_at` of `lienthong_ops.finding`, the history table
`lienthong_ops.finding_case_event`, the agencies' actions (`act_on_finding`), what a reconciliation run does to
the cases (`follow_run`, called by the findings sync in its transaction), the per-type deadlines
(`deadline_days`) and the reads the lookup service and the auditors' views make (`agency_findings`,
`case_history`, `case_ageing`).

States (`CASE_STATES`):

* `new`: open, nobody has acted on it;
* `acknowledged`: the responsible agency has seen it and works on it;
* `disputed`: the agency says the finding is wrong (a reason is required);
* `corrected`: the agency says it corrected its record at the source (a claim, judged by a later run);
* `reopened`: a run still found a finding claimed corrected, or found again a closed one;
* `verified_resolved`: a run whose source data were read after the claim no longer found it (closed);
* `resolved_by_data`: the data resolved it while nobody had claimed a correction (closed; a finding of an
  older warehouse that was resolved before cases existed starts here too).

Agencies act on their own findings only (the finding's `agency`), through `act_on_finding`:
acknowledge (from new, disputed, reopened), dispute with a reason (from new, acknowledged, reopened),
corrected with an optional note (from new, acknowledged, disputed, reopened). Anything else is refused with
the state named. Each action locks the finding's row (`SELECT ... FOR UPDATE`) so two requests acting at once
are applied one after the other: the second sees the state the first left and may be refused.

Runs (`follow_run`, in the same transaction as the findings sync, over the stored state, so a sync of a
difference, which does not rewrite an open finding found again unchanged, is judged like a whole sync):

* `corrected` -> `reopened` when the finding is open, `corrected` -> `verified_resolved` when it is resolved,
  but only when the run's source data were read after the claim (`inputs_read_at` > `case_changed_at`);
  a run on older data leaves the claim alone. Without `inputs_read_at` no claim is judged;
* `new`/`acknowledged`/`disputed`/`reopened` -> `resolved_by_data` when the finding is resolved;
* `verified_resolved`/`resolved_by_data` -> `reopened` when the finding is open again.

Every transition is one row of `finding_case_event` (who: an agency's request with its request id, or a run
with its id). Deadlines: an open finding is overdue when open longer than its type's deadline, else its
severity's (`LIENTHONG_FINDING_DEADLINES`, defaults `DEFAULT_DEADLINES`).

SQL here is plain `%s`-parameter SQL that runs on psycopg2 (the pipeline) and psycopg 3 (the lookup service)
connections alike, in the caller's transaction: nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lienthong.finding_types import AGENCIES, SEVERITIES, TAXONOMY, checked_filters
from lienthong.runs.schema import OPS_SCHEMA

CASE_STATES = ("new", "acknowledged", "disputed", "corrected", "reopened", "verified_resolved", "resolved_by_data")
"""Every case state, in the order a case usually walks them."""
CLOSED_STATES = ("verified_resolved", "resolved_by_data")
"""States of a case no agency action leaves (a run reopens it if the data disagree again)."""

ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"new", "disputed", "reopened"}), "acknowledged"),
    "dispute": (frozenset({"new", "acknowledged", "reopened"}), "disputed"),
    "corrected": (frozenset({"new", "acknowledged", "disputed", "reopened"}), "corrected"),
}
"""An agency's action -> (the states it may be taken from, the state it leads to)."""
RUN_ACTIONS = ("verify", "data_resolved", "data_reopened")
"""What a run records: `verify` (a claim judged: to verified_resolved or reopened), `data_resolved`,
`data_reopened` (a case followed its finding without a claim)."""

DEFAULT_DEADLINES: dict[str, int] = {"critical": 7, "high": 14, "medium": 30, "low": 60, "info": 90}
"""Days an open finding may stay open, by severity, unless LIENTHONG_FINDING_DEADLINES says otherwise."""
MAX_REASON_CHARS = 2000

_STATE_LIST = ", ".join(f"'{s}'" for s in CASE_STATES)
_ACTION_LIST = ", ".join(f"'{a}'" for a in (*ACTIONS, *RUN_ACTIONS))
F, E = f"{OPS_SCHEMA}.finding", f"{OPS_SCHEMA}.finding_case_event"

CASES_DDL = f"""
CREATE TABLE IF NOT EXISTS {E} (
  event_id bigserial PRIMARY KEY,
  finding_id text NOT NULL,
  at timestamptz NOT NULL,
  agency text NOT NULL,
  actor text NOT NULL CHECK (actor IN ('agency', 'run')),
  action text NOT NULL CHECK (action IN ({_ACTION_LIST})),
  from_state text NOT NULL CHECK (from_state IN ({_STATE_LIST})),
  to_state text NOT NULL CHECK (to_state IN ({_STATE_LIST})),
  reason text,
  note text,
  run_id text,
  request_id text,
  CHECK ((actor = 'run') = (run_id IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS finding_case_event_finding_idx ON {E} (finding_id, event_id);
CREATE INDEX IF NOT EXISTS finding_case_event_run_idx ON {E} (run_id) WHERE run_id IS NOT NULL;
COMMENT ON TABLE {E} IS
  'The history of each finding''s case: one row per transition, by the responsible agency (with its request id) or by a run (with its id)';
"""


class CaseError(Exception):
    """An action refused; `status` is the HTTP status that says why (400, 403, 404, 409)."""

    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class InvalidAction(CaseError):
    """Unknown action, or a dispute without a reason (400)."""

    status = 400


class NotYourFinding(CaseError):
    """The finding belongs to another agency (403)."""

    status = 403


class UnknownFinding(CaseError):
    """No finding with this id (404)."""

    status = 404


class TransitionRefused(CaseError):
    """The action cannot be taken from the finding's current state (409)."""

    status = 409


def ensure_case_schema(cur: Any) -> None:
    """The case columns of `finding` and the event table, if missing (an older warehouse gets them, its
    resolved findings starting as `resolved_by_data`, the open ones as `new`). Run under the findings DDL lock
    by `findings.ensure_findings_schema`, in the caller's transaction."""
    cur.execute("""SELECT count(*) FROM information_schema.columns
                   WHERE table_schema = %s AND table_name = 'finding' AND column_name = 'case_state'""", (OPS_SCHEMA,))
    if not cur.fetchone()[0]:
        cur.execute(f"""ALTER TABLE {F} ADD COLUMN IF NOT EXISTS case_state text;
                        ALTER TABLE {F} ADD COLUMN IF NOT EXISTS case_changed_at timestamptz;
                        UPDATE {F} SET case_state = CASE status WHEN 'open' THEN 'new' ELSE 'resolved_by_data' END
                          WHERE case_state IS NULL;
                        ALTER TABLE {F} ALTER COLUMN case_state SET DEFAULT 'new';
                        ALTER TABLE {F} ALTER COLUMN case_state SET NOT NULL;
                        ALTER TABLE {F} ADD CONSTRAINT finding_case_state_check CHECK (case_state IN ({_STATE_LIST}));
                        CREATE INDEX IF NOT EXISTS finding_agency_case_idx ON {F} (agency, case_state);""")
    cur.execute(CASES_DDL)


def has_cases(cur: Any) -> bool:
    """Whether the warehouse has the case columns (a viewer must not create them)."""
    cur.execute("""SELECT count(*) FROM information_schema.columns
                   WHERE table_schema = %s AND table_name = 'finding' AND column_name = 'case_state'""", (OPS_SCHEMA,))
    row = cur.fetchone()
    cur.execute("SELECT to_regclass(%s)", (E,))
    return bool(row[0]) and cur.fetchone()[0] is not None


# --------------------------------------------------------------------------------------- agency actions


@dataclass(frozen=True)
class Transition:
    """One case transition as recorded."""

    finding_id: str
    agency: str
    action: str
    from_state: str
    to_state: str
    at: datetime
    reason: str | None = None
    note: str | None = None
    request_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"finding_id": self.finding_id, "agency": self.agency, "action": self.action,
                "from_state": self.from_state, "to_state": self.to_state, "at": self.at.isoformat(),
                "reason": self.reason, "note": self.note, "request_id": self.request_id}


def _text(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAction(f"{what} must be text")
    value = value.strip()
    if "\x00" in value:
        raise InvalidAction(f"{what} must not contain NUL characters")
    if len(value) > MAX_REASON_CHARS:
        raise InvalidAction(f"{what} is longer than {MAX_REASON_CHARS} characters")
    return value or None


def act_on_finding(conn: Any, finding_id: str, agency: str, action: str, *, reason: str | None = None,
                   note: str | None = None, request_id: str | None = None) -> Transition:
    """Agency `agency` takes `action` (`ACTIONS`) on finding `finding_id`; returns the transition recorded.

    Raises `InvalidAction` (unknown action or agency, a dispute without a reason, text too long),
    `UnknownFinding`, `NotYourFinding` (the finding is another agency's), `TransitionRefused` (not allowed from
    the current state; the message names both states). The finding's row is locked for the transition, so
    concurrent actions are applied one after the other. Runs in the caller's transaction; does not commit."""
    if action not in ACTIONS:
        raise InvalidAction(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if agency not in AGENCIES:
        raise InvalidAction(f"unknown agency {agency!r} (known: {', '.join(AGENCIES)})")
    reason, note = _text(reason, "the reason"), _text(note, "the note")
    if action == "dispute" and not reason:
        raise InvalidAction("a dispute needs a reason")
    allowed, to_state = ACTIONS[action]
    with conn.cursor() as cur:
        cur.execute(f"SELECT agency, case_state FROM {F} WHERE finding_id = %s FOR UPDATE", (finding_id,))
        row = cur.fetchone()
        if row is None:
            raise UnknownFinding(f"no finding {finding_id!r}")
        owner, state = row
        if owner != agency:
            raise NotYourFinding(f"finding {finding_id} is assigned to {owner}, not to {agency}")
        if state not in allowed:
            raise TransitionRefused(f"cannot {action} finding {finding_id}: its case is {state!r} (the action "
                                    f"leads to {to_state!r} and is allowed from {', '.join(sorted(allowed))})")
        cur.execute(f"""UPDATE {F} SET case_state = %s, case_changed_at = clock_timestamp()
                        WHERE finding_id = %s AND case_state = %s RETURNING case_changed_at""",
                    (to_state, finding_id, state))
        (at,) = cur.fetchone()
        cur.execute(f"""INSERT INTO {E} (finding_id, at, agency, actor, action, from_state, to_state, reason, note,
                                         request_id)
                        VALUES (%s, %s, %s, 'agency', %s, %s, %s, %s, %s, %s)""",
                    (finding_id, at, agency, action, state, to_state, reason, note, request_id))
    return Transition(finding_id, agency, action, state, to_state, at, reason, note, request_id)


# ---------------------------------------------------------------------------------------------- runs


def follow_run(cur: Any, run_id: str, now: datetime, types: Iterable[str], inputs_read_at: datetime | None) -> None:
    """Move the cases of the findings of `types` after run `run_id`'s sync (module docstring): judge the
    claims made before `inputs_read_at` (none without it) and let unclaimed cases follow their findings.
    Set-based, over the stored state; a rerun of the run changes nothing more. In the sync's transaction."""
    params = {"run": run_id, "now": now, "types": list(types), "read": inputs_read_at}
    moves = [
        # a claim the run may judge: still found -> reopened, no longer found -> verified
        ("verify", "f.case_state = 'corrected' AND %(read)s::timestamptz IS NOT NULL "
                   "AND f.case_changed_at < %(read)s::timestamptz",
         "CASE f.status WHEN 'open' THEN 'reopened' ELSE 'verified_resolved' END",
         "CASE f.status WHEN 'open' THEN 'run ' || %(run)s || ' still finds it in source data read at ' "
         "ELSE 'run ' || %(run)s || ' no longer finds it in source data read at ' END "
         "|| to_char(%(read)s::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"),
        ("data_resolved", "f.status = 'resolved' AND f.case_state IN ('new', 'acknowledged', 'disputed', 'reopened')",
         "'resolved_by_data'", "'run ' || %(run)s || ' no longer finds it (no correction was claimed)'"),
        ("data_reopened", "f.status = 'open' AND f.case_state IN ('verified_resolved', 'resolved_by_data')",
         "'reopened'", "'run ' || %(run)s || ' finds it again'"),
    ]
    for action, condition, to_state, reason in moves:
        cur.execute(
            f"""WITH before AS (
                  SELECT f.finding_id, f.agency, f.case_state AS from_state, {to_state} AS to_state, {reason} AS reason
                  FROM {F} AS f WHERE f.type = ANY(%(types)s) AND {condition}
                  FOR UPDATE),
                moved AS (
                  UPDATE {F} AS f SET case_state = b.to_state, case_changed_at = %(now)s
                  FROM before AS b WHERE f.finding_id = b.finding_id
                  RETURNING f.finding_id)
                INSERT INTO {E} (finding_id, at, agency, actor, action, from_state, to_state, reason, run_id)
                SELECT b.finding_id, %(now)s, b.agency, 'run', '{action}', b.from_state, b.to_state, b.reason, %(run)s
                FROM before AS b JOIN moved USING (finding_id)""",
            params,
        )


def run_case_counts(conn: Any, run_id: str) -> dict[str, int]:
    """What run `run_id` did to the cases (from `finding_case_event`): claims `verified` and `reopened`,
    cases `resolved_by_data` and `reopened_by_data`, and the claims still waiting for a run on newer data
    (`claims_pending`, now)."""
    with conn.cursor() as cur:
        cur.execute(f"""SELECT count(*) FILTER (WHERE action = 'verify' AND to_state = 'verified_resolved'),
                               count(*) FILTER (WHERE action = 'verify' AND to_state = 'reopened'),
                               count(*) FILTER (WHERE action = 'data_resolved'),
                               count(*) FILTER (WHERE action = 'data_reopened')
                        FROM {E} WHERE run_id = %s""", (run_id,))
        verified, reopened, resolved, again = cur.fetchone()
        cur.execute(f"SELECT count(*) FROM {F} WHERE case_state = 'corrected'")
        (pending,) = cur.fetchone()
    return {"claims_verified": int(verified), "claims_reopened": int(reopened), "resolved_by_data": int(resolved),
            "reopened_by_data": int(again), "claims_pending": int(pending)}


# ------------------------------------------------------------------------------------------ deadlines


def parse_deadlines(raw: str | None, variable: str = "LIENTHONG_FINDING_DEADLINES") -> dict[str, int]:
    """The deadline overrides of `raw` (JSON `{"<finding type or severity>": days}`), checked: the shape (by
    `settings.parse_day_counts`, as the settings read it) and every key a known type or severity. ValueError
    naming `variable` and the key otherwise. None or empty: no override."""
    from lienthong.settings import parse_day_counts

    return check_deadlines(parse_day_counts(raw, variable), variable)


def check_deadlines(overrides: Mapping[str, int], variable: str = "LIENTHONG_FINDING_DEADLINES") -> dict[str, int]:
    """`overrides` (finding type or severity -> days, e.g. `Settings.finding_deadlines`) if every key is a known
    finding type or severity; ValueError naming `variable` and the key otherwise."""
    for key in overrides:
        if key not in TAXONOMY and key not in SEVERITIES:
            raise ValueError(f"{variable}: unknown key {key!r} (a finding type: {', '.join(TAXONOMY)}; or a "
                             f"severity: {', '.join(SEVERITIES)})")
    return dict(overrides)


def deadline_days(finding_type_code: str, severity: str, overrides: Mapping[str, int] | None = None) -> int:
    """Days a finding of this type and severity may stay open: the type's override, else the severity's
    override, else `DEFAULT_DEADLINES`."""
    o = overrides or {}
    if finding_type_code in o:
        return o[finding_type_code]
    if severity in o:
        return o[severity]
    return DEFAULT_DEADLINES[severity]


def _deadline_sql(overrides: Mapping[str, int] | None) -> tuple[str, dict[str, Any]]:
    """SQL for the deadline (days) of a row of `finding` aliased `f`, with its parameters."""
    by_type = {code: deadline_days(code, t.severity, overrides) for code, t in TAXONOMY.items()
               if overrides and code in overrides}
    by_severity = {s: deadline_days("", s, {k: v for k, v in (overrides or {}).items() if k in SEVERITIES})
                   for s in SEVERITIES}
    sql = ("coalesce((%(dl_types)s::jsonb ->> f.type)::int, (%(dl_sev)s::jsonb ->> f.severity)::int)")
    import json

    return sql, {"dl_types": json.dumps(by_type), "dl_sev": json.dumps(by_severity)}


# ------------------------------------------------------------------------------------------------ reads

CASE_COLUMNS = ("finding_id", "type", "severity", "agency", "subject", "evidence", "status", "case_state",
                "case_changed_at", "first_seen_run", "first_seen_at", "last_seen_run", "last_seen_at",
                "resolved_run", "resolved_at", "times_reopened", "last_action", "last_reason", "last_note",
                "last_action_at", "last_actor")


def with_last_event(table: str = F) -> str:
    """`table` (the findings) as `f`, each row with its last case event as `last` (`last_action`,
    `last_reason`, `last_note`, `last_action_at`, `last_actor`; NULL without one): a FROM clause."""
    return f"""{table} AS f LEFT JOIN LATERAL (
              SELECT e.action AS last_action, e.reason AS last_reason, e.note AS last_note, e.at AS last_action_at,
                     e.actor AS last_actor
              FROM {E} AS e WHERE e.finding_id = f.finding_id ORDER BY e.event_id DESC LIMIT 1) AS last
            ON true"""


def agency_findings(conn: Any, agency: str, *, status: str | None = None, case_state: str | None = None,
                    type: str | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """One page of agency `agency`'s findings, newest first (first seen, then id): (how many match, rows with
    `CASE_COLUMNS`). Filters are checked (ValueError naming the value). Values as stored: mask before showing."""
    where, params = ["f.agency = %s"], [agency]
    if agency not in AGENCIES:
        raise ValueError(f"unknown agency {agency!r} (known: {', '.join(AGENCIES)})")
    more, more_params = checked_filters((("status", status, ("open", "resolved")), ("case_state", case_state, CASE_STATES)),
                                        type=type, limit=limit, offset=offset, alias="f.")
    where, params = where + more, params + more_params
    condition = " AND ".join(where)
    columns = ", ".join(f"f.{c}" if c in _FINDING_OWN else f"last.{c}" for c in CASE_COLUMNS)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {F} AS f WHERE {condition}", params)
        (total,) = cur.fetchone()
        cur.execute(f"""SELECT {columns} FROM {with_last_event()} WHERE {condition}
                        ORDER BY f.first_seen_at DESC, f.finding_id LIMIT %s OFFSET %s""", [*params, limit, offset])
        return int(total), [dict(zip(CASE_COLUMNS, r, strict=True)) for r in cur.fetchall()]


_FINDING_OWN = frozenset(CASE_COLUMNS[:16])
EVENT_COLUMNS = ("at", "agency", "actor", "action", "from_state", "to_state", "reason", "note", "run_id", "request_id")


def finding_case(conn: Any, finding_id: str) -> dict[str, Any] | None:
    """Finding `finding_id` with its case (`CASE_COLUMNS`) and its case history (`history`, oldest first,
    `EVENT_COLUMNS`); None if there is none."""
    columns = ", ".join(f"f.{c}" if c in _FINDING_OWN else f"last.{c}" for c in CASE_COLUMNS)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {columns} FROM {with_last_event()} WHERE f.finding_id = %s", (finding_id,))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip(CASE_COLUMNS, row, strict=True))
        out["history"] = case_history(conn, finding_id)
    return out


def case_history(conn: Any, finding_id: str) -> list[dict[str, Any]]:
    """The case transitions of finding `finding_id`, oldest first."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM {E} WHERE finding_id = %s ORDER BY event_id",
                    (finding_id,))
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in cur.fetchall()]


AGE_BUCKETS = ((0, 7, "0-7 d"), (7, 30, "7-30 d"), (30, 90, "30-90 d"), (90, None, "90+ d"))
"""Age buckets (days, [low, high)) of the report's ageing plot."""


def case_ageing(conn: Any, now: datetime, overrides: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ageing of the open findings at `now`, per responsible agency: open findings by case state, median
    and max open days, overdue (open longer than the deadline), disputed (with their reasons counted), and the
    open findings per age bucket (overdue apart). A finding is open since it was last opened (first seen, or
    its last reopening)."""
    overrides = check_deadlines(overrides or {})
    deadline, params = _deadline_sql(overrides)
    params = {**params, "now": now}
    with conn.cursor() as cur:
        cur.execute(
            f"""WITH open AS (
                  SELECT f.agency, f.case_state, f.type,
                         extract(epoch FROM %(now)s::timestamptz - coalesce(
                           (SELECT max(e.at) FROM {OPS_SCHEMA}.finding_event AS e
                            WHERE e.finding_id = f.finding_id AND e.event = 'reopened'), f.first_seen_at)) / 86400.0
                           AS days,
                         {deadline} AS deadline
                  FROM {F} AS f WHERE f.status = 'open')
                SELECT agency, case_state, type, days, deadline FROM open""",
            params,
        )
        rows = cur.fetchall()
        cur.execute(f"""SELECT f.agency, count(DISTINCT f.finding_id) FROM {F} AS f
                        JOIN {E} AS e ON e.finding_id = f.finding_id AND e.action = 'dispute' AND e.reason IS NOT NULL
                        WHERE f.status = 'open' AND f.case_state = 'disputed' GROUP BY f.agency""")
        disputed_reasons = dict(cur.fetchall())
    per: dict[str, dict[str, Any]] = {}
    for agency in AGENCIES:
        mine = [(state, float(days), int(dl)) for a, state, _, days, dl in rows if a == agency]
        ages = sorted(d for _, d, _ in mine)
        buckets = []
        for low, high, label in AGE_BUCKETS:
            inside = [(d, dl) for _, d, dl in mine if d >= low and (high is None or d < high)]
            buckets.append({"bucket": label, "open": len(inside), "overdue": sum(1 for d, dl in inside if d > dl)})
        per[agency] = {
            "agency": agency,
            "open": len(mine),
            "by_state": {s: sum(1 for st, _, _ in mine if st == s) for s in CASE_STATES if s not in CLOSED_STATES},
            "median_open_days": round(_median(ages), 1) if ages else None,
            "max_open_days": round(ages[-1], 1) if ages else None,
            "overdue": sum(1 for _, d, dl in mine if d > dl),
            "disputed_with_reason": int(disputed_reasons.get(agency, 0)),
            "buckets": buckets,
        }
    return {"agencies": list(per.values()),
            "deadlines": {s: deadline_days("", s, {k: v for k, v in (overrides or {}).items() if k in SEVERITIES})
                          for s in SEVERITIES},
            "deadline_overrides": dict(overrides or {})}


def _median(values: list[float]) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
