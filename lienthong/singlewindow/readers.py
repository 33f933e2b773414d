"""Reads for the single window, each on a connection logged in as the calling agency's own role.

Owns one small connection pool per agency (`pools.Pool`, psycopg 3): connections whose session user IS the
agency role (password from `LIENTHONG_AGENCY_PASSWORD_<AGENCY>`), read-only from right after the login and
with a statement timeout, opened on the agency's first lookup. Chosen over one service login doing SET ROLE: a
session whose login is the agency can never RESET to something stronger, so the database enforces the
agency's grants whatever the service code does. The service reads only `agency_<name>.<dataset>` views; PostgreSQL refuses anything else
(`InsufficientPrivilege`). Values are sent as bound parameters, never in the statement text (see `pools`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from lienthong.access import Agency
from lienthong.singlewindow.pools import APP_NAME, Pool, StartupError, session_options

STATEMENT_TIMEOUT_S = 5.0


def _read_only(conn: psycopg.Connection) -> None:
    conn.execute("SET default_transaction_read_only = on")


class AgencyReaders:
    """Per-agency pools, each created on the agency's first read; `query` runs one parametrised statement."""

    def __init__(self, url: str, agencies: dict[str, Agency], passwords: dict[str, str], size: int = 4,
                 timeout: float = STATEMENT_TIMEOUT_S):
        self._url, self._agencies, self._size, self._timeout = url, agencies, size, timeout
        self._passwords = dict(passwords)
        self._pools: dict[str, Pool] = {}
        self._lock = threading.Lock()

    def _connect_kwargs(self, agency: str) -> dict[str, Any]:
        # Read-only is set after the login, not in the startup options: the login itself writes the session's
        # record (lienthong.sessions' login trigger), which a read-only startup transaction could not.
        return {"user": self._agencies[agency].role, "password": self._passwords[agency],
                "options": session_options(statement_timeout=int(self._timeout * 1000))}

    def _pool(self, agency: str) -> Pool:
        with self._lock:
            if agency not in self._pools:
                self._pools[agency] = Pool(self._url, name=f"{APP_NAME}-{agency}", size=self._size,
                                           wait=self._timeout, configure=_read_only, **self._connect_kwargs(agency))
            return self._pools[agency]

    def query(self, agency: str, statement: sql.SQL | sql.Composed | str,
              params: Sequence[Any]) -> tuple[list[str], list[tuple]]:
        """Column names and rows of one statement run as the agency (run again once on a fresh connection if
        the pooled one was broken: a read may be repeated)."""
        def read(conn: psycopg.Connection) -> tuple[list[str], list[tuple]]:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return [d.name for d in cur.description or ()], cur.fetchall()

        return self._pool(agency).run(read)

    def check_logins(self) -> None:
        """Log in once as every agency (fails early on a wrong password or a missing role); the connection is
        closed again: the pools open theirs on first use."""
        for agency in self._passwords:
            try:
                with psycopg.connect(self._url, autocommit=True, application_name=f"{APP_NAME}-{agency}",
                                     connect_timeout=max(2, math.ceil(self._timeout)),
                                     **self._connect_kwargs(agency)) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                raise StartupError(f"agency {agency} cannot log in as role {self._agencies[agency].role} "
                                   f"({type(exc).__name__}): check {self._agencies[agency].password_env} and "
                                   "that lienthong.access was applied") from None

    def close(self) -> None:
        with self._lock:
            for p in self._pools.values():
                p.close()
            self._pools.clear()
