"""The single window's database connections: pools that open nothing until used, bounded waits, one retry on
a broken connection, and the start-up checks against the server (room for the pools, parameter logging).

Built on psycopg 3 and `psycopg_pool`, where the rest of the platform uses psycopg2: psycopg 3 sends a
statement's values apart from its text (extended protocol, `$1` in the text), so a personal ID looked up
never appears in the SQL the server logs (`log_statement`, or `log_min_error_statement` on a failed lookup);
psycopg2 interpolates values into the text client-side. The values can still reach the server log as the
`DETAIL: Parameters:` of a logged statement: `parameter_logging_risks` names the server settings that do it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

T = TypeVar("T")
APP_NAME = "lienthong-singlewindow"  # every connection's application_name starts with it


class StartupError(RuntimeError):
    """The service refuses to start; the message says which setting to change."""


class _Broken(Exception):
    """The connection broke under a unit of work (carried out of the pool's context manager)."""


def session_options(**settings: str | int) -> str:
    """libpq `options` setting server parameters for the whole session."""
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


class Pool:
    """Up to `size` connections, each opened on first need (none at start); a caller waits at most `wait`
    seconds for one (then `psycopg_pool.PoolTimeout`, an OperationalError)."""

    def __init__(self, conninfo: str, *, name: str, size: int, wait: float,
                 configure: Callable[[psycopg.Connection], None] | None = None, **connect_kwargs: Any):
        self.name = name
        kwargs = {"autocommit": True, "application_name": name, "connect_timeout": max(2, math.ceil(wait)),
                  **connect_kwargs}
        self._pool: ConnectionPool = ConnectionPool(conninfo, kwargs=kwargs, name=name, min_size=0, max_size=size,
                                                    timeout=wait, open=True, configure=configure)

    def run(self, work: Callable[[psycopg.Connection], T], *, retry: bool = True) -> T:
        """`work(conn)` on a pooled connection. When that connection turns out broken (the server restarted, or
        ended an idle session), the pool's idle connections are checked and, with `retry`, `work` runs once
        more on a sound one: only for work that may run twice (reads; writes made idempotent)."""
        try:
            return self._once(work, retry)
        except _Broken:
            log.warning("pool %s: a connection was lost (server restart?); idle ones checked, retrying once", self.name)
            self._pool.check()
        return self._once(work, False)

    def _once(self, work: Callable[[psycopg.Connection], T], may_retry: bool) -> T:
        with self._pool.connection() as conn:
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                if may_retry and conn.broken:
                    raise _Broken from exc
                if conn.broken:
                    self._pool.check()  # its siblings are likely as stale: spare the next callers
                raise

    def close(self) -> None:
        self._pool.close(timeout=5)


# --- start-up checks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerRoom:
    """What the server allows: its connection slots and what others use of them now."""

    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections: never for the service's roles
    in_use: int  # client connections now, other than the lookup service's own
    role_limits: Mapping[str, int]  # agency role -> its CONNECTION LIMIT (-1: none)


@dataclass(frozen=True)
class PoolPlan:
    """The most connections the service may open: per worker, a reader pool per served agency and a log pool."""

    workers: int
    roles: Mapping[str, str]  # served agency -> its role
    pool_size: int
    log_pool_size: int
    headroom: int

    @property
    def per_worker(self) -> int:
        return len(self.roles) * self.pool_size + self.log_pool_size

    @property
    def total(self) -> int:
        return self.workers * self.per_worker


def check_room(plan: PoolPlan, room: ServerRoom) -> None:
    """Raise StartupError when the pools could outgrow the server or an agency role's connection limit."""
    free = room.max_connections - room.reserved - room.in_use - plan.headroom
    if plan.total > free:
        raise StartupError(
            f"the lookup service may open {plan.total} connections ({plan.workers} worker(s) x ({len(plan.roles)} "
            f"agencies x LIENTHONG_SINGLEWINDOW_POOL_SIZE={plan.pool_size} + "
            f"LIENTHONG_SINGLEWINDOW_LOG_POOL_SIZE={plan.log_pool_size})) but the server has {free} to spare "
            f"(max_connections {room.max_connections} - {room.reserved} reserved - {room.in_use} in use - "
            f"LIENTHONG_SINGLEWINDOW_DB_HEADROOM={plan.headroom}): lower LIENTHONG_SINGLEWINDOW_POOL_SIZE, "
            "LIENTHONG_SINGLEWINDOW_LOG_POOL_SIZE or --workers, or raise the server's max_connections")
    for agency, role in sorted(plan.roles.items()):
        limit = room.role_limits.get(role, -1)
        if 0 <= limit < plan.workers * plan.pool_size:
            raise StartupError(
                f"agency {agency}: {plan.workers} worker(s) x LIENTHONG_SINGLEWINDOW_POOL_SIZE={plan.pool_size} "
                f"connections exceed role {role}'s connection limit of {limit}: lower "
                "LIENTHONG_SINGLEWINDOW_POOL_SIZE or --workers, or raise the agency's limits.connections")


def server_room(conn: psycopg.Connection, roles: list[str]) -> ServerRoom:
    """The server's connection slots, as seen by `conn` (which is not counted as in use)."""
    row = conn.execute(
        """SELECT current_setting('max_connections')::int,
                  current_setting('superuser_reserved_connections')::int
                    + coalesce(current_setting('reserved_connections', true), '0')::int,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                     AND pid <> pg_backend_pid() AND coalesce(application_name, '') NOT LIKE %s)::int""",
        (APP_NAME + "%",)).fetchone()
    assert row is not None
    limits: dict[str, int] = dict(conn.execute("SELECT rolname, rolconnlimit FROM pg_roles WHERE rolname = ANY(%s)",
                                               (roles,)).fetchall())
    return ServerRoom(row[0], row[1], row[2], limits)


_LOGGING_SETTINGS = ("log_statement", "log_min_duration_statement", "log_min_duration_sample",
                     "log_statement_sample_rate", "log_transaction_sample_rate", "log_parameter_max_length",
                     "log_parameter_max_length_on_error")


def logging_settings(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                             (list(_LOGGING_SETTINGS),)).fetchall())


def parameter_logging_risks(s: Mapping[str, str]) -> list[str]:
    """How the server, configured as `s` (pg_settings name -> setting), would write bound parameter values
    (the IDs looked up) into its log; empty when it would not."""
    risks = []
    on_error = s.get("log_parameter_max_length_on_error", "0")
    if on_error != "0":
        risks.append(f"log_parameter_max_length_on_error = {on_error} logs the parameter values of a failed "
                     "statement: set it to 0")
    max_length = s.get("log_parameter_max_length", "-1")
    if max_length != "0":
        logged = []
        if s.get("log_statement") in ("all", "mod"):  # 'mod' logs the access-log INSERT
            logged.append(f"log_statement = {s['log_statement']}")
        if int(s.get("log_min_duration_statement", "-1")) >= 0:
            logged.append(f"log_min_duration_statement = {s['log_min_duration_statement']}")
        if int(s.get("log_min_duration_sample", "-1")) >= 0 and float(s.get("log_statement_sample_rate", "0")) > 0:
            logged.append(f"log_min_duration_sample = {s['log_min_duration_sample']}")
        if float(s.get("log_transaction_sample_rate", "0")) > 0:
            logged.append(f"log_transaction_sample_rate = {s['log_transaction_sample_rate']}")
        if logged:
            risks.append(f"{', '.join(logged)} with log_parameter_max_length = {max_length} logs statements with "
                         "their parameter values: set log_parameter_max_length = 0")
    return risks
