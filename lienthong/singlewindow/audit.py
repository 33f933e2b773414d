"""The single window's audit records: one row per request that reached a dataset, in `lienthong_ops.access_log`,
and one per refused API key, in `lienthong_ops.auth_failure`.

Owns both tables' DDL (created idempotently) and the writer. The access log is written BEFORE the answer is
sent and the service fails closed (503) when it cannot write it: no personal data leaves without a record (Law
91/2025/QH15 and Decree 356/2025 require a processing log). The writes are bounded: the log's connections
carry a lock and a statement timeout (LIENTHONG_SINGLEWINDOW_LOG_TIMEOUT, default 2 s), so a locked or stalled
table costs a request that long and a 503, never a hang. A write that broke with its connection (a server
restart) is made once more on a fresh one: it cannot be doubled, a row's `request_id` is unique.

Each row holds the purpose the caller declared (`X-Purpose`), the case it serves (`X-Case-Id`, the dossier
number at the desk) and the legal basis of that purpose (schemas/agencies.yaml); a read refused for a missing
or ungranted purpose is a row too, with its `refusal`. `subjects` lists the persons whose data the answer held
(the person looked up, the representatives of an enterprise, the holders of a parcel, as far as the agency's
grant shows them: `lienthong.subjects`), and `embargo_until` hides the row from those persons' usage history
until then (a purpose's `embargo_days`).

The key looked up (a personal ID, a tax code, a parcel locator) is stored as given, not pseudonymized: the
log must answer a data subject's "who looked at my record?" and a breach investigation, also after the
pseudonymization key has been rotated, and it lives in `lienthong_ops`, which no agency role can read (the
same operators who can read it can read `published.*`). Malformed input is stored escaped and cut short.

A refused API key (none, or one that names no agency) reached no dataset, so it is not in the access log (whose
rows each name the agency and the record read): `auth_failure` holds the client address, the route template
(never the path, which holds the ID asked for), whether a key was missing or unknown, the client's failures in
a row and the back-off imposed. Nothing of the key given is stored. Requests refused while the client is made
to wait (429) are not recorded: they are not checked against any key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from lienthong.runs.schema import OPS_SCHEMA
from lienthong.singlewindow.pools import APP_NAME, Pool, session_options

ACCESS_LOG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.access_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  agency text NOT NULL,
  purpose text NOT NULL,
  dataset text NOT NULL,
  lookup_key text NOT NULL,
  rows_returned integer NOT NULL,
  status_code smallint NOT NULL,
  latency_ms double precision NOT NULL,
  request_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_at_idx ON {OPS_SCHEMA}.access_log (at);
CREATE INDEX IF NOT EXISTS access_log_key_idx ON {OPS_SCHEMA}.access_log (dataset, lookup_key);
CREATE UNIQUE INDEX IF NOT EXISTS access_log_request_id_key ON {OPS_SCHEMA}.access_log (request_id);
-- the lawful-basis columns (added to logs created before them)
ALTER TABLE {OPS_SCHEMA}.access_log ALTER COLUMN purpose DROP NOT NULL;
ALTER TABLE {OPS_SCHEMA}.access_log ADD COLUMN IF NOT EXISTS case_id text;
ALTER TABLE {OPS_SCHEMA}.access_log ADD COLUMN IF NOT EXISTS legal_basis text;
ALTER TABLE {OPS_SCHEMA}.access_log ADD COLUMN IF NOT EXISTS refusal text;
ALTER TABLE {OPS_SCHEMA}.access_log ADD COLUMN IF NOT EXISTS subjects text[] NOT NULL DEFAULT '{{}}';
ALTER TABLE {OPS_SCHEMA}.access_log ADD COLUMN IF NOT EXISTS embargo_until timestamptz;
CREATE INDEX IF NOT EXISTS access_log_subjects_idx ON {OPS_SCHEMA}.access_log USING gin (subjects);
COMMENT ON COLUMN {OPS_SCHEMA}.access_log.purpose IS
  'the purpose code the caller declared (X-Purpose), as given when refused; NULL when none was given';
COMMENT ON COLUMN {OPS_SCHEMA}.access_log.subjects IS
  'the 12-digit IDs of the persons whose data the answer held (lienthong.subjects): the citizen usage history';
COMMENT ON TABLE {OPS_SCHEMA}.access_log IS
  'lienthong.singlewindow: one row per request that reached a dataset; lookup_key is personal data';
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.auth_failure (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  client_addr text NOT NULL,
  route text NOT NULL,
  reason text NOT NULL CHECK (reason IN ('missing', 'unknown')),
  failures integer NOT NULL,
  backoff_s double precision NOT NULL,
  request_id text NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS auth_failure_at_idx ON {OPS_SCHEMA}.auth_failure (at);
COMMENT ON TABLE {OPS_SCHEMA}.auth_failure IS
  'lienthong.singlewindow: one row per request refused for a missing or unknown API key (no key material)';
"""


