"""Reads for the single window, each on a connection logged in as the calling agency's own role.

Owns one small connection pool per agency: `psycopg2` connections whose session user IS the agency role
(password from `LIENTHONG_AGENCY_PASSWORD_<AGENCY>`), read-only and with a statement timeout. Chosen over
one service login doing SET ROLE: a session whose login is the agency can never RESET to something
stronger, so the database enforces the agency's grants whatever the service code does. The service reads
only `agency_<name>.<dataset>` views; PostgreSQL refuses anything else (`InsufficientPrivilege`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import pool as pg_pool
from psycopg2 import sql

from lienthong.access import Agency

STATEMENT_TIMEOUT_MS = 5000


class AgencyReaders:
    """Per-agency pools, opened lazily; `query` runs one parametrised statement as that agency."""

    def __init__(self, url: str, agencies: dict[str, Agency], passwords: dict[str, str], size: int = 8):
        self._url, self._agencies, self._size = url, agencies, size
        self._passwords = dict(passwords)
        self._pools: dict[str, pg_pool.ThreadedConnectionPool] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _pool(self, agency: str) -> tuple[pg_pool.ThreadedConnectionPool, threading.BoundedSemaphore]:
        with self._lock:
            if agency not in self._pools:
                # minconn = maxconn: psycopg2's pool closes every connection returned beyond minconn
                self._pools[agency] = pg_pool.ThreadedConnectionPool(
                    self._size, self._size, self._url, user=self._agencies[agency].role, password=self._passwords[agency],
                    application_name=f"lienthong-singlewindow-{agency}",
                    options=f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}",
                )
                self._slots[agency] = threading.BoundedSemaphore(self._size)
            return self._pools[agency], self._slots[agency]

    @contextmanager
    def connection(self, agency: str):
        """A pooled connection logged in as `agency`'s role (autocommit, read-only)."""
        pool, slots = self._pool(agency)
        with slots:
            conn = pool.getconn()
            conn.autocommit = True
            try:
                yield conn
            finally:
                pool.putconn(conn, close=bool(conn.closed))

    def query(self, agency: str, statement: sql.Composable, params: Sequence[Any]) -> tuple[list[str], list[tuple]]:
        """Column names and rows of one statement run as the agency."""
        with self.connection(agency) as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(statement, params)
                    return [d.name for d in cur.description], cur.fetchall()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                conn.close()  # a broken connection is not handed out again
                raise

    def check_logins(self) -> None:
        """Log in once as every agency (fails early on a wrong password or a missing role)."""
        for agency in self._passwords:
            with self.connection(agency) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            for p in self._pools.values():
                p.closeall()
            self._pools.clear()
