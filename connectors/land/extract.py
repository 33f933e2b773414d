"""Land registry extractor (agency-systems.md §3): one read-only snapshot of a province's database, its
three tables streamed in (cap_nhat_luc, id) keyset order through server-side cursors.

Owns: how the platform talks to a province's PostgreSQL (session settings, the snapshot, the keyset query,
the schema check, error wrapping), the `Keyset` position and its text form in the watermark store, and
the rule that decides a table's next watermark. It lands nothing and stores nothing: `connectors.land.ingest`
does that.

Coded to the spec's text, not to the sandbox: any database with the spec's three tables works. Rows are
never filtered: tombstones (`da_xoa = true`) are extracted like any other row, and columns the spec does not
name are carried in the payload (schema drift stays visible in raw).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
from psycopg2 import sql

from connectors.base.errors import SchemaDriftError, SourceError, TransientSourceError
from connectors.base.landing import record_hashes
from connectors.base.paging import KeysetPaginator, paginate
from connectors.land.render import CURSOR_FIELD, Column, render_rows, select_list

log = logging.getLogger(__name__)

SOURCE = "land_registry"
# Extraction order only; every table is read from the same snapshot, so the order does not matter for
# consistency (certificates are not seen before the parcels they reference were committed).
TABLES = ("thua_dat", "chu_su_dung", "giay_chung_nhan")
KEY_FIELD = "id"
INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
SPEC_COLUMNS: dict[str, tuple[str, ...]] = {
    "thua_dat": ("id", "ma_xa", "so_to_ban_do", "so_thua", "dien_tich", "muc_dich_su_dung", "dia_chi",
                 "cap_nhat_luc", "da_xoa"),
    "chu_su_dung": ("id", "loai", "ho_ten", "loai_giay_to", "so_giay_to", "nam_sinh", "dia_chi", "cap_nhat_luc",
                    "da_xoa"),
    "giay_chung_nhan": ("id", "so_phat_hanh", "so_vao_so", "thua_dat_id", "chu_su_dung_id", "ty_le_so_huu",
                        "ngay_cap", "trang_thai", "cap_nhat_luc", "da_xoa"),
}  # fmt: skip
DEFAULT_BATCH_SIZE = 5000
# Session defaults; the DSN's own (a connection's extras, lienthong.connections.ConnInfo.postgres_dsn) win.
APPLICATION_NAME = "lienthong-land-connector"
DEFAULT_CONNECT_TIMEOUT = 30
# RFC 3339 in UTC with fixed microseconds (timestamptz's precision): equal instants give equal text and
# the text sorts like the instant, in the payload, `_updated_at` and the watermark alike.
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # = render.PG_TS_FORMAT, the same text rendered by the server


def render_ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"time without offset: {value!r}")
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time without offset: {text!r}")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Keyset:
    """A position in a table's (cap_nhat_luc, id) order. With an id, the next read starts strictly after
    (ts, id); without one (an overlap window, or a watermark held back to the source's clock) it starts at
    ts inclusive."""

    ts: datetime
    id: int | None = None

    def encode(self) -> str:
        """The watermark text: small JSON, both parts, e.g. {"ts":"2026-11-20T05:00:00.000000Z","id":42}."""
        return json.dumps({"ts": render_ts(self.ts), "id": self.id}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Keyset:
        try:
            data = json.loads(text)
            ts = parse_ts(data["ts"])
            raw_id = data.get("id")
            return cls(ts, None if raw_id is None else int(raw_id))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a land registry watermark (expected JSON with ts and id): {text!r}") from exc

    def rewind(self, overlap: timedelta) -> Keyset:
        """Where the next read starts: the watermark itself, or `overlap` earlier, inclusive (see ingest)."""
        if overlap <= timedelta(0):
            return self
        return Keyset(self.ts - overlap, None)

    def sort_key(self) -> tuple[datetime, float | int]:
        # An inclusive position (no id) sits before every row of its instant.
        return (self.ts, float("-inf") if self.id is None else self.id)


def next_watermark(old: Keyset | None, last: Keyset | None, source_now: datetime) -> Keyset | None:
    """A table's watermark after a run: the last row landed, never moving backwards (an overlap re-read
    ends before the old watermark) and never past the source's own clock. A row dated in the future (a
    mistyped year, an application server's clock ahead) would otherwise push the watermark ahead of every
    real edit to come and hide them until that date; holding it at the snapshot time re-reads such rows each
    run instead, which loses nothing."""
    candidates = [k for k in (old, last) if k is not None]
    if not candidates:
        return None
    best = max(candidates, key=Keyset.sort_key)
    if best.ts > source_now:
        capped = Keyset(source_now, None)
        return old if old is not None and old.sort_key() >= capped.sort_key() else capped
    return best


@dataclass(frozen=True)
class Batch:
    """One fetch of a table, column-wise as Arrow arrays (what RawLanding takes), the payloads' record
    hashes, and the keyset position after it."""

    table: str
    keys: pa.Array  # the ids' decimal text (`_key` is text for every source); check_schema saw an integer type
    updated: pa.Array
    payloads: pa.Array
    hashes: list[str]
    tombstones: int
    last: Keyset

    @classmethod
    def from_rows(cls, table: str, rows: Sequence[tuple[Any, ...]], columns: Sequence[Column]) -> Batch:
        """Rows in keyset order, fetched as `keyset_query` asks for `columns` -> columns, payloads
        (`render.render_rows`) and their hashes. The fixed-format text of the last row's cap_nhat_luc reads
        back to its exact instant, so no row needs a datetime of its own."""
        names = [c.name for c in columns]
        key_at, cursor_at, deleted_at = names.index(KEY_FIELD), names.index(CURSOR_FIELD), names.index("da_xoa")
        fetched, payloads = render_rows(columns, rows)
        deleted = pc.sum(pc.equal(fetched.field(deleted_at), "true")).as_py() or 0
        last = rows[-1]
        return cls(table, fetched.field(key_at), fetched.field(cursor_at), payloads, record_hashes(payloads), deleted,
                   Keyset(parse_ts(_text(last[cursor_at])), int(last[key_at])))

    def __len__(self) -> int:
        return len(self.keys)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def keyset_query(table: str, start: Keyset | None, columns: Sequence[Column]) -> tuple[sql.Composed, dict[str, Any]]:
    """The one query per table: every row after `start`, in (cap_nhat_luc, id) order, each column as text
    (`render.select_list`: the client renders the payload from it, the way `row_to_json` would).

    Every column the table has is fetched, so numerics keep their exact digits, dates are ISO, and a column
    the spec does not name is landed too; `cap_nhat_luc` is its fixed-format RFC 3339 UTC text.
    The extra `cap_nhat_luc >= ts` term lets the planner use an index on `cap_nhat_luc` alone (the spec
    gives none on (cap_nhat_luc, id))."""
    if CURSOR_FIELD not in [c.name for c in columns]:
        raise ValueError(f"{table}: the column list lacks {CURSOR_FIELD}")
    where = sql.SQL("")
    params: dict[str, Any] = {}
    if start is not None:
        params["ts"] = start.ts
        if start.id is None:
            where = sql.SQL(" WHERE t.cap_nhat_luc >= %(ts)s")
        else:
            params["id"] = start.id
            where = sql.SQL(" WHERE t.cap_nhat_luc >= %(ts)s AND (t.cap_nhat_luc, t.id) > (%(ts)s, %(id)s)")
    query = sql.SQL("SELECT {select} FROM {table} AS t{where} ORDER BY t.cap_nhat_luc, t.id").format(
        select=select_list(columns), table=sql.Identifier(table), where=where)
    return query, params


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without credentials (for errors and logs)."""
    p = psycopg2.extensions.parse_dsn(dsn)
    host = p.get("host") or "localhost"
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql://{host}{port}/{p.get('dbname', '')}"