def ensure_access_log(conn: Any) -> None:
    """Create the audit tables if missing (in the caller's transaction; serialised with an advisory lock).
    `conn` is a psycopg 3 or psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_access_log_ddl'))")
        cur.execute(ACCESS_LOG_DDL)


@dataclass(frozen=True)
class AccessRecord:
    agency: str
    purpose: str | None  # the declared purpose code (as given, escaped, when refused)
    dataset: str
    lookup_key: str
    rows_returned: int
    status_code: int
    latency_ms: float
    request_id: str
    case_id: str | None = None
    legal_basis: str | None = None  # the purpose's bases, cited; None when the purpose was not accepted
    refusal: str | None = None  # why the read was refused (the detail the caller got), None when answered
    subjects: tuple[str, ...] = ()
    embargo_until: datetime | None = None


@dataclass(frozen=True)
class AuthFailure:
    client_addr: str
    route: str
    reason: str  # 'missing' or 'unknown'
    failures: int
    backoff_s: float
    request_id: str


_INSERT_ACCESS = f"""INSERT INTO {OPS_SCHEMA}.access_log (agency, purpose, dataset, lookup_key, rows_returned,
  status_code, latency_ms, request_id, case_id, legal_basis, refusal, subjects, embargo_until)
  VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING"""
_INSERT_AUTH_FAILURE = f"""INSERT INTO {OPS_SCHEMA}.auth_failure (client_addr, route, reason, failures, backoff_s,
  request_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING"""


def log_session_options(timeout: float) -> str:
    ms = int(timeout * 1000)
    return session_options(lock_timeout=ms, statement_timeout=ms, idle_in_transaction_session_timeout=max(ms, 10_000))


class AccessLog:
    """Writes audit records over a small pool of the platform's own connections (autocommit: each insert is
    committed on its own), every statement bounded by `timeout` seconds."""

    def __init__(self, url: str, size: int, timeout: float = 2.0):
        self._pool = Pool(url, name=f"{APP_NAME}-audit", size=size, wait=timeout,
                          options=log_session_options(timeout))

    def write(self, record: AccessRecord) -> None:
        self._pool.run(lambda conn: conn.execute(_INSERT_ACCESS, (
            record.agency, record.purpose, record.dataset, record.lookup_key, record.rows_returned,
            record.status_code, round(record.latency_ms, 3), record.request_id, record.case_id, record.legal_basis,
            record.refusal, list(record.subjects), record.embargo_until)))

    def read(self, statement: Any, params: Any = ()) -> list[tuple]:
        """Rows of one read on the platform's connection (the persons an answer held, a usage history)."""
        def run(conn: psycopg.Connection) -> list[tuple]:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall()

        return self._pool.run(run)

    def write_auth_failure(self, failure: AuthFailure) -> None:
        self._pool.run(lambda conn: conn.execute(_INSERT_AUTH_FAILURE, (
            failure.client_addr, failure.route, failure.reason, failure.failures, round(failure.backoff_s, 3),
            failure.request_id)))

    def check_writable(self) -> None:
        """Raise unless a row could be written now: takes (and gives back) the lock an INSERT takes, within the
        timeout, so a locked table or an unreachable server shows here as it would on a lookup."""
        def probe(conn: psycopg.Connection) -> None:
            with conn.transaction(force_rollback=True):
                conn.execute(f"LOCK TABLE {OPS_SCHEMA}.access_log IN ROW EXCLUSIVE MODE")

        self._pool.run(probe)

    def close(self) -> None:
        self._pool.close()
