"""Agency credentials from Airflow connections — the only place secrets come from.

Inside a task, connections resolve through Airflow (secrets backends, `AIRFLOW_CONN_*`, the metadata DB).
Outside Airflow (CLI, tests) the same `AIRFLOW_CONN_<ID>` environment variables are read, in Airflow's own
JSON or URI form, so one configuration serves both.

A connection carries every extra to the client it makes: a postgres connection's extras become libpq
keywords (sslrootcert, sslcert, sslkey, target_session_attrs, options, application_name, ...) except the
named `POSTGRES_IGNORED_EXTRAS`; an http connection's `verify`, `cert`, `proxies` and `timeout` reach the
requests session (`http_options`), over the settings' defaults.

Why not the providers' hooks themselves. `PostgresHook.get_conn` opens the connection (psycopg2 or psycopg 3,
as Airflow is configured) where the land connector needs a libpq DSN: it opens and sets up its own psycopg2
session from it (connectors.land.extract), also from DSNs that are no Airflow connection (tests,
benchmarks); the hook would also hand our own extras (batch_size, overlap_seconds) and JSON booleans to
libpq, which refuses both; importing it costs about half a second per task. So its rule is followed here
(every extra but an ignore-list, which holds the hook's own `ignored_extra_options`: a unit test keeps the
two in step). `HttpHook.get_conn` builds a session that sends login/password as basic auth on every request
(ours are an OAuth2 client secret and an API key, sent only where the spec says) and every other extra as
a header (`scope` would go out as one); our HttpClient keeps its own session (tenacity retry classifying the
spec's faults, a send-ahead thread, 1 MiB body reads). So the hook's extra names are read here (with its
aliases `verify_ssl` and `proxy`) and given to that session.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lienthong.settings import passed_env

log = logging.getLogger(__name__)

# Extras of a postgres connection that are not libpq keywords and never reach the DSN:
# - Airflow's: PostgresHook.ignored_extra_options (IAM / Redshift / Azure token auth, cursor class, SQLAlchemy
#   URL parts), the common SQL hook's own settings (placeholder, statement formats, dialect);
# - ours: read by connectors.land.ingest (batch size and overlap of a province's extract).
# Keys starting with POSTGRES_IGNORED_PREFIXES are left out too: any `sqlalchemy_*`, and the `extra__<type>__*`
# form fields of older Airflow versions.
POSTGRES_IGNORED_EXTRAS = frozenset({
    "iam", "redshift", "redshift-serverless", "cursor", "cluster-identifier", "workgroup-name", "aws_conn_id",
    "azure_conn_id", "sqlalchemy_scheme", "sqlalchemy_query",
    "placeholder", "insert_statement_format", "replace_statement_format", "escape_word_format",
    "escape_column_names", "dialect",
    "batch_size", "overlap_seconds",
})  # fmt: skip
POSTGRES_IGNORED_PREFIXES = ("sqlalchemy_", "extra__")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


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
        """A libpq DSN: host, port, database (schema), user, password, then every extra as a libpq keyword
        (an extra wins over a field, as in PostgresHook) except the ignored ones (POSTGRES_IGNORED_EXTRAS).
        A JSON boolean becomes 1/0 (libpq's keepalives, sslsni, ...). An extra libpq does not know fails
        here, naming the connection and the keyword, rather than at connect time."""
        import psycopg2
        from psycopg2.extensions import make_dsn

        params: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.schema, "user": self.login,
                                  "password": self.password}
        for key, value in self.extra.items():
            if key in POSTGRES_IGNORED_EXTRAS or key.startswith(POSTGRES_IGNORED_PREFIXES):
                continue
            if isinstance(value, bool):
                value = int(value)
            elif isinstance(value, dict | list):
                raise ValueError(f"connection {self.conn_id!r}: extra {key!r} is a {type(value).__name__}; a libpq "
                                 "keyword takes a single value")
            params[key] = value
        try:
            return make_dsn(**{k: v for k, v in params.items() if v not in (None, "")})
        except psycopg2.ProgrammingError as exc:  # libpq's own words name the keyword, never a value
            raise ValueError(f"connection {self.conn_id!r}: its extras are passed to libpq as connection "
                             f"keywords: {str(exc).strip()}") from exc

    def http_options(self) -> dict[str, Any]:
        """The requests options an http connection's extras set, the names and aliases HttpHook reads:
        `verify` (`verify_ssl`; true/false or a CA bundle path), `cert` (a path, or [cert, key]), `proxies`
        (`proxy`; {scheme: url}, or one url for http and https) and `timeout` (seconds, or [connect, read]).
        Only what the connection sets; values from the URI form (text) are read as the JSON form's."""
        extra = self.extra
        options: dict[str, Any] = {}
        verify = extra.get("verify", extra.get("verify_ssl"))
        if verify is not None:
            options["verify"] = self._verify(verify)
        if extra.get("cert") is not None:
            options["cert"] = self._cert(extra["cert"])
        proxies = extra.get("proxies", extra.get("proxy"))
        if proxies is not None:
            options["proxies"] = self._proxies(proxies)
        if extra.get("timeout") is not None:
            options["timeout"] = self._timeout(extra["timeout"])
        return options

    def _bad(self, key: str, value: Any, expected: str) -> ValueError:
        shown = f"(a {type(value).__name__})" if key == "proxies" else f"= {value!r}"  # a proxy url may hold a password
        return ValueError(f"connection {self.conn_id!r}: extra {key!r} {shown} is not {expected}")

    def _json(self, key: str, value: Any, opening: str) -> Any:
        """A list or object written as JSON text (the URI form has no other way to give one)."""
        if not (isinstance(value, str) and value.lstrip().startswith(opening)):
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            raise self._bad(key, value, "valid JSON") from exc

    def _file(self, key: str, path: Any) -> str:
        if not isinstance(path, str) or not path:
            raise self._bad(key, path, "a file path")
        if not Path(path).expanduser().exists():
            raise ValueError(f"connection {self.conn_id!r}: extra {key!r} names {path!r}, which does not exist")
        return str(Path(path).expanduser())

    def _verify(self, value: Any) -> bool | str:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return self._file("verify", value)  # a CA bundle file or a directory of CA certificates

    def _cert(self, value: Any) -> str | tuple[str, str]:
        value = self._json("cert", value, "[")
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise self._bad("cert", value, "a path or [certificate, key]")
            return (self._file("cert", value[0]), self._file("cert", value[1]))
        return self._file("cert", value)

    def _proxies(self, value: Any) -> dict[str, str]:
        value = self._json("proxies", value, "{")
        if isinstance(value, str) and value:
            return {"http": value, "https": value}
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return dict(value)
        raise self._bad("proxies", value, "{scheme: proxy url} or one proxy url")

    def _timeout(self, value: Any) -> float | tuple[float, float]:
        value = self._json("timeout", value, "[")
        try:
            if isinstance(value, list | tuple) and len(value) == 2:
                connect, read = float(value[0]), float(value[1])
                if connect > 0 and read > 0:
                    return (connect, read)
            elif not isinstance(value, bool | list | tuple | dict) and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            pass
        raise self._bad("timeout", value, "a number of seconds or [connect, read]")


def _from_airflow(conn: Any, conn_id: str) -> ConnInfo:
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return ConnInfo(conn_id, conn.conn_type, conn.host, conn.port, conn.schema, conn.login, conn.password, dict(extra or {}))


def get_connection(conn_id: str) -> ConnInfo:
    """Resolve an Airflow connection by id (inside a task via Airflow, else from AIRFLOW_CONN_<ID>)."""
    env = passed_env(f"AIRFLOW_CONN_{conn_id.upper()}")
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
