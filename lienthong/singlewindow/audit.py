"""The single window's audit record: one row per request that reached a dataset, in `lienthong_ops.access_log`.

Owns the table's DDL (created idempotently) and the writer. The log is written BEFORE the answer is sent and
the service fails closed (503) when it cannot write it: no personal data leaves without a record (Law
91/2025/QH15 and Decree 356/2025 require a processing log).

The key looked up (a personal ID, a tax code, a parcel locator) is stored as given, not pseudonymized: the
log must answer a data subject's "who looked at my record?" and a breach investigation, also after the
pseudonymization key has been rotated, and it lives in `lienthong_ops`, which no agency role can read (the
same operators who can read it can read `published.*`). Malformed input is stored escaped and cut short.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg2 import pool as pg_pool
from psycopg2.extensions import connection

from lienthong.ops import OPS_SCHEMA

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
COMMENT ON TABLE {OPS_SCHEMA}.access_log IS
  'lienthong.singlewindow: one row per request that reached a dataset; lookup_key is personal data';
"""


def ensure_access_log(conn: connection) -> None:
    """Create the access log if missing (in the caller's transaction; serialised with an advisory lock)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('lienthong_ops_access_log_ddl'))")
        cur.execute(ACCESS_LOG_DDL)


@dataclass(frozen=True)
class AccessRecord:
    agency: str
    purpose: str
    dataset: str
    lookup_key: str
    rows_returned: int
    status_code: int
    latency_ms: float
    request_id: str


class AccessLog:
    """Writes access records over a small pool of the platform's own connections (each insert committed)."""

    def __init__(self, url: str, size: int):
        # minconn = maxconn: psycopg2's pool closes every connection returned beyond minconn
        self._pool = pg_pool.ThreadedConnectionPool(size, size, url, application_name="lienthong-singlewindow-audit")
        self._slots = threading.BoundedSemaphore(size)
        with self._connection() as conn:
            ensure_access_log(conn)
            conn.commit()

    @contextmanager
    def _connection(self):
        with self._slots:
            conn = self._pool.getconn()
            try:
                yield conn
            except Exception:
                try:
                    conn.rollback()
                except Exception:  # the connection itself is gone: do not hand it out again
                    conn.close()
                raise
            finally:
                self._pool.putconn(conn, close=bool(conn.closed))

    def write(self, record: AccessRecord) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {OPS_SCHEMA}.access_log (agency, purpose, dataset, lookup_key, rows_returned,
                    status_code, latency_ms, request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (record.agency, record.purpose, record.dataset, record.lookup_key, record.rows_returned,
                 record.status_code, round(record.latency_ms, 3), record.request_id),
            )
            conn.commit()

    def ping(self) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            conn.rollback()

    def close(self) -> None:
        self._pool.closeall()