class Fetched:
    """One FETCH's answer, still held by psycopg2 as libpq's result: its length and last row (`[-1]`) are
    known at once (what the keyset paginator needs); `rows()` turns all of it into tuples, once, in the
    caller's thread. Not iterable: the rows are `rows()`."""

    def __init__(self, cursor: Any, wrap: Callable[[psycopg2.Error, Any], SourceError], query: Any):
        self._cursor, self._wrap, self._query = cursor, wrap, query
        self._count = max(cursor.rowcount, 0)
        self._last: tuple[Any, ...] | None = None
        if self._count:
            cursor.scroll(self._count - 1, mode="absolute")
            self._last = cursor.fetchone()
            cursor.scroll(0, mode="absolute")

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if index in (-1, self._count - 1) and self._last is not None:
            return self._last
        raise IndexError("a fetched batch gives its last row only; call rows() for all of them")

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        raise TypeError("a fetched batch is not iterable; call rows() for its rows")

    def rows(self) -> list[tuple[Any, ...]]:
        try:
            return self._cursor.fetchall()
        except psycopg2.Error as exc:
            raise self._wrap(exc, self._query) from exc
        finally:
            self._cursor.close()

    def close(self) -> None:
        """Drop the answer without reading its rows."""
        self._cursor.close()


class LandRegistryExtractor:
    """A read-only REPEATABLE READ session on one province's database. Every query of one `with` block
    sees the same snapshot (taken by the first statement in `__enter__`), so a parcel and its certificate
    changed together by the cadastral system are seen both or neither."""

    def __init__(self, dsn: str, *, batch_size: int = DEFAULT_BATCH_SIZE, connect_timeout: int | None = None):
        """`connect_timeout`: seconds; default: the DSN's, else DEFAULT_CONNECT_TIMEOUT. The DSN's
        application_name is kept too (else APPLICATION_NAME); every other DSN keyword reaches libpq as is."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        given = psycopg2.extensions.parse_dsn(dsn)
        self.dsn, self.batch_size = dsn, batch_size
        self.connect_timeout = connect_timeout or int(given.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
        self.application_name = given.get("application_name") or APPLICATION_NAME
        self.where = describe_dsn(dsn)
        self.conn: psycopg2.extensions.connection | None = None
        self.snapshot_at: datetime | None = None
        self.database: str | None = None
        self.columns: dict[str, list[Column]] = {}  # per table, in the table's order: read by check_schema

    def __repr__(self) -> str:  # the DSN may carry a password
        return f"LandRegistryExtractor({self.where!r}, batch_size={self.batch_size})"

    def __enter__(self) -> LandRegistryExtractor:
        try:
            conn = psycopg2.connect(self.dsn, application_name=self.application_name, connect_timeout=self.connect_timeout)
        except psycopg2.OperationalError as exc:
            raise TransientSourceError(f"cannot connect to the land registry: {exc}".strip(), url=self.where) from exc
        self.conn = conn
        try:
            conn.autocommit = True
            conn.set_client_encoding("UTF8")  # the text of every row is taken as UTF-8 bytes (row_batches)
            with conn.cursor() as cur:
                # Session-wide, so every timestamptz the server renders (also in to_json) is UTC.
                cur.execute("SET TIME ZONE 'UTC'")
                # Belt and braces with set_session below: a pooler or a later BEGIN without options still
                # gets a read-only repeatable-read transaction.
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # psycopg2 now opens every transaction with BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY.
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True,
                             autocommit=False)
            check = ("SELECT transaction_timestamp(), current_database(), current_setting('transaction_isolation'),"
                     " current_setting('transaction_read_only')")
            with conn.cursor() as cur:
                cur.execute(check)  # the transaction's first statement: it takes the snapshot
                self.snapshot_at, self.database, isolation, read_only = cur.fetchone()
        except BaseException:
            self.close()
            raise
        if isolation != "repeatable read" or read_only != "on":
            self.close()
            raise SourceError(
                f"land registry session is {isolation!r}, read_only={read_only!r}; "
                "refusing to extract without a read-only repeatable-read snapshot", url=self.where
            )
        log.info("land registry %s: snapshot at %s (repeatable read, read only)", self.where, self.snapshot_at)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                if not self.conn.closed:
                    self.conn.rollback()  # nothing to keep: the transaction only read
            except psycopg2.Error:
                pass  # a broken connection is closed below anyway
            finally:
                self.conn.close()
                self.conn = None

    def _require(self) -> psycopg2.extensions.connection:
        if self.conn is None:
            raise RuntimeError("LandRegistryExtractor is not open: use it as a context manager")
        return self.conn

    def check_schema(self, tables: Sequence[str] = TABLES) -> dict[str, list[str]]:
        """Fail on a missing table or spec column (SchemaDriftError: nothing could be staged from it);
        return the columns the spec does not name, per table (landed in the payload, reported)."""
        conn = self._require()
        query = ("SELECT table_name, column_name, udt_name FROM information_schema.columns"
                 " WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY table_name, ordinal_position")
        with conn.cursor() as cur:
            self._execute(cur, query, (list(tables),))
            found: dict[str, list[Column]] = {}
            for table, column, type_name in cur.fetchall():
                found.setdefault(table, []).append(Column(column, type_name))
        self.columns.update(found)
        extra: dict[str, list[str]] = {}
        for table in tables:
            have = [c.name for c in found.get(table, [])]
            if not have:
                raise SchemaDriftError(f"table {table!r} is missing or not readable in {self.database}", url=self.where)
            missing = [c for c in SPEC_COLUMNS[table] if c not in have]
            if missing:
                raise SchemaDriftError(
                    f"table {table!r} lacks the spec's columns {missing} in {self.database}", url=self.where
                )
            key_type = next(c.type for c in found[table] if c.name == KEY_FIELD)
            if key_type not in INTEGER_TYPES:
                raise SchemaDriftError(f"table {table!r} has {KEY_FIELD} of type {key_type!r} in {self.database}; "
                                       "the spec's key is a bigint", url=self.where)
            extra[table] = sorted(set(have).difference(SPEC_COLUMNS[table]))
            if extra[table]:
                log.warning("land registry %s.%s has columns the spec does not name (landed as is): %s",
                            self.database, table, extra[table])
        return extra

    def batches(self, table: str, start: Keyset | None = None) -> Iterator[Batch]:
        """Every row of `table` after `start` (all rows if None), in keyset order, `batch_size` at a time,
        through a server-side cursor: memory stays bounded whatever the table size."""
        for fetched in self.row_batches(table, start):
            yield Batch.from_rows(table, fetched.rows(), self.columns[table])

    def row_batches(self, table: str, start: Keyset | None = None) -> Iterator[Fetched]:
        """`batches` before they become columns: each FETCH's answer (`Fetched`), whose rows are made
        Python tuples by whoever calls `Fetched.rows()`. A caller that fetches in one thread and builds
        columns in another (connectors.land.ingest) has the database answer the next FETCH while this
        answer is turned into tuples, columns and payloads: the server's work and psycopg2's overlap.

        The server-side cursor is declared and fetched with plain SQL (`DECLARE ... NO SCROLL CURSOR`,
        `FETCH FORWARD n`), each FETCH on a client cursor of its own: psycopg2's named cursor would turn
        the answer into tuples inside the FETCH call, in the fetching thread. psycopg2 allows cursors of
        one connection in different threads."""
        if table not in SPEC_COLUMNS:
            raise ValueError(f"unknown land table {table!r}; known: {', '.join(TABLES)}")
        conn = self._require()
        if table not in self.columns:
            self.check_schema((table,))
        query, params = keyset_query(table, start, self.columns[table])
        # The walk is the shared `paginate` driving a KeysetPaginator whose fetch is one FETCH from the
        # server-side cursor: the rows come from one streaming query, so the keyset position is what the
        # watermark is made of (and what shows the walk advances), not the next query's bound; the
        # paginator ends the walk on a short fetch.
        names = [c.name for c in self.columns[table]]
        key_at, cursor_at = names.index(KEY_FIELD), names.index(CURSOR_FIELD)
        paginator = KeysetPaginator(self.batch_size, start=None if start is None else (start.ts, start.id),
                                    key=lambda row: (_text(row[cursor_at]), int(row[key_at])))
        name = sql.Identifier(f"lienthong_land_{table}")
        declare = sql.SQL("DECLARE {} NO SCROLL CURSOR FOR ").format(name) + query
        fetch_next = sql.SQL("FETCH FORWARD %s FROM {}").format(name)

        def fetch(request: dict[str, Any]) -> Fetched:
            cur = conn.cursor()
            # Every column comes as text (see keyset_query), taken as UTF-8 bytes: psycopg2 then skips
            # decoding a Python string per value (about 0.35 µs a row, measured) and Arrow checks the
            # UTF-8 column-wise (render.render_rows).
            psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
            self._execute(cur, fetch_next, (request["limit"],))
            return Fetched(cur, self._wrap, query)

        with conn.cursor() as cur:
            self._execute(cur, declare, params)
        try:
            for page in paginate(fetch, paginator, source=f"{SOURCE} {self.where} {table}"):
                fetched = page.items
                if len(fetched):
                    yield fetched
                else:
                    fetched.close()
        finally:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("CLOSE {}").format(name))
            except psycopg2.Error:
                pass  # the transaction already failed; the error that got us here is the one to see

    def _execute(self, cur: Any, query: Any, params: Any) -> None:
        try:
            cur.execute(query, params)
        except psycopg2.Error as exc:
            raise self._wrap(exc, query) from exc

    def _wrap(self, exc: psycopg2.Error, query: Any) -> SourceError:
        try:
            text = query.as_string(self.conn) if isinstance(query, sql.Composable) else str(query)
        except Exception:  # a closed connection cannot render; the structure still says which query
            text = repr(query)
        message = f"land registry query failed: {str(exc).strip()} [SQL: {text}]"
        # A lost connection may pass; the whole run is retried (by Airflow) on a fresh snapshot.
        cls = TransientSourceError if isinstance(exc, psycopg2.OperationalError) else SourceError
        return cls(message, url=self.where)
