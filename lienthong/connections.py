"""Agency credentials from Airflow connections — the only place secrets come from.

Inside a task, connections resolve through Airflow (secrets backends, `AIRFLOW_CONN_*`, the metadata DB).
Outside Airflow (CLI, tests) the same `AIRFLOW_CONN_<ID>` environment variables are read, in Airflow's own
JSON or URI form, so one configuration serves both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnInfo:
    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def base_url(self) -> str:
        """http(s)://host:port for an HTTP connection (schema carries the scheme, as Airflow's http hook)."""
        host = self.host or "localhost"
        if "://" in host:
            base = host
        else:
            scheme = self.schema or "http"
            base = f"{scheme}://{host}"
        if self.port and not base.rsplit("/", 1)[-1].count(":"):
            base = f"{base}:{self.port}"
        return base.rstrip("/")

    def postgres_dsn(self) -> str:
        from psycopg2.extensions import make_dsn

        params = {"host": self.host, "port": self.port, "dbname": self.schema, "user": self.login, "password": self.password}
        params.update({k: v for k, v in self.extra.items() if k in ("sslmode", "options", "connect_timeout")})
        return make_dsn(**{k: v for k, v in params.items() if v not in (None, "")})


def _from_airflow(conn: Any, conn_id: str) -> ConnInfo:
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return ConnInfo(conn_id, conn.conn_type, conn.host, conn.port, conn.schema, conn.login, conn.password, dict(extra or {}))


def get_connection(conn_id: str) -> ConnInfo:
    """Resolve an Airflow connection by id (inside a task via Airflow, else from AIRFLOW_CONN_<ID>)."""
    env = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    from airflow.sdk import Connection

    if env:
        text = env.strip()
        conn = Connection.from_json(text, conn_id=conn_id) if text.startswith("{") else Connection.from_uri(text, conn_id=conn_id)
        return _from_airflow(conn, conn_id)
    try:
        return _from_airflow(Connection.get(conn_id), conn_id)
    except Exception as exc:
        raise LookupError(
            f"connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()} or add it in Airflow"
        ) from exc
